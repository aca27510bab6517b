"""Checkpoints: safetensors for tensors, JSON for everything else, written atomically.

A checkpoint is a folder::

    weights.safetensors    model.* and combiner.* tensors (what `mtlzoo eval` needs)
    optimizer.safetensors  optimizer moment tensors (resume only)
    state.json             epoch, step, optimizer param groups, scheduler, RNG states, metrics

It is written to a temporary sibling folder and renamed into place, so an interrupted
save never leaves a half-written checkpoint behind the name.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..contract.errors import CheckpointError
from .weights import describe_mismatch, mismatch

WEIGHTS = "weights.safetensors"
OPTIMIZER = "optimizer.safetensors"
STATE = "state.json"


def _tensors(module: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage: clone into contiguous, independent CPU tensors
    return {f"{prefix}{k}": v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as JSON-ready values."""
    np_state = np.random.get_state()
    state = {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state((npst[0], np.array(npst[1], dtype=np.uint32), npst[2], npst[3], npst[4]))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def _optimizer_split(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in sd["state"].items():
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value.detach().to("cpu").contiguous().clone()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    combiner: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    state: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint folder at ``path`` atomically and return it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    weights = _tensors(model, "model.")
    if combiner is not None:
        weights.update(_tensors(combiner, "combiner."))
    save_file(weights, str(tmp / WEIGHTS), metadata={"format": "mtlzoo-checkpoint-1"})
    meta: dict[str, Any] = dict(state or {})
    if optimizer is not None:
        tensors, opt_meta = _optimizer_split(optimizer)
        save_file(tensors, str(tmp / OPTIMIZER))
        meta["optimizer"] = opt_meta
    if scheduler is not None:
        meta["scheduler"] = scheduler.state_dict()
    meta["rng"] = rng_state()
    (tmp / STATE).write_text(json.dumps(meta, indent=1, default=_json_default))
    old = path.with_name(f".{path.name}.old")
    if path.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(path, old)
    os.replace(tmp, path)
    if old.exists():
        shutil.rmtree(old)
    return path


def _json_default(value: Any) -> Any:
    if torch.is_tensor(value):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint's state.json")


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a checkpoint folder, its weights file, or a run folder (-> its best, else last)."""
    path = Path(path)
    if path.is_file() and path.name == WEIGHTS:
        path = path.parent
    if (path / "checkpoints").is_dir():
        for name in ("best", "last"):
            if (path / "checkpoints" / name / WEIGHTS).is_file():
                return path / "checkpoints" / name
    if (path / WEIGHTS).is_file():
        return path
    if not path.exists():
        raise CheckpointError(
            f"checkpoint {str(path)!r} not found; give a run folder or its checkpoints/<name> folder"
        )
    raise CheckpointError(f"{str(path)!r} holds no {WEIGHTS}; give a run folder or a checkpoint folder")


def read_state(path: str | Path) -> dict[str, Any]:
    """The JSON state of a checkpoint folder."""
    path = resolve_checkpoint(path)
    try:
        return json.loads((path / STATE).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path / STATE}: missing; the checkpoint is incomplete") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path / STATE}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def _load_tensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(file))
    except FileNotFoundError:
        raise CheckpointError(f"{file}: missing; the checkpoint is incomplete") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{file}: not a readable safetensors file ({exc}); the checkpoint is damaged"
        ) from None


def _load_module(module: nn.Module, tensors: dict[str, torch.Tensor], prefix: str, file: Path) -> None:
    """Load the ``prefix`` tensors into ``module``; any difference is one line naming the file.

    Loading goes through ``load_state_dict`` itself, so modules that rename keys of older
    layouts (the fusion heads) or resize lazy buffers (combiners) get to do so first."""
    sub = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    what = prefix.rstrip(".")
    advice = "use the spec the run was trained with (its config.yaml)"
    try:
        result = module.load_state_dict(sub, strict=False)
    except RuntimeError:  # shapes differ
        _, _, shapes = mismatch(module.state_dict(), sub)
        raise CheckpointError(
            f"{file}: does not match the {what} built from this spec "
            f"({describe_mismatch([], [], [(prefix + k, g, o) for k, g, o in shapes])}); "
            f"{advice}"
        ) from None
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"{file}: does not match the {what} built from this spec "
            f"({describe_mismatch(missing, list(result.unexpected_keys), [])}); {advice}"
        )


def load_weights(path: str | Path, model: nn.Module, combiner: nn.Module | None = None) -> Path:
    """Load model (and combiner) weights from a checkpoint; return the checkpoint folder."""
    folder = resolve_checkpoint(path)
    tensors = _load_tensors(folder / WEIGHTS)
    _load_module(model, tensors, "model.", folder / WEIGHTS)
    if combiner is not None and combiner.state_dict():
        _load_module(combiner, tensors, "combiner.", folder / WEIGHTS)
    return folder


def load_training_state(
    path: str | Path, optimizer: torch.optim.Optimizer, scheduler: Any = None
) -> dict[str, Any]:
    """Restore optimizer, scheduler and RNG states; return the JSON state."""
    folder = resolve_checkpoint(path)
    state = read_state(folder)
    if "optimizer" in state:
        tensors = _load_tensors(folder / OPTIMIZER)
        opt_state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            pid, name = key.split(".", 1)
            opt_state.setdefault(int(pid), {})[name] = value
        for pid, scalars in state["optimizer"]["scalars"].items():
            opt_state.setdefault(int(pid), {}).update(scalars)
        try:
            optimizer.load_state_dict(
                {"state": opt_state, "param_groups": state["optimizer"]["param_groups"]}
            )
        except (ValueError, KeyError) as exc:
            raise CheckpointError(
                f"{folder / OPTIMIZER}: does not match this model's optimizer ({exc})"
            ) from None
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    if "rng" in state:
        set_rng_state(state["rng"])
    return state
