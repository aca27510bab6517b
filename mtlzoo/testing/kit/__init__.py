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
  ``size_divisor``: present and valid, the check the build makes); its maps match
  ``feature_info`` at several input sizes; its stages (when it offers them) give the same
  maps; every parameter gets a gradient from the maps.
* **head**: output ``[B, C, H, W]`` (dense target kinds) or ``[B, C]`` at several sizes and two
  backbone layouts; every parameter gets a gradient.
* **loss**: for each target kind it declares, a finite scalar with finite gradients.
* **metric**: ``higher_is_better`` set; a finite value (a scalar, or one value per class);
  the same value fed all at once or one sample at a time (exact states); the same value from
  two instances merged (reduces across ranks).
* **combiner**: in each ``wrt`` mode it accepts, every shared parameter gets a finite
  gradient; its state survives a save/load through safetensors (the next step agrees). A
  combiner that makes no gradient fails that one contract, not the state check after it.
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
(default: the options' defaults). The kit is hermetic: it sees the plugin under test and the
built-ins only (:func:`~mtlzoo.testing.kit.common.hermetic`), so other installed plugins,
broken or not, change no result. Each kind's checks live in a module of this package named
after the kind (:mod:`.backbone`, :mod:`.head` ... :mod:`.architecture`); what they share in
:mod:`.common`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ...zoo.registry import Entry
from .architecture import check_architecture
from .backbone import check_backbone
from .combiner import check_combiner
from .common import Report, Result, format_report, hermetic, import_torch
from .dataset import check_dataset
from .head import check_head
from .loss import check_loss
from .metric import check_metric
from .target_kind import check_target_kind
from .task import check_task

if TYPE_CHECKING:
    from mtlzoo.zoo.zoo import Zoo


CHECKS: dict[str, Callable[[Zoo, Entry, Path], list[Result]]] = {
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


def check_entry(zoo: Zoo, entry: Entry, folder: Path | None = None) -> list[Result]:
    """Every contract of one registered part, among the built-ins and its own plugin's parts
    only (:func:`~mtlzoo.testing.kit.common.hermetic`)."""
    zoo = hermetic(zoo, entry.plugin)
    if folder is None:
        with tempfile.TemporaryDirectory() as tmp:
            return CHECKS[entry.kind](zoo, entry, Path(tmp))
    return CHECKS[entry.kind](zoo, entry, folder)


def check_plugin(zoo: Zoo, plugin: str, kinds: Iterable[str] | None = None) -> Report:
    """Check every part ``plugin`` registered (optionally only some kinds). A plugin that
    failed to load, or whose entries were refused, fails with that reason. The checks see the
    built-ins and ``plugin`` only: other installed plugins, broken or not, change nothing."""
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
    zoo = hermetic(zoo, plugin)
    torch = import_torch()
    with tempfile.TemporaryDirectory() as tmp:
        for kind, names in record.registered.items():
            if wanted is not None and kind not in wanted:
                continue
            for name in names:
                entry = zoo.entry(kind, name)
                state = torch.random.get_rng_state()
                try:
                    report.results += CHECKS[kind](zoo, entry, Path(tmp) / f"{kind}-{name}")
                finally:
                    torch.random.set_rng_state(state)
    return report


def assert_conforms(zoo: Zoo, plugin: str, kinds: Iterable[str] | None = None) -> Report:
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
    "check_architecture",
    "hermetic",
]
