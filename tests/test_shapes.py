"""The built-in `shapes` dataset: determinism, targets, hand-built scenes, errors, registration."""

from __future__ import annotations

import functools
import math
from importlib import metadata

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import mtlzoo.builtin.datasets as D
import mtlzoo.builtin.targets as T
from mtlzoo import Zoo
from mtlzoo.builtin.datasets import SHAPES, ShapesOptions
from mtlzoo.builtin.datasets.shapes import (
    IMAGE_MEAN,
    IMAGE_STD,
    WORLD,
    Scene,
    ShapeObject,
    ShapesDataset,
    render,
)
from mtlzoo.builtin.derive import boundary_from_mask, labels_from_mask
from mtlzoo.contract.errors import ConfigError, DataError

KEYS = {"image", "semseg", "boundary", "depth", "normals", "labels"}


def shapes(split: str = "train", **options) -> ShapesDataset:
    """A shapes dataset built directly from its options dataclass."""
    return ShapesDataset(split, ShapesOptions(**options))


@functools.cache
def datasets_zoo() -> Zoo:
    """A zoo of the datasets plugin (and the target kinds its infos name) only."""
    plugins = [("builtin_datasets", D), ("builtin_targets", T)]
    return Zoo.load(entry_points=False, plugins=plugins, strict=True)


def make(split: str, **options) -> ShapesDataset:
    """A shapes dataset built through the zoo: options validated as a spec's ``data`` node."""
    return datasets_zoo().make("dataset", {"name": "shapes", **options}, split, path="data")


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def floor_depth(scene: Scene, size) -> np.ndarray:
    """The floor plane's depth per pixel, written out from the scene model."""
    H, W = size
    S = min(H, W)
    X = (np.arange(W) + 0.5) / S * WORLD
    Y = (np.arange(H) + 0.5) / S * WORLD
    Xc, Yc = W / S * WORLD / 2, H / S * WORLD / 2
    return scene.ground_depth + scene.slope_y * (Yc - Y)[:, None] + scene.slope_x * (X - Xc)[None, :]


# -- registration ------------------------------------------------------------------------


def test_registered_through_entry_point():
    # only this entry point and the target kinds: the other built-in packages are not needed
    needed = {"builtin_datasets", "builtin_targets"}
    others = {ep.name for ep in metadata.entry_points(group="mtlzoo")} - needed
    z = Zoo.load(strict=True, block=others)
    entry = z.entry("dataset", "shapes")
    assert entry.plugin == "builtin_datasets" and entry.builtin and entry.help
    assert entry.options is ShapesOptions
    ds = z.make("dataset", {"name": "shapes", "size": [16, 16], "val_size": 3}, "val", path="data")
    assert isinstance(ds, ShapesDataset) and len(ds) == 3 and ds.split == "val" and ds.size == (16, 16)


def test_register_hook_directly():
    seen = []
    D.register_datasets(lambda *a, **k: seen.append(a))
    assert seen[0][0] == "shapes" and seen[0][2] is ShapesOptions
    assert seen[0][1] == "mtlzoo.builtin.datasets.shapes:ShapesDataset"  # lazy: listing never imports torch


def test_info_describes_every_target():
    ds = shapes("train", train_size=1)
    t = ds.info.targets
    assert ds.info.name == "shapes" and set(t) == KEYS - {"image"}
    assert t["semseg"].kind == "segmentation" and t["semseg"].num_classes == 6
    assert t["semseg"].class_names == ("background",) + SHAPES and t["semseg"].ignore_index == 255
    assert t["boundary"].kind == "boundary" and t["boundary"].ignore_index == 255
    assert t["depth"].kind == "depth" and t["normals"].kind == "normals"
    assert t["labels"].kind == "labels" and t["labels"].num_classes == 5 and t["labels"].class_names == SHAPES


def test_lengths_index_and_repr():
    ds = shapes("test", test_size=5, size=[16, 24])
    assert len(ds) == 5 and len(shapes("train")) == 2000 and len(shapes("val")) == 256
    assert same(ds[-1], ds[4])
    with pytest.raises(IndexError):
        ds[5]
    r = repr(ds)
    assert "split='test'" in r and "size=[16, 24]" in r and "len=5" in r


# -- determinism -------------------------------------------------------------------------


def test_same_item_twice_and_across_instances():
    a = shapes("train", size=[24, 24])
    b = shapes("train", size=[24, 24])
    assert same(a[3], a[3]) and same(a[3], b[3])
    assert not torch.equal(a[3]["image"], a[4]["image"])


def test_order_independent_and_size_of_split_irrelevant():
    a = shapes("train", size=[24, 24])
    first = a[7]
    b = shapes("train", size=[24, 24], train_size=10)
    for i in (9, 0, 3):  # touch other items first, in another order
        b[i]
    assert same(first, b[7])


