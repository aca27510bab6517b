"""Every hook a plugin can implement: the plugin author's contract.

A plugin is a module (or object) named by an entry point in the group ``mtlzoo``::

    [project.entry-points.mtlzoo]
    my_plugin = "my_package.plugin"

It implements any of the hooks below with the :data:`hookimpl` marker. Registration is by
callback: the zoo hands each hook a ``register`` callable and the plugin calls it once per
part, so a plugin never returns lists::

    from mtlzoo import hookimpl

    @hookimpl
    def register_backbones(register):
        register("tiny_cnn", TinyCNN, TinyCNNOptions, "A 4-layer CNN")

``register(name, factory, options=None, help="", *, targets=None, examples=None,
variants=None)`` records one part:

* ``factory`` builds it, called with the kind's arguments (stated in each hook below)
  followed by **one instance of** ``options`` when the part has options. It may be given
  as a string ``"package.module:attribute"``: the module is then imported only when the
  part is first built, which keeps ``mtlzoo list`` and ``mtlzoo config show`` fast (they
  never import torch). A callable factory's signature is checked at registration; a
  string one when it is first imported.
* ``options`` is a dataclass (see :mod:`mtlzoo.contract.options`); its field types and
  defaults are checked at registration.
* ``help`` is the one line ``mtlzoo list`` shows.
* ``targets`` (heads, losses, metrics): the target kinds the part works with, e.g.
  ``("segmentation", "class")``, where ``"dense"`` stands for every dense kind and
  ``"image"`` for every image-level kind (plugin kinds included); ``None`` means any. A spec
  that puts the part on a task of another kind is refused with one line.
* ``examples`` (optional): ``examples(folder) -> list[dict]``, option sets the conformance
  kit (``mtlzoo check``) builds the part with; a dataset that reads files writes a tiny
  copy of its layout into ``folder`` and returns options pointing at it. Default: the
  part's defaults.
* ``variants`` (optional): ``variants() -> list[str]``, sub-names ``mtlzoo list`` searches
  (the architectures a ``timm`` backbone accepts).

Names are never decided by load order: mtlzoo's own (built-in) parts always keep their
names; a third-party entry that reuses a built-in name is refused and reported, the rest of
that plugin still loads; when two third-party plugins register the same name, both entries
are refused (block one of them to use the other). Each plugin is loaded in isolation: one
that fails to import or raises inside a hook is reported by ``mtlzoo plugins`` and skipped.
"""

from __future__ import annotations

from typing import NamedTuple

import pluggy

PROJECT = "mtlzoo"
ENTRY_POINT_GROUP = "mtlzoo"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class Returns(NamedTuple):
    """What a kind's factory must return. :meth:`mtlzoo.Zoo.make` checks every part it builds
    against its kind's ``Returns`` once, and refuses a wrong product in one line naming the
    spec key, the part and its plugin (``combiner: combiner 'x' (plugin p) built dict, not a
    mtlzoo Combiner``).

    Attributes:
        words: the product in words, as errors and docs name it (``"an nn.Module"``).
        type: ``"package.module:Class"``: the product is an instance of it (imported when a
            product is first checked, so this table stays torch-free); ``None``: any type.
        callable: the product is callable.
        attributes: ``(name, "package.module:Class" or None)`` pairs: attributes the product
            carries, an instance of that class (``None``: any value but ``None``).
        named: the product's ``name`` attribute is its registered name.
    """

    words: str
    type: str | None = None
    callable: bool = False
    attributes: tuple[tuple[str, str | None], ...] = ()
    named: bool = False


class KindSpec(NamedTuple):
    """One kind of part: the hook that registers it, the arguments its factory gets before
    the options instance, and what the factory returns."""

    hook: str
    args: tuple[str, ...]
    returns: Returns


_MODULE = Returns("an nn.Module", "torch.nn:Module")

#: every kind of part, in the order ``mtlzoo list`` shows them
KINDS: dict[str, KindSpec] = {
    "backbone": KindSpec("register_backbones", (), _MODULE),
    "head": KindSpec("register_heads", ("feature_info", "out_channels"), _MODULE),
    "loss": KindSpec("register_losses", ("task",), Returns("a callable (an nn.Module)", callable=True)),
    "combiner": KindSpec(
        "register_combiners",
        ("task_names",),
        Returns("a mtlzoo Combiner", "mtlzoo.contract.combine:Combiner"),
    ),
    "dataset": KindSpec(
        "register_datasets",
        ("split",),
        Returns(
            "a dataset with an `info: DatasetInfo` attribute (datasets describe their targets with a "
            "DatasetInfo)",
            attributes=(("info", "mtlzoo.contract.data:DatasetInfo"),),
        ),
    ),
    "metric": KindSpec(
        "register_metrics",
        ("task",),
        Returns("a metric that sets higher_is_better", attributes=(("higher_is_better", None),)),
    ),
    "task": KindSpec("register_tasks", (), Returns("a mtlzoo TaskType", "mtlzoo.contract.tasks:TaskType")),
    "target_kind": KindSpec(
        "register_target_kinds",
        (),
        Returns(
            "a TargetKind whose name is its registered name", "mtlzoo.contract.data:TargetKind", named=True
        ),
    ),
    "architecture": KindSpec(
        "register_architectures",
        ("parts",),
        Returns("a mtlzoo Architecture", "mtlzoo.contract.architecture:Architecture"),
    ),
}


