"""Checkpoints: safetensors for tensors, JSON for everything else, written atomically.

A checkpoint is a folder::

    weights.safetensors    model.* and combiner.* tensors (what `mtlzoo eval` needs)
    optimizer.safetensors  optimizer moment tensors (resume only)
    state.json             epoch, step, optimizer param groups, scheduler, RNG states, metrics,
                           and the SHA-256 of each .safetensors file ("checksums")

It is written to a temporary sibling folder and renamed into place, so an interrupted
save never leaves a half-written checkpoint behind the name. Loading checks each weights file
against the checksum recorded when it was saved: a byte changed on disk or in a copy is one
line naming the file, never weights that load silently with other values (checkpoints saved
before checksums were recorded load unchecked).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..contract.errors import CheckpointError, one_line
from .files import json_safe, write_atomic
from .weights import describe_mismatch, mismatch

WEIGHTS = "weights.safetensors"
OPTIMIZER = "optimizer.safetensors"
STATE = "state.json"
CHECKSUMS = "checksums"


def sha256(file: str | Path) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(folder: str | Path, name: str, state: dict[str, Any] | None = None) -> None:
    """Raise :class:`CheckpointError` when ``folder/name`` differs from the SHA-256 that
    ``state.json`` recorded for it at save (nothing to check in checkpoints saved without one)."""
    folder = Path(folder)
    if state is None:
        if not (folder / STATE).is_file():
            return  # a bare weights file (copied without its state.json) has nothing to check against
        state = read_state(folder)
    recorded = state.get(CHECKSUMS)
    want = recorded.get(name) if isinstance(recorded, dict) else None
    if want is None or not (folder / name).is_file():
        return  # a missing file is reported by the loader that needs it
    got = sha256(folder / name)
    if got != want:
        raise CheckpointError(
            f"{folder / name}: damaged, its bytes differ from those saved (SHA-256 {got[:12]}..., "
            f"{STATE} recorded {str(want)[:12]}...); load another checkpoint of the run (checkpoints/best "
            f"or last) or a backup copy"
        )


def _tensors(module: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage: clone into contiguous, independent CPU tensors
    return {f"{prefix}{k}": v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as JSON-ready values."""
    np_state = cast(tuple[Any, ...], np.random.get_state())  # numpy's default: the legacy tuple
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


def _finite_or_raise(tensors: dict[str, torch.Tensor], what: str, consequence: str) -> None:
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise NonFiniteWeights(
            f"{what}: {len(bad)} of {len(tensors)} tensors hold NaN or infinite values (e.g. {bad[0]}); {consequence}"
        )


