"""Base rates of a bench's image-level labels: per class, the fraction of images of each split
whose (derived) label is 1, as the model sees them (after resize and the centre crop of
val/test; train crops are random, so its rates vary a little from run to run).

A label that is 1 (or 0) in every image of the split that selects checkpoints cannot move its
metric there: this script shows which labels can.

    python benchmarks/label_base_rates.py benchmarks/specs/camvid_pretrained.yaml
    python benchmarks/label_base_rates.py configs/camvid/lite0.yaml --task labels
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def rates(exp, task: str, split: str) -> tuple[int, torch.Tensor]:
    """``(images, fraction of them with each label)`` of ``task`` on ``split``."""
    dataset = exp.dataset(split)
    target = exp.tasks[task].target
    labels = torch.stack([dataset[i][target].float() for i in range(len(dataset))])
    return len(dataset), (labels > 0.5).double().mean(0)


def main() -> None:
    """Print the base rates of every split as a markdown table."""
    import mtlzoo

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", help="an experiment spec, or a bench spec (its base with its overrides)")
    p.add_argument("--task", default="labels", help="the image-level task (default: labels)")
    p.add_argument("--splits", nargs="+", default=["train", "val", "test"])
    args = p.parse_args()
    import yaml

    raw = yaml.safe_load(Path(args.spec).read_text())
    spec, overrides = Path(args.spec), []
    if isinstance(raw, dict) and "base" in raw and "grid" in raw:  # a bench spec
        spec, overrides = (spec.parent / raw["base"]).resolve(), list(raw.get("overrides") or [])
    # the weights do not change the targets: skip loading them
    exp = mtlzoo.build(spec, [*overrides, "train.progress=false", "model.backbone.weights=null"])
    names = exp.tasks[args.task].info.class_names
    print(
        f"Base rates of `{args.task}` ({args.spec}{': its base with its overrides' if overrides else ''}):\n"
    )
    print("| split | images | " + " | ".join(names) + " |")
    print("|" + "---|" * (len(names) + 2))
    for split in args.splits:
        n, r = rates(exp, args.task, split)
        print(f"| {split} | {n} | " + " | ".join(f"{v:.2f}" for v in r.tolist()) + " |")


if __name__ == "__main__":
    main()