def test_seed_option_changes_samples():
    a = shapes("train", size=[24, 24], seed=0)[0]
    b = shapes("train", size=[24, 24], seed=1)[0]
    assert not torch.equal(a["image"], b["image"])


def test_splits_never_share_samples():
    kw = dict(size=[24, 24], train_size=10, val_size=10, test_size=10)
    images = {
        s: torch.stack([shapes(s, **kw)[i]["image"] for i in range(10)]) for s in ("train", "val", "test")
    }
    for s1, s2 in (("train", "val"), ("train", "test"), ("val", "test")):
        # no image of one split equals any image of another
        diff = (images[s1][:, None] - images[s2][None]).abs().flatten(2).amax(-1)
        assert diff.min() > 0.1, (s1, s2)


def test_dataloader_workers_give_the_same_samples():
    ds = shapes("val", size=[16, 16], val_size=6)
    loader = DataLoader(ds, batch_size=3, num_workers=2, shuffle=False)
    got = torch.cat([b["image"] for b in loader])
    assert torch.equal(got, torch.stack([ds[i]["image"] for i in range(6)]))


# -- sample contract ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [[64, 64], [37, 50], [50, 37], [8, 8], [9, 23]])
def test_dtypes_shapes_and_ranges(size):
    H, W = size
    ds = shapes("train", size=size, train_size=6)
    for i in range(6):
        s = ds[i]
        assert set(s) == KEYS
        assert s["image"].dtype == torch.float32 and s["image"].shape == (3, H, W)
        assert s["semseg"].dtype == torch.int64 and s["semseg"].shape == (H, W)
        assert s["boundary"].dtype == torch.float32 and s["boundary"].shape == (1, H, W)
        assert s["depth"].dtype == torch.float32 and s["depth"].shape == (1, H, W)
        assert s["normals"].dtype == torch.float32 and s["normals"].shape == (3, H, W)
        assert s["labels"].dtype == torch.float32 and s["labels"].shape == (5,)
        assert torch.isfinite(s["image"]).all()
        assert 0 <= s["semseg"].min() and s["semseg"].max() <= 5
        assert set(s["boundary"].unique().tolist()) <= {0.0, 1.0}
        assert set(s["labels"].unique().tolist()) <= {0.0, 1.0}
        assert (s["depth"] > 0).all()
        assert torch.allclose(s["normals"].norm(dim=0), torch.ones(H, W), atol=1e-5)
        assert (s["normals"][2] > 0).all()  # every visible surface faces the camera


@pytest.mark.parametrize("size", [[64, 64], [37, 50]])
def test_derived_targets_match_targets_module(size):
    ds = shapes("train", size=size, train_size=8)
    for i in range(8):
        s = ds[i]
        assert torch.equal(s["boundary"], boundary_from_mask(s["semseg"]))
        assert torch.equal(s["labels"], labels_from_mask(s["semseg"], 6)[1:])


def test_depth_consistent_with_occlusion():
    size = (37, 50)
    ds = shapes("train", size=list(size), train_size=10, num_objects=[2, 4])
    for i in range(10):
        s, scene = ds[i], ds.scene(i)
        depth = s["depth"][0].double().numpy()
        bg = floor_depth(scene, size)
        obj = s["semseg"].numpy() > 0
        assert (depth[obj] < bg[obj]).all()  # objects stand in front of the floor
        assert np.allclose(depth[~obj], bg[~obj], atol=1e-4)  # the floor is the plane itself


def test_floor_tilts_towards_camera():
    ds = shapes("train", size=[32, 32], train_size=4, num_objects=[0, 0])
    for i in range(4):
        s, scene = ds[i], ds.scene(i)
        d = s["depth"][0]
        assert d[0].mean() > d[-1].mean()  # top of the image is farther
        n = torch.tensor([scene.slope_x, -scene.slope_y, 1.0])
        assert torch.allclose(s["normals"][:, 5, 5], n / n.norm(), atol=1e-6)
        assert (s["semseg"] == 0).all() and s["labels"].sum() == 0 and s["boundary"].sum() == 0


