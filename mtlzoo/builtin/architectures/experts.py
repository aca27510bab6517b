"""Building blocks of the mixture-of-experts architectures (``mmoe``, ``cgc``, ``ple``,
``dselect_k``, ``ltb``): experts over the backbone's feature maps, gates computed from
features, mixing, and their common base class.

An **expert** here is not a network: it is one residual bottleneck block per chosen scale
(:class:`Expert`), applied to the backbone's maps of stride >= ``min_stride`` and keeping
their shapes, so the task heads read the mixed maps exactly as they would read the backbone's.
A **gate** (:class:`SoftmaxGate`, :class:`DSelectGate`) reads the same maps and gives each
expert a weight, per image (``pooled``: from the average-pooled maps) or per position
(``pixel``: a 1x1 conv per scale), so any input size works.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...contract.architecture import Architecture, ArchitectureParts
from ...contract.errors import ConfigError
from ...contract.features import FeatureInfo
from .blocks import Bottleneck, select_scales

#: added inside the logarithm of DSelect-k's entropy, as the reference code (``EPSILON``)
EPSILON = 1e-6


class Expert(nn.Module):
    """One expert: a residual bottleneck block (:class:`~.blocks.Bottleneck`, middle width
    ``C / reduction``) per chosen scale, each keeping its map's shape."""

    def __init__(
        self, channels: Sequence[int], reduction: int, norm: str, active: Sequence[bool] | None = None
    ):
        super().__init__()
        self.active = [True] * len(channels) if active is None else list(active)
        self.blocks = nn.ModuleList(
            Bottleneck(c, c, norm, mid=max(c // reduction, 1)) for c, a in zip(channels, self.active) if a
        )

    def forward(self, maps: Sequence[Tensor | None]) -> list[Tensor | None]:
        """The expert's output at every chosen scale (``None`` at a scale it is not active at)."""
        blocks = iter(self.blocks)
        return [next(blocks)(x) if a else None for x, a in zip(maps, self.active)]


class GateLogits(nn.Module):
    """``n`` logits per image or per position, from the chosen maps.

    ``pooled``: ``Linear(sum of C_j -> n)`` on the concatenated global-average-pooled maps,
    one set of logits per image used at every scale (``[B, n, 1, 1]``); ``pixel``: a 1x1 conv
    ``C_j -> n`` per scale (``[B, n, h_j, w_j]``)."""

    def __init__(self, channels: Sequence[int], n: int, mode: str, active: Sequence[bool] | None = None):
        super().__init__()
        self.pooled = mode == "pooled"
        self.active = [True] * len(channels) if active is None else list(active)
        if self.pooled:
            self.fc = nn.Linear(sum(channels), n)
        else:
            self.convs = nn.ModuleList(nn.Conv2d(c, n, 1) for c, a in zip(channels, self.active) if a)

    def forward(self, maps: Sequence[Tensor | None]) -> list[Tensor | None]:
        """One logits tensor per active scale (the same tensor at every one when pooled, read
        from every scale's map), ``None`` at the others."""
        if self.pooled:
            z = self.fc(torch.cat([m.mean((2, 3)) for m in maps if m is not None], 1))[:, :, None, None]
            return [z if a else None for a in self.active]
        convs = iter(self.convs)
        return [next(convs)(m) if a else None for m, a in zip(maps, self.active)]


class SoftmaxGate(nn.Module):
    """MMoE's gate ``softmax(W x)`` over ``n`` experts (per image or per position, see
    :class:`GateLogits`)."""

    def __init__(self, channels: Sequence[int], n: int, mode: str, active: Sequence[bool] | None = None):
        super().__init__()
        self.logits = GateLogits(channels, n, mode, active)

    def forward(self, maps: Sequence[Tensor | None]) -> tuple[list[Tensor | None], Tensor | None]:
        """``(weights per scale [B, n, h|1, w|1] or None where inactive, None)``: the weights
        sum to 1 over dim 1."""
        logits = self.logits(maps)
        if self.logits.pooled:
            z = next(z for z in logits if z is not None)
            w = F.softmax(z, dim=1)
            return [w if z is not None else None for z in logits], None
        return [F.softmax(z, dim=1) if z is not None else None for z in logits], None


def smooth_step(t: Tensor, gamma: float) -> Tensor:
    """DSelect-k's smooth-step: 0 below ``-gamma/2``, 1 above ``gamma/2``, the cubic
    ``-2/gamma^3 t^3 + 3/(2 gamma) t + 1/2`` between (continuously differentiable)."""
    cubic = (-2.0 / gamma**3) * t**3 + (3.0 / (2.0 * gamma)) * t + 0.5
    return torch.where(
        t <= -gamma / 2, torch.zeros_like(t), torch.where(t >= gamma / 2, torch.ones_like(t), cubic)
    )


class DSelectGate(nn.Module):
    """DSelect-k's per-example gate (Hazimeh et al. 2021): ``k`` single-expert selectors,
    each ``r_i(e) = prod_j S(z_ij)^{b_j(e)} (1 - S(z_ij))^{1 - b_j(e)}`` over the ``m =
    ceil(log2 n)`` binary digits ``b(e)`` of expert ``e`` (``S`` the smooth-step), mixed by
    ``softmax(w)``: ``weight(e) = sum_i softmax(w)_i r_i(e)``. The logits ``z`` (``k x m``)
    and ``w`` (``k``) come from the maps (:class:`GateLogits`), initialised as LibMTL's
    ``DSelect_k`` (uniform in ``+-gamma/100`` and ``+-0.05``).

    Its regulariser (returned, never backpropagated here): ``entropy_reg`` times the entropy
    of the selectors ``-sum_i,e r_i(e) log(r_i(e) + 1e-6)``, plus, when ``n`` is not a power
    of two, ``sum_i 1 / sum_e r_i(e)`` (it pushes the selectors off the codes of experts that
    do not exist), both averaged over the images (and positions)."""

    def __init__(
        self,
        channels: Sequence[int],
        n: int,
        k: int,
        gamma: float,
        entropy_reg: float,
        mode: str,
        active: Sequence[bool] | None = None,
    ):
        super().__init__()
        self.n, self.k, self.gamma, self.entropy_reg = n, k, float(gamma), float(entropy_reg)
        self.m = max(1, math.ceil(math.log2(n)))
        self.power_of_2 = n == 2**self.m
        self.z = GateLogits(channels, k * self.m, mode, active)
        self.w = GateLogits(channels, k, mode, active)
        with torch.no_grad():
            for p in self.z.parameters():
                p.uniform_(-self.gamma / 100, self.gamma / 100)
            for p in self.w.parameters():
                p.uniform_(-0.05, 0.05)
        # codes[e, j]: binary digit j (most significant first) of expert e
        codes = torch.tensor([[int(b) for b in format(e, f"0{self.m}b")] for e in range(n)], dtype=torch.bool)
        self.register_buffer("codes", codes, persistent=False)

    def weights(self, z: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
        """``(expert weights [B, n, h, w], selector outputs [B, k, n, h, w])`` from the logits
        ``z [B, k*m, h, w]`` and ``w [B, k, h, w]``."""
        b, _, h, wd = z.shape
        s = smooth_step(z.view(b, self.k, 1, self.m, h, wd), self.gamma)
        codes = self.codes.view(1, 1, self.n, self.m, 1, 1)
        selectors = torch.where(codes, s, 1 - s).prod(3)  # [B, k, n, h, w]
        mix = F.softmax(w, dim=1)  # [B, k, h, w]
        return (mix.unsqueeze(2) * selectors).sum(1), selectors

    def regularizer(self, selectors: Tensor) -> Tensor:
        """The gate's regulariser for one scale's selector outputs (a scalar)."""
        per_sample = (-(selectors * torch.log(selectors + EPSILON)).sum((1, 2))) * self.entropy_reg
        if not self.power_of_2:
            per_sample = per_sample + (1.0 / selectors.sum(2)).sum(1)
        return per_sample.mean()

    def forward(self, maps: Sequence[Tensor | None]) -> tuple[list[Tensor | None], Tensor]:
        """``(weights per scale (None where inactive), regulariser)``."""
        zs, ws = self.z(maps), self.w(maps)
        if self.z.pooled:
            z, w = next(z for z in zs if z is not None), next(w for w in ws if w is not None)
            weights, selectors = self.weights(z, w)
            return [weights if z is not None else None for z in zs], self.regularizer(selectors)
        out: list[Tensor | None] = []
        regs = []
        for z, w in zip(zs, ws):
            if z is None or w is None:
                out.append(None)
                continue
            weights, selectors = self.weights(z, w)
            out.append(weights)
            regs.append(self.regularizer(selectors))
        return out, torch.stack(regs).mean()


def mix(outputs: Sequence[Tensor], weights: Tensor) -> Tensor:
    """``sum_e weights[:, e] * outputs[e]`` for ``outputs`` of equal shape ``[B, C, h, w]``
    and ``weights [B, n, h|1, w|1]``."""
    out = weights[:, 0:1] * outputs[0]
    for e in range(1, len(outputs)):
        out = out + weights[:, e : e + 1] * outputs[e]
    return out


def mix_scales(
    outputs: Sequence[Sequence[Tensor | None]], weights: Sequence[Tensor | None]
) -> list[Tensor | None]:
    """Per scale ``j``: :func:`mix` of every expert's output at ``j`` with ``weights[j]``
    (``outputs[e][j]`` is expert ``e``'s output at scale ``j``); ``None`` at a scale without
    weights or where an expert is not active."""
    out: list[Tensor | None] = []
    for j, w in enumerate(weights):
        at_j = [o[j] for o in outputs]
        out.append(None if w is None or any(x is None for x in at_j) else mix(at_j, w))  # type: ignore[arg-type]
    return out


class ExpertArchitecture(Architecture):
    """What the mixture-of-experts architectures share: the backbone (shared), the chosen
    scales (the maps of stride >= ``min_stride``), the tasks' heads (the spec's, as built:
    experts keep the maps' shapes), and the assembly of each task's maps."""

    label = "a mixture-of-experts architecture"

    def __init__(self, parts: ArchitectureParts, min_stride: int):
        super().__init__()
        self.backbone = parts.backbone
        self.names = list(parts.heads)
        self.info = [FeatureInfo(int(c), int(s)) for c, s in parts.backbone.feature_info]
        self.scales = select_scales(self.info, min_stride)
        self.channels = [self.info[i].channels for i in self.scales]
        self.heads = nn.ModuleDict(parts.heads)
        # per task, the chosen scales its head reads: a task's own experts and gate convs exist
        # only there (at the others nothing of theirs would reach its loss: they would not train)
        self.reads = {t: scales_read(self.heads[t], self.info, self.scales) for t in self.names}

    @property
    def task_names(self) -> list[str]:
        """Task names in spec order."""
        return self.names

    def chosen(self, maps: Sequence[Tensor]) -> list[Tensor]:
        """The maps the experts act on."""
        return [maps[i] for i in self.scales]

    def task_maps(self, maps: Sequence[Tensor], mixed: Sequence[Tensor | None]) -> list[Tensor]:
        """The backbone's maps with the chosen scales replaced by a task's ``mixed`` maps (a
        scale the task's head does not read, ``None``, keeps the backbone's map)."""
        out = list(maps)
        for i, m in zip(self.scales, mixed):
            if m is not None:
                out[i] = m
        return out

    def predict(
        self, maps: Sequence[Tensor], mixed: dict[str, Sequence[Tensor | None]], size: Sequence[int]
    ) -> dict:
        """Every task's head on its maps."""
        return {t: self.heads[t](self.task_maps(maps, mixed[t]), tuple(size)) for t in self.names}


def experts(
    count: int, channels: Sequence[int], reduction: int, norm: str, active: Sequence[bool] | None = None
) -> nn.ModuleList:
    """``count`` independent experts over maps of ``channels`` (active at the ``active`` scales)."""
    return nn.ModuleList(Expert(channels, reduction, norm, active) for _ in range(count))


def scales_read(head: nn.Module, info: Sequence[FeatureInfo], scales: Sequence[int]) -> list[bool]:
    """Which of the ``scales`` (indices into the backbone maps) a head's prediction depends
    on: one forward pass of the head alone on small zero maps (eval mode; gradients taken
    with respect to the maps only, so nothing of the head changes). A head the probe cannot
    run is taken to read every scale."""
    side = 2 * max(fi.stride for fi in info)
    maps = [
        torch.zeros(1, fi.channels, -(-side // fi.stride), -(-side // fi.stride), requires_grad=True)
        for fi in info
    ]
    was_training = head.training
    head.eval()
    try:
        with torch.enable_grad():
            out = head(maps, (side, side))
            grads = torch.autograd.grad(out.float().sum(), [maps[i] for i in scales], allow_unused=True)
    except Exception:  # noqa: BLE001 - any head: when the probe fails, assume it reads everything
        return [True] * len(scales)
    finally:
        head.train(was_training)
    read = [g is not None for g in grads]
    return read if any(read) else [True] * len(scales)


def refuse(label: str, message: str) -> ConfigError:
    """A one-line configuration error naming the architecture."""
    return ConfigError(f"architecture {label!r}: {message}")


__all__ = [
    "Expert",
    "GateLogits",
    "SoftmaxGate",
    "DSelectGate",
    "smooth_step",
    "mix",
    "mix_scales",
    "experts",
    "scales_read",
    "refuse",
    "ExpertArchitecture",
    "EPSILON",
]
