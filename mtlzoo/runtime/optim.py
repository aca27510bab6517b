"""The optimizer: parameter groups for fine-tuning, frozen parameters, frozen BatchNorm, and
the learning-rate schedule (:func:`lr_factor`).

``train.optimizer`` options (see :class:`mtlzoo.zoo.sections.OptimizerConfig`):

* ``shared_lr_scale``: the learning rate of the shared parameters (the backbone, for hard
  sharing) is ``lr * shared_lr_scale`` — e.g. 0.1 to fine-tune a pretrained encoder gently;
* ``no_decay_norm_bias``: no weight decay on biases and normalisation weights (every
  parameter with fewer than two dimensions), as usual when fine-tuning;
* ``freeze``: shell patterns of parameter names (``backbone.model.layer1.*``) that are not
  trained at all (``mtlzoo summary SPEC`` lists the names);
* ``freeze_bn``: the shared part's BatchNorm layers keep their running statistics (they stay
  in eval mode while training).
"""

from __future__ import annotations

import fnmatch
import math
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from ..contract.errors import ConfigError


def freeze(model: nn.Module, patterns: list[str]) -> list[str]:
    """Stop training the parameters whose names match one of ``patterns``; return their names.
    A pattern that matches nothing is a :class:`ConfigError` (a typo would silently train)."""
    names = [n for n, _ in model.named_parameters()]
    frozen = []
    for pattern in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            close = [n for n in names if n.split(".")[0] == pattern.split(".")[0]][:3]
            raise ConfigError(
                f"train.optimizer.freeze: {pattern!r} matches no parameter"
                + (f" (names look like {', '.join(close)})" if close else "")
                + "; `mtlzoo summary SPEC` lists the parameter names"
            )
        frozen += hits
    for name, p in model.named_parameters():
        if name in frozen:
            p.requires_grad_(False)
    return sorted(set(frozen))


def _shared_ids(model: nn.Module) -> set[int]:
    """Ids of the model's shared parameters (none for a model that declares none)."""
    shared = getattr(model, "shared_parameters", None)
    return {id(p) for p in shared()} if callable(shared) else set()


def shared_batchnorms(model: nn.Module) -> list[nn.Module]:
    """The BatchNorm layers that hold only shared parameters (kept in eval mode with ``freeze_bn``)."""
    shared = _shared_ids(model)
    out: list[nn.Module] = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters(recurse=False))
            if not params or all(id(p) in shared for p in params):
                out.append(m)
    return out


def build_optimizer(cfg: DictConfig, model: nn.Module, combiner: nn.Module) -> torch.optim.Optimizer:
    """AdamW or SGD over the model's trainable parameters (and the combiner's learnable
    weights), in groups: shared / task parameters (``shared_lr_scale``), with or without weight
    decay (``no_decay_norm_bias``). Applies ``freeze`` first."""
    o = cfg.train.optimizer
    freeze(model, list(o.freeze))
    shared = _shared_ids(model)
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for p in model.parameters():
        if p.requires_grad:
            decay = not (o.no_decay_norm_bias and p.ndim < 2)
            groups.setdefault((id(p) in shared, decay), []).append(p)
    extra = [p for p in combiner.parameters() if p.requires_grad]
    param_groups: list[dict[str, Any]] = []
    for (is_shared, decay), params in groups.items():
        param_groups.append(
            {
                "params": params,
                "lr": o.lr * (o.shared_lr_scale if is_shared else 1.0),
                "weight_decay": o.weight_decay if decay else 0.0,
            }
        )
    if extra:
        param_groups.append({"params": extra, "lr": o.lr, "weight_decay": o.weight_decay})
    # on CUDA, the fused kernels: one launch for the whole update instead of several per tensor
    fused = fused_kernels([p for group in param_groups for p in group["params"]]) or None
    if o.name == "adamw":
        betas = tuple(o.betas)
        return torch.optim.AdamW(param_groups, lr=o.lr, weight_decay=o.weight_decay, betas=betas, fused=fused)
    return torch.optim.SGD(
        param_groups,
        lr=o.lr,
        weight_decay=o.weight_decay,
        momentum=o.momentum,
        nesterov=o.nesterov,
        fused=fused,
    )


def fused_kernels(params: list[Any]) -> bool:
    """Whether the optimizer uses PyTorch's fused kernels: when every parameter is on a CUDA
    device (they exist for CUDA; on CPU the per-tensor loop is kept, so CPU runs are unchanged)."""
    return bool(params) and all(p.device.type == "cuda" for p in params)


def lr_factor(cfg: DictConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Learning-rate multiplier at optimisation ``step``: linear warm-up, then the schedule."""
    s = cfg.train.scheduler
    warmup = int(round(s.warmup_epochs * steps_per_epoch))
    if warmup and step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total_steps - warmup)
    base = cfg.train.optimizer.lr
    if s.name == "cosine":
        floor = s.min_lr / base
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    if s.name == "step":
        return s.gamma ** ((step // steps_per_epoch) // max(1, s.step_epochs))
    if s.name == "poly":
        return (1 - min(t, 1.0)) ** s.power
    return 1.0


__all__ = ["build_optimizer", "freeze", "fused_kernels", "lr_factor", "shared_batchnorms"]
