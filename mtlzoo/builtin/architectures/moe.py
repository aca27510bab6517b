"""``mmoe``, ``cgc``, ``ple`` and ``dselect_k``: gated mixtures of experts over the backbone's
feature maps (options in :mod:`mtlzoo.builtin.architectures`, blocks in :mod:`.experts`).

What they have in common, and where all four deviate from the papers and from LibMTL
(``LibMTL/architecture/MMoE.py``, ``CGC.py``, ``PLE.py``, ``DSelect_k.py``), which copies the
recommendation-system models to images literally:

* **Experts.** LibMTL's experts are whole encoders (one dilated ResNet-50 each, so ``E``
  experts cost ``E`` backbones). Here one backbone is shared (the papers' "shared bottom" is
  the backbone) and an expert is a residual bottleneck block per chosen scale (the maps of
  stride >= ``min_stride``; :class:`~.experts.Expert`), keeping the maps' shapes so that the
  spec's heads read the mixed maps unchanged; maps finer than ``min_stride`` reach the heads
  as the backbone gives them.
* **Gates.** LibMTL gates with ``Linear(C*H*W -> E)`` on the flattened *input image*, which
  fixes the input size and holds most of the parameters at 288x384. Here a gate reads the
  chosen backbone maps: ``pooled`` (default) averages them over space and gives one weight
  per expert per image (what the papers' per-example gates give), ``pixel`` gives one per
  expert per position (a 1x1 conv per scale); any input size works.
* **Parameters and the shared representation.** The backbone and every shared expert reach
  every loss: shared. A task's gate (and, for CGC and PLE, its own experts) reach only its
  loss: that task's. A task's mixture of the shared experts' outputs is *not* a shared
  representation (it depends on the task's gate), so the shared representation
  (``wrt: features``) is the backbone's maps plus every shared expert's output: the last
  tensors the shared parameters reach the losses through (a gate reads the maps, the
  mixtures read the experts' outputs). PLE's deeper levels are described on :class:`PLE`.
"""

from __future__ import annotations

from torch import Tensor, nn

from ...contract.architecture import ArchitectureOutput, ArchitectureParts, unique
from . import CGCOptions, DSelectKOptions, MMoEOptions, PLEOptions
from .experts import DSelectGate, ExpertArchitecture, SoftmaxGate, experts, mix_scales


class MMoE(ExpertArchitecture):
    """MMoE — Ma, Zhao, Yi, Chen, Hong & Chi, "Modeling Task Relationships in Multi-task
    Learning with Multi-gate Mixture-of-Experts", KDD 2018 (LibMTL: ``architecture/MMoE.py``).

    ``experts`` shared experts over the backbone's chosen maps; task ``t``'s gate ``g_t =
    softmax(W_t x)`` weights them and its head reads ``sum_e g_t[e] * expert_e(maps)``.

    Deviations (see the module docstring): experts are bottleneck blocks on the shared
    backbone's maps, not whole encoders; gates read the backbone's (pooled or per-pixel)
    features, not the flattened input image, so the input size is free.
    """

    label = "mmoe"

    def __init__(self, parts: ArchitectureParts, options: MMoEOptions):
        super().__init__(parts, options.min_stride)
        self.experts = experts(options.experts, self.channels, options.reduction, options.norm)
        self.gates = nn.ModuleDict(
            {t: SoftmaxGate(self.channels, options.experts, options.gate, self.reads[t]) for t in self.names}
        )

    def run(self, images: Tensor) -> ArchitectureOutput:
        """Backbone, shared experts, one gate and mixture per task, the heads."""
        maps = list(self.backbone(images))
        x = self.chosen(maps)
        outs = [e(x) for e in self.experts]
        mixed = {t: mix_scales(outs, self.gates[t](x)[0]) for t in self.names}
        shared = maps + [o for out in outs for o in out]
        return ArchitectureOutput(self.predict(maps, mixed, images.shape[-2:]), shared=shared)

    def shared_parameters(self) -> list[nn.Parameter]:
        """The backbone and the experts."""
        return unique([*self.backbone.parameters(), *self.experts.parameters()])

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """The task's gate and head."""
        return unique([*self.gates[task].parameters(), *self.heads[task].parameters()])


