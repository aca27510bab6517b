"""The ``mtlzoo`` command.

Errors a user can cause print as one line (``error: ...``) with exit status 2; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .errors import MtlzooError
from .registry import KINDS

EXIT_USER_ERROR = 2


# -- helpers --------------------------------------------------------------------------------------
def _manager(args: argparse.Namespace, block: Sequence[str] = ()) -> Any:
    from .plugins import get_plugin_manager

    return get_plugin_manager(strict=True if args.strict_plugins else None, block=block)


def _spec_block(spec: str, overrides: Sequence[str]) -> tuple[list[str], bool]:
    """Plugin names blocked (and strictness) by a spec, read before plugins load."""
    from .config import read_spec

    raw = read_spec(spec, overrides)
    plugins = raw.get("plugins") or {}
    return list(plugins.get("block") or []), bool(plugins.get("strict") or False)


def _load(args: argparse.Namespace, spec: str, overrides: Sequence[str]) -> Any:
    from .config import load

    block, strict = _spec_block(spec, overrides)
    if strict:
        args.strict_plugins = True
    manager = _manager(args, block)
    _warn_failures(manager)
    return load(spec, overrides, registries=manager.registries)


def _warn_failures(manager: Any) -> None:
    for rec in manager.failures:
        print(f"warning: plugin {rec.name!r} ({rec.distribution}) skipped: {rec.error}; "
              f"`mtlzoo plugins` has details", file=sys.stderr)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=1, default=str))


# -- commands -------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    """Train from a spec; print the per-task metrics table at the end."""
    from . import distributed as D
    from .builder import build
    from .train import Trainer, format_table, new_run_dir

    spec, overrides = args.spec, list(args.overrides)
    if args.resume:
        spec, overrides = _resume_spec(args, spec, overrides)
    cfg = _load(args, spec, overrides)
    exp = build(cfg)
    run_dir = None
    if args.resume:
        from .checkpoint import resolve_checkpoint

        run_dir = _run_dir_of(args.resume)
        resume = resolve_checkpoint(run_dir / "checkpoints" / "last")
    else:
        resume = None
        if D.env_world_size() <= 1 or int(os.environ.get("RANK", "0")) == 0:
            run_dir = new_run_dir(cfg.train.out_dir, cfg.train.run_name or cfg.name)
    trainer = Trainer(exp, run_dir if D.env_world_size() <= 1 or int(os.environ.get("RANK", "0")) == 0 else None,
                      resume=resume)
    summary = trainer.fit()
    if trainer.main:
        print(f"\n{cfg.name}: {summary['epochs']} epochs in {summary['seconds']:.1f}s on {summary['device']}"
              f" ({summary['parameters']['total']:,} parameters)")
        print(f"{cfg.train.eval_split} metrics:")
        print(format_table(summary["final"], summary["directions"]))
        if "test" in summary:
            print(f"{summary['test_split']} metrics (checkpoint chosen on {cfg.train.eval_split}):")
            print(format_table(summary["test"], summary["directions"]))
        if run_dir is not None:
            print(f"run folder: {run_dir}")
    D.cleanup()
    return 0


def _run_dir_of(path: str) -> Any:
    from pathlib import Path

    from .errors import CheckpointError

    run = Path(path)
    if (run / "config.yaml").is_file() and (run / "checkpoints" / "last").is_dir():
        return run
    raise CheckpointError(f"--resume {path!r}: not a run folder with config.yaml and checkpoints/last")


def _resume_spec(args: argparse.Namespace, spec: str | None, overrides: list[str]) -> tuple[str, list[str]]:
    run = _run_dir_of(args.resume)
    if spec and not spec.endswith((".yaml", ".yml")):
        overrides = [spec, *overrides]  # `mtlzoo train --resume RUN train.epochs=20`
    return str(run / "config.yaml"), overrides


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate a checkpoint on a split; the spec defaults to the run's own config.yaml."""
    from pathlib import Path

    from .builder import build
    from .checkpoint import load_weights, resolve_checkpoint
    from .train import Trainer, format_table

    target = Path(args.target)
    overrides = list(args.overrides)
    if target.is_dir():
        run = target
        folder = resolve_checkpoint(args.checkpoint or run)
        spec = args.spec or str(run / "config.yaml")
    else:
        if not args.checkpoint:
            raise MtlzooError("eval: give a run folder, or a spec with --checkpoint PATH")
        folder = resolve_checkpoint(args.checkpoint)
        spec = str(target)
    cfg = _load(args, spec, [*overrides, "train.progress=false"])
    exp = build(cfg)
    trainer = Trainer(exp, None)
    load_weights(folder, trainer.model, trainer.combiner)
    split = args.split or cfg.train.eval_split
    results = trainer.evaluate(split)
    if args.json:
        _print_json({"checkpoint": str(folder), "split": split, "metrics": results})
    else:
        print(f"{split} metrics of {folder}:")
        print(format_table(results, {n: t.metric_directions() for n, t in exp.tasks.items()}))
    return 0


