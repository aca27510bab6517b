"""Built-in dataset ``shapes``: procedurally generated multi-task scenes, no files.

Scene model
-----------
Each sample is a small orthographic 3D scene, rendered on the fly from a seed derived
from ``(seed, split, index)``:

* **Camera and world.** Orthographic view along +depth. World units: the image's
  shorter side spans :data:`WORLD` (4) units; pixel ``(row, col)`` sits at world
  ``X = (col + 0.5) / S * WORLD``, ``Y = (row + 0.5) / S * WORLD`` with ``S = min(H, W)``.
  Depth is the distance along the viewing axis, so it is > 0 everywhere.
* **Ground plane (background, class 0).** A plane tilted towards the camera, bottom
  nearer than top (a floor seen from above): ``depth = D + s_y (Y_c - Y) + s_x (X - X_c)``
  with ``D`` in [7, 8], ``s_y`` in [0.2, 0.5], ``s_x`` in [-0.1, 0.1] (slopes shrink on
  very elongated images so depth stays in about [5.8, 9.2]). Its normal is the constant
  ``normalize(s_x, -s_y, 1)``. Its albedo is a dull random colour with low-frequency
  texture and a little per-pixel noise.
* **Objects (classes 1..C).** ``num_objects`` objects (uniform in the range), each of a
  random class among ``classes`` and each a height field ``h(u, v)`` over its silhouette
  in a local frame (units of its radius ``r``), with analytic normals:

  ========  =================================================================
  sphere    hemisphere bump, circular silhouette, normals radial
  box       bevelled box seen from above: flat top (normal (0,0,1)) and 45-degree
            bevels on the rim, random aspect and in-plane rotation
  cylinder  upright cylinder seen from the side: rectangle silhouette, normals
            vary along x only, ``(x, 0, sqrt(w^2 - x^2))``
  pyramid   square pyramid seen from above: four planar facets, random slope
            and rotation (same silhouette as a box, told apart by shading)
  torus     ring seen from above: annular silhouette (the floor shows through)
  ========  =================================================================

  An object's base sits at depth ``d`` in [2.5, 5] (always in front of the floor); its
  surface is at ``d - h * r_world``. Its on-screen radius is ``R / d`` with physical size
  ``R`` in [0.45, 0.8] (nearer objects look bigger). Objects are painted with a z-buffer,
  so nearer surfaces occlude farther ones (objects may also interpenetrate).
* **Appearance.** Each object has one random albedo drawn around a class-dependent hue
  (+-45 degrees, so neighbouring palettes overlap and colour alone does not give the class
  away; the shape does). Lambertian shading ``albedo * (0.25 + 0.75 max(0, n.l))`` with a
  light ``normalize(l_x, l_y, 1)``, ``l_x, l_y`` in [-1, 1] per image (elevation >= 35 degrees), then a mild
  depth haze ``c T + haze (1 - T)``, ``T = exp(-0.06 (depth - 2))``, and uniform pixel
  noise (std 0.02), clipped to [0, 1].

Sample
------
``{"image": float32 [3,H,W], "semseg": int64 [H,W], "boundary": float32 [1,H,W],
"depth": float32 [1,H,W], "normals": float32 [3,H,W], "labels": float32 [C]}``.

The image is raw RGB in [0, 1], as every dataset yields it (the model normalises). The
dataset's info declares the per-channel statistics :data:`IMAGE_MEAN` and
:data:`IMAGE_STD` (measured over the 2000 samples of the default train split), which the
model uses when its backbone expects none of its own. ``boundary`` and ``labels`` are
derived from ``semseg`` with :func:`mtlzoo.builtin.derive.boundary_from_mask` (width 1) and
:func:`mtlzoo.builtin.derive.labels_from_mask` (background dropped).
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from ...contract.data import DatasetInfo, TargetInfo
from ...contract.errors import SplitNotFound, did_you_mean
from ..derive import boundary_from_mask, labels_from_mask
from . import IGNORE_INDEX, SHAPES, ShapesOptions

#: centre hue (degrees) of each class's albedo palette; +-45 degrees jitter makes them overlap
HUES: dict[str, float] = {"sphere": 0.0, "box": 215.0, "cylinder": 125.0, "pyramid": 50.0, "torus": 290.0}
SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}  # fixed codes: seeds never depend on hash()
WORLD = 4.0  # world units spanned by the image's shorter side
AMBIENT = 0.25
HAZE = np.array([0.75, 0.78, 0.82], dtype=np.float32)
HAZE_RATE = 0.06
NOISE_STD = 0.02
#: per-channel statistics of the raw RGB over the default train split (declared by the info)
IMAGE_MEAN: tuple[float, float, float] = (0.455, 0.459, 0.463)
IMAGE_STD: tuple[float, float, float] = (0.114, 0.118, 0.123)


# -- scene description -----------------------------------------------------------------


@dataclass
class ShapeObject:
    """One object of a scene (lengths in units of the image's shorter side unless said).

    Attributes:
        shape: shape name (one of :data:`SHAPES`).
        label: its semseg class index (>= 1).
        cx, cy: centre, in units of the shorter side (x right, y down).
        r: on-screen radius, in units of the shorter side.
        depth: depth of the object's base (world units); its surface is nearer.
        theta: in-plane rotation (radians).
        albedo: RGB in [0, 1].
        params: shape parameters (box: aspect, height; cylinder: length; pyramid: slope).
    """

    shape: str
    label: int
    cx: float
    cy: float
    r: float
    depth: float
    theta: float = 0.0
    albedo: tuple[float, float, float] = (0.8, 0.8, 0.8)
    params: dict[str, float] = field(default_factory=dict)


@dataclass
class Scene:
    """Everything needed to render one sample.

    Attributes:
        objects: the objects, in any order (the z-buffer sorts out occlusion).
        light: light direction (x right, y down, z towards camera), unit length.
        ground_depth: floor depth at the image centre.
        slope_x, slope_y: floor slopes: ``depth = D + slope_y (Yc - Y) + slope_x (X - Xc)``.
        ground_albedo: RGB of the floor.
        texture: low-frequency texture grid (upsampled over the image), values ~[-1, 1].
        noise_seed: seed of the per-pixel noise.
    """

    objects: list[ShapeObject]
    light: tuple[float, float, float] = (0.0, 0.0, 1.0)
    ground_depth: float = 7.5
    slope_x: float = 0.0
    slope_y: float = 0.3
    ground_albedo: tuple[float, float, float] = (0.5, 0.5, 0.5)
    texture: np.ndarray = field(default_factory=lambda: np.zeros((2, 2), np.float32))
    noise_seed: int = 0


def sample_scene(
    rng: np.random.Generator,
    classes: tuple[str, ...],
    num_objects: tuple[int, int],
    aspect: tuple[float, float],
) -> Scene:
    """Draw a random :class:`Scene` (``aspect`` = (H/S, W/S), the image extents in short sides)."""
    ext_y, ext_x = aspect
    lx, ly = rng.uniform(-1.0, 1.0, size=2)
    light = np.array([lx, ly, 1.0]) / math.sqrt(lx * lx + ly * ly + 1.0)
    ground = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.05, 0.25), rng.uniform(0.35, 0.6))
    scene = Scene(
        objects=[],
        light=tuple(float(c) for c in light),
        ground_depth=float(rng.uniform(7.0, 8.0)),
        # slopes shrink on elongated images so depth stays within about +-1.2 of the centre
        slope_x=float(rng.uniform(-0.1, 0.1) * min(1.0, 1.0 / ext_x)),
        slope_y=float(rng.uniform(0.2, 0.5) * min(1.0, 1.0 / ext_y)),
        ground_albedo=tuple(float(c) for c in ground),
        texture=rng.uniform(-1.0, 1.0, size=(6, 6)).astype(np.float32),
        noise_seed=int(rng.integers(2**31)),
    )
    count = int(rng.integers(num_objects[0], num_objects[1] + 1))
    for _ in range(count):
        k = int(rng.integers(len(classes)))
        shape = classes[k]
        depth = float(rng.uniform(2.5, 5.0))
        r = float(rng.uniform(0.45, 0.8)) / depth
        hue = (HUES[shape] + rng.uniform(-45.0, 45.0)) / 360.0 % 1.0
        albedo = colorsys.hsv_to_rgb(hue, rng.uniform(0.45, 0.85), rng.uniform(0.65, 0.95))
        params: dict[str, float] = {}
        theta = 0.0
        if shape == "box":
            params = {"aspect": float(rng.uniform(0.6, 1.0)), "height": float(rng.uniform(0.6, 1.0))}
            theta = float(rng.uniform(0.0, math.pi / 2))
        elif shape == "pyramid":
            params = {"slope": float(rng.uniform(0.8, 1.3))}
            theta = float(rng.uniform(0.0, math.pi / 2))
        elif shape == "cylinder":
            params = {"length": float(rng.uniform(1.6, 2.6))}
        scene.objects.append(
            ShapeObject(
                shape=shape,
                label=k + 1,
                cx=float(rng.uniform(0.1, 0.9) * ext_x),
                cy=float(rng.uniform(0.1, 0.9) * ext_y),
                r=r,
                depth=depth,
                theta=theta,
                albedo=tuple(float(c) for c in albedo),
                params=params,
            )
        )
    return scene


# -- shapes: height field and normals in the local frame -------------------------------
# Each takes local coordinates (u, v) in units of the radius and returns
# (mask, h, nu, nv, nz): the silhouette, the height (units of r) and an unnormalised
# normal in the local frame with nz > 0 (x right, y down, z towards the camera).

_CYL_HALF_WIDTH = 0.7
_TORUS_R, _TORUS_r = 0.62, 0.38
_BEVEL = 0.25


def _sphere(u, v, p):
    rho2 = u * u + v * v
    mask = rho2 < 1.0
    h = np.sqrt(np.clip(1.0 - rho2, 0.0, None))
    return mask, h, u, v, h


def _box(u, v, p):
    a, hb = p["aspect"], p["height"]
    eu, ev = 1.0 - np.abs(u), a - np.abs(v)
    mask = (eu > 0) & (ev > 0)
    e = np.minimum(eu, ev)
    bevel = e < _BEVEL
    h = hb - np.clip(_BEVEL - e, 0.0, None)
    on_u = bevel & (eu <= ev)
    on_v = bevel & (eu > ev)
    nu = np.where(on_u, np.sign(u), 0.0)
    nv = np.where(on_v, np.sign(v), 0.0)
    return mask, h, nu, nv, np.ones_like(u)


def _cylinder(u, v, p):
    w = _CYL_HALF_WIDTH
    mask = (np.abs(u) < w) & (np.abs(v) < w * p["length"])
    h = np.sqrt(np.clip(w * w - u * u, 0.0, None))
    return mask, h, u, np.zeros_like(u), h


def _pyramid(u, v, p):
    s = p["slope"]
    au, av = np.abs(u), np.abs(v)
    mask = (au < 1.0) & (av < 1.0)
    h = s * (1.0 - np.maximum(au, av))
    on_u = au >= av
    nu = np.where(on_u, s * np.sign(u), 0.0)
    nv = np.where(on_u, 0.0, s * np.sign(v))
    return mask, h, nu, nv, np.ones_like(u)


def _torus(u, v, p):
    rho = np.sqrt(u * u + v * v)
    t = (rho - _TORUS_R) / _TORUS_r
    mask = np.abs(t) < 1.0
    s = np.sqrt(np.clip(1.0 - t * t, 0.0, None))
    inv = t / np.maximum(rho, 1e-6)
    return mask, _TORUS_r * s, u * inv, v * inv, s


_SHAPE_FNS = {"sphere": _sphere, "box": _box, "cylinder": _cylinder, "pyramid": _pyramid, "torus": _torus}
# half-extent of each silhouette in units of r, for the bounding window
_EXTENT = {"sphere": 1.0, "box": math.sqrt(2.0), "pyramid": math.sqrt(2.0), "torus": 1.0}


def _extent(obj: ShapeObject) -> tuple[float, float]:
    """Half-extents (x, y) of an object's silhouette in units of the shorter side."""
    if obj.shape == "cylinder":
        w = _CYL_HALF_WIDTH * obj.r
        return w, w * obj.params["length"]
    e = _EXTENT[obj.shape] * obj.r
    return e, e


def _upsample(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear upsampling of a small 2D grid to ``[h, w]`` (corners aligned)."""
    gh, gw = grid.shape
    ys = np.linspace(0.0, gh - 1.0, h, dtype=np.float32)
    xs = np.linspace(0.0, gw - 1.0, w, dtype=np.float32)
    y0 = np.minimum(ys.astype(np.int64), gh - 2)
    x0 = np.minimum(xs.astype(np.int64), gw - 2)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    g00 = grid[y0][:, x0]
    g01 = grid[y0][:, x0 + 1]
    g10 = grid[y0 + 1][:, x0]
    g11 = grid[y0 + 1][:, x0 + 1]
    return (g00 * (1 - fx) + g01 * fx) * (1 - fy) + (g10 * (1 - fx) + g11 * fx) * fy


def render(scene: Scene, size: tuple[int, int]) -> dict[str, np.ndarray]:
    """Render a scene to numpy arrays at ``size = (H, W)``.

    Returns ``{"rgb": float32 [3,H,W] in [0,1], "semseg": int64 [H,W], "depth": float32
    [H,W], "normals": float32 [3,H,W]}`` (unit normals, x right, y down, z to camera).
    """
    H, W = size
    S = float(min(H, W))
    xs = (np.arange(W, dtype=np.float32) + 0.5) / S  # units of the shorter side
    ys = (np.arange(H, dtype=np.float32) + 0.5) / S

    # floor: a tilted plane with one constant normal
    xc, yc = W / S / 2.0, H / S / 2.0
    depth = (
        scene.ground_depth
        + scene.slope_y * WORLD * (yc - ys)[:, None]
        + scene.slope_x * WORLD * (xs - xc)[None, :]
    ).astype(np.float32)
    n_bg = np.array([scene.slope_x, -scene.slope_y, 1.0], np.float32)
    n_bg /= np.linalg.norm(n_bg)
    normals = np.empty((3, H, W), np.float32)
    normals[:] = n_bg[:, None, None]
    semseg = np.zeros((H, W), np.int64)
    tex = _upsample(scene.texture, H, W)
    albedo = np.asarray(scene.ground_albedo, np.float32)[:, None, None] * (1.0 + 0.2 * tex)[None]

    for obj in scene.objects:
        ex, ey = _extent(obj)
        # pixel window holding the silhouette (the rest of the image is untouched)
        c0 = max(int(math.floor((obj.cx - ex) * S - 0.5)), 0)
        c1 = min(int(math.ceil((obj.cx + ex) * S + 0.5)) + 1, W)
        r0 = max(int(math.floor((obj.cy - ey) * S - 0.5)), 0)
        r1 = min(int(math.ceil((obj.cy + ey) * S + 0.5)) + 1, H)
        if c0 >= c1 or r0 >= r1:
            continue
        dx = ((xs[c0:c1] - obj.cx) / obj.r)[None, :]
        dy = ((ys[r0:r1] - obj.cy) / obj.r)[:, None]
        c, s = math.cos(obj.theta), math.sin(obj.theta)
        u = c * dx + s * dy
        v = -s * dx + c * dy
        mask, h, nu, nv, nz = _SHAPE_FNS[obj.shape](u, v, obj.params)
        d = obj.depth - h * (obj.r * WORLD)
        win = (slice(r0, r1), slice(c0, c1))
        front = mask & (d < depth[win])  # z-buffer test
        if not front.any():
            continue
        # local frame -> image frame: u axis is (c, s), v axis is (-s, c)
        nx = nu * c - nv * s
        ny = nu * s + nv * c
        norm = np.sqrt(nx * nx + ny * ny + nz * nz)
        depth[win] = np.where(front, d, depth[win])
        semseg[win][front] = obj.label
        for ch, comp in enumerate((nx, ny, nz)):
            normals[ch][win] = np.where(front, comp / norm, normals[ch][win])
        col = np.asarray(obj.albedo, np.float32)
        for ch in range(3):
            albedo[ch][win] = np.where(front, col[ch], albedo[ch][win])

    light = np.asarray(scene.light, np.float32)
    lambert = np.clip(np.tensordot(light, normals, axes=1), 0.0, None)
    rgb = albedo * (AMBIENT + (1.0 - AMBIENT) * lambert)[None]
    trans = np.exp(-HAZE_RATE * (depth - 2.0))[None]
    rgb = rgb * trans + HAZE[:, None, None] * (1.0 - trans)
    # uniform noise with std NOISE_STD: several times cheaper to draw than Gaussian
    noise = np.random.default_rng(scene.noise_seed).random((3, H, W), dtype=np.float32) - 0.5
    rgb = np.clip(rgb + (NOISE_STD * math.sqrt(12.0)) * noise, 0.0, 1.0).astype(np.float32)
    return {"rgb": rgb, "semseg": semseg, "depth": depth, "normals": normals}


# -- dataset -----------------------------------------------------------------------------


class ShapesDataset(Dataset):
    """Map-style dataset of procedurally generated multi-task scenes (see the module doc).

    The factory of ``shapes``: ``ShapesDataset(split, options: ShapesOptions)`` with
    ``split`` in ``train``/``val``/``test``. Samples are generated on the fly in ``__getitem__``:
    sample ``i`` of split ``s`` is a pure function of ``(seed, s, i)``, identical across
    calls, processes and DataLoader workers, whatever the access order.

    Attributes:
        info: the :class:`~mtlzoo.contract.data.DatasetInfo` of its targets.
        split, size, classes, num_objects, seed: the resolved options.
    """

    def __init__(self, split: str, options: ShapesOptions):
        if split not in SPLITS:
            raise SplitNotFound(
                f"shapes has no split {split!r}{did_you_mean(str(split), SPLITS)}; "
                f"splits are {', '.join(SPLITS)}"
            )
        self.split = split
        self.size = (int(options.size[0]), int(options.size[1]))
        self.num_objects = (int(options.num_objects[0]), int(options.num_objects[1]))
        self.classes = tuple(options.classes) if options.classes is not None else SHAPES
        self.seed = int(options.seed)
        self.length = int(getattr(options, f"{split}_size"))
        names = ("background",) + self.classes
        self.info = DatasetInfo(
            name="shapes",
            targets={
                "semseg": TargetInfo("segmentation", len(names), names, IGNORE_INDEX),
                "boundary": TargetInfo("boundary", ignore_index=IGNORE_INDEX),
                "depth": TargetInfo("depth"),
                "normals": TargetInfo("normals"),
                "labels": TargetInfo("labels", len(self.classes), self.classes),
            },
            mean=IMAGE_MEAN,
            std=IMAGE_STD,
        )

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return (
            f"ShapesDataset(split={self.split!r}, len={self.length}, size={list(self.size)}, "
            f"classes={list(self.classes)}, num_objects={list(self.num_objects)}, seed={self.seed})"
        )

    def rng(self, index: int) -> np.random.Generator:
        """The generator of sample ``index``: seeded by ``(seed, split code, index)`` only."""
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(SPLITS[self.split], index)))

    def _index(self, index: int) -> int:
        i = int(index)
        if i < 0:
            i += self.length
        if not 0 <= i < self.length:
            raise IndexError(f"shapes {self.split}: index {index} out of range for {self.length} samples")
        return i

    def scene(self, index: int) -> Scene:
        """The :class:`Scene` of sample ``index`` (what ``__getitem__`` renders)."""
        H, W = self.size
        S = min(H, W)
        return sample_scene(self.rng(self._index(index)), self.classes, self.num_objects, (H / S, W / S))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        out = render(self.scene(index), self.size)
        semseg = torch.from_numpy(out["semseg"])
        return {
            "image": torch.from_numpy(out["rgb"]),
            "semseg": semseg,
            "boundary": boundary_from_mask(semseg),
            "depth": torch.from_numpy(out["depth"])[None],
            "normals": torch.from_numpy(out["normals"]),
            "labels": labels_from_mask(semseg, len(self.classes) + 1)[1:].contiguous(),
        }
