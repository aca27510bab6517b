"""Is data loading ever the bottleneck? Samples per second of the loader alone vs of a training step.

For each spec it measures, on this machine:

* ``decode``: the dataset plugin alone (files -> tensors), one process;
* ``pipeline``: plus the pipeline of the train split (augmentation, derived targets,
  normalisation), one process;
* ``loader wN``: a ``DataLoader`` over the pipeline with N workers, pinned memory (on CUDA)
  and persistent workers, as the trainer builds it;
* ``train step``: forward + backward + AdamW step of a plain timm resnet18 with an FCN-like
  head per dense target (built here, so the number does not depend on the head plugins),
  on batches of the spec's shape.

Loading is not the bottleneck when ``loader`` samples/s exceeds ``train step`` samples/s
(workers prefetch while the step runs). Usage::

    python benchmarks/loader_speed.py configs/camvid/multitask.yaml --batches 20 --workers 0 2
    python benchmarks/loader_speed.py configs/camvid/multitask.yaml --out benchmarks/results/loader_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader


def _rate(n_samples: int, seconds: float) -> float:
    return n_samples / max(seconds, 1e-9)


def time_dataset(dataset: Any, n: int) -> float:
    """Samples/s of indexing ``dataset`` (first ``n`` samples, cycling), one process."""
    dataset[0]  # warm-up (file cache, lazy imports)
    t = time.perf_counter()
    for i in range(n):
        dataset[i % len(dataset)]
    return _rate(n, time.perf_counter() - t)


def time_loader(dataset: Any, batch_size: int, workers: int, batches: int, pin: bool) -> float:
    """Samples/s of a shuffling DataLoader (after its first batch: worker start-up excluded)."""
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        pin_memory=pin,
        persistent_workers=workers > 0,
        drop_last=True,
    )
    n, it = 0, iter(loader)
    next(it)
    t = time.perf_counter()
    while n < batches * batch_size:
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        n += len(batch["image"])
    return _rate(n, time.perf_counter() - t)


class PlainModel(nn.Module):
    """timm resnet18 features + one FCN-like head per dense target (3x3 conv, 1x1, upsample)."""

    def __init__(self, out_channels: dict[str, int]):
        super().__init__()
        import timm

        self.backbone = timm.create_model("resnet18", pretrained=False, features_only=True)
        c = self.backbone.feature_info.channels()[-1]
        self.heads = nn.ModuleDict(
            {
                k: nn.Sequential(
                    nn.Conv2d(c, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.Conv2d(64, oc, 1)
                )
                for k, oc in out_channels.items()
            }
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Dense predictions at input size; image-level ones pooled to ``[B, C]``."""
        f = self.backbone(x)[-1]
        out = {}
        for k, head in self.heads.items():
            y = head(f)
            out[k] = nn.functional.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out


def time_train_step(batch: dict[str, torch.Tensor], info: Any, steps: int, device: torch.device) -> float:
    """Samples/s of forward + backward + optimizer step of :class:`PlainModel` on ``batch``."""
    out_channels = {}
    for key, t in info.targets.items():
        if key in batch and t.kind in ("segmentation", "boundary", "depth", "normals", "labels", "class"):
            out_channels[key] = {
                "segmentation": max(t.num_classes, 1),
                "boundary": 1,
                "depth": 1,
                "normals": 3,
            }.get(t.kind, max(t.num_classes, 1))
    model = PlainModel(out_channels).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = {k: v.to(device) for k, v in batch.items()}

    def step() -> None:
        preds = model(batch["image"])
        loss = 0.0
        for key, p in preds.items():
            kind = info.targets[key].kind
            y = batch[key]
            if kind == "segmentation":
                loss = loss + nn.functional.cross_entropy(
                    p, y, ignore_index=info.targets[key].ignore_index or -100
                )
            elif kind in ("labels", "class"):
                pooled = p.mean(dim=(2, 3))
                loss = loss + (
                    nn.functional.binary_cross_entropy_with_logits(pooled, y)
                    if kind == "labels"
                    else nn.functional.cross_entropy(pooled, y)
                )
            else:
                loss = loss + (p - y.float()).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return _rate(steps * len(batch["image"]), time.perf_counter() - t)


def bench_spec(
    spec: str, workers: list[int], batches: int, steps: int, device: torch.device, overrides: list[str]
) -> dict[str, Any]:
    """All measurements for one spec (see the module docstring)."""
    from mtlzoo import Zoo
    from mtlzoo.zoo.build import base_dataset, build_pipeline_for

    zoo, raw = Zoo.for_spec(spec, overrides)
    cfg = zoo.spec(raw)
    train = build_pipeline_for(zoo, cfg, "train", base_dataset(zoo, cfg, "train"))
    base = train.base
    bs = int(cfg.train.batch_size)
    rows = {
        "decode": time_dataset(base, batches * bs),
        "pipeline": time_dataset(train, batches * bs),
    }
    pin = device.type == "cuda"
    for w in workers:
        rows[f"loader w{w}"] = time_loader(train, bs, w, batches, pin)
    batch = next(iter(DataLoader(train, batch_size=bs, shuffle=False)))
    rows["train step"] = time_train_step(batch, train.info, steps, device)
    return {"spec": spec, "batch_size": bs, "image": list(batch["image"].shape[1:]), "samples_per_s": rows}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one table per spec."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("specs", nargs="*", default=["configs/camvid/multitask.yaml"])
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts to time")
    p.add_argument("--batches", type=int, default=20, help="batches timed per loader measurement")
    p.add_argument("--steps", type=int, default=5, help="training steps timed")
    p.add_argument("--device", default="cpu")
    p.add_argument("--override", action="append", default=[], help="spec override key=value (repeatable)")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    results = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        },
        "runs": [],
    }
    for spec in args.specs:
        r = bench_spec(spec, args.workers, args.batches, args.steps, device, args.override)
        results["runs"].append(r)
        step = r["samples_per_s"]["train step"]
        print(f"\n{spec}  (batch {r['batch_size']}, image {r['image']}, device {device})")
        print("| stage | samples/s | x train step |\n|---|---:|---:|")
        for name, rate in r["samples_per_s"].items():
            print(f"| {name} | {rate:.1f} | {rate / step:.2f} |")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
