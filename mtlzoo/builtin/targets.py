"""Built-in target kinds: segmentation, boundary, depth, normals, labels, class.

Registration is torch-free (listing stays fast); the value checks, flips and examples
import torch when they first run. See :mod:`mtlzoo.contract.data` for the table of shapes.
"""

from __future__ import annotations

from typing import Any

from ..contract.data import TargetInfo, TargetKind
from ..contract.hooks import hookimpl


# -- value checks (``mtlzoo data check``) ---------------------------------------------------------
def _distinct(values: Any, limit: int = 5) -> str:
    uniq = values.unique()
    shown = ", ".join(f"{float(v):g}" for v in uniq[:limit].tolist())
    return shown + (", ..." if uniq.numel() > limit else "")


def check_class_indices(t: Any, info: TargetInfo) -> str | None:
    """Class indices in ``[0, num_classes)`` or the ignore index."""
    bad = (t < 0) | (t >= info.num_classes)
    if info.ignore_index is not None:
        bad &= t != info.ignore_index
    if bool(bad.any()):
        allowed = f"0..{info.num_classes - 1}" + (
            f" or {info.ignore_index}" if info.ignore_index is not None else ""
        )
        return f"values {_distinct(t[bad])} are not class indices ({allowed})"
    return None


def check_binary(t: Any, info: TargetInfo) -> str | None:
    """0/1 values (or the ignore index)."""
    import torch

    if not bool(torch.isfinite(t).all()):
        return "NaN or infinite values"
    bad = (t != 0) & (t != 1)
    if info.ignore_index is not None:
        bad &= t != float(info.ignore_index)
    if bool(bad.any()):
        return f"values {_distinct(t[bad])} are not 0 or 1" + (
            f" (or {info.ignore_index})" if info.ignore_index is not None else ""
        )
    return None


def check_depth(t: Any, info: TargetInfo) -> str | None:
    """Finite depth (0 or less marks no measurement)."""
    import torch

    if not bool(torch.isfinite(t).all()):
        return f"{int((~torch.isfinite(t)).sum())} NaN or infinite depth values (use 0 for no measurement)"
    return None


def check_normals(t: Any, info: TargetInfo) -> str | None:
    """Finite unit vectors, or all-zero (no measurement)."""
    import torch

    if not bool(torch.isfinite(t).all()):
        return f"{int((~torch.isfinite(t)).sum())} NaN or infinite values (use all-zero for no measurement)"
    norm = t.norm(dim=0)
    bad = (norm > 1e-6) & ((norm - 1).abs() > 1e-2)
    if bool(bad.any()):
        return (
            f"{int(bad.sum())} pixels hold vectors that are neither unit length nor zero (e.g. length "
            f"{float(norm[bad][0]):.3g})"
        )
    return None


# -- value changes under augmentation -------------------------------------------------------------
def negate_x(t: Any) -> Any:
    """After a horizontal flip, normals point the other way along x."""
    out = t.clone()
    out[0] = -out[0]
    return out


def divide_by_scale(t: Any, s: float) -> Any:
    """Zooming in by ``s`` brings the scene ``s`` times closer."""
    return t / s


# -- examples (conformance kit) -------------------------------------------------------------------
def example_mask(info: TargetInfo, h: int, w: int, g: Any) -> Any:
    """Random class indices, a few pixels set to the ignore index."""
    import torch

    t = torch.randint(0, max(info.num_classes, 1), (h, w), generator=g)
    if info.ignore_index is not None:
        t[0, 0] = info.ignore_index
    return t


def example_boundary(info: TargetInfo, h: int, w: int, g: Any) -> Any:
    """Random sparse boundaries."""
    import torch

    return (torch.rand(1, h, w, generator=g) < 0.2).float()


def example_depth(info: TargetInfo, h: int, w: int, g: Any) -> Any:
    """Positive depth with a few missing pixels."""
    import torch

    t = 0.5 + 4 * torch.rand(1, h, w, generator=g)
    t[0, 0, 0] = 0.0
    return t


def example_normals(info: TargetInfo, h: int, w: int, g: Any) -> Any:
    """Random unit vectors facing the camera, one missing pixel."""
    import torch

    v = torch.randn(3, h, w, generator=g)
    v[2] = v[2].abs() + 0.1
    v = v / v.norm(dim=0, keepdim=True)
    v[:, 0, 0] = 0.0
    return v


def example_labels(info: TargetInfo, h: int, w: int, g: Any) -> Any:
    """Random multi-hot labels."""
    import torch

    return (torch.rand(max(info.num_classes, 1), generator=g) < 0.5).float()


def example_class(info: TargetInfo, h: int, w: int, g: Any) -> Any:
    """One random class index."""
    import torch

    return torch.randint(0, max(info.num_classes, 1), (), generator=g)


# -- the kinds ------------------------------------------------------------------------------------
def segmentation() -> TargetKind:
    """Class index per pixel."""
    return TargetKind(
        "segmentation", ("H", "W"), "int64", pad="ignore", check=check_class_indices, example=example_mask
    )


def boundary() -> TargetKind:
    """1 on boundary pixels, 0 elsewhere, the ignore index where unknown."""
    return TargetKind(
        "boundary", (1, "H", "W"), "float32", pad="ignore", check=check_binary, example=example_boundary
    )


def depth() -> TargetKind:
    """Depth per pixel, 0 for no measurement."""
    return TargetKind(
        "depth", (1, "H", "W"), "float32", on_scale=divide_by_scale, check=check_depth, example=example_depth
    )


def normals() -> TargetKind:
    """Unit surface normal per pixel (x right, y down, z towards the camera)."""
    return TargetKind(
        "normals", (3, "H", "W"), "float32", on_flip=negate_x, check=check_normals, example=example_normals
    )


def labels() -> TargetKind:
    """Multi-hot image-level labels."""
    return TargetKind("labels", ("C",), "float32", check=check_binary, example=example_labels)


def class_index() -> TargetKind:
    """One class index per image."""
    return TargetKind("class", (), "int64", check=check_class_indices, example=example_class)


@hookimpl
def register_target_kinds(register):
    """Register the built-in target kinds."""
    register("segmentation", segmentation, None, "int64 [H,W] class index per pixel (ignore_index = void)")
    register(
        "boundary", boundary, None, "float32 [1,H,W] boundary map (1 = boundary, ignore_index = unknown)"
    )
    register("depth", depth, None, "float32 [1,H,W] depth per pixel (0 = no measurement)")
    register("normals", normals, None, "float32 [3,H,W] unit surface normals (all-zero = no measurement)")
    register("labels", labels, None, "float32 [C] multi-hot image-level labels")
    register("class", class_index, None, "int64 [] one class index per image")
