"""Option schemas of a spec's fixed sections (``train``, ``augment``, ``model``, ``plugins``).

Declared once, with the same :func:`~mtlzoo.contract.options.option` bounds as any plugin's
options; ``mtlzoo config show`` prints them with every default filled in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from ..contract.options import option

RUN_NAME = re.compile(r"[^/\\\x00\s][^/\\\x00]*")

# Upper bounds of the integer options: far beyond any real run, low enough that a typo such as
# 10**30 is refused in one line instead of failing deep inside torch or the data loader.
#: epochs, and every option counted in epochs
MAX_EPOCHS = 100_000
#: samples in one batch
MAX_BATCH = 65_536
#: optimisation steps (per epoch, or skipped in a row)
MAX_STEPS = 1_000_000_000
#: pixels along one side of an image (crop, resize)
MAX_SIDE = 16_384


def check_file_name(value: str | None, key: str) -> None:
    """Run names become folder names: one path component (no separators, not ``.`` or ``..``)."""
    if value is not None and (
        not RUN_NAME.fullmatch(value) or value in (".", "..") or value != value.strip()
    ):
        raise ValueError(
            f"{key}: {value!r} must be a plain folder name (one path component: no slashes, not "
            f"'..'), so the run stays inside train.out_dir"
        )


@dataclass
class OptimizerConfig:
    """``train.optimizer``.

    Attributes:
        name: ``adamw`` or ``sgd``.
        lr: learning rate.
        weight_decay: decoupled (adamw) or L2 (sgd) weight decay.
        momentum: sgd only.
        betas: adamw only.
        nesterov: sgd only.
        shared_lr_scale: the shared parameters' learning rate is ``lr * shared_lr_scale``
            (e.g. 0.1 to fine-tune a pretrained backbone gently).
        no_decay_norm_bias: no weight decay on biases and normalisation weights.
        freeze: shell patterns of parameter names not to train (``backbone.model.layer1.*``).
        freeze_bn: the shared part's BatchNorm layers keep their running statistics.
    """

    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = option(1e-3, gt=0)
    weight_decay: float = option(1e-4, ge=0)
    momentum: float = option(0.9, ge=0, lt=1)
    betas: tuple[float, float] = option((0.9, 0.999), ge=0, lt=1)
    nesterov: bool = False
    shared_lr_scale: float = option(1.0, gt=0)
    no_decay_norm_bias: bool = False
    freeze: list[str] = field(default_factory=list)
    freeze_bn: bool = False


@dataclass
class SchedulerConfig:
    """``train.scheduler``: ``cosine``, ``step``, ``poly`` or ``none``, with optional linear warm-up.

    Attributes:
        warmup_epochs: linear warm-up length (fractions allowed).
        min_lr: cosine floor (absolute learning rate).
        step_epochs, gamma: step schedule: multiply by ``gamma`` every ``step_epochs``.
        power: poly schedule exponent.
    """

    name: Literal["cosine", "step", "poly", "none"] = "cosine"
    warmup_epochs: float = option(0.0, ge=0)
    min_lr: float = option(0.0, ge=0)
    step_epochs: int = option(30, ge=1, le=MAX_EPOCHS)
    gamma: float = option(0.1, gt=0)
    power: float = option(0.9, gt=0)


@dataclass
class TrainConfig:
    """``train``: the optimisation loop, evaluation, checkpoints and run directory.

    Attributes:
        amp: ``off``, ``bf16`` or ``auto`` (bf16 on a CUDA device that supports it, else off).
            fp16 is refused: combiners own the backward pass, so nothing scales the loss and
            small gradients would underflow.
        nonfinite: what a step with a NaN or infinite loss or gradient does: ``stop`` (one line
            naming the task and the last good checkpoint) or ``skip`` (the update is dropped
            and counted in metrics.jsonl; ``max_skips`` in a row stop the run).
        num_workers: data loader worker processes; ``null`` (auto): on CUDA the process's
            share of the cores (at most 8), on CPU 0 (workers contend with the step for the
            cores). See :mod:`mtlzoo.runtime.loading`.
        pin_memory: ``null``: on when training on CUDA.
        cache: keep decoded (and resized) samples in memory, so files are decoded and
            procedural scenes rendered once, not every epoch: ``auto`` (when the dataset is
            cacheable and a split fits in a quarter of the memory, at most 8 GiB), ``on``,
            ``off``. Results are the same either way.
        channels_last: the images and the model in channels-last memory layout (faster
            convolutions with cuDNN, above all in bf16); ``null``: on for CUDA, off for CPU.
        deterministic: PyTorch's deterministic algorithms; ``null``: on for CPU (where they
            cost nothing measurable and a seed reproduces a run exactly), off for CUDA (where
            they forbid cuDNN's autotuner). See :mod:`mtlzoo.runtime.process`.
        select: ``task.metric`` choosing the best checkpoint on ``eval_split`` (default:
            the first task's first metric).
        run_name: the run folder's name under ``out_dir`` (default: the spec's ``name``).
        progress: a progress bar of the steps of each epoch. The line each finished epoch
            prints (epoch, losses, validation metrics, where the time went, ETA of the run)
            is printed either way.
        tensorboard: event files in ``<run>/tensorboard`` (``auto``: when the tensorboard
            package is installed); pictures of predictions every ``tensorboard_images_every``
            epochs.
    """

    epochs: int = option(10, ge=1, le=MAX_EPOCHS)
    batch_size: int = option(16, ge=1, le=MAX_BATCH)
    eval_batch_size: Optional[int] = option(None, ge=1, le=MAX_BATCH)
    num_workers: Optional[int] = option(None, ge=0, le=256)
    pin_memory: Optional[bool] = None
    cache: Literal["auto", "on", "off"] = "auto"
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    device: str = "auto"
    amp: Literal["off", "bf16", "fp16", "auto"] = "off"
    channels_last: Optional[bool] = None
    compile: bool = False
    grad_clip: Optional[float] = option(None, gt=0)
    nonfinite: Literal["stop", "skip"] = "stop"
    max_skips: int = option(10, ge=1, le=MAX_STEPS)
    eval_every: int = option(1, ge=1, le=MAX_EPOCHS)
    eval_split: str = "val"
    test_split: Optional[str] = None
    checkpoint_every: int = option(1, ge=1, le=MAX_EPOCHS)
    max_steps_per_epoch: Optional[int] = option(None, ge=1, le=MAX_STEPS)
    select: Optional[str] = None
    out_dir: str = "runs"
    run_name: Optional[str] = None
    progress: bool = True
    tensorboard: Literal["auto", "on", "off"] = "auto"
    tensorboard_images_every: int = option(1, ge=1, le=MAX_EPOCHS)
    deterministic: Optional[bool] = None

    def check(self) -> None:
        """The device spelling and a usable run name."""
        if not (self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device)):
            raise ValueError(f"device: {self.device!r} is not auto, cpu, cuda or cuda:N")
        check_file_name(self.run_name, "run_name")
        if self.amp == "fp16":
            raise ValueError(
                "amp: fp16 is refused: combiners own the backward pass, so nothing scales the loss and small "
                "gradients underflow; use bf16 (or auto)"
            )


@dataclass
class AugmentConfig:
    """``augment``: what the data pipeline does to every training sample (and, for
    ``resize`` and ``crop``, to every sample).

    Attributes:
        hflip: probability of a horizontal flip (train only).
        scale: ``[lo, hi]``: resize by a factor drawn uniformly from this range (train only).
        crop: ``[H, W]``: random crop on the train split, center crop on the others (padded
            with each target's fill where the image is smaller).
        resize: ``[H, W]``: resize every sample first (all splits).
        color_jitter: strength of brightness/contrast/saturation jitter (train only, image only).
    """

    hflip: float = option(0.0, ge=0, le=1)
    scale: Optional[tuple[float, float]] = option(None, gt=0)
    crop: Optional[tuple[int, int]] = option(None, ge=1, le=MAX_SIDE)
    resize: Optional[tuple[int, int]] = option(None, ge=1, le=MAX_SIDE)
    color_jitter: float = option(0.0, ge=0)

    def check(self) -> None:
        """``scale`` is an interval."""
        if self.scale is not None and self.scale[0] > self.scale[1]:
            raise ValueError(f"scale: give [lo, hi] with lo <= hi, got {list(self.scale)}")


@dataclass
class ModelConfig:
    """``model``.

    Attributes:
        backbone: the shared backbone (a plugin node, required).
        normalize: how the model normalises its input images (its first operation):
            ``auto`` (the backbone's expected statistics when it declares them, e.g. for
            pretrained weights, else the dataset's, else ImageNet's), ``backbone``,
            ``dataset``, ``imagenet`` or ``none``.
        architecture: how backbone and heads form the model (a plugin node, ``mtlzoo list
            architecture``); ``null``: hard parameter sharing, one backbone feeding every head.
    """

    backbone: Any = None
    architecture: Any = None
    normalize: Literal["auto", "backbone", "dataset", "imagenet", "none"] = "auto"


@dataclass
class PluginsConfig:
    """``plugins``: plugin names to block (like ``MTLZOO_BLOCK_PLUGINS``) and strict loading."""

    block: list[str] = field(default_factory=list)
    strict: bool = False


@dataclass
class ExperimentConfig:
    """The whole spec. ``model.backbone``, ``tasks``, ``combiner`` and ``data`` hold plugin
    nodes, validated against the options of the part each names; all four are required (the
    core has no favourite parts)."""

    name: str = "experiment"
    seed: int = option(0, ge=0, lt=2**63)
    model: ModelConfig = field(default_factory=ModelConfig)
    tasks: dict[str, Any] = field(default_factory=dict)
    combiner: Any = None
    data: Any = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    plugins: PluginsConfig = field(default_factory=PluginsConfig)

    def check(self) -> None:
        """The name doubles as the default run folder name."""
        check_file_name(self.name, "name")


#: keys that moved: a spec that still uses one gets a line naming the new place
MOVED = {
    "augment.normalize": "model.normalize (the model normalises its input, from the backbone's or the "
    "dataset's statistics)"
}

__all__ = [
    "ExperimentConfig",
    "TrainConfig",
    "OptimizerConfig",
    "SchedulerConfig",
    "AugmentConfig",
    "ModelConfig",
    "PluginsConfig",
    "MOVED",
    "check_file_name",
]