@hookspec
def register_backbones(register):
    """Add backbones (the shared part of the model).

    ``factory(options) -> nn.Module`` (``factory()`` without options) whose
    ``forward(images: Tensor[B,3,H,W])`` returns a list of feature maps ordered fine to
    coarse, with these attributes (:class:`mtlzoo.Backbone` has the defaults):

    * ``feature_info: list[FeatureInfo]``: channels and stride of each map, in order;
      checked against a real forward pass when a model is built;
    * ``input_mean`` / ``input_std``: the per-channel statistics (``[0, 1]`` units) its
      weights expect, or ``None`` when they expect nothing in particular (random init;
      the model then normalises with the dataset's statistics);
    * ``size_divisor``: input sizes must be multiples of it (1: any size).

    The model normalises its input once, from these attributes; datasets yield raw
    ``[0, 1]`` images. Every parameter of the backbone is shared by all tasks; one that
    receives no gradient by design is marked with :func:`mtlzoo.mark_unused`.
    """


@hookspec
def register_heads(register):
    """Add task heads (the per-task part of the model).

    ``factory(feature_info: list[FeatureInfo], out_channels: int, options) -> nn.Module``
    whose ``forward(features: list[Tensor], size: tuple[int, int])`` maps the backbone's
    feature list to the task's prediction: for a dense target kind (segmentation, depth
    ...) ``[B, out_channels, *size]``, for an image-level one ``[B, out_channels]``; checked
    by a dry forward pass when a model is built. Class-like outputs are raw logits (the
    loss applies the activation); regression outputs are the prediction itself.
    """


@hookspec
def register_losses(register):
    """Add losses.

    ``factory(task: TaskInfo, options) -> nn.Module`` whose ``forward(pred, target)``
    returns a scalar tensor. ``task`` carries what the data knows about the target (its
    kind, number of classes, ignore index, class weights). Register with ``targets=`` the
    target kinds it handles.
    """


@hookspec
def register_metrics(register):
    """Add evaluation metrics.

    ``factory(task: TaskInfo, options) -> torchmetrics.Metric`` with ``update(pred,
    target)`` per batch and ``compute()`` returning one scalar for the whole split. States
    must be exact (sums, confusion matrices, concatenations), never averages of per-batch
    averages, so that results do not depend on batch size and reduce correctly across
    ranks. ``higher_is_better`` must be set (benchmarks sign the relative change by it);
    an optional ``key`` attribute names the value in logs (default: the registered name).
    Register with ``targets=`` the target kinds it handles.
    """


@hookspec
def register_combiners(register):
    """Add loss combiners: how per-task losses become one update of the shared parameters.

    ``factory(task_names: list[str], options) -> Combiner`` (a subclass of
    :class:`mtlzoo.Combiner`, an ``nn.Module``) implementing ``backward(losses, step) ->
    dict[str, float]``: it owns the backward pass (``step.backward``,
    ``step.backward_weighted`` or ``step.set_shared_gradient``), may ask ``step`` for
    per-task gradients w.r.t. the shared parameters or the shared representation, and
    returns what it wants logged. After the first training step every shared parameter
    must hold a gradient. State that must survive a resume lives in buffers or parameters.
    """


@hookspec
def register_datasets(register):
    """Add datasets.

    ``factory(split: str, options) -> torch.utils.data.Dataset`` (map-style) yielding
    ``{"image": FloatTensor[3,H,W] in [0, 1], <target key>: Tensor, ...}`` with an
    attribute ``info: DatasetInfo`` that describes each target key (its target kind,
    number of classes, class names, ignore index) and, optionally, the images' mean and
    std. ``mtlzoo data check`` compares every sample with ``info``. ``split`` is
    ``"train"``, ``"val"`` or ``"test"``; a layout without that split raises
    :class:`mtlzoo.SplitNotFound`. An optional ``check() -> list[str]`` scans the files.
    """


@hookspec
def register_tasks(register):
    """Add task types (segmentation, depth, ...), which supply defaults for a task spec.

    ``factory(options) -> TaskType`` (``factory()`` without options): the target kinds the
    type learns, its default target key, head, loss and metrics, how many output channels
    its head needs, and optionally how its target is derived from another target
    (``from:`` in a spec, e.g. a boundary map from a segmentation mask). The options are
    set in the task's own node of a spec (``{type: boundary, from: semseg, width: 2}``).
    """


@hookspec
def register_target_kinds(register):
    """Add target kinds: what a target tensor looks like and how it moves with the image.

    ``factory() -> TargetKind``: its shape (``("H", "W")``, ``(1, "H", "W")``,
    ``("C",)`` ...), dtype, how the pipeline resizes, pads and flips it, and a value check
    used by ``mtlzoo data check``. Dataset infos name target kinds by their registered
    name.
    """


@hookspec
def register_architectures(register):
    """Add multi-task architectures: how the backbone(s) and task heads form one model.

    ``factory(parts: ArchitectureParts, options) -> Architecture`` (see
    :mod:`mtlzoo.contract.architecture`): ``parts`` holds the built backbone (and
    ``parts.backbone_copy()`` for one network per task, ``parts.stages()`` to run it stage
    by stage), the heads built for its ``feature_info``, the tasks' infos, and
    ``parts.make_head(task, feature_info)`` for heads over other maps. The model predicts
    every task, declares its shared and per-task parameters (every trainable parameter in
    exactly one group, checked at build), returns its shared representation when it has one
    (``wrt: features`` combiners need it) and its deep-supervision predictions (``aux``,
    weighted by its ``aux_weight``). A spec names it as ``model.architecture``; without one
    the model is hard parameter sharing (``mtlzoo.MultiTaskModel``).
    """


__all__ = ["hookimpl", "hookspec", "KINDS", "KindSpec", "Returns", "PROJECT", "ENTRY_POINT_GROUP"]
