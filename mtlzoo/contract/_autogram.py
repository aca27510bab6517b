"""The layer-wise Gramian of per-task parameter gradients ("autogram"), private to the Step.

Reads autograd's saved tensors of convolution nodes (``_saved_input``, ``_saved_stride``
...), which are internal to PyTorch: everything that depends on them lives here, behind
:class:`LayerGramian`. See :mod:`mtlzoo.contract.combine` for what it computes and why.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def _walk(roots: Sequence) -> list:
    """Every autograd node reachable from ``roots`` (iterative: graphs can be deep)."""
    seen: set = set()
    order = []
    stack = [r for r in roots if r is not None]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        order.append(node)
        stack.extend(c for c, _ in node.next_functions if c is not None)
    return order


def _is_leaf(node) -> bool:
    return hasattr(node, "variable")  # AccumulateGrad


class _ConvSite:
    """One plain 2-d convolution of the backbone whose weight gradient the hooks handle."""

    __slots__ = ("node", "param", "x", "stride", "padding", "dilation", "kernel", "store")

    def __init__(self, node, param: Tensor):
        self.node = node
        self.param = param
        self.x = node._saved_input.detach()
        self.stride = list(node._saved_stride)
        self.padding = list(node._saved_padding)
        self.dilation = list(node._saved_dilation)
        self.kernel = False
        self.store: list[Tensor | None] = []

    def out_positions(self) -> int:
        """N: batch size times output height times output width."""
        kh, kw = self.param.shape[-2:]
        b, _, h, w = self.x.shape
        ho = (h + 2 * self.padding[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        wo = (w + 2 * self.padding[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        return b * ho * wo

    def choose(self, tasks: int) -> None:
        """Pick the cheaper way (in multiply-adds) to get this layer's Gramian block."""
        cout, cin, kh, kw = self.param.shape
        n, ckk = self.out_positions(), cin * kh * kw
        direct = tasks * cout * n * ckk + tasks * tasks * cout * ckk / 2
        kernel = n * n * ckk + tasks * cout * n * n + tasks * tasks * cout * n + cout * n * ckk
        self.kernel = kernel < direct
        self.store = [None] * tasks

    def weight_grad(self, delta: Tensor) -> Tensor:
        """Gradient of this conv's weight for the output gradient ``delta``."""
        return torch.ops.aten.convolution_backward(
            delta,
            self.x,
            self.param,
            None,
            self.stride,
            self.padding,
            self.dilation,
            False,
            [0, 0],
            1,
            [False, True, False],
        )[1]

    @torch.no_grad()
    def gram(self, tasks: int) -> Tensor:
        """This layer's T x T block of the Gramian (float64)."""
        shape = (self.param.shape[0], self.out_positions()) if self.kernel else (self.param.numel(),)
        rows = [s if s is not None else self.x.new_zeros(0) for s in self.store]
        if self.kernel:
            cout = self.param.shape[0]
            d = torch.stack(
                [r.transpose(0, 1).reshape(cout, -1) if r.numel() else self.x.new_zeros(shape) for r in rows]
            )  # T, Cout, N
            kh, kw = self.param.shape[-2:]
            x = F.unfold(
                self.x, (kh, kw), tuple(self.dilation), tuple(self.padding), tuple(self.stride)
            )  # B, Ckk, L
            x = x.transpose(0, 1).reshape(x.shape[1], -1)  # Ckk, N
            e = d @ (x.T @ x)
            return torch.einsum("ion,jon->ij", e, d).double()
        r = torch.stack([r.reshape(-1) if r.numel() else self.x.new_zeros(shape) for r in rows])
        return (r @ r.T).double()

    @torch.no_grad()
    def combine(self, w: Tensor) -> Tensor | None:
        """The weight gradient of ``sum_t w_t L_t`` from what the passes kept."""
        total = None
        for t, s in enumerate(self.store):
            if s is not None:
                total = w[t].to(s.dtype) * s if total is None else total.add_(s, alpha=float(w[t]))
        self.store = []  # what was kept is not needed any more
        if total is None:
            return None
        return self.weight_grad(total) if self.kernel else total


