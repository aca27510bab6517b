"""The backbone contract: attributes, maps against ``feature_info`` at several sizes, stages,
gradients."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...zoo.registry import Entry
from .common import (
    Checks,
    Result,
    build_part,
    import_torch,
    option_sets,
)

if TYPE_CHECKING:
    from mtlzoo.zoo.zoo import Zoo


def check_backbone(zoo: Zoo, entry: Entry, folder: Path) -> list[Result]:
    """The backbone contract (see the module docstring)."""
    from ...contract import checks

    torch = import_torch()
    c = Checks(entry.label)
    for values in c.run("examples", lambda: option_sets(entry, folder)) or []:
        backbone = c.run("factory", partial(build_part, zoo, entry, values))
        if backbone is None:
            continue
        info = c.run("backbone.attributes", partial(checks.backbone_attributes, backbone, entry.label))
        if info is None:
            continue
        div = int(getattr(backbone, "size_divisor", 1))

        def maps_match(b: Any = backbone, fi: Any = info, d: int = div) -> None:
            b.eval()
            with torch.no_grad():
                for h, w in ((64, 64), (96, 128), (80, 48)):
                    size = (-(-h // d) * d, -(-w // d) * d)
                    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(h))
                    checks.feature_maps(b(x), fi, size, entry.label)

        c.run("backbone.feature_info", maps_match)

        def stages(b: Any = backbone, d: int = div) -> str:
            staged = b.staged() if callable(getattr(b, "staged", None)) else None
            if staged is None:
                return "no stages (architectures that act between stages refuse it)"
            b.eval()
            size = -(-64 // d) * d
            x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(2))
            with torch.no_grad():
                maps, y = b(x), x
                for i, stage in enumerate(staged):
                    y = stage(y)
                    if i >= len(maps) or not torch.allclose(y, maps[i], rtol=1e-5, atol=1e-6):
                        raise AssertionError(f"stage {i} does not give map {i} of forward()")
            if len(staged) != len(maps):
                raise AssertionError(f"{len(staged)} stages for {len(maps)} maps")
            return ""

        c.run("backbone.stages", stages)

        def gradients(b: Any = backbone, d: int = div) -> None:
            b.train()
            size = -(-64 // d) * d
            maps = b(torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1)))
            sum(m.float().square().mean() for m in maps).backward()
            checks.shared_gradients([(n, p) for n, p in b.named_parameters()], entry.label)

        c.run("backbone.gradients", gradients)
    return c.results
