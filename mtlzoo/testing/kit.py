"""The conformance kit: build every part a plugin registered and check it against its contract.

    from mtlzoo import Zoo
    from mtlzoo.testing import check_plugin

    report = check_plugin(Zoo.load(), "my_plugin")
    assert report.ok, report.failures()

Each part gets a list of :class:`Result` rows, one per contract (``backbone.feature_info``,
``head.output``, ``loss.scalar``, ``metric.exact``, ``combiner.gradients`` ...). A check never
raises: a part that crashes fails the contract it crashed in, with the one-line reason. What
is checked, per kind:

* **backbone**: builds; its attributes (``feature_info`` ordered, ``input_mean``/``input_std``,
  ``size_divisor``); its maps match ``feature_info`` at several input sizes; its stages (when
  it offers them) give the same maps; every parameter gets a gradient from the maps.
* **head**: output ``[B, C, H, W]`` (dense target kinds) or ``[B, C]`` at several sizes and two
  backbone layouts; every parameter gets a gradient.
* **loss**: for each target kind it declares, a finite scalar with finite gradients.
* **metric**: ``higher_is_better`` set; the same value fed all at once or one sample at a
  time (exact states); the same value from two instances merged (reduces across ranks).
* **combiner**: in each ``wrt`` mode it accepts, every shared parameter gets a finite
  gradient; its state survives a save/load through safetensors (the next step agrees).
* **dataset**: in each split its layout has, ``info`` is a ``DatasetInfo`` of registered
  kinds and samples match it (:func:`mtlzoo.contract.data.sample_problems`).
* **task**: its defaults name registered parts that accept its target kinds; a derivation
  produces targets its kind accepts.
* **target_kind**: its example matches its shape, dtype and value check, also after the
  pipeline's resize, crop, scale and flip.
* **architecture**: built from a small staged backbone and three tasks, it predicts every
  task (and its deep supervision) at the right shape, declares each trainable parameter
  shared or of one task, and ``Step``'s Gramian and shared gradient equal explicit per-task
  autograd (``wrt: params``, and ``features`` where it has a shared representation).

Parts are built with the option sets their registration's ``examples(folder)`` returns
(default: the options' defaults).
"""

from __future__ import annotations

import dataclasses
import tempfile
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..contract.errors import ConfigError, SplitNotFound, one_line
from ..zoo.registry import Entry


@dataclass
class Result:
    """One contract of one part: passed or failed, and why."""

    part: str
    contract: str
    ok: bool
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return dataclasses.asdict(self)


@dataclass
class Report:
    """Every result of one plugin's parts."""

    plugin: str
    results: list[Result] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every contract of every part passed (and there was something to check)."""
        return bool(self.results) and all(r.ok for r in self.results)

    def failures(self) -> list[Result]:
        """The failed results."""
        return [r for r in self.results if not r.ok]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {"plugin": self.plugin, "ok": self.ok, "results": [r.as_dict() for r in self.results]}


def format_report(report: Report) -> str:
    """Human-readable report: one line per part and contract."""
    lines = [
        f"{report.plugin}: {'ok' if report.ok else 'FAILED'} ({len(report.results)} checks, "
        f"{len(report.failures())} failed)"
    ]
    for r in report.results:
        lines.append(
            f"  {'ok  ' if r.ok else 'FAIL'} {r.part}: {r.contract}" + (f": {r.message}" if r.message else "")
        )
    return "\n".join(lines)


class _Checks:
    """Collects results for one part; ``run(contract, fn)`` records fn's outcome."""

    def __init__(self, label: str):
        self.label = label
        self.results: list[Result] = []

    def run(self, contract: str, fn: Callable[[], Any]) -> Any:
        try:
            value = fn()
        except Exception as exc:  # noqa: BLE001 - every failure becomes a result, never a crash
            self.results.append(Result(self.label, contract, False, one_line(exc)))
            return None
        self.results.append(Result(self.label, contract, True, value if isinstance(value, str) else ""))
        return value

    def fail(self, contract: str, message: str) -> None:
        self.results.append(Result(self.label, contract, False, message))

    def failed(self, contract: str) -> bool:
        return any(r.contract == contract and not r.ok for r in self.results)


def _option_sets(entry: Entry, folder: Path) -> list[dict[str, Any]]:
    if entry.examples is None:
        return [{}]
    sets = entry.examples(folder)
    if not isinstance(sets, list) or not sets or not all(isinstance(s, dict) for s in sets):
        raise TypeError(f"examples() must return a non-empty list of option mappings, got {sets!r}")
    return sets


