"""Committed cell results: one small JSON file per finished cell, the tables' only input.

A bench's cells live in ``<results_dir>/<bench name>/cells/<cell id>.json`` (weights stay in
the run folders, which are not committed). A cell file holds:

* ``cell``: its id, method, setting, seed and baseline task (``null`` for a multi-task cell);
* ``config``: the cell's resolved spec without the keys that say where and how it ran, not
  what it computed (:data:`LOCATION_KEYS`; absolute paths keep their last part), and
  ``config_sha256`` of it;
* ``code``: the mtlzoo version and a digest of the source of every module whose code builds
  the cell's parts (:func:`code_version`);
* ``summary``: the run's ``summary.json`` (best-on-val and test metrics, steps, seconds,
  parameters, directions);
* ``history``: every evaluation of the run, ``{"epoch", "step", <eval split>: metrics}``, so
  that protocols such as the mean of the last K evaluations can be computed later;
* ``machine`` (CPU name, generation and vector instructions, cores, GPU, versions), ``load``
  (1-minute load average before and after), ``jobs`` (cells sharing the device), ``threads``,
  ``channels_last`` (whether the model ran in channels-last memory format; absent in cells from
  before it was recorded, which ran without), ``finished`` (UTC time).

A cell file is reused only when the cell's config and the code of its parts are what they
were (:func:`check_record`); otherwise it is refused, never mixed into a table.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import json
import os
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...contract.errors import MtlzooError, one_line
from ...runtime.files import spec_yaml, write_atomic

if TYPE_CHECKING:
    from ...zoo.zoo import Zoo

#: version of the cell file layout
FORMAT = 1

#: config keys that say where or how a cell ran, not what it computed (loader workers, pinned
#: memory and the sample cache change no value: the samples and their order are fixed by the
#: seed; the memory format, like the thread count and the CPU's kernels, changes only the order
#: of float sums, and the cell file records it as ``channels_last``)
LOCATION_KEYS = (
    "train.out_dir",
    "train.run_name",
    "train.progress",
    "train.num_workers",
    "train.pin_memory",
    "train.cache",
    "train.tensorboard",
    "train.tensorboard_images_every",
    "train.channels_last",
)


def cells_dir(results_dir: str | Path, bench: str) -> Path:
    """Where a bench's cell files live."""
    return Path(results_dir) / bench / "cells"


def _portable(value: Any) -> Any:
    """Absolute paths differ between machines: keep their last part only."""
    if isinstance(value, str) and len(value) > 1 and os.path.isabs(value):
        return "<abs>/" + Path(value).name
    if isinstance(value, dict):
        return {k: _portable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_portable(v) for v in value]
    return value


def comparable_config(cfg: Any) -> dict[str, Any]:
    """The cell's resolved spec as plain data, without :data:`LOCATION_KEYS`."""
    import yaml

    data = yaml.safe_load(spec_yaml(cfg)) or {}
    for key in LOCATION_KEYS:
        node = data
        *parents, last = key.split(".")
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return _portable(data)


def digest(data: Any) -> str:
    """A short sha256 of JSON-able data (keys sorted)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): node}


def _is_mapping_at(node: Any, path: str) -> bool:
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return isinstance(node, dict)


def config_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``key: <saved> in the cell, <now> now`` for every key that differs. A key missing on
    one side counts unless its parent node is a mapping on both sides: an option added to (or
    removed from) a part since the cell ran is a code change, not an edited spec (a task added
    or removed, or a part renamed, still counts)."""
    a, b = _flatten(saved), _flatten(now)
    out = []
    for key in sorted(a.keys() | b.keys()):
        if a.get(key, "<unset>") == b.get(key, "<unset>"):
            continue
        parent = key.rpartition(".")[0]
        if (
            (key not in a or key not in b)
            and parent
            and _is_mapping_at(saved, parent)
            and _is_mapping_at(now, parent)
        ):
            continue
        out.append(f"{key}: {a.get(key, '<unset>')!r} in the cell, {b.get(key, '<unset>')!r} now")
    return out


