"""Parameter counts of the built-in architectures on the quickstart (timm resnet18, five tasks).

Builds ``configs/quickstart.yaml`` with each ``model.architecture`` below through the zoo and
prints ``model.num_parameters()``: the parameters shared by the tasks, each task's own, and
the total, with the total relative to hard parameter sharing (``hps``) and to the five
single-task models the benches compare with (one resnet18 and one head per task). The
architectures' defaults follow the papers; the rows marked "(bench)" are the narrower
settings the shapes bench uses (benchmarks/specs/shapes_architectures.yaml).

A second table lists the counts of the MTAN authors' SegNet models for NYUv2 (13 classes,
3 tasks), counted from the model definitions of github.com/lorenmt/mtan (``im2im_pred/
model_segnet_*.py``: ``sum(p.numel() for p in SegNet().parameters())``), for comparison with
the paper's "#P." column (MTAN 1.77, cross-stitch 3.00 times one single-task SegNet).

    python benchmarks/architecture_params.py                  # print the tables
    python benchmarks/architecture_params.py --out table.md   # and write them
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

#: (label, model.architecture) rows of the quickstart table
ROWS = [
    ("hps", {"name": "hps"}),
    ("mtan", {"name": "mtan"}),
    ("mtan (share_extractors)", {"name": "mtan", "share_extractors": True}),
    ("mtan (design: conv)", {"name": "mtan", "design": "conv"}),
    ("cross_stitch", {"name": "cross_stitch"}),
    ("cross_stitch (alphas: channel)", {"name": "cross_stitch", "alphas": "channel"}),
    ("nddr", {"name": "nddr"}),
    ("padnet", {"name": "padnet"}),
    ("padnet (bench: channels 64)", {"name": "padnet", "channels": 64}),
    ("mti_net", {"name": "mti_net"}),
    ("mti_net (bench: channels 18-144)", {"name": "mti_net", "channels": [18, 36, 72, 144]}),
]

#: the MTAN authors' SegNet models on NYUv2 (13 classes, 3 tasks), counted from their code
SEGNET = [
    ("single-task SegNet (one task)", 24_981_069),
    ("SegNet split (hard sharing, standard)", 25_055_188),
    ("SegNet-MTAN", 44_229_076),
    ("SegNet cross-stitch", 74_941_807),
    ("SegNet dense", 123_743_995),
]


def _m(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def quickstart_counts() -> tuple[list[str], list[tuple[str, dict[str, int]]], int]:
    """The task names, ``(label, num_parameters())`` per row, and the five single-task models' total."""
    from mtlzoo import Zoo

    zoo = Zoo.load(strict=True)
    base = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())
    base["data"].update(train_size=8, val_size=8, test_size=8)
    out = []
    tasks: list[str] = []
    for label, node in ROWS:
        spec = {**base, "model": {**base["model"], "architecture": node}}
        exp = zoo.build(spec)
        tasks = list(exp.tasks)
        out.append((label, exp.model.num_parameters()))
    hps = out[0][1]
    single = sum(hps["shared"] + hps[t] for t in tasks)
    return tasks, out, single


def tables() -> str:
    """Both tables, in markdown."""
    tasks, rows, single = quickstart_counts()
    hps_total = rows[0][1]["total"]
    lines = [
        "Quickstart (timm resnet18, 64x64, tasks " + ", ".join(tasks) + "):",
        "",
        "| architecture | shared | " + " | ".join(tasks) + " | total | x hps | x single-task models |",
        "|" + "---|" * (len(tasks) + 5),
    ]
    for label, c in rows:
        cells = [label, _m(c["shared"]), *(_m(c[t]) for t in tasks), _m(c["total"])]
        cells += [f"{c['total'] / hps_total:.2f}", f"{c['total'] / single:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(
        f"| {len(tasks)} single-task models (hps, one task each) | - | "
        + " | ".join("-" for _ in tasks)
        + f" | {_m(single)} | {single / hps_total:.2f} | 1.00 |"
    )
    lines += [
        "",
        "The MTAN authors' SegNet models (NYUv2, 13 classes, 3 tasks; counted from their code):",
        "",
        "| model | parameters | x one single-task SegNet |",
        "|---|---|---|",
    ]
    one = SEGNET[0][1]
    lines += [f"| {label} | {n:,} | {n / one:.2f} |" for label, n in SEGNET]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Print the tables (and write them with ``--out``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    args = parser.parse_args()
    text = tables()
    print(text, end="")
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
