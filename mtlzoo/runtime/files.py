"""Run-folder files: the spec as YAML, JSON documents, both written atomically (torch-free)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf


def spec_yaml(cfg: DictConfig | Mapping[str, Any]) -> str:
    """A validated spec as YAML (what ``mtlzoo config show`` prints and ``config.yaml`` holds)."""
    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)


def write_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary sibling and a rename, so a crash never
    leaves a half-written file behind the name."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, data: Any) -> Path:
    """:func:`write_atomic` of ``data`` as strict JSON (NaN and infinities become ``null``)."""
    return write_atomic(path, json.dumps(json_safe(data), indent=1) + "\n")


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by ``None`` (strict JSON has neither)."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


_HELD: list[RunLock] = []


def close_inherited_locks() -> None:
    """In a forked data-loader worker: close the run locks' file descriptors inherited from the
    trainer, so the lock dies with the trainer (the trainer's own descriptor keeps it held)."""
    for lock in _HELD:
        lock.close_descriptor()


class RunLock:
    """An exclusive lock on a run folder (``<run>/.lock``), held while a trainer writes to it:
    a second process that trains or resumes the same run gets one line instead of
    interleaved checkpoints. Released when the process exits, however it exits."""

    def __init__(self, run_dir: str | Path):
        import fcntl

        from ..contract.errors import CheckpointError

        self.path = Path(run_dir) / ".lock"
        self._file = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the trainer's life
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            raise CheckpointError(
                f"{run_dir}: in use by {holder}; wait for it to finish (two processes must not train one run folder)"
            ) from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"mtlzoo process {os.getpid()}\n")
        self._file.flush()
        _HELD.append(self)

    def close_descriptor(self) -> None:
        """Close this process's descriptor without unlocking (for forked children)."""
        if not self._file.closed:  # the lock lives while any descriptor of it does: the trainer's
            self._file.close()

    def release(self) -> None:
        """Unlock (closing the file releases the lock)."""
        if not self._file.closed:
            self._file.close()
        if self in _HELD:
            _HELD.remove(self)


__all__ = ["spec_yaml", "write_atomic", "write_json", "json_safe", "RunLock"]
