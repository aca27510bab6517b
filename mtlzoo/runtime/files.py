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

from ..contract.errors import ConfigError, one_line


def spec_yaml(
    cfg: DictConfig | Mapping[str, Any],
    folder: str | Path | None = None,
    relative: Mapping[str, str] | None = None,
) -> str:
    """A validated spec as YAML (what ``mtlzoo config show`` prints and ``config.yaml`` holds).

    ``relative``: the dotted keys of path options that the spec gave as relative paths (the
    validated tree holds them resolved against the spec's folder), each written relative to
    ``folder``, the folder the YAML goes to: a run folder's ``config.yaml`` keeps a relative
    data root relative, and the zoo resolves it against that folder, as it resolved the
    original against the spec's (absolute paths stay absolute)."""
    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    for key, value in (relative or {}).items():
        *parents, leaf = key.split(".")
        node: Any = data
        for part in parents:
            node = node.get(part) if isinstance(node, Mapping) else None
        if folder is not None and isinstance(node, dict) and node.get(leaf) == value and os.path.isabs(value):
            node[leaf] = os.path.relpath(value, Path(folder).resolve())
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)


def new_run_dir(out_dir: str | Path, name: str) -> Path:
    """A fresh run folder ``out_dir/name`` (``name-2``, ``name-3``... if taken): never reuses one."""
    base = Path(out_dir)
    if base.exists() and not base.is_dir():
        raise ConfigError(f"train.out_dir: {base} is a file, not a folder; point train.out_dir at a folder")
    try:
        base.mkdir(parents=True, exist_ok=True)
        for i in range(1, 10_000):
            candidate = base / (name if i == 1 else f"{name}-{i}")
            try:
                candidate.mkdir()
                return candidate
            except FileExistsError:
                continue
    except OSError as exc:
        raise ConfigError(f"train.out_dir: cannot create a run folder in {base} ({one_line(exc)})") from None
    raise ConfigError(f"train.out_dir: could not find a free run folder for {name!r} in {base}")


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (``/proc/self/status``);
    elsewhere set and restored at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary sibling and a rename, so a crash never
    leaves a half-written file behind the name. The file gets the permissions an ordinary
    ``open`` would give it (0666 less the umask: 0644 under the usual umask 022), not the
    0600 of the temporary file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
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
    interleaved checkpoints. Released when the process exits, however it exits; :meth:`release`
    (a finished run) also removes the file. A folder where the lock file cannot be written
    (a read-only disk) is one line: training and resuming write to the run folder."""

    def __init__(self, run_dir: str | Path):
        import fcntl

        from ..contract.errors import CheckpointError, one_line

        self.path = Path(run_dir) / ".lock"
        for _ in range(10):
            try:
                self._file = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the trainer's life
            except OSError as exc:
                raise CheckpointError(
                    f"{run_dir}: cannot write its lock file .lock ({one_line(exc)}); training and resuming "
                    f"write to the run folder: make it writable, or copy the run to a writable place and "
                    f"resume the copy"
                ) from None
            try:
                fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self._file.seek(0)
                holder = self._file.read().strip() or "another process"
                self._file.close()
                raise CheckpointError(
                    f"{run_dir}: in use by {holder}; wait for it to finish (two processes must not train one "
                    f"run folder)"
                ) from None
            # a finished trainer removes the file as it unlocks: a lock taken on the removed file
            # locks nothing, so take it again on the file now at the path
            try:
                same = os.path.samestat(os.fstat(self._file.fileno()), os.stat(self.path))
            except OSError:
                same = False
            if same:
                break
            self._file.close()
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
        """Remove the lock file and unlock (closing the file releases the lock): a finished run
        keeps no ``.lock``."""
        if not self._file.closed:
            self.path.unlink(missing_ok=True)  # while still held, so no other process holds it meanwhile
            self._file.close()
        if self in _HELD:
            _HELD.remove(self)


__all__ = ["spec_yaml", "write_atomic", "write_json", "json_safe", "RunLock", "new_run_dir"]