def test_image_is_raw_and_info_declares_its_statistics():
    raw = shapes("train", size=[32, 32], train_size=48)  # [0, 1], like every dataset: the model normalises
    assert raw.info.mean == IMAGE_MEAN and raw.info.std == IMAGE_STD
    r = raw[0]["image"]
    assert r.min() >= 0 and r.max() <= 1
    mean = torch.tensor(IMAGE_MEAN)[:, None, None]
    std = torch.tensor(IMAGE_STD)[:, None, None]
    # the declared statistics fit the images: normalised with them, a batch is about zero-mean, unit-std
    batch = (torch.stack([raw[i]["image"] for i in range(48)]) - mean) / std
    m, sd = batch.mean((0, 2, 3)), batch.std((0, 2, 3))
    assert (m.abs() < 0.3).all() and ((sd > 0.7) & (sd < 1.4)).all(), (m, sd)
    with pytest.raises(ConfigError, match=r"data.normalize: unknown option of dataset 'shapes'"):
        make("train", normalize=True)  # the option is gone: datasets never normalise


def test_object_counts_and_labels_vary():
    ds = shapes("train", size=[32, 32], train_size=40, num_objects=[1, 4])
    counts = [len(ds.scene(i).objects) for i in range(40)]
    assert set(counts) == {1, 2, 3, 4}
    labels = {tuple(ds[i]["labels"].tolist()) for i in range(40)}
    assert len(labels) > 5
    assert all(len(shapes("train", num_objects=[3, 3]).scene(i).objects) == 3 for i in range(5))


def test_class_subset_reindexes():
    ds = shapes("train", size=[32, 32], train_size=10, classes=["torus", "box"], num_objects=[1, 1])
    assert ds.info.targets["semseg"].class_names == ("background", "torus", "box")
    assert ds.info.targets["labels"].class_names == ("torus", "box")
    for i in range(10):
        obj = ds.scene(i).objects[0]
        s = ds[i]
        assert obj.shape in ("torus", "box") and obj.label == ("torus", "box").index(obj.shape) + 1
        assert set(s["semseg"].unique().tolist()) <= {0, obj.label}
        assert s["labels"].shape == (2,)


def test_palettes_overlap_between_classes():
    # colour alone does not give the class away: some sphere and some pyramid share a hue range
    ds = shapes("train", size=[16, 16], train_size=300)
    hues = {"sphere": [], "pyramid": []}
    import colorsys

    for i in range(300):
        for o in ds.scene(i).objects:
            if o.shape in hues:
                hues[o.shape].append(colorsys.rgb_to_hsv(*o.albedo)[0] * 360)
    sphere = [h for h in hues["sphere"] if h < 180]
    assert max(sphere) > min(hues["pyramid"])


# -- hand-built scenes: the geometry of each shape ------------------------------------------

FLOOR = dict(ground_depth=7.5, slope_x=0.0, slope_y=0.3, light=(0.0, 0.0, 1.0))


def one(shape: str, **kw) -> dict:
    obj = ShapeObject(shape=shape, label=1, cx=0.5, cy=0.5, r=0.25, depth=4.0, **kw)
    return render(Scene(objects=[obj], **FLOOR), (64, 64))


