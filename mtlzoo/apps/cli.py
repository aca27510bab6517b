"""The ``mtlzoo`` command.

Every command makes one :class:`~mtlzoo.Zoo` and passes it on. Errors a user can cause print
as one line (``error: ...``) with exit status 2; ``--debug`` shows the traceback instead.
``list``, ``plugins``, ``config show`` and spec errors never import torch (they stay fast).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ..contract.errors import CheckpointError, MtlzooError
from ..contract.hooks import KINDS
from ..zoo.parts import Spec
from ..zoo.zoo import Zoo
from .words import count, plural

EXIT_USER_ERROR = 2


# -- helpers --------------------------------------------------------------------------------------
def _strict(args: argparse.Namespace) -> bool | None:
    return True if args.strict_plugins else None


def _warn(zoo: Zoo, debug: bool = False) -> None:
    for line in zoo.warnings:
        print(f"warning: {line}", file=sys.stderr)
    if debug:
        _plugin_tracebacks(zoo)


def _plugin_tracebacks(zoo: Zoo) -> None:
    """``--debug``: each failed plugin's own traceback (the frame inside it where it failed)."""
    for record in zoo.records:
        if record.traceback:
            print(f"traceback of plugin {record.name!r} ({record.error}):", file=sys.stderr)
            print(record.traceback.rstrip(), file=sys.stderr)


def _zoo(args: argparse.Namespace) -> Zoo:
    zoo = Zoo.load(strict=_strict(args))
    _warn(zoo, args.debug)
    return zoo


def _spec(args: argparse.Namespace, spec: Any, overrides: Sequence[str]) -> tuple[Zoo, Spec]:
    """The zoo the spec's ``plugins`` section asks for, and the spec validated against it (read
    and validated once; relative paths resolve against the spec file's folder)."""
    zoo, validated = Zoo.open(spec, overrides, strict=_strict(args))
    _warn(zoo, args.debug)
    return zoo, validated


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=1, default=str))


def _is_rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


# -- commands -------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    """Train from a spec; print the per-task metrics table at the end."""
    spec, overrides = args.spec, list(args.overrides)
    run_dir = resume = None
    if args.resume:
        from ..runtime.checkpoint import resolve_checkpoint

        run_dir = _run_dir_of(args.resume)
        if spec and not spec.endswith((".yaml", ".yml")):
            overrides = [spec, *overrides]  # `mtlzoo train --resume RUN train.epochs=20`
        spec = str(run_dir / "config.yaml")
        resume = resolve_checkpoint(run_dir / "checkpoints" / "last")
    zoo, validated = _spec(args, spec, overrides)
    cfg = validated.cfg
    # torch only once the spec is valid: a spec error stays a fast, torch-free one-line error
    from ..runtime import distributed as D
    from ..runtime.process import prepare
    from ..runtime.train import Trainer, format_table, new_run_dir

    exp = zoo.build(validated)
    if run_dir is None and _is_rank0():
        wanted = cfg.train.run_name or cfg.name
        run_dir = new_run_dir(cfg.train.out_dir, wanted)
        if run_dir.name != wanted:  # never overwrite a run: say where this one goes instead
            print(
                f"note: {run_dir.parent / wanted} exists (continue it with `mtlzoo train --resume "
                f"{run_dir.parent / wanted}`); this run writes {run_dir}",
                file=sys.stderr,
            )
    process = prepare(exp.cfg)  # device, process group, seeds, determinism: once, here
    trainer = Trainer(exp, run_dir if process.main else None, resume=resume, process=process)
    summary = trainer.fit()
    if trainer.main:
        print(
            f"\n{cfg.name}: {count(summary['epochs'], 'epoch')} in {summary['seconds']:.1f}s on {summary['device']}"
            f" ({summary['parameters']['total']:,} parameters)"
        )
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

    from ..runtime.checkpoint import recover

    run = Path(path)
    if not (run / "config.yaml").is_file():
        raise CheckpointError(
            f"--resume {path!r}: not a run folder (no config.yaml); give the folder `mtlzoo train` printed"
        )
    if recover(run / "checkpoints" / "last") is None:
        raise CheckpointError(
            f"--resume {path!r}: the run stopped before its first checkpoint (the end of its first epoch); start "
            f"it again with `mtlzoo train {run / 'config.yaml'}`"
        )
    return run