def _variant_hits(entry: Any, pattern: str) -> list[str]:
    if entry.variants is None:
        return []
    family, sep, sub = pattern.partition(":")
    if sep:
        if not fnmatch.fnmatchcase(entry.name, family):
            return []
        pat = sub
    else:
        pat = pattern
    return [v for v in entry.variants() if fnmatch.fnmatchcase(v.lower(), pat.lower())]


def cmd_list(args: argparse.Namespace) -> int:
    """List registered parts, optionally one kind and a shell-wildcard pattern."""
    manager = _manager(args)
    _warn_failures(manager)
    kinds = [args.kind] if args.kind else list(KINDS)
    pattern = args.pattern or "*"
    out: dict[str, list[dict[str, Any]]] = {}
    for kind in kinds:
        registry = manager.registries[kind]
        rows = []
        for entry in registry:
            name_hit = fnmatch.fnmatchcase(entry.name.lower(), pattern.lower())
            variants = _variant_hits(entry, pattern) if args.pattern else []
            if not (name_hit or variants):
                continue
            row = {"name": entry.name, "plugin": entry.plugin, "help": entry.help,
                   "options": [f.name for f in entry.options()]}
            if entry.variants is not None:
                row["variants"] = variants if args.pattern else None
                row["num_variants"] = len(entry.variants())
            rows.append(row)
        out[kind] = rows
    if args.json:
        _print_json(out if not args.kind else out[args.kind])
        return 0
    for kind, rows in out.items():
        print(f"{kind}s ({len(rows)}):")
        width = max([len(r["name"]) for r in rows] + [4])
        for r in rows:
            print(f"  {r['name'].ljust(width)}  {r['help']}  [{r['plugin']}]")
            if r.get("variants"):
                shown = r["variants"][:40]
                print(f"  {'':{width}}    {len(r['variants'])} matching: " + ", ".join(shown)
                      + (" ..." if len(r["variants"]) > 40 else ""))
            elif "num_variants" in r:
                print(f"  {'':{width}}    {r['num_variants']} architectures (search: "
                      f"mtlzoo list {kind} '{r['name']}:*pattern*')")
        if not rows:
            print(f"  none match {pattern!r}")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    """List every plugin with its distribution, version, what it registered and failures."""
    manager = _manager(args)
    records = [r.as_dict() for r in manager.records]
    if args.json:
        _print_json(records)
        return 0
    for r in records:
        head = f"{r['name']}  ({r['distribution']} {r['version']})  {r['status']}"
        print(head)
        if r["error"]:
            print(f"    error: {r['error']}")
        for kind, names in r["registered"].items():
            print(f"    {kind}: {', '.join(names)}")
    failed = [r for r in records if r["status"] == "failed"]
    if failed:
        print(f"\n{len(failed)} plugin(s) failed to load; others are unaffected. "
              f"MTLZOO_STRICT_PLUGINS=1 turns failures into errors.")
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    """Print the resolved, validated spec with every default filled in."""
    from .config import to_yaml

    cfg = _load(args, args.spec, args.overrides)
    print(to_yaml(cfg), end="")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    """Scan every file of a spec's dataset and report every problem found."""
    from .datacheck import check_dataset

    cfg = _load(args, args.spec, args.overrides)
    manager = _manager(args)
    from omegaconf import OmegaConf

    options = OmegaConf.to_container(cfg.data, resolve=True)
    name = options.pop("name")
    entry = manager.registries["dataset"].get(name)
    problems = check_dataset(entry.factory, options, splits=tuple(args.splits))
    if args.json:
        _print_json({"dataset": name, "problems": problems})
    elif problems:
        for p in problems:
            print(p)
        print(f"{len(problems)} problem(s) found in dataset {name!r}")
    else:
        print(f"dataset {name!r}: no problems found in splits {', '.join(args.splits)}")
    return 1 if problems else 0