def _build(zoo: Any, entry: Entry, values: dict[str, Any], *args: Any) -> Any:
    return zoo.call(entry, *args, options=entry.build_options(values, entry.name), path=entry.name)


def _torch() -> Any:
    import torch

    return torch


# -- backbones -----------------------------------------------------------------------------------------
def check_backbone(zoo: Any, entry: Entry, folder: Path) -> list[Result]:
    """The backbone contract (see the module docstring)."""
    from ..contract import checks

    torch = _torch()
    c = _Checks(entry.label)
    for values in c.run("examples", lambda: _option_sets(entry, folder)) or []:
        backbone = c.run("factory", lambda v=values: _build(zoo, entry, v))
        if backbone is None:
            continue
        info = c.run("backbone.attributes", lambda b=backbone: checks.backbone_attributes(b, entry.label))
        if info is None:
            continue
        div = int(getattr(backbone, "size_divisor", 1))

        def maps_match(b: Any = backbone, fi: Any = info, d: int = div) -> None:
            b.eval()
            with torch.no_grad():
                for h, w in ((64, 64), (96, 128), (80, 48)):
                    size = (-(-h // d) * d, -(-w // d) * d)
                    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(h))
                    checks.feature_maps(b(x), fi, size, entry.label)

        c.run("backbone.feature_info", maps_match)

        def stages(b: Any = backbone, d: int = div) -> str:
            staged = b.staged() if callable(getattr(b, "staged", None)) else None
            if staged is None:
                return "no stages (architectures that act between stages refuse it)"
            b.eval()
            size = -(-64 // d) * d
            x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(2))
            with torch.no_grad():
                maps, y = b(x), x
                for i, stage in enumerate(staged):
                    y = stage(y)
                    if i >= len(maps) or not torch.allclose(y, maps[i], rtol=1e-5, atol=1e-6):
                        raise AssertionError(f"stage {i} does not give map {i} of forward()")
            if len(staged) != len(maps):
                raise AssertionError(f"{len(staged)} stages for {len(maps)} maps")
            return ""

        c.run("backbone.stages", stages)

        def gradients(b: Any = backbone, d: int = div) -> None:
            b.train()
            size = -(-64 // d) * d
            maps = b(torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1)))
            sum(m.float().square().mean() for m in maps).backward()
            checks.shared_gradients([(n, p) for n, p in b.named_parameters()], entry.label)

        c.run("backbone.gradients", gradients)
    return c.results


# -- heads ----------------------------------------------------------------------------------------------
_LAYOUTS = ([(16, 2), (24, 4), (32, 8), (48, 16), (64, 32)], [(24, 4), (40, 8), (64, 16), (96, 32)])


def _kinds_of(zoo: Any, entry: Entry) -> list[Any]:
    """The registered target kinds the part accepts."""
    out = []
    for e in zoo.list("target_kind"):
        try:
            kind = zoo.target_kind(e.name)
        except Exception:  # noqa: BLE001 - a broken kind is reported by its own checks
            continue
        if entry.accepts(kind):
            out.append(kind)
    return out


def _dense_targets(zoo: Any, entry: Entry) -> set[bool]:
    """Whether the part's target kinds are dense (``{True}``, ``{False}`` or both)."""
    return {k.dense for k in _kinds_of(zoo, entry)} or {True, False}


