"""Derived targets: computed from a segmentation mask by the data pipeline, once.

Datasets yield only what their files hold; the pipeline derives the rest (a boundary map,
image-level labels) with these functions, so no dataset computes them by hand.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def boundary_from_mask(mask: Tensor, width: int = 1, ignore_index: int | None = None) -> Tensor:
    """Boundary map of an int mask ``[H,W]`` -> float ``[1,H,W]``.

    A pixel is a boundary pixel when a pixel within ``width`` (Chebyshev distance) has
    another label. Pixels whose whole neighbourhood is ``ignore_index`` are marked with
    ``float(ignore_index)`` so losses and metrics can skip them; a boundary between a class
    and void counts as a boundary.
    """
    if mask.dim() != 2:
        raise ValueError(f"mask must be [H,W], got shape {tuple(mask.shape)}")
    if width < 1:
        raise ValueError(f"boundary width must be >= 1, got {width}")
    m = mask.to(torch.float32)[None, None]
    k = 2 * width + 1
    # a neighbourhood with max != min holds two labels
    hi = F.max_pool2d(F.pad(m, (width,) * 4, mode="replicate"), k, stride=1)
    lo = -F.max_pool2d(F.pad(-m, (width,) * 4, mode="replicate"), k, stride=1)
    edge = (hi != lo).to(torch.float32)[0]
    if ignore_index is not None:
        void = mask == ignore_index
        all_void = void & (edge[0] == 0)
        edge[0][all_void] = float(ignore_index)
    return edge


def labels_from_mask(
    mask: Tensor,
    num_classes: int,
    ignore_index: int | None = None,
    min_fraction: float = 0.0,
    classes: tuple[int, ...] | None = None,
) -> Tensor:
    """Multi-hot image-level labels ``[num_classes]`` of the classes present in ``mask``.

    With ``min_fraction`` > 0 a class is present only when it covers more than that fraction
    of the non-void pixels; ``classes`` (class indices) keeps those labels only, in that order.
    """
    values = mask.reshape(-1).long()
    if ignore_index is not None:
        values = values[values != ignore_index]
    values = values[(values >= 0) & (values < num_classes)]
    if min_fraction > 0:
        counts = torch.bincount(values, minlength=num_classes)[:num_classes]
        out = (counts > min_fraction * values.numel()).to(torch.float32)
    else:
        out = torch.zeros(num_classes, dtype=torch.float32)
        out[values.unique()] = 1.0
    return out[list(classes)] if classes is not None else out
