"""The head contract: output shape at several sizes and two backbone layouts, gradients."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...zoo.registry import Entry
from .common import (
    Checks,
    Result,
    build_part,
    dense_targets,
    import_torch,
    kinds_of,
    option_sets,
)

if TYPE_CHECKING:
    from mtlzoo.zoo.zoo import Zoo


_LAYOUTS = ([(16, 2), (24, 4), (32, 8), (48, 16), (64, 32)], [(24, 4), (40, 8), (64, 16), (96, 32)])


def _output_fits(
    pred: Any, kinds: list[Any], builtin: set[str], dense: set[bool], size: tuple[int, int], label: str
) -> None:
    """The prediction fits one of the kinds the head accepts, checked as the build checks it
    (:func:`mtlzoo.contract.checks.head_output`, out_channels 3); a kind whose layout (dense
    or not) matches the prediction's, a built-in one first, names the problem."""
    from ...contract import checks

    torch = import_torch()
    if not kinds:  # no registered kind it accepts: the shapes alone
        allowed = [(2, 3, *size) if d else (2, 3) for d in dense]
        if not torch.is_tensor(pred) or tuple(pred.shape) not in allowed or not pred.is_floating_point():
            got = list(pred.shape) if torch.is_tensor(pred) else type(pred).__name__
            raise AssertionError(f"output {got} for size {size}, expected {' or '.join(map(str, allowed))}")
        return
    four_d = torch.is_tensor(pred) and pred.dim() == 4
    ordered = sorted(kinds, key=lambda k: (k.dense != four_d, k.name not in builtin))
    problems = []
    for kind in ordered:
        try:
            checks.head_output(pred, kind, 3, 2, size, label, "kit")
            return
        except Exception as exc:  # noqa: BLE001 - the next kind may fit
            problems.append(exc)
    raise problems[0]


def check_head(zoo: Zoo, entry: Entry, folder: Path) -> list[Result]:
    """The head contract (see the module docstring)."""
    from ...contract.features import FeatureInfo

    torch = import_torch()
    c = Checks(entry.label)
    dense = dense_targets(zoo, entry)
    kinds = kinds_of(zoo, entry)
    builtin = {e.name for e in zoo.list("target_kind") if e.builtin}
    for values in c.run("examples", lambda: option_sets(entry, folder)) or []:
        for layout in _LAYOUTS:
            info = [FeatureInfo(ch, st) for ch, st in layout]
            head = c.run("factory", partial(build_part, zoo, entry, values, list(info), 3))
            if head is None:
                continue

            def output(h: Any = head, fi: Any = info) -> None:
                h.train()
                for size in ((64, 64), (96, 160)):
                    g = torch.Generator().manual_seed(size[1])
                    maps = [
                        torch.randn(
                            2,
                            f.channels,
                            -(-size[0] // f.stride),
                            -(-size[1] // f.stride),
                            generator=g,
                            requires_grad=True,
                        )
                        for f in fi
                    ]
                    pred = h(maps, size)
                    _output_fits(pred, kinds, builtin, dense, size, entry.label)
                pred.float().square().mean().backward()
                missing = [n for n, p in h.named_parameters() if p.requires_grad and p.grad is None]
                if missing:
                    raise AssertionError(f"{len(missing)} parameters get no gradient (e.g. {missing[0]})")

            c.run("head.output", output)
    return c.results