def check_head(zoo: Any, entry: Entry, folder: Path) -> list[Result]:
    """The head contract (see the module docstring)."""
    from ..contract.features import FeatureInfo

    torch = _torch()
    c = _Checks(entry.label)
    dense = _dense_targets(zoo, entry)
    for values in c.run("examples", lambda: _option_sets(entry, folder)) or []:
        for layout in _LAYOUTS:
            info = [FeatureInfo(ch, st) for ch, st in layout]
            head = c.run("factory", lambda v=values, fi=info: _build(zoo, entry, v, list(fi), 3))
            if head is None:
                continue

            def output(h: Any = head, fi: Any = info) -> None:
                h.train()
                for size in ((64, 64), (96, 160)):
                    g = torch.Generator().manual_seed(size[1])
                    maps = [
                        torch.randn(
                            2,
                            f.channels,
                            -(-size[0] // f.stride),
                            -(-size[1] // f.stride),
                            generator=g,
                            requires_grad=True,
                        )
                        for f in fi
                    ]
                    pred = h(maps, size)
                    shapes = {True: (2, 3, *size), False: (2, 3)}
                    allowed = [shapes[d] for d in dense]
                    if not torch.is_tensor(pred) or tuple(pred.shape) not in allowed:
                        got = list(pred.shape) if torch.is_tensor(pred) else type(pred).__name__
                        raise AssertionError(
                            f"output {got} for size {size}, expected "
                            f"{' or '.join(str(list(s)) for s in allowed)} (out_channels 3)"
                        )
                    if not pred.is_floating_point():
                        raise AssertionError(f"output dtype {pred.dtype} is not floating point")
                pred.float().square().mean().backward()
                missing = [n for n, p in h.named_parameters() if p.requires_grad and p.grad is None]
                if missing:
                    raise AssertionError(f"{len(missing)} parameters get no gradient (e.g. {missing[0]})")

            c.run("head.output", output)
    return c.results


# -- losses and metrics ------------------------------------------------------------------------------------
def _task_setups(zoo: Any, entry: Entry) -> list[tuple[Any, Any, Any]]:
    """(TaskInfo, kind, out_channels) for each target kind the part declares."""
    from ..contract.data import TargetInfo
    from ..contract.tasks import TaskInfo

    setups = []
    for kind in _kinds_of(zoo, entry):
        name = kind.name
        classes = ("a", "b", "c", "d")
        tinfo = TargetInfo(name, len(classes), classes, 255 if kind.pad == "ignore" else None)
        channels = None
        for t in zoo.list("task"):
            if t.options is None:
                ttype = zoo.call(t, path=t.name)
            else:
                ttype = zoo.call(t, options=t.build_options({}, t.name), path=t.name)
            if name in ttype.target_kinds:
                channels = int(ttype.out_channels(tinfo))
                break
        if channels is None:
            channels = len(classes) if "C" in kind.shape or kind.dtype == "int64" else 1
        setups.append((TaskInfo("task", "task", "target", channels, tinfo), kind, channels))
    return setups


def _batch(kind: Any, tinfo: Any, channels: int, n: int, seed: int) -> tuple[Any, Any]:
    torch = _torch()
    g = torch.Generator().manual_seed(seed)
    h, w = 12, 16
    if kind.example is None:
        raise AssertionError(
            f"target kind {kind.name!r} has no example(); the kit cannot make targets for it"
        )
    target = torch.stack([kind.example(tinfo, h, w, g) for _ in range(n)])
    shape = (n, channels, h, w) if kind.dense else (n, channels)
    return torch.randn(*shape, generator=g), target


def check_loss(zoo: Any, entry: Entry, folder: Path) -> list[Result]:
    """The loss contract (see the module docstring)."""
    torch = _torch()
    c = _Checks(entry.label)
    setups = c.run("targets", lambda: _task_setups(zoo, entry)) or []
    for values in c.run("examples", lambda: _option_sets(entry, folder)) or []:
        for tinfo, kind, channels in setups:
            loss = c.run("factory", lambda v=values, t=tinfo: _build(zoo, entry, v, t))
            if loss is None:
                continue

            def scalar(fn: Any = loss, t: Any = tinfo, k: Any = kind, ch: int = channels) -> None:
                pred, target = _batch(k, t.target_info, ch, 4, 0)
                pred.requires_grad_(True)
                value = fn(pred, target)
                if not (torch.is_tensor(value) and value.dim() == 0):
                    raise AssertionError(
                        f"returned {getattr(value, 'shape', type(value).__name__)}, not a scalar"
                    )
                if not bool(torch.isfinite(value)):
                    raise AssertionError(f"value {float(value)} is not finite")
                value.backward()
                if pred.grad is None or not bool(torch.isfinite(pred.grad).all()):
                    raise AssertionError("no finite gradient reaches the prediction")

            c.run(f"loss.scalar[{kind.name}]", scalar)
    return c.results


def check_metric(zoo: Any, entry: Entry, folder: Path) -> list[Result]:
    """The metric contract (see the module docstring)."""
    torch = _torch()
    c = _Checks(entry.label)
    setups = c.run("targets", lambda: _task_setups(zoo, entry)) or []
    for values in c.run("examples", lambda: _option_sets(entry, folder)) or []:
        for tinfo, kind, channels in setups:

            def make(v=values, t=tinfo):
                return _build(zoo, entry, v, t)

            metric = c.run("factory", make)
            if metric is None:
                continue

            def direction(m: Any = metric) -> None:
                if getattr(m, "higher_is_better", None) is None:
                    raise AssertionError("higher_is_better is not set")

            c.run("metric.higher_is_better", direction)
            pred, target = _batch(kind, tinfo.target_info, channels, 6, 1)

            def exact(mk: Any = make, p: Any = pred, t: Any = target) -> None:
                whole, split = mk(), mk()
                whole.update(p, t)
                for lo, hi in ((0, 1), (1, 3), (3, 6)):  # uneven batches: averages of averages differ
                    split.update(p[lo:hi], t[lo:hi])
                a, b = float(whole.compute()), float(split.compute())
                if not torch.isclose(torch.tensor(a), torch.tensor(b), rtol=1e-5, atol=1e-6):
                    raise AssertionError(
                        f"{a} over one batch of 6 but {b} over batches of 1, 2 and 3: states must be "
                        f"exact sums, not averages of batch averages"
                    )

            def merged(mk: Any = make, p: Any = pred, t: Any = target) -> None:
                whole, left, right = mk(), mk(), mk()
                whole.update(p, t)
                left.update(p[:3], t[:3])
                right.update(p[3:], t[3:])
                left.merge_state(right)
                a, b = float(whole.compute()), float(left.compute())
                if not torch.isclose(torch.tensor(a), torch.tensor(b), rtol=1e-5, atol=1e-6):
                    raise AssertionError(f"{a} from one instance but {b} from two merged instances")

            c.run(f"metric.exact[{kind.name}]", exact)
            c.run(f"metric.merge[{kind.name}]", merged)
    return c.results


# -- combiners ---------------------------------------------------------------------------------------------
def _wrt_modes(entry: Entry) -> list[str | None]:
    if entry.options is None:
        return [None]
    hints = typing.get_type_hints(entry.options)
    if "wrt" not in hints:
        return [None]
    args = [a for a in typing.get_args(hints["wrt"]) if isinstance(a, str)]
    return args or [None]


def _toy(seed: int) -> tuple[Any, Any, list[Any]]:
    """A two-stage convolutional backbone and three heads (two dense, one pooled)."""
    torch = _torch()
    nn = torch.nn
    torch.manual_seed(seed)
    backbone = nn.ModuleList(
        [
            nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU()),
        ]
    )
    heads = nn.ModuleList([nn.Conv2d(8, 1, 1), nn.Conv2d(8, 2, 1), nn.Linear(8, 3)])
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    return backbone, heads, [images]


def _step(backbone: Any, heads: Any, images: Any, names: list[str], step: int) -> tuple[Any, Any]:
    from ..contract.combine import Step

    x = images
    features = []
    for stage in backbone:
        x = stage(x)
        features.append(x)
    preds = [heads[0](features[0]), heads[1](features[1]), heads[2](features[1].mean((2, 3)))]
    losses = {n: (p.square().mean() + 0.1 * (i + 1)) for i, (n, p) in enumerate(zip(names, preds))}
    task_params = {n: list(h.parameters()) for n, h in zip(names, heads)}
    return losses, Step(losses, features, list(backbone.parameters()), task_params, step=step)


def check_combiner(zoo: Any, entry: Entry, folder: Path) -> list[Result]:
    """The combiner contract (see the module docstring)."""
    from ..contract.combine import Combiner

    torch = _torch()
    c = _Checks(entry.label)
    names = ["a", "b", "c"]
    for values in c.run("examples", lambda: _option_sets(entry, folder)) or []:
        for wrt in _wrt_modes(entry):
            opts = {**values, **({"wrt": wrt} if wrt else {})}
            tag = f"[wrt={wrt}]" if wrt else ""

            def make(o: dict[str, Any] = opts) -> Any:
                combiner = _build(zoo, entry, o, list(names))
                if not isinstance(combiner, Combiner):
                    raise AssertionError(f"built {type(combiner).__name__}, not a mtlzoo Combiner")
                return combiner

            combiner = c.run(f"factory{tag}", make)
            if combiner is None:
                continue

            def gradients(cb: Any = combiner) -> None:
                from ..contract import checks

                backbone, heads, (images,) = _toy(0)
                losses, step = _step(backbone, heads, images, names, 0)
                cb.backward(losses, step)
                checks.shared_gradients(list(backbone.named_parameters()), entry.label)
                bad = [n for n, p in backbone.named_parameters() if not bool(torch.isfinite(p.grad).all())]
                if bad:
                    raise AssertionError(f"non-finite gradient in {bad[0]}")

            c.run(f"combiner.gradients{tag}", gradients)
            c.run(f"combiner.state{tag}", lambda mk=make: _state_round_trip(mk, names))
    return c.results


def _state_round_trip(make: Callable[[], Any], names: list[str]) -> None:
    """Two steps, save the combiner's state through safetensors, load it into a fresh one:
    the state and the third step's logs and gradients agree."""
    from safetensors.torch import load_file, save_file

    torch = _torch()
    first = make()
    backbone, heads, (images,) = _toy(1)
    opt = torch.optim.SGD(
        [*backbone.parameters(), *heads.parameters(), *[p for p in first.parameters() if p.requires_grad]],
        lr=0.01,
    )
    for i in range(2):
        opt.zero_grad()
        losses, step = _step(backbone, heads, images, names, i)
        first.backward(losses, step)
        if first.needs_losses_after_step:
            opt.step()
            with torch.no_grad():
                after, _ = _step(backbone, heads, images, names, i)
            first.after_step({k: v.detach() for k, v in after.items()})
        else:
            opt.step()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.safetensors"
        state = {k: v.detach().contiguous().clone() for k, v in first.state_dict().items()}
        if state:
            save_file(state, str(path))
            state = load_file(str(path))
        second = make()
        second.load_state_dict(state)
    for k, v in first.state_dict().items():
        w = second.state_dict()[k]
        if v.shape != w.shape or not torch.equal(v, w):
            raise AssertionError(f"state {k!r} differs after a save/load round trip")
    grads = []
    for cb in (first, second):
        opt.zero_grad()
        for p in backbone.parameters():
            p.grad = None
        losses, step = _step(backbone, heads, images, names, 2)
        logs = cb.backward(losses, step) or {}
        grads.append(([p.grad.clone() for p in backbone.parameters()], logs))
    (g1, l1), (g2, l2) = grads
    if any(not torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(g1, g2)) or l1.keys() != l2.keys():
        raise AssertionError("the step after loading the saved state differs from the step of the original")


# -- datasets ----------------------------------------------------------------------------------------------
def check_dataset(zoo: Any, entry: Entry, folder: Path) -> list[Result]:
    """The dataset contract (see the module docstring)."""
    from ..contract.data import DatasetInfo, sample_problems

    c = _Checks(entry.label)
    for values in c.run("examples", lambda: _option_sets(entry, folder)) or []:
        found = 0
        for split in ("train", "val", "test"):
            try:
                dataset = _build(zoo, entry, values, split)
            except SplitNotFound:
                continue
            except ConfigError as exc:
                if "needs a value" in str(exc) and entry.examples is None:
                    c.fail(
                        "examples",
                        f"{exc}; register the dataset with examples= (a function writing a tiny "
                        f"copy of its layout) so it can be checked",
                    )
                    break
                c.fail(f"factory[{split}]", str(exc))
                continue
            except Exception as exc:  # noqa: BLE001
                c.fail(f"factory[{split}]", one_line(exc))
                continue
            found += 1

            def samples(ds: Any = dataset, s: str = split) -> None:
                info = getattr(ds, "info", None)
                if not isinstance(info, DatasetInfo):
                    raise AssertionError(f"info is {type(info).__name__}, not a DatasetInfo")
                kinds = {t.kind: zoo.target_kind(t.kind) for t in info.targets.values()}
                n = len(ds)
                if n == 0:
                    raise AssertionError("the split is empty")
                problems = []
                for i in sorted({0, 1, 2, n - 1} & set(range(n))):
                    problems += sample_problems(ds[i], info, kinds, f"{s}[{i}]")
                if problems:
                    raise AssertionError("; ".join(problems[:3]) + (" ..." if len(problems) > 3 else ""))

            c.run(f"dataset.samples[{split}]", samples)
        if not found and not c.failed("examples"):
            c.fail("dataset.splits", "no split (train, val, test) could be built")
    return c.results


# -- task types ---------------------------------------------------------------------------------------------
def check_task(zoo: Any, entry: Entry, folder: Path) -> list[Result]:
    """The task-type contract (see the module docstring)."""
    from ..contract.data import DatasetInfo, TargetInfo, sample_problems
    from ..contract.tasks import Derivation, TaskType
    from ..zoo.spec import resolve_node

    c = _Checks(entry.label)
    for values in c.run("examples", lambda: _option_sets(entry, folder)) or []:

        def make(v: dict[str, Any] = values) -> Any:
            ttype = _build(zoo, entry, v)
            if not isinstance(ttype, TaskType):
                raise AssertionError(f"built {type(ttype).__name__}, not a TaskType")
            return ttype

        ttype = c.run("factory", make)
        if ttype is None:
            continue

        def defaults(t: Any = ttype) -> None:
            for kind in t.target_kinds:
                zoo.target_kind(kind)
            nodes = [("head", t.head), ("loss", t.loss)] + [("metric", m) for m in t.metrics]
            for part, node in nodes:
                resolved = resolve_node(node, zoo.registries, part, f"default {part}")
                e = zoo.entry(part, resolved["name"])
                if not any(e.accepts(zoo.target_kind(k)) for k in t.target_kinds):
                    raise AssertionError(
                        f"default {part} {e.name!r} works on {e.targets}, not on the type's {t.target_kinds}"
                    )

        c.run("task.defaults", defaults)
        if ttype.derive is None:
            continue

        def derive(t: Any = ttype) -> None:
            torch = _torch()
            for source_kind in t.derive_from or [e.name for e in zoo.list("target_kind")]:
                kind = zoo.target_kind(source_kind)
                src = TargetInfo(source_kind, 4, ("a", "b", "c", "d"), 255 if kind.pad == "ignore" else None)
                d = t.derive(src)
                if not isinstance(d, Derivation):
                    raise AssertionError(f"derive() returned {type(d).__name__}, not a Derivation")
                if d.info.kind not in t.target_kinds:
                    raise AssertionError(f"derives a {d.info.kind!r} target, which the type does not learn")
                value = kind.example(src, 12, 16, torch.Generator().manual_seed(0))
                sample = {"image": torch.zeros(3, 12, 16), "derived": d.fn(value)}
                info = DatasetInfo("kit", {"derived": d.info})
                problems = sample_problems(
                    sample, info, {d.info.kind: zoo.target_kind(d.info.kind)}, "derived"
                )
                if problems:
                    raise AssertionError("; ".join(problems))

        c.run("task.derive", derive)
    return c.results


# -- target kinds ---------------------------------------------------------------------------------------------
def check_target_kind(zoo: Any, entry: Entry, folder: Path) -> list[Result]:
    """The target-kind contract (see the module docstring)."""
    from ..contract.data import DatasetInfo, TargetInfo, sample_problems
    from ..runtime.pipeline import build_pipeline

    c = _Checks(entry.label)
    kind = c.run("factory", lambda: zoo.target_kind(entry.name))
    if kind is None:
        return c.results
    info = TargetInfo(kind.name, 4, ("a", "b", "c", "d"), 255 if kind.pad == "ignore" else None)

    def example() -> None:
        torch = _torch()
        if kind.example is None:
            raise AssertionError("no example(): losses and metrics for it cannot be checked")
        sample = {
            "image": torch.rand(3, 12, 16),
            "t": kind.example(info, 12, 16, torch.Generator().manual_seed(0)),
        }
        problems = sample_problems(sample, DatasetInfo("kit", {"t": info}), {kind.name: kind}, "example")
        if problems:
            raise AssertionError("; ".join(problems))

    c.run("target_kind.example", example)

    def transforms() -> None:
        torch = _torch()

        dataset_info = DatasetInfo("kit", {"t": info})

        class _One(torch.utils.data.Dataset):
            def __init__(self) -> None:
                self.info = dataset_info

            def __len__(self) -> int:
                return 4

            def __getitem__(self, i: int) -> dict[str, Any]:
                g = torch.Generator().manual_seed(i)
                return {"image": torch.rand(3, 12, 16, generator=g), "t": kind.example(info, 12, 16, g)}

        augment = {"resize": (10, 14), "scale": (0.8, 1.5), "crop": (12, 12), "hflip": 1.0}
        ds = build_pipeline(_One(), "train", augment, [], {kind.name: kind})
        for i in range(len(ds)):
            problems = sample_problems(ds[(0, i)], ds.info, {kind.name: kind}, f"augmented[{i}]")
            if problems:
                raise AssertionError("; ".join(problems))

    c.run("target_kind.transforms", transforms)
    return c.results


# -- architectures ----------------------------------------------------------------------------------------------
def _arch_setup(zoo: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """A small staged backbone, two dense tasks and one image-level task (registered kinds)."""
    from types import SimpleNamespace

    from ..contract.backbone import Backbone
    from ..contract.data import TargetInfo
    from ..contract.features import FeatureInfo
    from ..contract.tasks import TaskInfo

    torch = _torch()
    nn = torch.nn

    class Staged(Backbone):
        def __init__(self) -> None:
            super().__init__()
            chans = [6, 8, 12]
            blocks, cin = [], 3
            for c in chans:
                blocks.append(nn.Sequential(nn.Conv2d(cin, c, 3, 2, 1), nn.ReLU()))
                cin = c
            self.blocks = nn.ModuleList(blocks)
            self.feature_info = [FeatureInfo(c, 2 ** (i + 1)) for i, c in enumerate(chans)]

        def staged(self) -> list[nn.Module]:
            return list(self.blocks)

        def forward(self, x: Any) -> list[Any]:
            out = []
            for b in self.blocks:
                x = b(x)
                out.append(x)
            return out

    class Dense(nn.Module):
        def __init__(self, feature_info: Any, out_channels: int) -> None:
            super().__init__()
            self.proj = nn.ModuleList(nn.Conv2d(fi.channels, out_channels, 1) for fi in feature_info)

        def forward(self, features: Any, size: Any) -> Any:
            return sum(
                torch.nn.functional.interpolate(p(f), size=tuple(size), mode="bilinear")
                for p, f in zip(self.proj, features)
            )

    class Pooled(nn.Module):
        def __init__(self, feature_info: Any, out_channels: int) -> None:
            super().__init__()
            self.fc = nn.Linear(feature_info[-1].channels, out_channels)

        def forward(self, features: Any, size: Any) -> Any:
            return self.fc(features[-1].mean((2, 3)))

    kinds = [zoo.target_kind(e.name) for e in zoo.list("target_kind")]
    dense = next(k for k in kinds if k.dense)
    image = next((k for k in kinds if not k.dense), None)
    specs = {"a": (dense, 2), "b": (dense, 1)} | ({"c": (image, 3)} if image is not None else {})
    infos, tasks = {}, {}
    for name, (kind, ch) in specs.items():
        infos[name] = TaskInfo(name, name, name, ch, TargetInfo(kind.name, ch))
        tasks[name] = SimpleNamespace(kind=kind, info=infos[name])

    def make_head(task: str, fi: Any) -> Any:
        return (Dense if specs[task][0].dense else Pooled)(list(fi), specs[task][1])

    torch.manual_seed(0)
    backbone = Staged()
    return backbone, {"infos": infos, "make_head": make_head}, tasks


def check_architecture(zoo: Any, entry: Entry, folder: Path) -> list[Result]:
    """The architecture contract: it builds from the parts, predicts every task (and its
    deep supervision) at the right shapes, declares every parameter once, and the Step's
    Gramian and shared gradient equal explicit per-task autograd on it."""
    from ..contract import checks
    from ..contract.architecture import Architecture, ArchitectureParts

    c = _Checks(entry.label)
    for values in c.run("examples", lambda: _option_sets(entry, folder)) or []:

        def make(v: dict[str, Any] = values) -> Any:
            backbone, extra, tasks = _arch_setup(zoo)
            infos, make_head = extra["infos"], extra["make_head"]
            heads = {t: make_head(t, backbone.feature_info) for t in infos}
            model = _build(zoo, entry, v, ArchitectureParts(backbone, heads, infos, make_head))
            if not isinstance(model, Architecture):
                raise AssertionError(f"built {type(model).__name__}, not a mtlzoo Architecture")
            if list(model.task_names) != list(infos):
                raise AssertionError(f"predicts tasks {list(model.task_names)}, not {list(infos)}")
            return model, backbone, tasks

        built = c.run("factory", make)
        if built is None:
            continue
        model, backbone, tasks = built
        labels = {"backbone": "kit backbone", "architecture": entry.label, **dict.fromkeys(tasks, "kit head")}
        c.run(
            "architecture.outputs",
            lambda m=model, b=backbone, t=tasks, n=labels: checks.dry_forward(m, b, t, (32, 48), n),
        )
        c.run("architecture.parameters", lambda m=model: checks.parameter_groups(m, entry.label))
        modes = ["params"] + (["features"] if model.has_shared_representation else [])
        for wrt in modes:
            c.run(f"architecture.gramian[{wrt}]", lambda m=model, w=wrt: _gramian_matches_autograd(m, w))
    return c.results


def _gramian_matches_autograd(model: Any, wrt: str) -> None:
    """``Step.gramian`` and ``Step.backward_weighted`` against per-task autograd (float32 round-off)."""
    from ..contract import checks
    from ..contract.combine import Step

    torch = _torch()
    model.train()
    images = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(3))

    def losses_of() -> tuple[Any, dict[str, Any]]:
        out = model.forward_train(images)
        losses = {}
        for t, p in out.preds.items():
            aux = out.aux.get(t) or []
            loss = p.float().square().mean() + 0.1
            if aux and model.aux_weight:
                loss = loss + model.aux_weight * torch.stack([a.float().square().mean() for a in aux]).mean()
            losses[t] = loss
        return out, losses

    shared = model.shared_parameters()
    out, losses = losses_of()
    if wrt == "params":
        rows = []
        for loss in losses.values():
            grads = torch.autograd.grad(loss, shared, retain_graph=True, allow_unused=True)
            rows.append(
                torch.cat(
                    [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, shared)]
                )
            )
    else:
        rows = None
    step = Step(losses, out.shared, shared, {t: model.task_parameters(t) for t in model.task_names})
    gram = step.gramian(wrt)
    if rows is not None:
        j = torch.stack(rows).double()
        want = j @ j.T
        if not torch.allclose(gram, want, rtol=1e-4, atol=1e-8 * float(want.abs().max() + 1)):
            raise AssertionError(
                f"Step.gramian('params') {gram.tolist()} differs from per-task autograd {want.tolist()}"
            )
    w = torch.linspace(0.5, 1.5, len(losses), dtype=torch.float64)
    for p in model.parameters():
        p.grad = None
    step.backward_weighted(w, wrt)
    checks.shared_gradients(model.named_shared_parameters(), "the architecture")
    if rows is not None:
        got = torch.cat([p.grad.reshape(-1) for p in shared]).double()
        want_g = (w[:, None] * torch.stack(rows).double()).sum(0)
        if not torch.allclose(got, want_g, rtol=1e-4, atol=1e-6 * float(want_g.abs().max() + 1)):
            raise AssertionError("the shared gradient of backward_weighted differs from sum_t w_t g_t")
    for p in model.parameters():
        p.grad = None


