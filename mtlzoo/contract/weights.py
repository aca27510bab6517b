"""Weights files: read a state dict from a local file, and say how a state dict fits a module.

The one home for both jobs: backbones load user-supplied weights with :func:`read_state_dict`
and :func:`load_strict` (:func:`rename_in_order` for a state dict of another implementation
of the same network); any code comparing a state dict with a module (checkpoints) uses
:func:`mismatch` and :func:`describe_mismatch`, so every "does not fit" message reads alike.
Every path here is a local file (only timm's own loading, asked for with ``pretrained: true``,
may download: :mod:`mtlzoo.builtin.backbones.pretrained`).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from .errors import CheckpointError, one_line

#: suffix of BatchNorm's step counter, the one key a state dict may lack (loading keeps the module's)
_COUNTER = "num_batches_tracked"

#: (key, shape in the given state dict, shape in the module)
WrongShape = tuple[str, tuple[int, ...], tuple[int, ...]]


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _sample(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (", ..." if len(items) > n else "")


def read_state_dict(path: str | Path, option: str = "model.backbone.weights") -> dict[str, Tensor]:
    """Read a state dict from a local ``.safetensors`` or ``.pth``/``.pt``/``.bin``/``.ckpt`` file
    (the latter with ``torch.load(weights_only=True)``, so no code in the file runs).

    A training checkpoint that wraps the weights (``{"state_dict": ...}``, ``{"model":
    ...}``, their ``_ema`` variants) is unwrapped and a DataParallel ``module.`` prefix is
    stripped. Any problem (missing file, unknown suffix, unreadable file, no tensors
    inside) raises :class:`CheckpointError` naming the file; ``option`` is the spec key a
    user sets to name the file, quoted in the hint for a missing one."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(
            f"weights file {p} does not exist; point {option} at a local .safetensors or .pth file"
        )
    suffix = p.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(p), device="cpu")
        elif suffix in (".pth", ".pt", ".bin", ".ckpt"):
            obj = torch.load(p, map_location="cpu", weights_only=True)
        else:
            raise CheckpointError(
                f"weights file {p}: unknown format {suffix or '(no suffix)'!r}; use .safetensors, .pth or .pt"
            )
    except CheckpointError:
        raise
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"cannot read weights file {p}: not a PyTorch state dict file, or it holds "
            f"objects that torch.load(weights_only=True) refuses; save a plain state_dict"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - corrupt files raise anything
        raise CheckpointError(f"cannot read weights file {p}: {one_line(exc)}") from exc
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "state_dict_ema", "model_ema"):
            inner = obj.get(key)
            if isinstance(inner, dict) and not all(isinstance(v, Tensor) for v in obj.values()):
                obj = inner
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"weights file {p} holds no state dict (a mapping of names to tensors)")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def mismatch(
    own: Mapping[str, Tensor], given: Mapping[str, Tensor]
) -> tuple[list[str], list[str], list[WrongShape]]:
    """How the state dict ``given`` differs from ``own`` (a module's ``state_dict()``).

    Returns ``(missing, unexpected, wrong_shapes)``: keys of ``own`` absent from ``given``
    (BatchNorm's ``num_batches_tracked`` counters excepted: a file may omit them), keys of
    ``given`` absent from ``own``, and ``(key, given shape, own shape)`` for the keys in
    both whose shapes differ. All three empty: ``given`` loads into the module."""
    missing = [k for k in own if k not in given and not k.endswith(_COUNTER)]
    unexpected = [k for k in given if k not in own]
    wrong = [
        (k, tuple(v.shape), tuple(own[k].shape))
        for k, v in given.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    return missing, unexpected, wrong


def describe_mismatch(missing: list[str], unexpected: list[str], wrong_shapes: list[WrongShape]) -> str:
    """:func:`mismatch`'s result in words, a few keys of each sort quoted:
    ``2 keys missing ('a', 'b'), 1 unexpected ('c')`` and/or ``1 tensor of the wrong shape
    (conv.weight (8, 3) vs (4, 3))``, the shapes being the given one then the module's.
    Empty when nothing differs."""
    parts = []
    if missing or unexpected:
        parts.append(
            f"{_count(len(missing), 'key')} missing"
            + (f" ({_sample([repr(k) for k in missing])})" if missing else "")
        )
        parts.append(
            f"{len(unexpected)} unexpected"
            + (f" ({_sample([repr(k) for k in unexpected])})" if unexpected else "")
        )
    if wrong_shapes:
        shown = "; ".join(f"{k} {g} vs {o}" for k, g, o in wrong_shapes[:3])
        parts.append(
            f"{_count(len(wrong_shapes), 'tensor')} of the wrong shape ({shown}"
            + ("; ..." if len(wrong_shapes) > 3 else "")
            + ")"
        )
    return ", ".join(parts)


def check_fit(own: Mapping[str, Tensor], given: Mapping[str, Tensor], path: str | Path, target: str) -> None:
    """Raise :class:`CheckpointError` unless ``given`` has exactly the keys of ``own``
    (BatchNorm counters may be missing) with the same shapes; the message names the file
    ``path``, the ``target`` it was meant for, and what differs."""
    problem = describe_mismatch(*mismatch(own, given))
    if problem:
        raise CheckpointError(
            f"weights file {path} does not fit {target}: {problem}; check that the file "
            f"was saved from the same architecture"
        )


def load_strict(module: nn.Module, given: Mapping[str, Tensor], path: str | Path, target: str) -> None:
    """Load ``given`` into ``module`` after :func:`check_fit` (only BatchNorm counters may be
    missing; the module keeps its own)."""
    check_fit(module.state_dict(), given, path, target)
    module.load_state_dict(given, strict=False)


def fit_prefix(
    own: Mapping[str, Tensor], given: dict[str, Tensor], prefixes: tuple[str, ...]
) -> dict[str, Tensor]:
    """``given`` with one of ``prefixes`` stripped from (or added to) every key when that turns
    its keys into ``own``'s; ``given`` unchanged otherwise.

    A state dict of a wrapper module (``model.conv1.weight``) then loads into the wrapped
    module (``conv1.weight``) and vice versa."""
    if set(given) == set(own):
        return given
    for pre in prefixes:
        if all(k.startswith(pre) for k in given):
            stripped = {k[len(pre) :]: v for k, v in given.items()}
            if set(stripped) == set(own):
                return stripped
        added = {pre + k: v for k, v in given.items()}
        if set(added) == set(own):
            return added
    return given


def rename_in_order(
    given: Mapping[str, Tensor], own: Mapping[str, Tensor], path: str | Path, target: str
) -> dict[str, Tensor]:
    """``given``'s tensors under ``own``'s names, paired by position.

    For a state dict saved from another implementation of the same network, whose modules
    hold the same tensors in the same order under other names (``_blocks.0._bn1.weight``
    vs ``blocks.0.0.bn1.weight``). Each pair must agree in shape and in the last part of
    the name (``weight``, ``bias``, ``running_mean`` ...), so a shifted or different
    network is caught; otherwise :class:`CheckpointError` names the file ``path``, the
    ``target`` and the first pair that differs."""
    if len(given) != len(own):
        raise CheckpointError(
            f"weights file {path} does not fit {target}: it holds {_count(len(given), 'tensor')}, "
            f"{target} has {len(own)}; check that the file was saved from the same architecture"
        )
    renamed = {}
    for (g, tensor), (o, mine) in zip(given.items(), own.items()):
        if g.rsplit(".", 1)[-1] != o.rsplit(".", 1)[-1] or tuple(tensor.shape) != tuple(mine.shape):
            raise CheckpointError(
                f"weights file {path} does not fit {target} in order: its {g} {tuple(tensor.shape)} "
                f"would load into {o} {tuple(mine.shape)}; check that the file was saved from the "
                f"same architecture"
            )
        renamed[o] = tensor
    return renamed


__all__ = [
    "read_state_dict",
    "rename_in_order",
    "mismatch",
    "describe_mismatch",
    "check_fit",
    "load_strict",
    "fit_prefix",
    "WrongShape",
]
