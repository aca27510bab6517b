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

A third table puts the mixture-of-experts architectures next to LibMTL's at LibMTL's NYUv2
setting (288x384 images; segmentation 13 classes, depth, normals; a ResNet-50 encoder; one
DeepLab head per task). LibMTL's counts come from its code by formula (:func:`libmtl_counts`:
``LibMTL/architecture/{HPS,MMoE,CGC,PLE,DSelect_k,LTB}.py`` with ``examples/nyu``'s
``resnet_dilated('resnet50')`` encoder, whose 23,508,032 parameters are counted from timm's
``resnet50`` without its classifier, and ``aspp.DeepLabHead(2048, C)`` decoders), with the same
numbers of experts as mtlzoo's defaults; mtlzoo's from its models built on
``configs/nyuv2/multitask.yaml`` (timm resnet50, one DeepLabV3+ head per task) over a tiny
generated NYUv2 (:func:`nyuv2_counts`).

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
    ("mmoe", {"name": "mmoe"}),
    ("mmoe (reduction: 16)", {"name": "mmoe", "reduction": 16}),
    ("cgc", {"name": "cgc"}),
    ("ple", {"name": "ple"}),
    ("dselect_k", {"name": "dselect_k"}),
    ("ltb", {"name": "ltb"}),
    ("lora", {"name": "lora"}),
    ("lora (shared_rank: 8)", {"name": "lora", "shared_rank": 8}),
]

#: (label, LibMTL architecture, mtlzoo model.architecture) rows of the NYUv2 table: mtlzoo's
#: defaults (4 shared experts; CGC and PLE 2 shared + 1 per task, PLE 2 levels; DSelect-k
#: k = 2; LTB 2 layers), LibMTL's at the same numbers of experts (LTB: one encoder per task)
MOE_ROWS = [
    ("hps", "HPS", {"name": "hps"}),
    ("mmoe (4 experts)", "MMoE", {"name": "mmoe"}),
    ("cgc (2 shared + 1 per task)", "CGC", {"name": "cgc"}),
    ("ple (2 shared + 1 per task)", "PLE", {"name": "ple"}),
    ("dselect_k (4 experts, k 2)", "DSelect_k", {"name": "dselect_k"}),
    ("ltb", "LTB", {"name": "ltb"}),
]

#: LibMTL's NYUv2 example: 288x384 RGB inputs, three tasks with these output channels
NYU_INPUT = (3, 288, 384)
NYU_TASKS = {"segmentation": 13, "depth": 1, "normal": 3}

#: the MTAN authors' SegNet models on NYUv2 (13 classes, 3 tasks), counted from their code
SEGNET = [
    ("single-task SegNet (one task)", 24_981_069),
    ("SegNet split (hard sharing, standard)", 25_055_188),
    ("SegNet-MTAN", 44_229_076),
    ("SegNet cross-stitch", 74_941_807),
    ("SegNet dense", 123_743_995),
]


def _m(n: int) -> str:
    if n == 0:
        return "0"
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


def resnet50_encoder() -> int:
    """Parameters of a ResNet-50 without its classifier (LibMTL's ``resnet_dilated`` encoder:
    dilation changes no shape), counted from timm's ``resnet50`` built on the meta device."""
    import timm
    import torch

    with torch.device("meta"):
        model = timm.create_model("resnet50", pretrained=False, num_classes=0)
    return sum(p.numel() for p in model.parameters())


def deeplab_head(channels: int) -> int:
    """LibMTL ``examples/nyu/aspp.py`` ``DeepLabHead(2048, channels)``: ASPP (a 1x1 conv, three
    3x3 atrous convs and image pooling's 1x1 conv, 2048 -> 256 without bias, each with
    BatchNorm; a 1x1 projection 1280 -> 256 with BatchNorm), a 3x3 conv 256 -> 256 with
    BatchNorm, a 1x1 conv 256 -> ``channels`` with bias."""
    bn = 2 * 256
    aspp = (2048 * 256 + bn) + 3 * (2048 * 256 * 9 + bn) + (2048 * 256 + bn) + (5 * 256 * 256 + bn)
    return aspp + (256 * 256 * 9 + bn) + (256 * channels + channels)


