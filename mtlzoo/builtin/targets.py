"""Built-in target kinds: segmentation, boundary, depth, normals, labels, class.

Registration is torch-free (listing stays fast); the value checks, flips, examples and the
``predict`` hooks import torch, numpy, PIL or matplotlib when they first run. See
:mod:`mtlzoo.contract.data` for the table of shapes.

What ``predict`` makes of each kind (``decode`` -> ``render`` picture -> ``save`` files, next to
a stem such as ``preds/img/semseg``):

============  ======================  =====================  ==============================================
kind          decoded value           picture (render)       files (save)
============  ======================  =====================  ==============================================
segmentation  int64 [H,W] argmax      class colours          ``<task>.png``: index PNG, mode ``P`` with the
                                      (:func:`palette`)      palette (16-bit grey above 256 classes)
boundary      float [1,H,W] sigmoid   grey (white = edge)    ``<task>.png``: 8-bit grey, probability * 255
depth         the prediction itself   ``magma``, near        ``<task>.png``: 16-bit grey, depth * 1000
                                      bright, no             (millimetres for depth in metres; 0 = none);
                                      measurement black      ``<task>_color.png``: the picture, its range in
                                                             the PNG text ``depth_min``/``depth_max``
normals       float [3,H,W] unit      RGB (n + 1) / 2 * 255  ``<task>.png``: that RGB picture
labels        float [C] sigmoid       none                   ``<task>.json``: ``{class name: score}``
class         float [C] softmax       none                   ``<task>.json``: ``{"top": [...]}``, the 5 best
                                                             as ``{"class": name, "score": p}``
============  ======================  =====================  ==============================================
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from ..contract.data import TargetInfo, TargetKind
from ..contract.errors import MtlzooError
from ..contract.hooks import hookimpl

#: void pixels (the ignore index) with the fixed palette: PASCAL VOC's own void colour
VOC_VOID = (224, 224, 192)
#: depth is saved as ``round(depth * DEPTH_SCALE)`` in a 16-bit PNG
DEPTH_SCALE = 1000
#: the colour map of depth pictures
DEPTH_COLORMAP = "magma"
#: how many classes a ``class`` prediction's JSON lists
TOP_K = 5


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


# -- predictions: decode, render, save (``mtlzoo predict``) ---------------------------------------
@functools.lru_cache(maxsize=1)
def voc_palette() -> tuple[tuple[int, int, int], ...]:
    """The 256-entry PASCAL VOC colour map (the bits of the index spread over R, G and B): the
    fixed palette of segmentations whose dataset gives none. Entry 0 is black."""
    colours = []
    for i in range(256):
        r = g = b = 0
        c = i
        for bit in range(7, -1, -1):
            r |= (c & 1) << bit
            g |= ((c >> 1) & 1) << bit
            b |= ((c >> 2) & 1) << bit
            c >>= 3
        colours.append((r, g, b))
    return tuple(colours)


def palette(info: TargetInfo) -> Any:
    """uint8 ``[256, 3]``: the colour of each class index. The dataset's ``info.palette`` for its
    classes (void, the ignore index, drawn black as in SegNet's CamVid pictures), else the
    VOC palette (:func:`voc_palette`, void in VOC's cream)."""
    import numpy as np

    colours = np.array(voc_palette(), dtype=np.uint8)
    void = VOC_VOID
    if info.palette:
        given = np.array(info.palette, dtype=np.uint8).reshape(-1, 3)[:256]
        colours[: len(given)] = given
        void = (0, 0, 0)
    if info.ignore_index is not None and info.num_classes <= info.ignore_index < 256:
        colours[info.ignore_index] = void
    return colours


def _numpy(t: Any) -> Any:
    return t.detach().float().cpu().numpy() if t.is_floating_point() else t.detach().cpu().numpy()


def _png(array: Any, path: Path, text: dict[str, str] | None = None) -> Path:
    """Write a uint8 [H,W] / [H,W,3] or uint16 [H,W] array as a PNG (with optional text chunks)."""
    from PIL import Image, PngImagePlugin

    meta = None
    if text:
        meta = PngImagePlugin.PngInfo()
        for k, v in text.items():
            meta.add_text(k, v)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, pnginfo=meta)
    return path


def _json(data: Any, path: Path) -> Path:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return path


def _stem(stem: Any, suffix: str) -> Path:
    stem = Path(stem)
    return stem.with_name(stem.name + suffix)


def decode_argmax(pred: Any, info: TargetInfo) -> Any:
    """Per-pixel logits ``[C,H,W]`` -> class indices int64 ``[H,W]``."""
    return pred.argmax(0)


def render_classes(value: Any, info: TargetInfo) -> Any:
    """Class indices ``[H,W]`` (prediction or target) -> their :func:`palette` colours."""
    import numpy as np

    v = _numpy(value).astype(np.int64)
    return palette(info)[np.mod(v, 256)]


def save_classes(value: Any, info: TargetInfo, stem: Any) -> list[Path]:
    """``<stem>.png``: the class indices as an index PNG (mode ``P``, :func:`palette`); 16-bit
    grey when there are more than 256 classes."""
    import numpy as np
    from PIL import Image

    v = _numpy(value).astype(np.int64)
    path = _stem(stem, ".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    if info.num_classes > 256:
        return [_png(v.astype(np.uint16), path)]
    im = Image.frombytes("P", (v.shape[1], v.shape[0]), v.astype(np.uint8).tobytes())
    im.putpalette(palette(info).reshape(-1).tolist())
    im.save(path)
    return [path]


def decode_sigmoid(pred: Any, info: TargetInfo) -> Any:
    """Logits -> probabilities (boundary maps, multi-label scores)."""
    return pred.sigmoid()


def render_grey(value: Any, info: TargetInfo) -> Any:
    """A ``[1,H,W]`` map in [0, 1] as grey (white = 1); the ignore index in VOC's void colour."""
    import numpy as np

    v = _numpy(value)[0]
    out = np.repeat((np.clip(v, 0, 1) * 255).round().astype(np.uint8)[..., None], 3, axis=2)
    if info.ignore_index is not None:
        out[v == float(info.ignore_index)] = VOC_VOID
    return out


def save_grey(value: Any, info: TargetInfo, stem: Any) -> list[Path]:
    """``<stem>.png``: 8-bit grey, probability * 255."""
    import numpy as np

    v = np.clip(_numpy(value)[0], 0, 1)
    return [_png((v * 255).round().astype(np.uint8), _stem(stem, ".png"))]


def depth_range(value: Any) -> tuple[float, float]:
    """(min, max) of the measured (finite, > 0) depth; the range of its picture."""
    import numpy as np

    v = _numpy(value)
    valid = v[np.isfinite(v) & (v > 0)]
    if valid.size == 0:
        return 0.0, 1.0
    return float(valid.min()), float(valid.max())


def render_depth(value: Any, info: TargetInfo) -> Any:
    """Depth ``[1,H,W]`` through the ``magma`` colour map over its own :func:`depth_range`,
    near bright and far dark; no measurement black."""
    import numpy as np

    try:
        from matplotlib import colormaps
    except ImportError:
        raise MtlzooError("depth pictures need matplotlib; pip install 'mtlzoo[bench]'") from None
    v = _numpy(value)[0]
    lo, hi = depth_range(value)
    valid = np.isfinite(v) & (v > 0)
    t = np.clip((hi - np.where(valid, v, hi)) / max(hi - lo, 1e-12), 0, 1)
    out = (colormaps[DEPTH_COLORMAP](t)[..., :3] * 255).round().astype(np.uint8)
    out[~valid] = 0
    return out


def save_depth(value: Any, info: TargetInfo, stem: Any) -> list[Path]:
    """``<stem>.png``: 16-bit grey ``round(depth * 1000)`` (0 = no measurement, clipped at
    65535); ``<stem>_color.png``: :func:`render_depth`'s picture, its range in the PNG text."""
    import numpy as np

    v = _numpy(value)[0]
    scaled = np.where(np.isfinite(v) & (v > 0), v * DEPTH_SCALE, 0)
    raw = np.clip(scaled.round(), 0, 65535).astype(np.uint16)
    lo, hi = depth_range(value)
    text = {"depth_min": f"{lo:.6g}", "depth_max": f"{hi:.6g}", "colormap": DEPTH_COLORMAP, "near": "bright"}
    return [
        _png(raw, _stem(stem, ".png"), {"depth_scale": str(DEPTH_SCALE), "no_measurement": "0"}),
        _png(render_depth(value, info), _stem(stem, "_color.png"), text),
    ]


def decode_unit(pred: Any, info: TargetInfo) -> Any:
    """Normals ``[3,H,W]`` scaled to unit length per pixel."""
    import torch

    return torch.nn.functional.normalize(pred, dim=0)


def render_normals(value: Any, info: TargetInfo) -> Any:
    """Normals ``[3,H,W]`` as RGB ``(n + 1) / 2 * 255`` (x red, y green, z blue)."""
    import numpy as np

    v = np.clip(_numpy(value), -1, 1)
    return ((v.transpose(1, 2, 0) + 1) / 2 * 255).round().astype(np.uint8)


def save_normals(value: Any, info: TargetInfo, stem: Any) -> list[Path]:
    """``<stem>.png``: :func:`render_normals`'s RGB picture (``n = rgb / 255 * 2 - 1``)."""
    return [_png(render_normals(value, info), _stem(stem, ".png"))]


def _names(info: TargetInfo, n: int) -> list[str]:
    names = list(info.class_names)
    return names[:n] + [str(i) for i in range(len(names), n)]


def save_scores(value: Any, info: TargetInfo, stem: Any) -> list[Path]:
    """``<stem>.json``: ``{class name: score}`` in class order."""
    scores = [float(s) for s in _numpy(value).reshape(-1)]
    return [_json({n: round(s, 6) for n, s in zip(_names(info, len(scores)), scores)}, _stem(stem, ".json"))]


def decode_softmax(pred: Any, info: TargetInfo) -> Any:
    """Logits ``[C]`` -> class probabilities."""
    return pred.softmax(0)


def save_top_k(value: Any, info: TargetInfo, stem: Any) -> list[Path]:
    """``<stem>.json``: ``{"top": [{"class": name, "score": p}, ...]}``, the 5 most likely classes."""
    scores = [float(s) for s in _numpy(value).reshape(-1)]
    names = _names(info, len(scores))
    best = sorted(range(len(scores)), key=lambda i: -scores[i])[:TOP_K]
    return [
        _json(
            {"top": [{"class": names[i], "score": round(scores[i], 6)} for i in best]}, _stem(stem, ".json")
        )
    ]


# -- the kinds ------------------------------------------------------------------------------------
def segmentation() -> TargetKind:
    """Class index per pixel."""
    return TargetKind(
        "segmentation",
        ("H", "W"),
        "int64",
        pad="ignore",
        check=check_class_indices,
        example=example_mask,
        decode=decode_argmax,
        render=render_classes,
        save=save_classes,
    )


def boundary() -> TargetKind:
    """1 on boundary pixels, 0 elsewhere, the ignore index where unknown."""
    return TargetKind(
        "boundary",
        (1, "H", "W"),
        "float32",
        pad="ignore",
        check=check_binary,
        example=example_boundary,
        decode=decode_sigmoid,
        render=render_grey,
        save=save_grey,
    )


def depth() -> TargetKind:
    """Depth per pixel, 0 for no measurement."""
    return TargetKind(
        "depth",
        (1, "H", "W"),
        "float32",
        on_scale=divide_by_scale,
        check=check_depth,
        example=example_depth,
        render=render_depth,
        save=save_depth,
    )


def normals() -> TargetKind:
    """Unit surface normal per pixel (x right, y down, z towards the camera)."""
    return TargetKind(
        "normals",
        (3, "H", "W"),
        "float32",
        on_flip=negate_x,
        check=check_normals,
        example=example_normals,
        decode=decode_unit,
        render=render_normals,
        save=save_normals,
    )


def labels() -> TargetKind:
    """Multi-hot image-level labels."""
    return TargetKind(
        "labels",
        ("C",),
        "float32",
        check=check_binary,
        example=example_labels,
        decode=decode_sigmoid,
        save=save_scores,
    )


def class_index() -> TargetKind:
    """One class index per image."""
    return TargetKind(
        "class",
        (),
        "int64",
        check=check_class_indices,
        example=example_class,
        decode=decode_softmax,
        save=save_top_k,
    )


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