def _per_class_overrides(cfg: Any) -> list[str]:
    """``eval --per-class``: add ``iou_per_class`` to every segmentation task's metrics (tasks
    of type ``segmentation`` or scored by ``miou``) that lacks it."""
    out = []
    for name, task in cfg.tasks.items():
        metrics = [dict(m) for m in task.metrics or []]
        names = [m.get("name") for m in metrics]
        if (task.type == "segmentation" or "miou" in names) and "iou_per_class" not in names:
            out.append(f"tasks.{name}.metrics={json.dumps([*metrics, {'name': 'iou_per_class'}])}")
    return out


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate a checkpoint on a split; the spec defaults to the run's own config.yaml."""
    from pathlib import Path

    from ..runtime.checkpoint import check_finite, load_weights, resolve_checkpoint
    from ..runtime.evaluate import Evaluator
    from ..runtime.process import prepare
    from ..runtime.train import format_table

    target = Path(args.target)
    if target.is_dir():
        folder = resolve_checkpoint(args.checkpoint or target)
        spec = args.spec or str(target / "config.yaml")
    else:
        if not args.checkpoint:
            raise MtlzooError("eval: give a run folder, or a spec with --checkpoint PATH")
        folder = resolve_checkpoint(args.checkpoint)
        spec = str(target)
    zoo, validated = _spec(args, spec, [*args.overrides, "train.progress=false"])
    if args.per_class and (more := _per_class_overrides(validated.cfg)):
        zoo, validated = _spec(args, spec, [*args.overrides, "train.progress=false", *more])
    cfg = validated.cfg
    exp = zoo.build(validated)
    evaluator = Evaluator(exp, prepare(exp.cfg))  # no optimizer, no training loader
    load_weights(folder, evaluator.model)
    check_finite(evaluator.model, str(folder))
    split = args.split or cfg.train.eval_split
    results = evaluator.evaluate(split)
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
    zoo = _zoo(args)
    kinds = [args.kind] if args.kind else list(KINDS)
    pattern = args.pattern or "*"
    searches_variants = ":" in pattern
    out: dict[str, list[dict[str, Any]]] = {}
    for kind in kinds:
        rows = []
        for entry in zoo.registries[kind]:
            name_hit = fnmatch.fnmatchcase(entry.name.lower(), pattern.lower())
            variants = (
                _variant_hits(entry, pattern) if searches_variants or (args.pattern and not name_hit) else []
            )
            if not (name_hit or variants):
                continue
            row: dict[str, Any] = {
                "name": entry.name,
                "plugin": entry.plugin,
                "help": entry.help,
                "options": [o["name"] for o in entry.describe_options()],
            }
            if entry.targets is not None:
                row["targets"] = list(entry.targets)
            if variants:
                row["variants"] = variants
            elif entry.variants is not None:
                row["variants"] = None
            rows.append(row)
        out[kind] = rows
    if args.json:
        _print_json(out if not args.kind else out[args.kind])
        return 0
    for kind, rows in out.items():
        print(f"{plural(kind)} ({len(rows)}):")
        width = max([len(r["name"]) for r in rows] + [4])
        for r in rows:
            print(f"  {r['name'].ljust(width)}  {r['help']}  [{r['plugin']}]")
            if r.get("variants"):
                shown = r["variants"][:40]
                print(
                    f"  {'':{width}}    {len(r['variants'])} matching: "
                    + ", ".join(shown)
                    + (" ..." if len(r["variants"]) > 40 else "")
                )
            elif "variants" in r:
                print(
                    f"  {'':{width}}    search its architectures: mtlzoo list {kind} '{r['name']}:*pattern*'"
                )
        if not rows:
            print(f"  none match {pattern!r}")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    """List every plugin with its distribution, version, what it registered and what failed."""
    zoo = Zoo.load(strict=_strict(args))
    if args.debug:
        _plugin_tracebacks(zoo)
    records = [r.as_dict() for r in zoo.records]
    if args.json:
        _print_json(records)
        return 0
    for r in records:
        print(f"{r['name']}  ({r['distribution']} {r['version']})  {r['status']}")
        if r["error"]:
            print(f"    error: {r['error']}")
        for kind, names in r["registered"].items():
            print(f"    {kind}: {', '.join(names)}")
        for refused in r["refused"]:
            print(f"    refused: {refused}")
    failed = [r for r in records if r["status"] == "failed"]
    refused = sum(len(r["refused"]) for r in records)
    if failed or refused:
        print(
            f"\n{len(failed)} plugin(s) failed to load and {refused} entr{'y was' if refused == 1 else 'ies were'} "
            f"refused; the others are unaffected. MTLZOO_STRICT_PLUGINS=1 turns these into errors."
        )
    for line in zoo.warnings:
        if "block list" in line:
            print(f"warning: {line}", file=sys.stderr)
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    """Print the resolved, validated spec with every default filled in."""
    from ..runtime.files import spec_yaml

    _, validated = _spec(args, args.spec, args.overrides)
    print(spec_yaml(validated.cfg), end="")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    """Scan every file and sample of a spec's dataset and report every problem found."""
    from .datacheck import check_dataset

    zoo, validated = _spec(args, args.spec, args.overrides)
    problems = check_dataset(zoo, validated.data, splits=tuple(args.splits))
    name = validated.data.name
    if args.json:
        _print_json({"dataset": name, "problems": problems})
    elif problems:
        for p in problems:
            print(p)
        print(f"{len(problems)} problem(s) found in dataset {name!r}")
    else:
        print(f"dataset {name!r}: no problems found in splits {', '.join(args.splits)}")
    return 1 if problems else 0