class NonFiniteWeights(CheckpointError):
    """The weights to save (or loaded) hold NaN or infinite values."""


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    combiner: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    state: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint folder at ``path`` atomically and return it.

    The files go to a temporary sibling (``.<name>.tmp``; ``state.json`` last, so a
    temporary folder with a readable ``state.json`` is complete), then the old folder is
    renamed aside (``.<name>.old``), the new one into place, and the old one removed:
    whatever moment a crash hits, :func:`recover` finds one complete checkpoint. Non-finite
    weights are never written (:class:`NonFiniteWeights`). A failed write (full disk,
    read-only folder) removes the temporary folder and raises :class:`CheckpointError`,
    leaving the previous checkpoint intact."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    weights = _tensors(model, "model.")
    if combiner is not None:
        weights.update(_tensors(combiner, "combiner."))
    _finite_or_raise(weights, f"{path}: not written", "the previous checkpoint there is kept")
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        save_file(weights, str(tmp / WEIGHTS), metadata={"format": "mtlzoo-checkpoint-1"})
        meta: dict[str, Any] = dict(state or {})
        meta[CHECKSUMS] = {WEIGHTS: sha256(tmp / WEIGHTS)}
        if optimizer is not None:
            tensors, opt_meta = _optimizer_split(optimizer)
            save_file(tensors, str(tmp / OPTIMIZER))
            meta[CHECKSUMS][OPTIMIZER] = sha256(tmp / OPTIMIZER)
            meta["optimizer"] = opt_meta
        if scheduler is not None:
            meta["scheduler"] = scheduler.state_dict()
        meta["rng"] = rng_state()
        write_atomic(tmp / STATE, json.dumps(json_safe(meta), indent=1, default=_json_default))
        old = path.with_name(f".{path.name}.old")
        if path.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old.exists():
            shutil.rmtree(old)
    except (OSError, SafetensorError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(
            f"{path}: cannot write the checkpoint ({one_line(exc)}); free space or fix the folder's permissions "
            f"(earlier checkpoints are intact)"
        ) from None
    return path


def recover(path: str | Path) -> Path | None:
    """The checkpoint folder ``path``, repaired after a crash during :func:`save_checkpoint`:
    when ``path`` is missing, a complete ``.<name>.tmp`` (else ``.<name>.old``) is renamed into
    place. ``None`` when there is no checkpoint at all."""
    path = Path(path)
    if (path / WEIGHTS).is_file():
        return path
    for stale in (path.with_name(f".{path.name}.tmp"), path.with_name(f".{path.name}.old")):
        if _complete(stale):
            if path.exists():
                shutil.rmtree(path)
            os.replace(stale, path)
            return path
    return None


def _complete(folder: Path) -> bool:
    try:
        json.loads((folder / STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (folder / WEIGHTS).is_file()


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
            found = recover(path / "checkpoints" / name)
            if found is not None:
                return found
    if recover(path) is not None:
        return path
    if not path.exists():
        raise CheckpointError(
            f"checkpoint {str(path)!r} not found; give a run folder or its checkpoints/<name> folder"
        )
    raise CheckpointError(f"{str(path)!r} holds no {WEIGHTS}; give a run folder or a checkpoint folder")


def read_state(path: str | Path) -> dict[str, Any]:
    """The JSON state of a checkpoint folder."""
    path = resolve_checkpoint(path)
    file = path / STATE
    try:
        state = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{file}: missing; the checkpoint is incomplete") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"{file}: not UTF-8 text; the checkpoint is damaged") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{file}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{file}: holds {type(state).__name__}, not a mapping; the checkpoint is damaged"
        )
    for key in ("epoch", "step"):
        if key in state and (
            not isinstance(state[key], int) or isinstance(state[key], bool) or state[key] < 0
        ):
            raise CheckpointError(f"{file}: {key} is {state[key]!r}, not a count; the checkpoint is damaged")
    sums = state.get(CHECKSUMS)
    if sums is not None and not (isinstance(sums, dict) and all(isinstance(v, str) for v in sums.values())):
        raise CheckpointError(
            f"{file}: {CHECKSUMS} is {sums!r}, not file checksums; the checkpoint is damaged"
        )
    return state


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


def check_finite(model: nn.Module, what: str) -> None:
    """Raise :class:`NonFiniteWeights` when a floating tensor of ``model`` holds NaN or infinity."""
    _finite_or_raise(dict(model.state_dict()), what, "training diverged before this checkpoint was saved")


def load_weights(path: str | Path, model: nn.Module, combiner: nn.Module | None = None) -> Path:
    """Load model (and combiner) weights from a checkpoint, checked against the checksum saved
    with them; return the checkpoint folder."""
    folder = resolve_checkpoint(path)
    verify_checksum(folder, WEIGHTS)
    tensors = _load_tensors(folder / WEIGHTS)
    _load_module(model, tensors, "model.", folder / WEIGHTS)
    if combiner is not None and combiner.state_dict():
        _load_module(combiner, tensors, "combiner.", folder / WEIGHTS)
    return folder


def load_training_state(
    path: str | Path, optimizer: torch.optim.Optimizer, scheduler: Any = None
) -> dict[str, Any]:
    """Restore optimizer, scheduler and RNG states (the optimizer's file checked against its saved
    checksum); return the JSON state."""
    folder = resolve_checkpoint(path)
    state = read_state(folder)
    saved, now = state.get("optimizer_class"), type(optimizer).__name__
    if saved is not None and saved != now:
        raise CheckpointError(
            f"{folder}: was trained with {saved}, this spec builds {now}; resume with the run's train.optimizer"
        )
    if "optimizer" in state:
        verify_checksum(folder, OPTIMIZER, state)
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
    try:
        if scheduler is not None and "scheduler" in state:
            scheduler.load_state_dict(state["scheduler"])
        if "rng" in state:
            set_rng_state(state["rng"])
    except (TypeError, ValueError, KeyError, IndexError, RuntimeError) as exc:
        raise CheckpointError(
            f"{folder / STATE}: its scheduler or RNG state is damaged ({one_line(exc)})"
        ) from None
    return state