def libmtl_counts(arch: str, encoder: int) -> int:
    """Total parameters of LibMTL's ``arch`` at its NYUv2 setting (see the module docstring):
    encoders, gates as their ``nn.Linear`` shapes say, decoders."""
    c, h, w = NYU_INPUT
    flat = c * h * w  # MMoE, CGC and DSelect-k gate on the flattened input image
    tasks = len(NYU_TASKS)
    decoders = sum(deeplab_head(ch) for ch in NYU_TASKS.values())
    linear = lambda i, o: i * o + o  # noqa: E731
    if arch == "HPS":
        return encoder + decoders
    if arch == "MMoE":  # experts_shared: 4 encoders; gate_specific: Linear(C*H*W, 4) per task
        return 4 * encoder + tasks * linear(flat, 4) + decoders
    if arch == "CGC":  # 2 shared + 1 per task; each gate over its 3 experts
        return (2 + tasks) * encoder + tasks * linear(flat, 3) + decoders
    if arch == "PLE":  # the same experts split by ResNet stage, a gate per task at each of 5 levels
        # gate inputs: the image, then the stem (64 x H/4 x W/4), layer1 (256 x H/4 x W/4),
        # layer2 (512 x H/8 x W/8), layer3 (1024 x H/8 x W/8; the encoder is dilated)
        sizes = [flat, 64 * h * w // 16, 256 * h * w // 16, 512 * h * w // 64, 1024 * h * w // 64]
        return (2 + tasks) * encoder + tasks * sum(linear(n, 3) for n in sizes) + decoders
    if arch == "DSelect_k":  # 4 experts: m = 2 binary digits; z logits k*m, w logits k per task
        k, m = 2, 2
        return 4 * encoder + tasks * (linear(flat, k * m) + linear(flat, k)) + decoders
    assert arch == "LTB"  # one encoder per task and alpha [6, T, T]
    return tasks * encoder + 6 * tasks * tasks + decoders


def nyuv2_counts() -> list[tuple[str, str, int, int, int]]:
    """``(label, LibMTL name, LibMTL total, mtlzoo shared, mtlzoo total)`` per :data:`MOE_ROWS`."""
    import tempfile

    from mtlzoo import Zoo
    from mtlzoo.builtin.datasets import NYUV2_FOLDERS
    from mtlzoo.builtin.datasets.layouts import write_npy

    zoo = Zoo.load(strict=True)
    encoder = resnet50_encoder()
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        root = write_npy(Path(tmp) / "nyuv2", NYUV2_FOLDERS, hw=(64, 64))
        overrides = [f"data.root={root}", "augment.crop=[64,64]", "train.device=cpu"]
        for label, libmtl, node in MOE_ROWS:
            spec = yaml.safe_load((ROOT / "configs" / "nyuv2" / "multitask.yaml").read_text())
            spec["model"]["architecture"] = node
            counts = zoo.build(spec, overrides).model.num_parameters()
            out.append((label, libmtl, libmtl_counts(libmtl, encoder), counts["shared"], counts["total"]))
    return out


def tables() -> str:
    """The three tables, in markdown."""
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
    rows = nyuv2_counts()
    lines += [
        "",
        "Mixture-of-experts architectures at LibMTL's NYUv2 setting (288x384, 3 tasks, ResNet-50):",
        "",
        "| mtlzoo | LibMTL | LibMTL total | LibMTL over HPS | mtlzoo shared | mtlzoo total | mtlzoo over hps |",
        "|---|---|---|---|---|---|---|",
    ]
    base_libmtl, base_ours = rows[0][2], rows[0][4]
    for label, libmtl, theirs, shared, total in rows:
        cells = [label, libmtl, f"{theirs:,}", f"{theirs - base_libmtl:+,}"]
        cells += [f"{shared:,}", f"{total:,}", f"{total - base_ours:+,}"]
        lines.append("| " + " | ".join(cells) + " |")
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