def cmd_check(args: argparse.Namespace) -> int:
    """Run the conformance kit on every part a plugin registered."""
    from ..testing.kit import check_plugin, format_report

    zoo = _zoo(args)
    reports = [check_plugin(zoo, name) for name in args.plugins]
    if args.json:
        _print_json([r.as_dict() for r in reports])
    else:
        for report in reports:
            print(format_report(report))
    return 0 if all(r.ok for r in reports) else 1


def cmd_summary(args: argparse.Namespace) -> int:
    """Build a spec's model and print its parameter counts: shared, per task, per module."""
    zoo, validated = _spec(args, args.spec, [*args.overrides, "train.progress=false"])
    cfg = validated.cfg
    exp = zoo.build(validated)
    model = exp.model
    counts = model.num_parameters()
    if args.json:
        _print_json(
            {
                "parameters": counts,
                "architecture": exp.labels.get("architecture"),
                "names": [n for n, _ in model.named_parameters()] if args.names else None,
            }
        )
        return 0
    print(f"{cfg.name}: {exp.labels.get('architecture')}; {exp.labels['backbone']}")
    width = max(len(k) for k in counts)
    for key, value in counts.items():
        print(f"  {key.ljust(width)}  {value:>12,}")
    if args.names:
        for name, p in model.named_parameters():
            print(f"  {name}  {tuple(p.shape)}")
    return 0


def add_summary_command(sub: Any, common: Any) -> None:
    """Add ``mtlzoo summary`` to the CLI."""
    p = sub.add_parser(
        "summary",
        parents=[common],
        help="parameter counts of a spec's model",
        description="Build a spec's model and print its shared and per-task parameter counts.",
    )
    p.add_argument("spec")
    p.add_argument("overrides", nargs="*")
    p.add_argument(
        "--names", action="store_true", help="also list every parameter (names for optimizer.freeze)"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_summary)