# -- parser ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mtlzoo`` (every command has ``--help``)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks instead of one-line errors")
    common.add_argument("--strict-plugins", action="store_true", default=argparse.SUPPRESS,
                        help="fail when any plugin fails to load (env: MTLZOO_STRICT_PLUGINS=1)")
    parser = argparse.ArgumentParser(prog="mtlzoo", parents=[common],
                                     description="Train and compare multi-task models for images.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("train", parents=[common], help="train from a spec",
                       description="Train from a YAML spec with optional key.path=value overrides.")
    p.add_argument("spec", nargs="?", help="YAML spec (omit with --resume)")
    p.add_argument("overrides", nargs="*", help="dot-list overrides, e.g. train.epochs=3 combiner.name=weighted")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", parents=[common], help="evaluate a checkpoint",
                       description="Evaluate a run folder (or a spec plus --checkpoint) on a split.")
    p.add_argument("target", help="run folder, or a YAML spec (then --checkpoint is required)")
    p.add_argument("overrides", nargs="*", help="dot-list overrides")
    p.add_argument("--checkpoint", help="checkpoint folder (default: the run's best, else last)")
    p.add_argument("--spec", help="spec to build the model from (default: the run's config.yaml)")
    p.add_argument("--split", help="split to evaluate (default: train.eval_split)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("list", parents=[common], help="list registered parts",
                       description="List registered parts; PATTERN is a shell wildcard ('*resnet*', "
                                   "'timm:convnext*' searches timm's architectures).")
    p.add_argument("kind", nargs="?", choices=KINDS, metavar="KIND", help=f"one of {', '.join(KINDS)}")
    p.add_argument("pattern", nargs="?", help="shell wildcard")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("plugins", parents=[common], help="list installed plugins",
                       description="List every plugin, its distribution, version, what it registered and failures.")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("config", parents=[common], help="inspect specs", description="Inspect specs.")
    csub = p.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    csub.required = True
    q = csub.add_parser("show", parents=[common], help="print the resolved, validated spec",
                        description="Print the resolved, validated spec with all defaults filled in.")
    q.add_argument("spec")
    q.add_argument("overrides", nargs="*")
    q.set_defaults(func=cmd_config_show)

    p = sub.add_parser("data", parents=[common], help="inspect datasets", description="Inspect datasets.")
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    dsub.required = True
    q = dsub.add_parser("check", parents=[common], help="scan a dataset for bad files",
                        description="Scan every file of a spec's dataset; report every bad file.")
    q.add_argument("spec")
    q.add_argument("overrides", nargs="*")
    q.add_argument("--splits", nargs="+", default=["train", "val", "test"], help="splits to scan")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_data_check)

    for extra in _extra_commands():
        extra(sub, common)
    return parser


def _extra_commands() -> list[Callable[[Any, Any], None]]:
    try:
        from .bench import add_bench_command
    except ImportError:
        return []
    return [add_bench_command]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mtlzoo`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.debug = getattr(args, "debug", False)
    args.strict_plugins = getattr(args, "strict_plugins", False)
    if args.command == "train" and not args.spec and not args.resume:
        parser.error("train: give a spec (or --resume RUN_DIR)")
    try:
        return args.func(args)
    except MtlzooError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
