"""The combiner interface: how per-task losses become one update of the shared parameters.

A :class:`Combiner` owns the backward pass. The trainer computes the per-task losses and
hands them, with a :class:`Step`, to ``combiner.backward(losses, step)``:

* **Loss-level** combiners weight the losses and call :meth:`Step.backward` on one scalar
  (or :meth:`Step.backward_weighted` with ``heads="weighted"``).
* **Gradient-level** combiners ask the step for the T x T Gramian of the per-task gradients
  (:meth:`Step.gramian`) or for the T x P matrix itself (:meth:`Step.task_gradients`),
  w.r.t. the shared parameters (``wrt="params"``) or the shared representation
  (``wrt="features"``, the MGDA-UB idea), and write the shared update with
  :meth:`Step.backward_weighted` (an update that is a weighted sum of task gradients) or
  :meth:`Step.set_shared_gradient` (any direction).

How per-task gradients are computed
-----------------------------------
Every per-task quantity starts with one *head pass* per task: the task loss is
backpropagated through the heads only, down to the backbone's feature maps, giving the
partial derivative of the loss w.r.t. each feature map (gradient paths between feature
maps inside the backbone are blocked so that nothing is counted twice) and the gradient
of the head parameters. Then:

* ``wrt="features"``: the rows are those partial derivatives; the final update is one
  backward pass through the backbone from ``sum_t w_t dL_t/dfeatures``.
* ``wrt="params"``, Gramian (:meth:`Step.gramian`): the "autogram" idea of Quinton & Rey
  (2024). For each task, the feature cotangents are backpropagated through the backbone
  computing *input* gradients only; a hook on every plain 2-d convolution catches the
  gradient of its output, from which the layer's contribution to the Gramian is
  computed without the T x P matrix: either from the per-task weight gradients of that
  layer alone (early layers, few parameters) or, where it is cheaper (deep layers with
  many parameters and few output positions), from the kernel identity
  ``<D_i X^T, D_j X^T> = <D_i (X^T X), D_j>``. The final update for a weight vector ``w``
  is then assembled layer by layer from what was kept (no further backbone pass), and the
  last pass frees the backbone's saved activations (lower peak memory; the matrix or a
  features-side backward cannot be asked for after that). Parameters no hook can handle
  (norm layers, biases, linear layers, grouped/transposed convs, weights used twice, the
  first conv) get their per-task gradients from autograd in the same passes.
  Measured on resnet18, 64x64, batch 8, 2 CPU cores: ~2x a plain step at T=3 and ~3.3x at
  T=8, against ~2.6x and ~5x for one full backward per task.
* ``wrt="params"``, matrix (:meth:`Step.task_gradients`): vector-Jacobian products through
  the backbone, ``chunk_size`` tasks per call, batched with
  ``torch.autograd.grad(..., is_grads_batched=True)`` when more than one.

Task-specific parameters
------------------------
Head (task-specific) parameters are not shared, so nothing is reconciled there: with
``heads="own"`` (the default of gradient-level methods) they receive the gradient of the
plain sum of the losses that use them (for disjoint heads: each head its own loss), as in
LibMTL and torchjd; with ``heads="weighted"`` they receive the gradient of
``sum_t w_t L_t`` (what loss weighting means).

Distributed training
--------------------
When ``torch.distributed`` is initialised with more than one rank, the trainer runs the
model without DDP's own gradient averaging and the Step makes every rank see the same
thing, so that all ranks take the same step (equal per-rank batch sizes assumed, as
sampling with ``drop_last`` gives):

* :meth:`Step.backward` / the final backward through the backbone: parameter gradients
  are averaged over ranks (``all_reduce`` then divide), as DDP would.
* ``wrt="params"``: the per-task parameter-gradient matrix is averaged over ranks before
  any combiner sees it, and the Gramian is computed from the averaged matrix (the
  layer-wise Gramian is a per-rank shortcut, so it is not used across ranks).
* ``wrt="features"``: each rank holds the rows of its own samples; the Gramian of the
  global batch is ``sum_r G_r / R^2`` (all-reduced), and the final backbone gradients are
  averaged over ranks.
* :meth:`Step.global_losses` gives the loss values averaged over ranks (combiners whose
  weights depend on loss values use them), and :meth:`Step.generator` gives a random
  generator seeded by the step number, identical on every rank (random permutations,
  random weights, random masks).

Outside distributed training every ``all_reduce`` is skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, cast

import torch
from torch import Tensor, nn

from ._autogram import LayerGramian, add_grad
from .dist import all_reduce_mean, all_reduce_sum, average_grads, is_distributed, world_size
from .heldout import HeldOut
from .settings import ShowsSettings

Wrt = Literal["params", "features"]
WRT_CHOICES = ("params", "features")
HEADS_CHOICES = ("own", "weighted")


def check_wrt(wrt: str) -> None:
    """Raise ``ValueError`` unless ``wrt`` is ``"params"`` or ``"features"``."""
    if wrt not in WRT_CHOICES:
        raise ValueError(f"wrt must be one of {WRT_CHOICES}, got {wrt!r}")


class Step:
    """One training step as a combiner sees it.

    Args:
        losses: per-task scalar losses; the dict order is the row order of every per-task
            matrix and weight vector (:attr:`task_names`).
        features: the shared representation (backbone feature maps) of this batch, still
            attached to the backbone's graph. Shared parameters must reach the losses only
            through these tensors. ``None`` for an architecture without a shared
            representation (cross-stitch ...): then only ``wrt="params"`` is available, and
            the per-task passes start at the losses themselves.
        shared_params: the parameters shared by the tasks (the architecture declares them).
        task_params: each task's own trainable parameters.
        step: global optimisation step (0-based); epoch: current epoch (0-based).
        chunk_size: how many tasks one batched vector-Jacobian product handles in
            :meth:`task_gradients` (``None``: all at once on CUDA, one at a time on CPU,
            where batching was measured no faster and costs memory).

    A Step is used for one backward: after :meth:`backward`, :meth:`backward_weighted` or
    :meth:`set_shared_gradient` it drops what it kept. With partial labels ``losses`` may hold
    a subset of the combiner's tasks (see :attr:`Combiner.partial_steps`). :attr:`heldout` is a
    :class:`~mtlzoo.contract.heldout.HeldOut` for a combiner that asked for a held-out batch
    (:attr:`Combiner.heldout_split`), else ``None``.
    """

    def __init__(
        self,
        losses: dict[str, Tensor],
        features: Sequence[Tensor] | None,
        shared_params: Sequence[nn.Parameter],
        task_params: dict[str, Sequence[nn.Parameter]],
        step: int = 0,
        epoch: int = 0,
        chunk_size: int | None = None,
    ):
        self.losses = losses
        # without a shared representation the losses are the cut between task and shared parts
        self.has_representation = features is not None
        self.features = list(features) if features is not None else list(losses.values())
        self.shared_params = list(shared_params)
        self.task_params = {k: list(v) for k, v in task_params.items()}
        self.step = step
        self.epoch = epoch
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
        self.chunk_size = chunk_size
        self.heldout: HeldOut | None = None
        self._head_params: list[Tensor] = []
        seen: set[int] = set()
        for ps in self.task_params.values():
            for p in ps:
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    self._head_params.append(p)
        self._reset()

    def _reset(self) -> None:
        self._cot: list[list[Tensor | None]] | None = None  # per task, per graph feature
        self._head: list[tuple[Tensor | None, ...]] | None = None
        self._jac: dict[str, Tensor] = {}
        self._gram: dict[str, Tensor] = {}
        self._layers: LayerGramian | None = None

    # -- basics --------------------------------------------------------------------------
    @property
    def task_names(self) -> list[str]:
        """Task names, in the row order of every per-task matrix."""
        return list(self.losses)

    def _graph_features(self) -> list[Tensor]:
        return [f for f in self.features if f.requires_grad]

    def _check(self, wrt: str) -> None:
        check_wrt(wrt)
        if wrt == "features" and not self.has_representation:
            raise ValueError(
                "wrt='features' needs a shared representation, and this architecture has none; use wrt='params'"
            )

    def _wrt_tensors(self, wrt: Wrt) -> Sequence[Tensor]:
        self._check(wrt)
        return self.shared_params if wrt == "params" else self._graph_features()

    def num_shared(self, wrt: Wrt = "params") -> int:
        """Length P of one task-gradient row for ``wrt`` (per rank for features)."""
        return sum(t.numel() for t in self._wrt_tensors(wrt))

    def global_losses(self) -> Tensor:
        """The detached loss values (float32, task order), averaged over ranks."""
        values = torch.stack([loss.detach().float().reshape(()) for loss in self.losses.values()])
        return all_reduce_mean(values.clone())

    def generator(self, seed: int = 0) -> torch.Generator:
        """A CPU random generator seeded from ``seed`` and the step number: identical on every
        rank and reproducible on resume (random permutations, weights and masks)."""
        return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(self.step) * 7_919 + 17) % 2**63)

    def _weights(self, weights: Tensor | Sequence[float] | Mapping[str, float]) -> Tensor:
        if isinstance(weights, Mapping):
            missing = [t for t in self.task_names if t not in weights]
            if missing:
                raise KeyError(f"weights miss task(s) {missing}")
            weights = [float(weights[t]) for t in self.task_names]
        w = torch.as_tensor(weights).detach().double().cpu().reshape(-1)
        if w.numel() != len(self.losses):
            raise ValueError(f"expected {len(self.losses)} weights (one per task), got {w.numel()}")
        return w

    # -- loss-level ----------------------------------------------------------------------
    def backward(self, loss: Tensor) -> None:
        """Backpropagate one scalar through the whole model (heads and backbone) and average
        the resulting gradients over ranks."""
        loss.backward()
        self.sync_gradients()
        self._reset()

    def backward_weighted(
        self,
        weights: Tensor | Sequence[float] | Mapping[str, float],
        wrt: Wrt = "params",
        heads: str = "own",
    ) -> None:
        """Make ``sum_t weights[t] * g_t`` the update of the shared parameters.

        ``weights`` are in :attr:`task_names` order (or a ``{task: weight}`` dict). Uses
        whatever the step already computed for ``wrt`` (the layer-wise Gramian, the task
        matrix, or the feature cotangents) so no extra backbone pass is needed when the
        Gramian was asked for with ``wrt="params"``. ``heads``: ``"own"`` gives head
        parameters the gradient of the unweighted sum of losses, ``"weighted"`` that of the
        weighted sum (see the module docstring).
        """
        self._check(wrt)
        if heads not in HEADS_CHOICES:
            raise ValueError(f"heads must be one of {HEADS_CHOICES}, got {heads!r}")
        w = self._weights(weights)
        if heads == "weighted" and self._cot is None:
            # nothing per-task computed yet: one plain backward of the weighted loss is cheapest
            losses = list(self.losses.values())
            total = sum(w[i].to(loss.device, loss.dtype) * loss for i, loss in enumerate(losses))
            self.backward(cast(Tensor, total))
            return
        self._head_pass()
        if wrt == "params" and "params" in self._jac:
            direction = w.to(self._jac["params"]) @ self._jac["params"]
            self._write_params(direction)  # the matrix is already averaged over ranks
        elif self._layers is not None:  # same update for both wrt (linearity), no backbone pass
            for p, g in self._layers.combine(w):
                add_grad(p, g, fresh=True)
            self._sync_shared_params()
        else:
            n = len(self._graph_features())
            self._backprop_features([self._weighted_cotangent(w, k) for k in range(n)])
        self._finish_heads(w if heads == "weighted" else None)

    # -- gradient-level ------------------------------------------------------------------
    def task_gradients(self, wrt: Wrt = "params") -> Tensor:
        """The T x P matrix of per-task gradients of the shared parameters (``params``,
        averaged over ranks) or of the shared representation (``features``, this rank's
        samples; the partial derivatives of each loss w.r.t. each feature map).

        ``params`` materialises T x P (batched VJPs through the backbone, ``chunk_size``
        tasks at a time); prefer :meth:`gramian` + :meth:`backward_weighted` when the update
        is a weighted sum of task gradients.
        """
        self._check(wrt)
        if wrt in self._jac:
            return self._jac[wrt]
        cots = self._head_pass()
        feats = self._graph_features()
        tasks = len(cots)
        matrix: Tensor | None
        if wrt == "features":
            if not feats:
                matrix = torch.zeros(tasks, 0)
            else:
                matrix = torch.stack(
                    [torch.cat([c.reshape(-1) for c in self._dense(t)]) for t in range(tasks)]
                )
                # keep one copy: the cotangents become views of the matrix rows
                sizes = [f.numel() for f in feats]
                self._cot = [
                    [
                        None if c is None else part.view_as(f)
                        for c, part, f in zip(cots[t], torch.split(matrix[t], sizes), feats)
                    ]
                    for t in range(tasks)
                ]
        else:
            self._need_backbone_graph()
            # one task per VJP on CPU: measured as fast as batching there (resnet18, 2 cores) at a
            # fraction of the memory; batched VJPs pay off on GPUs
            chunk = self.chunk_size or (tasks if feats and feats[0].is_cuda else 1)
            matrix = None
            for start in range(0, tasks, chunk):
                stop = min(start + chunk, tasks)
                part = [self._dense(t) for t in range(start, stop)]
                used = [
                    k for k in range(len(feats)) if any(cots[t][k] is not None for t in range(start, stop))
                ]
                rows = self._batched_param_grads(
                    [feats[k] for k in used], [[c[k] for k in used] for c in part]
                )
                if matrix is None:
                    matrix = rows if stop - start == tasks else rows.new_empty(tasks, rows.shape[1])
                if matrix is not rows:
                    matrix[start:stop] = rows
                del rows
            matrix = all_reduce_mean(matrix if matrix is not None else torch.zeros(tasks, 0))
        self._jac[wrt] = matrix
        return matrix

    def _batched_param_grads(self, feats: list[Tensor], part: list[list[Tensor]]) -> Tensor:
        n = len(part)
        params = self.shared_params
        if not params or not feats:
            return torch.zeros(n, self.num_shared("params"))  # no task reaches the backbone
        grads: Sequence[Tensor | None]
        if n == 1:
            grads = [
                g.unsqueeze(0) if g is not None else None
                for g in torch.autograd.grad(feats, params, part[0], retain_graph=True, allow_unused=True)
            ]
        else:
            cot = [torch.stack([c[k] for c in part]) for k in range(len(feats))]
            grads = torch.autograd.grad(
                feats, params, cot, retain_graph=True, allow_unused=True, is_grads_batched=True
            )
        # copy into one preallocated matrix, freeing each block as it goes (peak ~T x P, not 2x)
        blocks = list(grads)
        del grads
        out = params[0].new_zeros(n, sum(p.numel() for p in params))
        offset = 0
        for k, p in enumerate(params):
            if (g := blocks[k]) is not None:
                out[:, offset : offset + p.numel()] = g.reshape(n, -1)
                blocks[k] = g = None
            offset += p.numel()
        return out

    def gramian(self, wrt: Wrt = "params") -> Tensor:
        """The T x T Gramian ``G = J J^T`` of the per-task gradients (float64, CPU), as seen
        by every rank (see the module docstring)."""
        self._check(wrt)
        if wrt in self._gram:
            return self._gram[wrt]
        if wrt in self._jac or (wrt == "params" and is_distributed()):
            j = self.task_gradients(wrt).double()
            gram = (j @ j.T).cpu()
            if wrt == "features" and is_distributed():
                gram = all_reduce_sum(gram) / world_size() ** 2
        elif wrt == "features":
            cots = self._head_pass()
            gram = torch.zeros(len(cots), len(cots), dtype=torch.float64)
            for k, f in enumerate(self._graph_features()):
                r = torch.stack(
                    [ck.reshape(-1) if (ck := c[k]) is not None else f.new_zeros(f.numel()) for c in cots]
                )
                gram += (r @ r.T).double().cpu()
            if is_distributed():
                gram = all_reduce_sum(gram) / world_size() ** 2
        else:
            cots = self._head_pass()
            self._layers = LayerGramian(self._graph_features(), cots, self.shared_params, release=True)
            gram = self._layers.gram
        self._gram[wrt] = gram
        return gram

    def set_shared_gradient(
        self, direction: Tensor, wrt: Wrt = "params", head_weights: Tensor | Sequence[float] | None = None
    ) -> None:
        """Make ``direction`` (length P, built from :meth:`task_gradients` rows) the update of
        the shared parameters.

        ``params``: written into the backbone parameters' ``.grad`` (the rows were already
        averaged over ranks). ``features``: backpropagated from the shared representation
        through the backbone once, then averaged over ranks. Head parameters get the
        gradient of the unweighted sum of their losses, or of ``sum_t head_weights[t] L_t``.
        """
        self._check(wrt)
        hw = None if head_weights is None else self._weights(head_weights)
        self._head_pass()
        direction = direction.reshape(-1)
        if wrt == "params":
            self._write_params(direction)
        else:
            feats = self._graph_features()
            chunks = torch.split(direction.to(feats[0].device), [f.numel() for f in feats]) if feats else []
            self._backprop_features([c.view_as(f).to(f.dtype) for c, f in zip(chunks, feats)])
        self._finish_heads(hw)

    # -- internals -----------------------------------------------------------------------
    def _head_pass(self) -> list[list[Tensor | None]]:
        """One backward per task through the heads only: feature cotangents (partial
        derivatives) and head-parameter gradients; returns the cotangents (kept until the
        step's update is made)."""
        if self._cot is not None:
            return self._cot
        if not self.has_representation:
            self._cot, self._head = self._loss_cut_pass()
            return self._cot
        feats = self._graph_features()
        inputs = [*feats, *self._head_params]
        # Stop the backward at the feature maps: the later maps are computed from the earlier
        # ones, so autograd.grad would otherwise return total derivatives (counted again when
        # the cotangents are backpropagated) and run the backbone between them. The engine
        # captures a requested tensor's gradient before its producer's pre-hooks run, so a
        # pre-hook on each producer that drops the gradient leaves the partial derivatives.
        blockers = list(dict.fromkeys(f.grad_fn for f in feats if f.grad_fn is not None))
        handles = [n.register_prehook(lambda grads: tuple(None for _ in grads)) for n in blockers]
        cots: list[list[Tensor | None]] = []
        heads: list[tuple[Tensor | None, ...]] = []
        try:
            for loss in self.losses.values():
                grads: tuple[Tensor | None, ...]
                if loss.requires_grad and inputs:
                    grads = torch.autograd.grad(loss, inputs, retain_graph=True, allow_unused=True)
                else:
                    grads = (None,) * len(inputs)
                cots.append(list(grads[: len(feats)]))
                heads.append(grads[len(feats) :])
        finally:
            for h in handles:
                h.remove()
        self._cot, self._head = cots, heads
        return cots

    def _loss_cut_pass(self) -> tuple[list[list[Tensor | None]], list[tuple[Tensor | None, ...]]]:
        """Without a shared representation: task ``t``'s cotangent is 1 on its own loss, and
        its own parameters' gradients come from its loss alone."""
        losses = list(self.losses.values())
        cots: list[list[Tensor | None]] = []
        heads: list[tuple[Tensor | None, ...]] = []
        for t, loss in enumerate(losses):
            cots.append(
                [torch.ones_like(loss) if k == t and loss.requires_grad else None for k in range(len(losses))]
            )
            if loss.requires_grad and self._head_params:
                heads.append(
                    torch.autograd.grad(loss, self._head_params, retain_graph=True, allow_unused=True)
                )
            else:
                heads.append((None,) * len(self._head_params))
        return cots, heads

    def _weighted_cotangent(self, w: Tensor, k: int) -> Tensor | None:
        terms = [w[t].to(ck.dtype) * ck for t, c in enumerate(self._head_pass()) if (ck := c[k]) is not None]
        return torch.stack(terms).sum(0) if terms else None

    def _dense(self, t: int) -> list[Tensor]:
        """Task ``t``'s feature cotangents with zeros where the task does not use a map."""
        feats = self._graph_features()
        return [c if c is not None else torch.zeros_like(f) for c, f in zip(self._head_pass()[t], feats)]

    def _need_backbone_graph(self) -> None:
        if self._layers is not None and self._layers.released:
            raise RuntimeError(
                "the parameter Gramian released the backbone graph to save memory; ask for "
                "task_gradients()/set_shared_gradient() before gramian('params'), or use backward_weighted()"
            )

    def _backprop_features(self, cotangents: list[Tensor | None]) -> None:
        self._need_backbone_graph()
        pairs = [(f, c) for f, c in zip(self._graph_features(), cotangents) if c is not None]
        params = [p for p in self.shared_params if p.requires_grad]
        if pairs and params:
            torch.autograd.backward([f for f, _ in pairs], [c for _, c in pairs], inputs=params)
        self._sync_shared_params()

    def _write_params(self, direction: Tensor) -> None:
        chunks = torch.split(direction.reshape(-1), [p.numel() for p in self.shared_params])
        for p, g in zip(self.shared_params, chunks):
            add_grad(p, g)

    def _finish_heads(self, w: Tensor | None) -> None:
        for k, p in enumerate(self._head_params):
            terms = [
                (g if w is None else w[t].to(g.dtype) * g)
                for t, row in enumerate(self._head or [])
                if (g := row[k]) is not None
            ]
            if terms:
                add_grad(p, torch.stack(terms).sum(0))
        self._sync_task_params()
        self._reset()

    # -- distributed ---------------------------------------------------------------------
    def sync_gradients(self) -> None:
        """Average every parameter gradient over ranks (no-op on one process)."""
        self._sync_shared_params()
        self._sync_task_params()

    def _sync_shared_params(self) -> None:
        average_grads(self.shared_params)

    def _sync_task_params(self) -> None:
        average_grads(self._head_params)


class Combiner(ShowsSettings, nn.Module):
    """Base class of loss combiners.

    Subclasses implement :meth:`backward`. Keep any state that must survive a resume in
    buffers (``self.register_buffer``) or parameters: checkpoints carry the combiner's
    ``state_dict``. Learnable weights (e.g. uncertainty weighting) are ``nn.Parameter``\\ s
    and are optimised with the model (the trainer puts ``combiner.parameters()`` that
    require grad into its optimizer and averages their gradients over ranks). Buffers
    whose size is only known at the first step (e.g. a gradient average of length P) are
    registered empty and named in :attr:`lazy_buffers`: loading a checkpoint resizes them.

    Trainer protocol::

        logs = combiner.backward(losses, step)     # owns the backward pass
        optimizer.step()
        if combiner.needs_losses_after_step:       # only FAMO with update="same_batch"
            with torch.no_grad():
                after = <the same batch's losses recomputed with the updated model>
            combiner.after_step(after)

    ``repr(combiner)`` shows the options it was built with (:class:`ShowsSettings`).

    Args:
        task_names: the tasks, in the order of every per-task vector and matrix.
    """

    #: ``"loss"`` for combiners that only weight losses, ``"gradient"`` for those that
    #: aggregate per-task gradients, ``"bilevel"`` for those that learn weights on a held-out
    #: batch. Informational (listing, benchmarks).
    level: str = "loss"
    #: buffers resized from the checkpoint on load (their size depends on the model)
    lazy_buffers: tuple[str, ...] = ()
    #: True when :meth:`backward` accepts a step whose losses are a non-empty subset of
    #: :attr:`task_names` (partial labels: a batch without any label of some task) and gives
    #: the missing tasks no weight and no state update; the trainer refuses data with partial
    #: targets for a combiner that does not declare it
    partial_steps: bool = False
    #: a split name when :meth:`backward` needs a held-out batch (``step.heldout``, see
    #: :mod:`mtlzoo.contract.heldout`), else ``None``
    heldout_split: str | None = None

    def __init__(self, task_names: Sequence[str]):
        super().__init__()
        if not task_names:
            raise ValueError("a combiner needs at least one task")
        self.task_names = list(task_names)

    @property
    def needs_losses_after_step(self) -> bool:
        """True when the trainer must call :meth:`after_step` after each optimizer step."""
        return False

    def backward(self, losses: dict[str, Tensor], step: Step) -> Mapping[str, float | Tensor]:
        """Turn the per-task ``losses`` into gradients (call ``step.backward`` or write the
        shared gradient) and return scalars to log (e.g. ``{"w/semseg": 0.7}``). A value may be
        a one-element tensor (on any device): the trainer copies all of them to the host at
        once with the losses, so logging costs no synchronisation of its own."""
        raise NotImplementedError

    def after_step(self, losses: dict[str, Tensor]) -> None:
        """Receive the losses of the batch just used, recomputed after the optimizer step
        (detached). Called by the trainer only when :attr:`needs_losses_after_step` is
        true; the default does nothing."""

    def stack(self, losses: dict[str, Tensor]) -> Tensor:
        """The losses as one vector in task order (a missing task is an error)."""
        missing = [t for t in self.task_names if t not in losses]
        if missing:
            raise KeyError(f"combiner expected losses for {missing}")
        return torch.stack([losses[t] for t in self.task_names])

    def order(self, step: Step) -> list[int]:
        """Index of each of ``step.task_names`` in :attr:`task_names` (they usually agree; a
        combiner with :attr:`partial_steps` may get a subset)."""
        names = step.task_names
        same = sorted(names) == sorted(self.task_names)
        subset = self.partial_steps and names and len(set(names)) == len(names) <= len(self.task_names)
        if not same and not (subset and set(names) <= set(self.task_names)):
            raise KeyError(f"combiner was built for tasks {self.task_names}, the step has {names}")
        return [self.task_names.index(t) for t in names]

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        for name in self.lazy_buffers:
            key = prefix + name
            if key in state_dict and getattr(self, name, None) is not None:
                current = getattr(self, name)
                if current.shape != state_dict[key].shape:
                    setattr(self, name, current.new_empty(state_dict[key].shape))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