# -- parser ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mtlzoo`` (every command has ``--help``)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show tracebacks instead of one-line errors",
    )
    common.add_argument(
        "--strict-plugins",
        action="store_true",
        default=argparse.SUPPRESS,
        help="fail when any plugin fails to load or an entry is refused (env: MTLZOO_STRICT_PLUGINS=1)",
    )
    parser = argparse.ArgumentParser(
        prog="mtlzoo", parents=[common], description="Train and compare multi-task models for images."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "train",
        parents=[common],
        help="train from a spec",
        description="Train from a YAML spec with optional key.path=value overrides.",
    )
    p.add_argument("spec", nargs="?", help="YAML spec (omit with --resume)")
    p.add_argument(
        "overrides", nargs="*", help="dot-list overrides, e.g. train.epochs=3 combiner.name=weighted"
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "eval",
        parents=[common],
        help="evaluate a checkpoint",
        description="Evaluate a run folder (or a spec plus --checkpoint) on a split.",
    )
    p.add_argument("target", help="run folder, or a YAML spec (then --checkpoint is required)")
    p.add_argument("overrides", nargs="*", help="dot-list overrides")
    p.add_argument("--checkpoint", help="checkpoint folder (default: the run's best, else last)")
    p.add_argument("--spec", help="spec to build the model from (default: the run's config.yaml)")
    p.add_argument("--split", help="split to evaluate (default: train.eval_split)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--per-class",
        action="store_true",
        help="also report the IoU of every class of each segmentation task (iou/<class> keys; "
        "the console table shows the headline metrics, --json every value)",
    )
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "list",
        parents=[common],
        help="list registered parts",
        description="List registered parts; PATTERN is a shell wildcard ('*resnet*', "
        "'timm:convnext*' searches timm's architectures).",
    )
    p.add_argument("kind", nargs="?", choices=list(KINDS), metavar="KIND", help=f"one of {', '.join(KINDS)}")
    p.add_argument("pattern", nargs="?", help="shell wildcard")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "plugins",
        parents=[common],
        help="list installed plugins",
        description="List every plugin, its distribution, version, what it registered, "
        "refused entries and failures.",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser(
        "check",
        parents=[common],
        help="check plugins against mtlzoo's contracts",
        description="Build every part the named plugins registered and check each against its "
        "contract (the conformance kit, mtlzoo.testing).",
    )
    p.add_argument(
        "plugins", nargs="+", metavar="PLUGIN", help="plugin (entry-point) names, see `mtlzoo plugins`"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("config", parents=[common], help="inspect specs", description="Inspect specs.")
    csub = p.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    csub.required = True
    q = csub.add_parser(
        "show",
        parents=[common],
        help="print the resolved, validated spec",
        description="Print the resolved, validated spec with all defaults filled in.",
    )
    q.add_argument("spec")
    q.add_argument("overrides", nargs="*")
    q.set_defaults(func=cmd_config_show)

    p = sub.add_parser("data", parents=[common], help="inspect datasets", description="Inspect datasets.")
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    dsub.required = True
    q = dsub.add_parser(
        "check",
        parents=[common],
        help="scan a dataset for bad files and samples",
        description="Scan every file and sample of a spec's dataset; report every problem.",
    )
    q.add_argument("spec")
    q.add_argument("overrides", nargs="*")
    q.add_argument("--splits", nargs="+", default=["train", "val", "test"], help="splits to scan")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_data_check)

    for extra in _extra_commands():
        extra(sub, common)
    return parser


def _extra_commands() -> list[Callable[[Any, Any], None]]:
    from .bench.cli import add_bench_command
    from .export import add_export_command
    from .plot import add_plot_command
    from .predict import add_predict_command

    return [add_bench_command, add_plot_command, add_summary_command, add_predict_command, add_export_command]


def _is_override(arg: str) -> bool:
    return not arg.startswith("-") and ("=" in arg or arg.startswith("~"))


def _spec_keys() -> dict[str, str]:
    """Last component -> dotted path of every key of the spec's fixed sections (the shallowest wins)."""
    import dataclasses
    import typing

    from ..zoo.sections import ExperimentConfig

    keys: dict[str, str] = {}
    todo: list[tuple[type, str]] = [(ExperimentConfig, "")]
    while todo:  # breadth first: `name` is the spec's name, not train.optimizer.name
        schema, prefix = todo.pop(0)
        hints = typing.get_type_hints(schema)
        for f in dataclasses.fields(schema):
            path = f"{prefix}{f.name}"
            keys.setdefault(f.name, path)
            if dataclasses.is_dataclass(hints[f.name]):
                todo.append((hints[f.name], f"{path}."))
    return keys


def _override_hint(extra: Sequence[str]) -> str:
    """For ``--epochs 1``: `` (spec keys are set as overrides: train.epochs=1)``; else ``""``."""
    keys = _spec_keys()
    hints = []
    for i, arg in enumerate(extra):
        if not arg.startswith("--"):
            continue
        name, eq, value = arg[2:].partition("=")
        key = keys.get(name.replace("-", "_"))
        if key is None:
            continue
        if not eq:
            following = extra[i + 1] if i + 1 < len(extra) else ""
            value = following if following and not following.startswith("--") else "VALUE"
        hints.append(f"{key}={value}")
    return f" (spec keys are set as overrides: {' '.join(hints)})" if hints else ""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mtlzoo`` command."""
    parser = build_parser()
    # overrides may come after options too (`mtlzoo eval RUN --json train.eval_batch_size=8`)
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all(_is_override(a) for a in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}{_override_hint(extra)}")
    args.debug = getattr(args, "debug", False)
    args.strict_plugins = getattr(args, "strict_plugins", False)
    if args.command == "train" and not args.spec and not args.resume:
        parser.error("train: give a spec (or --resume RUN_DIR)")
    try:
        return args.func(args)
    except MtlzooError as exc:
        if args.debug:
            for tb in getattr(exc, "tracebacks", ()):  # a strict-mode PluginError: each plugin's own frames
                print(tb.rstrip(), file=sys.stderr)
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)  # a progress bar may hold the line
        return 130


if __name__ == "__main__":
    sys.exit(main())
