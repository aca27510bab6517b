"""Every hook a plugin can implement: the plugin author's contract.

A plugin is a module (or object) named by an entry point in the group ``mtlzoo``::

    [project.entry-points.mtlzoo]
    my_plugin = "my_package.plugin"

It implements any of the hooks below with the :data:`hookimpl` marker. Registration is by
callback: the core hands each hook a ``register`` callable and the plugin calls it once
per part, so a plugin never returns lists::

    from mtlzoo import hookimpl

    @hookimpl
    def register_backbones(register):
        register("tiny_cnn", TinyCNN, schema=TinyCNNOptions, help="A 4-layer CNN")

``register(name, factory, schema=None, help="")`` records the entry with its source plugin.
``schema`` is a dataclass: the part's options in a spec are validated against it (unknown
key, wrong type) and passed to ``factory`` as keyword arguments. A duplicate name is an
error naming both plugins. Each plugin is loaded and registered in isolation: if one raises,
it is reported by ``mtlzoo plugins`` and its entries are dropped; the others still load.

The factory signatures per kind are stated in each hook below; the types named there
(:class:`~mtlzoo.model.FeatureInfo`, :class:`~mtlzoo.tasks.TaskInfo`,
:class:`~mtlzoo.data.DatasetInfo`, :class:`~mtlzoo.combine.Combiner`,
:class:`~mtlzoo.tasks.TaskType`) are part of the public API.
"""

from __future__ import annotations

import pluggy

PROJECT = "mtlzoo"
ENTRY_POINT_GROUP = "mtlzoo"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_backbones(register):
    """Add backbones (the shared part of the model).

    ``factory(**options) -> nn.Module`` whose ``forward(images: Tensor[B,3,H,W])`` returns a
    list of feature maps ordered fine to coarse, and which has an attribute
    ``feature_info: list[FeatureInfo]`` giving the channels and stride of each map. Every
    parameter of the backbone is a shared parameter of the multi-task model.
    """


@hookspec
def register_heads(register):
    """Add task heads (the per-task part of the model).

    ``factory(feature_info: list[FeatureInfo], out_channels: int, **options) -> nn.Module``
    whose ``forward(features: list[Tensor], size: tuple[int, int])`` maps the backbone's
    feature list to the task's prediction: dense heads return ``[B, out_channels, *size]``,
    image-level heads ``[B, out_channels]``. Class-like outputs (segmentation, boundary,
    labels) are raw logits, the loss applies the activation; regression outputs are the
    prediction itself (the ``dense`` head's positive depth, the ``normals`` head's unit
    vectors).
    """


@hookspec
def register_losses(register):
    """Add losses.

    ``factory(task: TaskInfo, **options) -> nn.Module`` whose ``forward(pred, target)``
    returns a scalar tensor. ``task`` carries what the data knows about the target
    (number of classes, ignore index, class weights).
    """


@hookspec
def register_metrics(register):
    """Add evaluation metrics.

    ``factory(task: TaskInfo, **options) -> torchmetrics.Metric`` with ``update(pred,
    target)`` per batch and ``compute()`` returning one scalar for the whole split. States
    must be exact (sums, confusion matrices, concatenations), never averages of per-batch
    averages, so that results do not depend on batch size and reduce correctly across
    ranks. The metric's ``higher_is_better`` attribute must be set (benchmarks sign the
    relative change by it); an optional ``key`` attribute names the value in logs
    (defaults to the registered name).
    """


@hookspec
def register_combiners(register):
    """Add loss combiners: how per-task losses become one update of the shared parameters.

    ``factory(task_names: list[str], **options) -> Combiner`` (an ``nn.Module`` subclass of
    :class:`mtlzoo.combine.Combiner`) implementing ``backward(losses, step) -> dict[str,
    float]``: it owns the backward pass, may ask ``step`` for per-task gradients w.r.t. the
    shared parameters or the shared representation, and returns what it wants logged.
    State that must survive a resume lives in buffers or parameters.
    """


@hookspec
def register_datasets(register):
    """Add datasets.

    ``factory(split: str, **options) -> torch.utils.data.Dataset`` (map-style) yielding
    ``{"image": FloatTensor[3,H,W], <target key>: Tensor, ...}`` and with an attribute
    ``info: DatasetInfo`` that describes each target key (its kind, number of classes,
    class names, ignore index). ``split`` is ``"train"``, ``"val"`` or ``"test"``; a
    dataset without a split raises :class:`mtlzoo.errors.DataError`.
    """


@hookspec
def register_tasks(register):
    """Add task types (segmentation, depth, ...), which supply defaults for a task spec.

    ``factory(**options) -> TaskType`` giving the default target key, head, loss and
    metrics of the type and how many output channels its head needs, so that a spec can
    be as short as ``semseg: {type: segmentation}``.
    """
