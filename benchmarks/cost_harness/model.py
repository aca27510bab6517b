"""The measured model: light dense heads on a shared backbone, its forward on a fixed batch, and
a zoo of mtlzoo's built-in combiners."""

from __future__ import annotations


def light_heads(chans: list[int], names: list[str], width: int = 32):
    """One light dense head per task (``nn.ModuleDict``): 1x1 convs on the stride-4 and stride-32
    maps (``feats[1]``, ``feats[-1]``), added, ReLU, a 3x3 conv to one channel, bilinear
    upsampling to the input size."""
    import torch.nn.functional as F
    from torch import nn

    class LightHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.fine = nn.Conv2d(chans[1], width, 1)
            self.coarse = nn.Conv2d(chans[-1], width, 1)
            self.out = nn.Conv2d(width, 1, 3, padding=1)

        def forward(self, feats, size):
            a = self.fine(feats[1])
            b = F.interpolate(self.coarse(feats[-1]), size=a.shape[-2:], mode="bilinear", align_corners=False)
            return F.interpolate(self.out(F.relu(a + b)), size=size, mode="bilinear", align_corners=False)

    return nn.ModuleDict({n: LightHead() for n in names})


def make_forward(backbone, heads, x, targets):
    """``forward(cut=False) -> (feature maps, {task: MSE loss})`` on the fixed batch ``x``. With
    ``cut`` the heads read the stride-4 map through a view of it, a node only they consume (see
    :func:`torchjd_step`); the values and gradients are the same."""
    import torch.nn.functional as F

    def forward(cut: bool = False):
        feats = backbone(x)
        if cut:
            feats = [*feats[:1], feats[1].view_as(feats[1]), *feats[2:]]
        return feats, {n: F.mse_loss(heads[n](feats, x.shape[-2:]), t) for n, t in targets.items()}

    return forward


def combiner_zoo():
    """A zoo of mtlzoo's built-in combiners only (no other plugin is needed here)."""
    import mtlzoo.builtin.combiners
    from mtlzoo import Zoo

    plugin = mtlzoo.builtin.combiners
    return Zoo.load(entry_points=False, plugins=[("builtin_combiners", plugin)], strict=True)


__all__ = [
    "combiner_zoo",
    "light_heads",
    "make_forward",
]