class DSelectK(ExpertArchitecture):
    """DSelect-k — Hazimeh, Zhao, Chowdhery, Sathiamoorthy, Chen, Mazumder, Hong & Chi,
    "DSelect-k: Differentiable Selection in the Mixture of Experts with Applications to
    Multi-Task Learning", NeurIPS 2021 (reference: google-research ``dselect_k_moe``; LibMTL:
    ``architecture/DSelect_k.py``).

    MMoE with each task's softmax gate replaced by a per-example DSelect-k gate
    (:class:`~.experts.DSelectGate`): ``k`` differentiable single-expert selectors built from
    the smooth-step of binary-coded logits, mixed by a softmax; at convergence each task uses
    at most ``k`` of the ``experts``. The gate's regulariser (selector entropy, and the push
    away from non-existent experts when ``experts`` is not a power of two) is returned in
    :attr:`ArchitectureOutput.regularizers` and the trainer adds it to that task's loss, so
    every combiner sees it.

    Deviations: as MMoE (bottleneck experts on the shared backbone's maps; gates from
    features, per image or per pixel). LibMTL calls ``.backward()`` on the regulariser inside
    ``forward`` (bypassing the weighting method), and only for the last task's selectors; here
    each task's regulariser is part of its own loss. The regulariser is averaged over the
    images (LibMTL and the reference sum over the batch, so their weight grows with the batch
    size; LibMTL's entropy weight 1e-6 is the default ``entropy_reg``).
    """

    label = "dselect_k"

    def __init__(self, parts: ArchitectureParts, options: DSelectKOptions):
        super().__init__(parts, options.min_stride)
        n = options.experts
        self.experts = experts(n, self.channels, options.reduction, options.norm)
        self.gates = nn.ModuleDict(
            {
                t: DSelectGate(
                    self.channels,
                    n,
                    options.k,
                    options.gamma,
                    options.entropy_reg,
                    options.gate,
                    self.reads[t],
                )
                for t in self.names
            }
        )

    def run(self, images: Tensor) -> ArchitectureOutput:
        """Backbone, shared experts, one DSelect-k gate and mixture per task, the heads; in
        training each gate's regulariser goes to its task's loss."""
        maps = list(self.backbone(images))
        x = self.chosen(maps)
        outs = [e(x) for e in self.experts]
        mixed, regs = {}, {}
        for t in self.names:
            weights, regs[t] = self.gates[t](x)
            mixed[t] = mix_scales(outs, weights)
        shared = maps + [o for out in outs for o in out]
        preds = self.predict(maps, mixed, images.shape[-2:])
        return ArchitectureOutput(preds, shared=shared, regularizers=regs if self.training else {})

    def shared_parameters(self) -> list[nn.Parameter]:
        """The backbone and the experts."""
        return unique([*self.backbone.parameters(), *self.experts.parameters()])

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """The task's gate and head."""
        return unique([*self.gates[task].parameters(), *self.heads[task].parameters()])


class CGC(ExpertArchitecture):
    """CGC (Customized Gate Control) — Tang, Liu, Zhao & Gong, "Progressive Layered
    Extraction (PLE): A Novel Multi-Task Learning (MTL) Model for Personalized
    Recommendations", RecSys 2020 (LibMTL: ``architecture/CGC.py``).

    ``shared_experts`` experts shared by all tasks plus ``task_experts`` experts of each task;
    task ``t``'s gate weights the shared experts and its own, and its head reads that mixture.

    Parameters: the backbone and the shared experts are shared; a task's own experts, its gate
    and its head are its own. Deviations: as MMoE (bottleneck experts on the shared
    backbone's maps; gates from features).
    """

    label = "cgc"

    def __init__(self, parts: ArchitectureParts, options: CGCOptions):
        super().__init__(parts, options.min_stride)
        ch, red, norm = self.channels, options.reduction, options.norm
        n = options.shared_experts + options.task_experts
        self.shared_experts = experts(options.shared_experts, ch, red, norm)
        self.task_experts = nn.ModuleDict(
            {t: experts(options.task_experts, ch, red, norm, self.reads[t]) for t in self.names}
        )
        self.gates = nn.ModuleDict({t: SoftmaxGate(ch, n, options.gate, self.reads[t]) for t in self.names})

    def run(self, images: Tensor) -> ArchitectureOutput:
        """Backbone, shared and task experts, one gate and mixture per task, the heads."""
        maps = list(self.backbone(images))
        x = self.chosen(maps)
        shared_outs = [e(x) for e in self.shared_experts]
        mixed = {}
        for t in self.names:
            own = [e(x) for e in self.task_experts[t]]
            mixed[t] = mix_scales(shared_outs + own, self.gates[t](x)[0])
        shared = maps + [o for out in shared_outs for o in out]
        return ArchitectureOutput(self.predict(maps, mixed, images.shape[-2:]), shared=shared)

    def shared_parameters(self) -> list[nn.Parameter]:
        """The backbone and the shared experts."""
        return unique([*self.backbone.parameters(), *self.shared_experts.parameters()])

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """The task's experts, gate and head."""
        return unique(
            [
                *self.task_experts[task].parameters(),
                *self.gates[task].parameters(),
                *self.heads[task].parameters(),
            ]
        )