CHECKS: dict[str, Callable[[Any, Entry, Path], list[Result]]] = {
    "backbone": check_backbone,
    "head": check_head,
    "loss": check_loss,
    "metric": check_metric,
    "combiner": check_combiner,
    "dataset": check_dataset,
    "task": check_task,
    "target_kind": check_target_kind,
    "architecture": check_architecture,
}


def check_entry(zoo: Any, entry: Entry, folder: Path | None = None) -> list[Result]:
    """Every contract of one registered part."""
    if folder is None:
        with tempfile.TemporaryDirectory() as tmp:
            return CHECKS[entry.kind](zoo, entry, Path(tmp))
    return CHECKS[entry.kind](zoo, entry, folder)


def check_plugin(zoo: Any, plugin: str, kinds: Iterable[str] | None = None) -> Report:
    """Check every part ``plugin`` registered (optionally only some kinds). A plugin that
    failed to load, or whose entries were refused, fails with that reason."""
    report = Report(plugin)
    records = [r for r in zoo.records if r.name == plugin]
    if not records:
        known = ", ".join(sorted(r.name for r in zoo.records))
        report.results.append(
            Result(plugin, "loaded", False, f"no plugin named {plugin!r} (installed: {known})")
        )
        return report
    record = records[0]
    if record.status != "loaded":
        report.results.append(Result(plugin, "loaded", False, record.error or record.status))
    for refused in record.refused:
        report.results.append(Result(plugin, "registration", False, refused))
    wanted = set(kinds) if kinds is not None else None
    torch = _torch()
    with tempfile.TemporaryDirectory() as tmp:
        for kind, names in record.registered.items():
            if wanted is not None and kind not in wanted:
                continue
            for name in names:
                entry = zoo.entry(kind, name)
                state = torch.random.get_rng_state()
                try:
                    report.results += check_entry(zoo, entry, Path(tmp) / f"{kind}-{name}")
                finally:
                    torch.random.set_rng_state(state)
    return report


def assert_conforms(zoo: Any, plugin: str, kinds: Iterable[str] | None = None) -> Report:
    """:func:`check_plugin`, raising ``AssertionError`` with every failed contract when one fails."""
    report = check_plugin(zoo, plugin, kinds)
    if not report.ok:
        raise AssertionError(format_report(report))
    return report


__all__ = [
    "check_plugin",
    "check_entry",
    "assert_conforms",
    "format_report",
    "Report",
    "Result",
    "CHECKS",
    "check_backbone",
    "check_head",
    "check_loss",
    "check_metric",
    "check_combiner",
    "check_dataset",
    "check_task",
    "check_target_kind",
]