class LayerGramian:
    """Gramian of the per-task gradients of the shared parameters, layer by layer.

    Built from the feature cotangents of the head passes: one input-gradient pass through
    the backbone per task, hooks on the convolutions (see the module docstring).
    """

    def __init__(
        self,
        features: list[Tensor],
        cotangents: list[list[Tensor | None]],
        shared: Sequence[Tensor],
        release: bool = False,
    ):
        tasks = len(cotangents)
        last = max((t for t in range(tasks) if any(c is not None for c in cotangents[t])), default=-1)
        self.released = False
        roots = [f.grad_fn for f in features]
        nodes = _walk(roots)
        uses: dict[int, int] = {}
        for node in nodes:
            for c, _ in node.next_functions:
                if c is not None and _is_leaf(c):
                    uses[id(c.variable)] = uses.get(id(c.variable), 0) + 1
        shared_ids = {id(p) for p in shared}
        candidates: dict = {}
        for node in nodes:
            if type(node).__name__ != "ConvolutionBackward0":
                continue
            w = node.next_functions[1][0]
            if w is None or not _is_leaf(w):
                continue
            p = w.variable
            plain = p.ndim == 4 and not node._saved_transposed and node._saved_groups == 1
            if plain and id(p) in shared_ids and uses.get(id(p)) == 1 and p.dtype == node._saved_input.dtype:
                candidates[node] = p
        handled = {id(p) for p in candidates.values()}
        requested = {id(p) for p in shared if id(p) not in handled}
        # A hooked conv only runs if something below it is requested; the ones with nothing
        # below (the first conv) are left to autograd. Post-order walk decides bottom-up.
        reach: dict = {}
        stack = [(r, False) for r in roots if r is not None]

        def edge_reaches(c) -> bool:
            if c is None:
                return False
            return id(c.variable) in requested if _is_leaf(c) else reach.get(c, False)

        while stack:
            node, expanded = stack.pop()
            if node in reach:
                continue
            if not expanded:
                stack.append((node, True))
                stack.extend(
                    (c, False)
                    for c, _ in node.next_functions
                    if c is not None and not _is_leaf(c) and c not in reach
                )
                continue
            if node in candidates:
                if not edge_reaches(node.next_functions[0][0]):
                    requested.add(id(candidates.pop(node)))
                reach[node] = True
            else:
                reach[node] = any(edge_reaches(c) for c, _ in node.next_functions)
        self.sites = [_ConvSite(n, p) for n, p in candidates.items()]
        for site in self.sites:
            site.choose(tasks)
        self.fallback = [p for p in shared if id(p) in requested]
        self.rows: list[list[Tensor | None]] = []
        current = [0]

        def make_hook(site: _ConvSite):
            def hook(grad_outputs):
                delta = grad_outputs[0]
                if delta is not None:
                    with torch.no_grad():
                        kept = delta.detach() if site.kernel else site.weight_grad(delta)
                        site.store[current[0]] = kept

            return hook

        handles = [s.node.register_prehook(make_hook(s)) for s in self.sites]
        try:
            for t in range(tasks):
                current[0] = t
                pairs = [(f, c) for f, c in zip(features, cotangents[t]) if c is not None]
                grads: Sequence[Tensor | None]
                if self.fallback and pairs:
                    # the last pass may free the backbone's saved activations: the update is
                    # then assembled from what the passes kept, lowering the step's peak memory
                    keep = not (release and t == last)
                    grads = torch.autograd.grad(
                        [f for f, _ in pairs],
                        self.fallback,
                        [c for _, c in pairs],
                        retain_graph=keep,
                        allow_unused=True,
                    )
                    self.released = self.released or not keep
                else:
                    grads = (None,) * len(self.fallback)
                self.rows.append(list(grads))
        finally:
            for h in handles:
                h.remove()
        gram = torch.zeros(tasks, tasks, dtype=torch.float64)
        with torch.no_grad():
            for k, p in enumerate(self.fallback):
                r = torch.stack(
                    [
                        g.reshape(-1) if (g := row[k]) is not None else p.new_zeros(p.numel())
                        for row in self.rows
                    ]
                )
                gram += (r @ r.T).double().cpu()
            for site in self.sites:
                gram += site.gram(tasks).cpu()
        self.gram = gram

    @torch.no_grad()
    def combine(self, w: Tensor) -> list[tuple[Tensor, Tensor]]:
        """``(param, gradient)`` pairs of ``sum_t w_t g_t`` for every reached parameter."""
        out = []
        for k, p in enumerate(self.fallback):
            total: Tensor | None = None
            for t, row in enumerate(self.rows):
                if (g := row[k]) is not None:
                    total = w[t].to(p.dtype) * g if total is None else total.add_(g, alpha=float(w[t]))
            if total is not None:
                out.append((p, total))
        self.rows = []
        for site in self.sites:
            g = site.combine(w)
            if g is not None:
                out.append((site.param, g))
        return out


def add_grad(p: Tensor, g: Tensor, fresh: bool = False) -> None:
    """Accumulate ``g`` into ``p.grad``; ``fresh``: ``g`` is owned by nobody else (no copy)."""
    g = g.view_as(p)
    if p.grad is None:
        p.grad = g.to(p.dtype) if fresh and g.is_contiguous() else g.to(p.dtype).clone()
    else:
        p.grad.add_(g)