# -- the code of a cell's parts -------------------------------------------------------------
def _parts(cfg: Any) -> list[tuple[str, str]]:
    """``(kind, name)`` of every plugin part a resolved spec uses."""
    model = cfg["model"]
    parts = [("backbone", model["backbone"]["name"]), ("combiner", cfg["combiner"]["name"])]
    if model.get("architecture"):
        parts.append(("architecture", model["architecture"]["name"]))
    parts.append(("dataset", cfg["data"]["name"]))
    for task in cfg["tasks"].values():
        parts += [("task", task["type"]), ("head", task["head"]["name"]), ("loss", task["loss"]["name"])]
        parts += [("metric", m["name"]) for m in task.get("metrics") or []]
    return sorted(set(parts))


def _module_of(entry: Any) -> str | None:
    factory = entry.factory
    if isinstance(factory, str):
        return factory.partition(":")[0]
    module = inspect.getmodule(factory)
    return module.__name__ if module is not None else None


def _source_digest(path: Path) -> str:
    """sha256 of a module's syntax tree without docstrings: formatting, comments and
    docstrings do not count as a change of its code."""
    source = path.read_text()
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return hashlib.sha256(source.encode()).hexdigest()[:16]
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list) or not body:
            continue
        first = body[0]
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        ):
            body[0] = ast.Pass()
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()[:16]


