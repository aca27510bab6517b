"""``hps``: hard parameter sharing (Caruana 1997), the shared-backbone model itself."""

from __future__ import annotations

from ...contract.architecture import ArchitectureParts
from ...contract.model import MultiTaskModel


def make_hps(parts: ArchitectureParts) -> MultiTaskModel:
    """One backbone feeding every task's head: exactly the model built without an
    architecture (same modules, same parameter names, same checkpoints)."""
    return MultiTaskModel(parts.backbone, parts.heads)
