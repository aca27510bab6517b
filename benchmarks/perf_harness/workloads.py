"""The timed workloads: the Trainer's step on a fixed batch, the hand-written baseline loop over
an identical network, reference workloads (matmul, plain ResNet-18, the backbone alone), and the
profilers that attribute a step's time."""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from collections.abc import Callable
from typing import Any, Optional

import torch
from torch import Tensor, nn

from perf_harness.plan import Plan, sync_fn
from perf_harness.stats import categorize_op, matmul_flops


def build_trainer(spec: str, overrides: list[str]) -> Any:
    """A Trainer (writing nothing) for ``spec`` with ``overrides``."""
    from mtlzoo import Zoo
    from mtlzoo.runtime.train import Trainer

    zoo, raw = Zoo.for_spec(spec, overrides)
    trainer = Trainer(zoo.build(raw))
    # process-global settings as this Trainer left them, restored before each of its steps
    trainer.bench_fill_uninitialized = bool(torch.utils.deterministic.fill_uninitialized_memory)
    return trainer


def base_overrides(spec: str, plan: Plan, extra: list[str]) -> list[str]:
    """Overrides that size the workload: batch, and for the ``shapes`` dataset image size and a
    small train split (one batch is all that is used)."""
    from mtlzoo.zoo.spec import read_spec

    # one batch is all the loop reads: no loader workers to start (auto starts them on CUDA)
    out = ["train.progress=false", f"train.batch_size={plan.batch_size}", "train.num_workers=0"]
    raw = read_spec(spec, extra)
    if str(raw.get("data", {}).get("name", "")) == "shapes":
        s = plan.image_size
        out += [
            f"data.size=[{s},{s}]",
            f"data.train_size={2 * plan.batch_size}",
            "data.val_size=8",
            "data.test_size=8",
        ]
    return out + list(extra)


def fixed_batch(trainer: Any) -> dict[str, Any]:
    """One training batch, moved to the trainer's device once, as the Trainer's own copy leaves it
    (the image channels-last when the trainer uses that layout), so that both loops measure the
    step, not the host-to-device copy or a layout conversion one of them would pay per step."""
    from mtlzoo.runtime.loading import to_device

    batch = next(iter(trainer.train_loader))
    out = to_device(batch, trainer.device, trainer.channels_last)
    sync_fn(trainer.device)()  # the copies were non_blocking
    return out


def batch_for(trainer: Any, batch: dict[str, Any]) -> dict[str, Any]:
    """``batch`` with its image in ``trainer``'s memory layout (channels-last or NCHW): what the
    Trainer's own copy gives it, so an option that changes the layout is measured with it."""
    layout = torch.channels_last if trainer.channels_last else torch.contiguous_format
    return {**batch, "image": batch["image"].contiguous(memory_format=layout)}


def trainer_step(
    trainer: Any, batch: dict[str, Any], fill_uninitialized: Optional[bool] = None
) -> Callable[[], Any]:
    """``Trainer.train_step`` on ``batch`` under the process-global settings this trainer asked
    for: deterministic algorithms as its process set-up resolved ``train.deterministic`` (auto: on
    for CPU, off for CUDA) and cuDNN's autotuner with them (set process-wide when a Trainer is
    built and never reset, so several Trainers in one process would otherwise share the last
    one's), and
    ``torch.utils.deterministic.fill_uninitialized_memory`` as the Trainer left it (or as given:
    PyTorch's default is on, which in deterministic mode NaN-fills every new tensor)."""
    from mtlzoo.runtime.process import set_determinism

    deterministic = trainer.process.deterministic  # train.deterministic as resolved for the device
    if fill_uninitialized is None:
        fill_uninitialized = getattr(trainer, "bench_fill_uninitialized", True)

    def step() -> Any:
        # deterministic algorithms and, on CUDA, cuDNN's autotuner as this trainer's process set-up
        # chose them (another trainer in this process may have switched them)
        set_determinism(deterministic, trainer.device)
        torch.utils.deterministic.fill_uninitialized_memory = fill_uninitialized
        return trainer.train_step(batch)

    return step


