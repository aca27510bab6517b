"""The combiner contract: every shared parameter gets a finite gradient in each ``wrt`` mode,
and the state survives a save/load through safetensors. A combiner with a ``heldout_split``
(bilevel weighting) gets a held-out batch of the toy model (``step.heldout``)."""

from __future__ import annotations

import tempfile
import typing
from collections.abc import Callable, Sequence
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


def _wrt_modes(entry: Entry) -> list[str | None]:
    if entry.options is None:
        return [None]
    hints = typing.get_type_hints(entry.options)
    if "wrt" not in hints:
        return [None]
    modes: list[str | None] = [a for a in typing.get_args(hints["wrt"]) if isinstance(a, str)]
    return modes or [None]


def _toy(seed: int) -> tuple[Any, Any, list[Any]]:
    """A two-stage convolutional backbone and three heads (two dense, one pooled)."""
    torch = import_torch()
    nn = torch.nn
    torch.manual_seed(seed)
    backbone = nn.ModuleList(
        [
            nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU()),
        ]
    )
    heads = nn.ModuleList([nn.Conv2d(8, 1, 1), nn.Conv2d(8, 2, 1), nn.Linear(8, 3)])
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    return backbone, heads, [images]


def _toy_losses(backbone: Any, heads: Any, images: Any, names: list[str]) -> tuple[list[Any], dict[str, Any]]:
    x = images
    features = []
    for stage in backbone:
        x = stage(x)
        features.append(x)
    preds = [heads[0](features[0]), heads[1](features[1]), heads[2](features[1].mean((2, 3)))]
    return features, {n: (p.square().mean() + 0.1 * (i + 1)) for i, (n, p) in enumerate(zip(names, preds))}


def _step(
    backbone: Any, heads: Any, images: Any, names: list[str], step: int, combiner: Any = None
) -> tuple[Any, Any]:
    from ...contract.combine import Step

    features, losses = _toy_losses(backbone, heads, images, names)
    task_params: dict[str, Sequence[Any]] = {n: list(h.parameters()) for n, h in zip(names, heads)}
    out = Step(losses, features, list(backbone.parameters()), task_params, step=step)
    if getattr(combiner, "heldout_split", None) is not None:
        out.heldout = _heldout(backbone, heads, images, names)
    return losses, out


def _heldout(backbone: Any, heads: Any, images: Any, names: list[str]) -> Any:
    """The toy model's :class:`~mtlzoo.contract.heldout.HeldOut`: another random batch, and
    forward passes with parameters replaced out of place."""
    from torch import nn

    from ...contract.heldout import HeldOut

    torch = import_torch()

    class Toy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone, self.heads = backbone, heads

        def forward(self, x: Any) -> Any:
            return _toy_losses(self.backbone, self.heads, x, names)[1]

    toy = Toy()
    batches = {
        "train": images,
        "heldout": torch.rand(images.shape, generator=torch.Generator().manual_seed(7)),
    }

    def forward(which: str, parameters: Any) -> Any:
        return torch.func.functional_call(toy, dict(parameters), (batches[which],), strict=False)

    return HeldOut(forward, dict(toy.named_parameters()), 0.01, list(names[:1]))


def check_combiner(zoo: Zoo, entry: Entry, folder: Path) -> list[Result]:
    """The combiner contract (see the module docstring)."""
    from ...contract.combine import Combiner

    torch = import_torch()
    c = Checks(entry.label)
    names = ["a", "b", "c"]
    for values in c.run("examples", lambda: option_sets(entry, folder)) or []:
        for wrt in _wrt_modes(entry):
            opts = {**values, **({"wrt": wrt} if wrt else {})}
            tag = f"[wrt={wrt}]" if wrt else ""

            def make(o: dict[str, Any] = opts) -> Any:
                combiner = build_part(zoo, entry, o, list(names))
                if not isinstance(combiner, Combiner):
                    raise AssertionError(f"built {type(combiner).__name__}, not a mtlzoo Combiner")
                return combiner

            combiner = c.run(f"factory{tag}", make)
            if combiner is None:
                continue

            def gradients(cb: Any = combiner) -> None:
                from ...contract import checks

                backbone, heads, (images,) = _toy(0)
                losses, step = _step(backbone, heads, images, names, 0, cb)
                cb.backward(losses, step)
                named = list(backbone.named_parameters())
                checks.combiner_made_gradients(named, list(heads.parameters()), entry.label)
                checks.shared_gradients(named, entry.label)
                bad = [n for n, p in backbone.named_parameters() if not bool(torch.isfinite(p.grad).all())]
                if bad:
                    raise AssertionError(f"non-finite gradient in {bad[0]}")

            c.run(f"combiner.gradients{tag}", gradients)
            if c.failed(f"combiner.gradients{tag}"):
                continue  # without gradients the state check only fails as a consequence
            c.run(f"combiner.state{tag}", partial(_state_round_trip, make, names))
    return c.results


def _state_round_trip(make: Callable[[], Any], names: list[str]) -> None:
    """Two steps, save the combiner's state through safetensors, load it into a fresh one:
    the state and the third step's logs and gradients agree."""
    from safetensors.torch import load_file, save_file

    torch = import_torch()
    first = make()
    backbone, heads, (images,) = _toy(1)
    opt = torch.optim.SGD(
        [*backbone.parameters(), *heads.parameters(), *[p for p in first.parameters() if p.requires_grad]],
        lr=0.01,
    )
    for i in range(2):
        opt.zero_grad()
        losses, step = _step(backbone, heads, images, names, i, first)
        first.backward(losses, step)
        if first.needs_losses_after_step:
            opt.step()
            with torch.no_grad():
                after, _ = _step(backbone, heads, images, names, i)
            first.after_step({k: v.detach() for k, v in after.items()})
        else:
            opt.step()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.safetensors"
        state = {k: v.detach().contiguous().clone() for k, v in first.state_dict().items()}
        if state:
            save_file(state, str(path))
            state = load_file(str(path))
        second = make()
        second.load_state_dict(state)
    for k, v in first.state_dict().items():
        w = second.state_dict()[k]
        if v.shape != w.shape or not torch.equal(v, w):
            raise AssertionError(f"state {k!r} differs after a save/load round trip")
    grads = []
    for cb in (first, second):
        opt.zero_grad()
        for p in backbone.parameters():
            p.grad = None
        losses, step = _step(backbone, heads, images, names, 2, cb)
        logs = cb.backward(losses, step) or {}
        grads.append(([p.grad.clone() for p in backbone.parameters()], logs))
    (g1, l1), (g2, l2) = grads
    if any(not torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(g1, g2)) or l1.keys() != l2.keys():
        raise AssertionError("the step after loading the saved state differs from the step of the original")