def unit(*v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def test_sphere_geometry():
    out = one("sphere")
    # pixel (31, 31) has centre (31.5/64) = 0.4921875, offset -0.0078125 = -1/32 of r
    u = v = (31.5 / 64 - 0.5) / 0.25
    h = math.sqrt(1 - u * u - v * v)
    assert out["semseg"][31, 31] == 1
    assert out["depth"][31, 31] == pytest.approx(4.0 - h * 0.25 * WORLD, abs=1e-5)
    assert np.allclose(out["normals"][:, 31, 31], unit(u, v, h), atol=1e-6)
    # silhouette: area of a disc of radius 16 px
    assert abs(int((out["semseg"] == 1).sum()) - math.pi * 16**2) < 20
    # right side faces right, bottom faces down
    assert out["normals"][0, 32, 46] > 0.8 and out["normals"][1, 46, 32] > 0.8


def test_box_has_flat_top_and_bevels():
    out = one("box", params={"aspect": 1.0, "height": 0.8})
    assert np.allclose(out["normals"][:, 32, 32], [0, 0, 1])
    assert out["depth"][32, 32] == pytest.approx(4.0 - 0.8 * 0.25 * WORLD, abs=1e-5)
    # right bevel (u = 0.9): 45 degrees towards +x
    col = int(64 * (0.5 + 0.9 * 0.25))
    assert np.allclose(out["normals"][:, 32, col], unit(1, 0, 1), atol=1e-6)
    assert abs(int((out["semseg"] == 1).sum()) - 32 * 32) <= 2 * 32


def test_rotated_box_rotates_its_normals():
    theta = math.pi / 6
    out = one("box", theta=theta, params={"aspect": 1.0, "height": 0.8})
    # point at local (u, v) = (0.9, 0): image offset 0.9 * (cos, sin) * r
    x = 0.5 + 0.9 * math.cos(theta) * 0.25
    y = 0.5 + 0.9 * math.sin(theta) * 0.25
    n = out["normals"][:, int(y * 64), int(x * 64)]
    assert np.allclose(n, unit(math.cos(theta), math.sin(theta), 1), atol=1e-6)


def test_cylinder_normals_vary_along_x_only():
    out = one("cylinder", params={"length": 2.0})
    m = out["semseg"] == 1
    assert np.allclose(out["normals"][1][m], 0.0)
    rows, cols = np.nonzero(m)
    # half-width 0.7 r = 11.2 px, half-length 22.4 px
    assert cols.max() - cols.min() + 1 in (22, 23) and rows.max() - rows.min() + 1 in (44, 45, 46)
    assert np.allclose(out["normals"][:, 10:50, 36], out["normals"][:, 20:21, 36])  # same along y


def test_pyramid_has_four_planar_facets():
    out = one("pyramid", params={"slope": 1.2})
    # right facet, bottom facet
    assert np.allclose(out["normals"][:, 32, 42], unit(1.2, 0, 1), atol=1e-6)
    assert np.allclose(out["normals"][:, 42, 32], unit(0, 1.2, 1), atol=1e-6)
    assert np.allclose(out["normals"][:, 20, 32], unit(0, -1.2, 1), atol=1e-6)
    facets = {tuple(np.round(out["normals"][:, r, c], 4)) for r, c in zip(*np.nonzero(out["semseg"] == 1))}
    assert len(facets) == 4


def test_torus_has_a_hole():
    out = one("torus")
    assert out["semseg"][31, 31] == 0
    assert out["depth"][31, 31] == pytest.approx(7.5 + 0.3 * WORLD * (0.5 - 31.5 / 64))
    assert out["semseg"][31, 42] == 1 and out["semseg"][31, 47] == 1  # rho ~ 0.66 r and 0.97 r: on the ring
    assert out["semseg"][31, 49] == 0  # rho ~ 1.09 r: floor
    # ring between radii 0.24 r and 1.0 r (r = 16 px)
    assert abs(int((out["semseg"] == 1).sum()) - math.pi * (1 - 0.24**2) * 16**2) < 25
    # the normal tilts outwards on the outer half of the ring, inwards on the inner half
    assert out["normals"][0, 31, 47] > 0.5 and out["normals"][0, 31, 37] < -0.3


def test_nearer_object_occludes_farther_one():
    far = ShapeObject("sphere", 1, 0.45, 0.5, 0.2, depth=4.5)
    near = ShapeObject("box", 2, 0.55, 0.5, 0.2, depth=3.0, params={"aspect": 1.0, "height": 0.5})
    for order in ([far, near], [near, far]):
        out = render(Scene(objects=order, **FLOOR), (64, 64))
        assert out["semseg"][32, 33] == 2  # overlap goes to the nearer box, whatever the paint order
        assert out["semseg"][32, 20] == 1


def test_lambertian_shading_follows_light():
    light = tuple(unit(1.0, 0.0, 1.0))
    obj = ShapeObject("sphere", 1, 0.5, 0.5, 0.3, depth=4.0, albedo=(0.8, 0.8, 0.8))
    out = render(Scene(objects=[obj], **{**FLOOR, "light": light}), (64, 64))
    rgb = out["rgb"].mean(0)
    m = out["semseg"] == 1
    left, right = m.copy(), m.copy()
    left[:, 32:] = False
    right[:, :32] = False
    assert rgb[right].mean() > rgb[left].mean() + 0.15


# -- errors ------------------------------------------------------------------------------


def test_unknown_split():
    with pytest.raises(DataError, match=r"no split 'tran'.*did you mean 'train'"):
        shapes("tran")


@pytest.mark.parametrize(
    "options, pattern",
    [
        (dict(size=[7, 64]), r"data.size\[0\]: must be >= 8 and <= 4096, got 7"),
        (dict(size=[64]), r"data.size: expected 2 values"),
        (dict(classes=[]), r"data.classes: empty"),
        (dict(classes=["spere", "box"]), r"data.classes: unknown shape 'spere' \(did you mean 'sphere'\?\)"),
        (dict(classes=["box", "box"]), r"data.classes: each shape may appear once"),
        (
            dict(num_objects=[3, 1]),
            r"data.num_objects: expected \[min, max\] with 0 <= min <= max, got \[3, 1\]",
        ),
        (dict(num_objects=[-1, 1]), r"data.num_objects\[0\]: must be >= 0"),
        (dict(seed=-1), r"data.seed: must be >= 0"),
        (dict(val_size=-2), r"data.val_size: must be >= 0"),
        (dict(sizes=[64, 64]), r"data.sizes: unknown option of dataset 'shapes' \(did you mean 'size'"),
    ],
)
def test_bad_options(options, pattern):
    with pytest.raises(ConfigError, match=pattern):
        make("train", **options)