class PLE(ExpertArchitecture):
    """PLE (Progressive Layered Extraction) — Tang, Liu, Zhao & Gong, RecSys 2020 (LibMTL:
    ``architecture/PLE.py``).

    ``levels`` extraction levels of CGC stacked, with a shared path as in the paper: level
    ``l`` has shared experts reading the shared path's maps and each task's experts reading
    that task's maps; task ``t``'s gate mixes the shared experts and ``t``'s own into ``t``'s
    maps for the next level, and (below the last level) a shared gate mixes *every* expert
    (shared and all tasks') into the shared path's maps for the next level. Level 1 reads the
    backbone's maps on every path; each head reads its task's maps after the last level.
    ``levels: 1`` is CGC.

    Parameters: everything below the last level reaches every loss through the shared gates
    (a task's experts too), so it is shared, except the task gates of the next-to-last level
    (their output feeds only the task's last level); at the last level the shared experts are
    shared and a task's experts and gate are its own. The shared representation (``wrt:
    features``) is the backbone's maps, the outputs of every expert of the next-to-last level
    and the tasks' maps entering it (what its task gates read), and the outputs of the last
    level's shared experts.

    Deviations: as MMoE (bottleneck experts on the shared backbone's maps; gates from
    features); LibMTL's ``PLE`` makes each level a ResNet stage of whole-encoder experts and
    has no shared path (it runs the shared experts on each task's maps and has no shared
    gate), where this follows the paper's shared gates.
    """

    label = "ple"

    def __init__(self, parts: ArchitectureParts, options: PLEOptions):
        super().__init__(parts, options.min_stride)
        ch, red, norm, mode = self.channels, options.reduction, options.norm, options.gate
        ns, nt, tasks = options.shared_experts, options.task_experts, len(self.names)
        self.levels = options.levels
        last = self.levels - 1
        # the scales of a task's path each level must give: every one below the next-to-last
        # level (the shared gates read them), at the last level the ones its head reads, and at
        # the next-to-last those the last level reads (all when its gates pool every scale)
        every = [True] * len(ch)
        needs = {
            t: [
                self.reads[t]
                if level == last
                else (every if mode == "pooled" or level < last - 1 else self.reads[t])
                for level in range(self.levels)
            ]
            for t in self.names
        }
        self.shared_experts = nn.ModuleList(experts(ns, ch, red, norm) for _ in range(self.levels))
        self.task_experts = nn.ModuleList(
            nn.ModuleDict(
                {t: experts(nt, ch, red, norm, self.reads[t] if level == last else None) for t in self.names}
            )
            for level in range(self.levels)
        )
        self.task_gates = nn.ModuleList(
            nn.ModuleDict({t: SoftmaxGate(ch, ns + nt, mode, needs[t][level]) for t in self.names})
            for level in range(self.levels)
        )
        # the last level has no shared gate: nothing reads a shared path after it
        self.shared_gates = nn.ModuleList(
            SoftmaxGate(ch, ns + tasks * nt, mode) for _ in range(self.levels - 1)
        )

    def run(self, images: Tensor) -> ArchitectureOutput:
        """Backbone, then every extraction level, then the heads on each task's maps."""
        maps = list(self.backbone(images))
        x = self.chosen(maps)
        path_s, paths = x, dict.fromkeys(self.names, x)
        shared = list(maps)
        last = self.levels - 1
        for level in range(self.levels):
            outs_s = [e(path_s) for e in self.shared_experts[level]]
            outs_t = {t: [e(paths[t]) for e in self.task_experts[level][t]] for t in self.names}
            if level == last - 1:
                # the task gates of this level are task-specific: cut before them
                shared += [o for out in outs_s for o in out]
                shared += [o for t in self.names for out in outs_t[t] for o in out]
                if level > 0:
                    shared += [m for t in self.names for m in paths[t] if m is not None]
            if level == last:
                shared += [o for out in outs_s for o in out]
            new = {
                t: mix_scales(outs_s + outs_t[t], self.task_gates[level][t](paths[t])[0]) for t in self.names
            }
            if level < last:
                every = outs_s + [o for t in self.names for o in outs_t[t]]
                path_s = mix_scales(every, self.shared_gates[level](path_s)[0])
            paths = new
        return ArchitectureOutput(self.predict(maps, paths, images.shape[-2:]), shared=shared)

    def _own(self, task: str) -> list[nn.Parameter]:
        own = [*self.task_experts[-1][task].parameters(), *self.task_gates[-1][task].parameters()]
        if self.levels > 1:
            own += list(self.task_gates[-2][task].parameters())
        return own

    def shared_parameters(self) -> list[nn.Parameter]:
        """The backbone and every expert and gate that reaches more than one task's loss."""
        own = {id(p) for t in self.names for p in self._own(t)}
        heads = {id(p) for p in self.heads.parameters()}
        return unique(p for p in self.parameters() if id(p) not in own and id(p) not in heads)

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """The task's last-level experts and gate, its next-to-last gate, and its head."""
        return unique([*self._own(task), *self.heads[task].parameters()])