class HandLoop:
    """The baseline: the same network trained by a minimal hand-written PyTorch loop.

    ``forward -> sum of the task losses -> backward -> AdamW step -> zero_grad``, nothing
    else (no learning-rate schedule, no finiteness checks, no logging, no host syncs).

    Args:
        model: a :class:`~mtlzoo.runtime.model.MultiTaskModel` (an identical copy of the trainer's).
        losses: task name -> (loss module, target key in the batch).
        lr, weight_decay, betas: AdamW hyper-parameters (those of the trainer).
    """

    def __init__(
        self,
        model: nn.Module,
        losses: dict[str, tuple[nn.Module, str]],
        lr: float,
        weight_decay: float,
        betas: tuple[float, float],
        amp_dtype: Optional[torch.dtype] = None,
    ):
        self.model = model
        self.losses = losses
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=betas)
        self.amp_dtype = amp_dtype
        self.device_type = next(model.parameters()).device.type
        self.model.train()

    def step(self, batch: dict[str, Tensor]) -> None:
        """One optimisation step on ``batch`` (the forward under autocast when ``amp_dtype`` is
        set, as the Trainer's; the losses in fp32, as the Trainer's)."""
        images = batch["image"]
        size = tuple(images.shape[-2:])
        autocast = (
            contextlib.nullcontext()
            if self.amp_dtype is None
            else torch.autocast(self.device_type, dtype=self.amp_dtype)
        )
        with autocast:
            features = self.model.backbone(self.model.normalize(images))
            preds = {name: self.model.heads[name](features, size) for name in self.losses}
        loss = sum(fn(preds[name].float(), batch[key]) for name, (fn, key) in self.losses.items())
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def hand_loop_for(trainer: Any) -> HandLoop:
    """A HandLoop over a deep copy of the trainer's model (identical weights, device and memory
    layout), with the trainer's loss modules, optimizer settings at its current learning rate and
    autocast dtype: what a good hand-written loop on that device does, so the comparison is the
    framework's cost alone."""
    o = trainer.cfg.train.optimizer
    if o.name != "adamw":
        raise SystemExit("the hand-written baseline uses AdamW; run with train.optimizer.name=adamw")
    model = copy.deepcopy(trainer.model)
    losses = {name: (task.loss, task.target) for name, task in trainer.tasks.items()}
    lr = trainer.optimizer.param_groups[0]["lr"]
    return HandLoop(model, losses, lr, o.weight_decay, tuple(o.betas), trainer.amp_dtype)


def step_memory(fn: Callable[[], Any], device: torch.device) -> Optional[int]:
    """Bytes one call of ``fn`` needs on the device on top of what is allocated before it (the CUDA
    allocator's peak; the caching allocator's free blocks do not count); ``None`` off CUDA."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - before)


def max_param_diff(a: nn.Module, b: nn.Module) -> float:
    """Largest absolute difference between the parameters of two identically shaped modules."""
    with torch.no_grad():
        return max(float((p - q).abs().max()) for p, q in zip(a.parameters(), b.parameters()))


def matmul_fn(n: int, dtype: torch.dtype, device: torch.device) -> tuple[Callable[[], Any], int]:
    """A dense ``n x n`` matmul step and its FLOPs."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    return (lambda: torch.mm(a, b, out=out)), matmul_flops(n, n, n)


def resnet18_fn(batch: int, size: int, device: torch.device) -> Callable[[], Any]:
    """Forward+backward of a plain timm ResNet-18 classifier (random init, cross-entropy)."""
    import timm

    model = timm.create_model("resnet18", pretrained=False).to(device).train()
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)

    def step() -> None:
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        model.zero_grad(set_to_none=True)

    return step


def backbone_fn(trainer: Any, batch: dict[str, Tensor]) -> Callable[[], Any]:
    """Forward+backward of the trainer's backbone alone (a copy) with a dummy loss on its maps."""
    backbone = copy.deepcopy(trainer.model.backbone).train()
    images = batch["image"]

    def step() -> None:
        loss = sum(f.float().mean() for f in backbone(images))
        loss.backward()
        backbone.zero_grad(set_to_none=True)

    return step


