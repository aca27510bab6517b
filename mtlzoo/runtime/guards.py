"""Guards of the training step.

:class:`BatchNormGuard` keeps the BatchNorm running statistics as they were before a step that
``train.nonfinite: skip`` drops: that step's forward pass has already folded its (maybe
non-finite) batch statistics into them, and dropping the update alone would keep them.
"""

from __future__ import annotations

import torch
from torch import nn


class BatchNormGuard:
    """Running statistics of the model's BatchNorm layers, saved before each step and put
    back when the step is skipped (``train.nonfinite: skip``): the skipped step's forward
    pass has already folded its (maybe non-finite) batch statistics into them."""

    def __init__(self, model: nn.Module):
        self.live = [
            b
            for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
            for b in (m.running_mean, m.running_var, m.num_batches_tracked)
            if b is not None
        ]
        self.saved = [b.clone() for b in self.live]

    def save(self) -> None:
        """Remember the statistics as they are now."""
        if self.live:
            torch._foreach_copy_(self.saved, self.live)

    def restore(self) -> None:
        """Put the remembered statistics back."""
        if self.live:
            torch._foreach_copy_(self.live, self.saved)


__all__ = ["BatchNormGuard"]