def _file(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    path = Path(spec.origin)
    # a module imported earlier in this process whose file has since gone (moved): not this code
    return path if path.is_file() else None


def _relative_imports(module: str, path: Path) -> list[str]:
    """Modules a module imports relatively (``from .x import y``, ``from . import z``)."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    out = []
    try:
        tree = ast.parse(path.read_text())
    except SyntaxError:
        return []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")
            base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
            target = ".".join(base + ([node.module] if node.module else []))
            out.append(target)
            if not node.module:  # from . import name: name may be a module
                out += [f"{target}.{a.name}" for a in node.names]
    return out


def code_version(zoo: Zoo, cfg: Any) -> dict[str, Any]:
    """The version of the code a cell's result depends on: mtlzoo's version and, per module
    that builds one of its parts (the module of each part's factory and the modules it imports
    relatively, one level deep), a digest of its code (:func:`_source_digest`)."""
    from omegaconf import OmegaConf

    import mtlzoo

    data = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else cfg
    modules: dict[str, str] = {}
    for kind, name in _parts(data):
        try:
            module = _module_of(zoo.entry(kind, name))
        except MtlzooError:
            continue
        if module is None:
            continue
        path = _file(module)
        if path is None:
            continue
        for mod in [module, *_relative_imports(module, path)]:
            file = _file(mod)
            if file is not None and mod not in modules:
                modules[mod] = _source_digest(file)
    return {"mtlzoo": mtlzoo.__version__, "modules": dict(sorted(modules.items()))}


def code_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two :func:`code_version` records."""
    out = []
    if saved.get("mtlzoo") != now.get("mtlzoo"):
        out.append(f"mtlzoo {saved.get('mtlzoo')} in the cell, {now.get('mtlzoo')} now")
    a, b = saved.get("modules", {}), now.get("modules", {})
    out += [f"{m} changed" for m in sorted(a.keys() & b.keys()) if a[m] != b[m]]
    out += [f"{m} no longer used" for m in sorted(a.keys() - b.keys())]
    out += [f"{m} newly used" for m in sorted(b.keys() - a.keys())]
    return out


#: the file in a cell's run folder that records the code version it started with
CODE_STAMP = "cell_code.json"


def stamp_code(run_dir: Path, code: dict[str, Any]) -> None:
    """Record in a new run folder the :func:`code_version` its cell starts with, so that a
    finished or interrupted folder is never collected or resumed under other model code."""
    write_atomic(run_dir / CODE_STAMP, json.dumps(code, indent=1) + "\n")


def stamped_code(run_dir: Path) -> dict[str, Any] | None:
    """The code version a run folder was started with; ``None`` where it has no readable
    stamp (:func:`run_folder_code_error` refuses such a folder when it holds results)."""
    try:
        data = json.loads((run_dir / CODE_STAMP).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def has_results(run_dir: Path) -> bool:
    """Whether a run folder holds something a bench would reuse: a finished run's
    ``summary.json`` or the last checkpoint of an interrupted one."""
    return (run_dir / "summary.json").is_file() or (
        run_dir / "checkpoints" / "last" / "weights.safetensors"
    ).is_file()


def run_folder_code_error(cell_id: str, run_dir: Path, code: dict[str, Any]) -> MtlzooError | None:
    """The one-line refusal of a run folder whose results (finished or interrupted) cannot be
    shown to come from this model code: started under other code, or without a readable stamp
    (made before folders were stamped, or the stamp is damaged). ``None`` when it matches or
    holds nothing to reuse (a cell that failed before its first checkpoint starts again)."""
    if not has_results(run_dir):
        return None
    way_out = f"delete {run_dir} to run it again with the current code"
    saved = stamped_code(run_dir)
    if saved is None:
        what = "unreadable" if (run_dir / CODE_STAMP).exists() else "missing"
        return MtlzooError(
            f"cell {cell_id}: its run folder does not say which model code made it ({CODE_STAMP} {what}); "
            + way_out
        )
    changed = code_changes(saved, code)
    if not changed:
        return None
    shown = "; ".join(changed[:3]) + (f" (+{len(changed) - 3} more)" if len(changed) > 3 else "")
    return MtlzooError(
        f"cell {cell_id}: its run folder was made with another version of its model code ({shown}); "
        + way_out
    )


# -- where a cell ran -----------------------------------------------------------------------
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_generation() -> str | None:
    """``AuthenticAMD family 25 model 17 stepping 1`` from ``/proc/cpuinfo``: virtual machines
    often name every host's CPU alike ("AMD EPYC"), while their generations differ in speed."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break  # the first processor's block is enough
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except OSError:
        return None
    if "cpu family" not in fields:
        return None
    return " ".join(
        f"{name} {fields[key]}" if name else fields[key]
        for name, key in (
            ("", "vendor_id"),
            ("family", "cpu family"),
            ("model", "model"),
            ("stepping", "stepping"),
        )
        if key in fields
    )


def machine(device: str) -> dict[str, Any]:
    """What the cell ran on: CPU model, generation (vendor, family, model, stepping) and the
    vector instructions torch's CPU kernels use (``AVX512``, ``AVX2``, ...), cores, GPU name for
    a CUDA device, versions."""
    import torch

    out: dict[str, Any] = {
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    generation = _cpu_generation()
    if generation:
        out["cpu_generation"] = generation
    try:
        out["cpu_isa"] = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):  # older torch
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index or 0
        out["gpu"] = torch.cuda.get_device_name(index)
    return out


def describe_machine(record: dict[str, Any]) -> str:
    """``GPU NVIDIA H200`` or ``CPU AMD EPYC (AuthenticAMD family 25 model 17 stepping 1,
    AVX512; 2 cores)``, for table headers; cells from before the generation was recorded say
    so, since two hosts of one name may differ in speed."""
    m = record.get("machine") or {}
    if m.get("gpu"):
        return f"GPU {m['gpu']}"
    detail = ", ".join(str(m[k]) for k in ("cpu_generation", "cpu_isa") if m.get(k))
    return f"CPU {m.get('cpu', '?')} ({detail or 'generation not recorded'}; {m.get('cores', '?')} cores)"


def load_average() -> float | None:
    """The 1-minute load average (``None`` where the system has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


# -- cell files -----------------------------------------------------------------------------
def history_of(run_dir: Path, eval_split: str) -> list[dict[str, Any]]:
    """Every evaluation in a run folder's ``metrics.jsonl``: epoch, step and the eval split's
    metrics (training losses left out)."""
    path = run_dir / "metrics.jsonl"
    out = []
    if path.is_file():
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            if eval_split in rec:
                out.append({"epoch": rec.get("epoch"), "step": rec.get("step"), eval_split: rec[eval_split]})
    return out


def make_record(
    cell: Any,
    config: dict[str, Any],
    code: dict[str, Any],
    summary: dict[str, Any],
    history: list[dict[str, Any]],
    *,
    load_before: float | None,
    jobs: int = 1,
    threads: int | None = None,
    channels_last: bool = False,
    migrated: bool = False,
) -> dict[str, Any]:
    """A cell file's content (see the module docstring)."""
    record = {
        "format": FORMAT,
        "cell": {
            "id": cell.id,
            "method": cell.method,
            "setting": cell.setting,
            "seed": cell.seed,
            "baseline_task": cell.baseline_task,
        },
        "config_sha256": digest(config),
        "config": config,
        "code": code,
        "summary": summary,
        "history": history,
        "machine": machine(str(summary.get("device", "cpu"))),
        "load": {"before": load_before, "after": load_average()},
        "jobs": jobs,
        "threads": threads,
        "channels_last": channels_last,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if migrated:
        # made from a run folder that finished before cell files existed: its code version is
        # the one found when it was collected
        record["migrated_from_run_folder"] = True
    return record


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Write a cell file atomically (strict JSON: NaN as null)."""
    from ...runtime.files import json_safe

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(json_safe(record), indent=1, sort_keys=False) + "\n")


def read_record(path: Path) -> dict[str, Any]:
    """Read a cell file; one line naming the file and the way out when it is broken."""
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict) or "summary" not in record or "config" not in record:
            raise ValueError("not a cell file (no summary or config)")
    except (OSError, ValueError) as exc:
        raise MtlzooError(
            f"{path}: unreadable cell file ({one_line(exc)}); delete it to run the cell again"
        ) from None
    return record


def check_record(
    path: Path,
    record: dict[str, Any],
    config: dict[str, Any],
    code: dict[str, Any],
    run_dir: Path | None = None,
) -> None:
    """Refuse a cell file made from another config or another version of its parts' code:
    an edited spec or changed model code never mixes old results into new tables.
    ``run_dir``: the cell's run folder; when it exists, the way out names it too (its finished
    results would otherwise be collected again)."""
    changed = config_changes(record["config"], config)
    if changed:
        shown = "; ".join(changed[:3]) + (f" (+{len(changed) - 3} more)" if len(changed) > 3 else "")
        raise MtlzooError(
            f"cell {path.stem}: its committed result was made with a different config ({shown}); "
            f"delete {path} to run it again with the current spec, or restore the spec"
        )
    code_changed = code_changes(record.get("code") or {}, code)
    if code_changed:
        shown = "; ".join(code_changed[:3]) + (
            f" (+{len(code_changed) - 3} more)" if len(code_changed) > 3 else ""
        )
        raise MtlzooError(
            f"cell {path.stem}: its committed result was made with another version of its model code "
            f"({shown}); delete {path}"
            + (f" and its run folder {run_dir}" if run_dir is not None and run_dir.exists() else "")
            + " to run it again with the current code"
        )


__all__ = [
    "FORMAT",
    "LOCATION_KEYS",
    "cells_dir",
    "comparable_config",
    "config_changes",
    "code_version",
    "code_changes",
    "machine",
    "describe_machine",
    "load_average",
    "history_of",
    "make_record",
    "write_record",
    "read_record",
    "check_record",
    "digest",
    "CODE_STAMP",
    "stamp_code",
    "stamped_code",
    "run_folder_code_error",
    "has_results",
]