def profile_step(fn: Callable[[], Any], device: torch.device, steps: int) -> dict[str, float]:
    """Self time (seconds per step) of each operator category while running ``fn``."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync = sync_fn(device)
    sync()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            fn()
        sync()
    out: dict[str, float] = {}
    for ev in prof.key_averages():
        if device.type == "cuda":
            us = getattr(ev, "self_device_time_total", None)
            if us is None:
                us = getattr(ev, "self_cuda_time_total", 0.0)
        else:
            us = ev.self_cpu_time_total
        if us:
            cat = categorize_op(ev.key)
            out[cat] = out.get(cat, 0.0) + us / 1e6 / steps
    return out


# the Trainer's per-step work that the hand-written loop does not do: (file suffix, function)
FRAMEWORK_ONLY: tuple[tuple[str, str], ...] = (
    ("mtlzoo/runtime/loading.py", "to_device"),
    ("mtlzoo/contract/combine.py", "__init__"),  # Step(...)
    ("mtlzoo/contract/combine.py", "stack"),
    ("mtlzoo/contract/combine.py", "sync_gradients"),
    ("mtlzoo/contract/combine.py", "_reset"),
    ("mtlzoo/contract/model.py", "shared_parameters"),
    ("mtlzoo/contract/model.py", "task_parameters"),
    ("torch/optim/lr_scheduler.py", "step"),  # LambdaLR.step
    ("torch/nn/modules/module.py", "train"),  # model.train() every step
)
# functions that also run the shared work (forward, backward, AdamW): only their own time counts
FRAMEWORK_OWN: tuple[tuple[str, str], ...] = (
    ("mtlzoo/runtime/train.py", "train_step"),
    ("mtlzoo/runtime/train.py", "compute_losses"),
    ("mtlzoo/builtin/combiners/basic.py", "backward"),
    ("mtlzoo/contract/combine.py", "backward"),
)
# C methods behind the finiteness check and loss logging (one host copy of the stacked losses per step)
FRAMEWORK_BUILTINS = ("isfinite", "'tolist'", "'cpu'", "__float__")


def cprofile_framework(fn: Callable[[], Any], steps: int) -> list[tuple[str, float, float, float]]:
    """cProfile ``steps`` calls of ``fn``; return ``(function, calls/step, own s/step, counted
    s/step)`` for the work the Trainer does beyond the hand-written loop: cumulative time of
    :data:`FRAMEWORK_ONLY` and :data:`FRAMEWORK_BUILTINS`, own time of :data:`FRAMEWORK_OWN`."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        fn()
    prof.disable()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    rows = []
    for (path, line, func), (_, calls, tottime, cumtime, _) in stats.items():
        path = path.replace(os.sep, "/")
        label = f"{'/'.join(path.split('/')[-2:])}:{line} {func}"
        if any(path.endswith(f) and func == n for f, n in FRAMEWORK_ONLY):
            rows.append((label, calls / steps, tottime / steps, cumtime / steps))
        elif any(path.endswith(f) and func == n for f, n in FRAMEWORK_OWN):
            rows.append((label + " (own code only)", calls / steps, tottime / steps, tottime / steps))
        elif path == "~" and any(b in func for b in FRAMEWORK_BUILTINS):
            rows.append((func, calls / steps, tottime / steps, cumtime / steps))
    rows.sort(key=lambda r: -r[3])
    return rows


def time_framework_pieces(trainer: Any, batch: dict[str, Tensor], reps: int = 50) -> dict[str, float]:
    """Seconds per step of each piece of work the Trainer adds to the baseline, timed directly
    (no profiler inflation), on the trainer's own model and a forward of ``batch``."""
    from mtlzoo.contract.combine import Step

    model = trainer.model
    with torch.no_grad():
        features = [f.detach().requires_grad_() for f in model.encode(batch["image"][:2])]
    losses = {t: features[-1].float().mean() for t in trainer.tasks}
    dummy = torch.optim.AdamW([torch.zeros(1, requires_grad=True)])
    sched = torch.optim.lr_scheduler.LambdaLR(dummy, trainer.scheduler.lr_lambdas[0])

    def step_object() -> None:
        Step(
            losses,
            features,
            model.shared_parameters(),
            {t: model.task_parameters(t) for t in trainer.tasks},
            step=0,
            epoch=0,
        )

    def checks_and_floats() -> None:  # what train_step does: one host copy, then plain floats
        host = torch.stack([v.detach().float() for v in losses.values()]).cpu().tolist()
        if not all(math.isfinite(v) for v in host):
            raise AssertionError("unreachable")
        dict(zip(losses, host))

    pieces = {
        "model.train()": model.train,
        "Step(...) incl. parameter lists": step_object,
        "losses to the host once + finiteness check": checks_and_floats,
        "losses stacked and summed (combiner sum)": lambda: torch.stack(list(losses.values())).sum(),
        "LambdaLR.step()": sched.step,
    }
    sync = sync_fn(trainer.device)
    out = {}
    for name, fn in pieces.items():
        fn()
        sync()  # on CUDA a piece's time includes its kernels, not only their launch
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        sync()
        out[name] = (time.perf_counter() - t0) / reps
    return out
