"""The architecture contract: outputs, parameter groups, and ``Step``'s Gramian and shared
gradient against explicit per-task autograd."""

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
    from mtlzoo.contract.combine import Wrt
    from mtlzoo.zoo.zoo import Zoo


def _arch_setup(zoo: Zoo) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """A small staged backbone, two dense tasks and one image-level task (registered kinds)."""
    from types import SimpleNamespace

    from torch import nn

    from ...contract.backbone import Backbone
    from ...contract.data import TargetInfo
    from ...contract.features import FeatureInfo
    from ...contract.tasks import TaskInfo

    torch = import_torch()

    class Staged(Backbone):
        def __init__(self) -> None:
            super().__init__()
            chans = [6, 8, 12]
            blocks, cin = [], 3
            for c in chans:
                blocks.append(nn.Sequential(nn.Conv2d(cin, c, 3, 2, 1), nn.ReLU()))
                cin = c
            self.blocks = nn.ModuleList(blocks)
            self.feature_info = [FeatureInfo(c, 2 ** (i + 1)) for i, c in enumerate(chans)]

        def staged(self) -> list[nn.Module]:
            return list(self.blocks)

        def forward(self, x: Any) -> list[Any]:
            out = []
            for b in self.blocks:
                x = b(x)
                out.append(x)
            return out

    class Dense(nn.Module):
        def __init__(self, feature_info: Any, out_channels: int) -> None:
            super().__init__()
            self.proj = nn.ModuleList(nn.Conv2d(fi.channels, out_channels, 1) for fi in feature_info)

        def forward(self, features: Any, size: Any) -> Any:
            return sum(
                torch.nn.functional.interpolate(p(f), size=tuple(size), mode="bilinear")
                for p, f in zip(self.proj, features)
            )

    class Pooled(nn.Module):
        def __init__(self, feature_info: Any, out_channels: int) -> None:
            super().__init__()
            self.fc = nn.Linear(feature_info[-1].channels, out_channels)

        def forward(self, features: Any, size: Any) -> Any:
            return self.fc(features[-1].mean((2, 3)))

    kinds = [zoo.target_kind(e.name) for e in zoo.list("target_kind")]
    dense = next(k for k in kinds if k.dense)
    image = next((k for k in kinds if not k.dense), None)
    specs = {"a": (dense, 2), "b": (dense, 1)} | ({"c": (image, 3)} if image is not None else {})
    infos, tasks = {}, {}
    for name, (kind, ch) in specs.items():
        infos[name] = TaskInfo(name, name, name, ch, TargetInfo(kind.name, ch))
        tasks[name] = SimpleNamespace(kind=kind, info=infos[name])

    def make_head(task: str, fi: Any) -> Any:
        return (Dense if specs[task][0].dense else Pooled)(list(fi), specs[task][1])

    torch.manual_seed(0)
    backbone = Staged()
    return backbone, {"infos": infos, "make_head": make_head}, tasks


def check_architecture(zoo: Zoo, entry: Entry, folder: Path) -> list[Result]:
    """The architecture contract: it builds from the parts, predicts every task (and its
    deep supervision) at the right shapes, declares every parameter once, and the Step's
    Gramian and shared gradient equal explicit per-task autograd on it."""
    from ...contract import checks
    from ...contract.architecture import Architecture, ArchitectureParts

    c = Checks(entry.label)
    for values in c.run("examples", lambda: option_sets(entry, folder)) or []:

        def make(v: dict[str, Any] = values) -> Any:
            backbone, extra, tasks = _arch_setup(zoo)
            infos, make_head = extra["infos"], extra["make_head"]
            heads = {t: make_head(t, backbone.feature_info) for t in infos}
            model = build_part(zoo, entry, v, ArchitectureParts(backbone, heads, infos, make_head))
            if not isinstance(model, Architecture):
                raise AssertionError(f"built {type(model).__name__}, not a mtlzoo Architecture")
            if list(model.task_names) != list(infos):
                raise AssertionError(f"predicts tasks {list(model.task_names)}, not {list(infos)}")
            return model, backbone, tasks

        built = c.run("factory", make)
        if built is None:
            continue
        model, backbone, tasks = built
        labels = {"backbone": "kit backbone", "architecture": entry.label, **dict.fromkeys(tasks, "kit head")}
        c.run(
            "architecture.outputs",
            partial(checks.dry_forward, model, backbone, tasks, (32, 48), labels),
        )
        c.run("architecture.parameters", partial(checks.parameter_groups, model, entry.label))
        modes: list[Wrt] = ["params"]
        if model.has_shared_representation:
            modes.append("features")
        for wrt in modes:
            c.run(f"architecture.gramian[{wrt}]", partial(_gramian_matches_autograd, model, wrt))
    return c.results


def _gramian_matches_autograd(model: Any, wrt: Wrt) -> None:
    """``Step.gramian`` and ``Step.backward_weighted`` against per-task autograd (float32 round-off)."""
    from ...contract import checks
    from ...contract.combine import Step

    torch = import_torch()
    model.train()
    images = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(3))

    def losses_of() -> tuple[Any, dict[str, Any]]:
        out = model.forward_train(images)
        losses = {}
        for t, p in out.preds.items():
            aux = out.aux.get(t) or []
            loss = p.float().square().mean() + 0.1
            if aux and model.aux_weight:
                loss = loss + model.aux_weight * torch.stack([a.float().square().mean() for a in aux]).mean()
            losses[t] = loss
        return out, losses

    shared = model.shared_parameters()
    out, losses = losses_of()
    if wrt == "params":
        rows = []
        for loss in losses.values():
            # an architecture may share no trainable parameter (lora's frozen encoder): zero-length rows
            grads = torch.autograd.grad(loss, shared, retain_graph=True, allow_unused=True) if shared else ()
            parts = [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, shared)]
            rows.append(torch.cat(parts) if parts else torch.zeros(0))
    else:
        rows = None
    step = Step(losses, out.shared, shared, {t: model.task_parameters(t) for t in model.task_names})
    gram = step.gramian(wrt)
    if rows is not None:
        j = torch.stack(rows).double()
        want = j @ j.T
        if not torch.allclose(gram, want, rtol=1e-4, atol=1e-8 * (_largest(want) + 1)):
            raise AssertionError(
                f"Step.gramian('params') {gram.tolist()} differs from per-task autograd {want.tolist()}"
            )
    w = torch.linspace(0.5, 1.5, len(losses), dtype=torch.float64)
    for p in model.parameters():
        p.grad = None
    step.backward_weighted(w, wrt)
    checks.shared_gradients(model.named_shared_parameters(), "the architecture")
    if rows is not None:
        got = torch.cat([p.grad.reshape(-1) for p in shared] or [torch.zeros(0)]).double()
        want_g = (w[:, None] * torch.stack(rows).double()).sum(0)
        if not torch.allclose(got, want_g, rtol=1e-4, atol=1e-6 * (_largest(want_g) + 1)):
            raise AssertionError("the shared gradient of backward_weighted differs from sum_t w_t g_t")
    for p in model.parameters():
        p.grad = None


def _largest(t: Any) -> float:
    """The largest absolute value of ``t`` (0 when it is empty: an architecture without shared parameters)."""
    return float(t.abs().max()) if t.numel() else 0.0
