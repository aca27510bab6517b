"""`mtlzoo data check`: every bad file of every split is reported, good data passes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_datasets import NYU_FOLDERS, make_camvid_root, make_npy_root, save_png

from mtlzoo import DataError, DataProblems, DatasetInfo, SplitNotFound, TargetInfo, Zoo, hookimpl
from mtlzoo.apps.datacheck import check_dataset

CAMVID = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "camvid").resolve()
needs_camvid = pytest.mark.skipif(not CAMVID.is_dir(), reason=f"shared CamVid copy not found at {CAMVID}")


def copy_camvid(dst: Path, counts=(4, 2, 2)) -> Path:
    """Copy the first few samples of each split of the shared CamVid (never into the repo)."""
    for split, n in zip(("train", "val", "test"), counts):
        lines = (CAMVID / f"{split}.txt").read_text().splitlines()[:n]
        for line in lines:
            for p in line.split():
                rel = Path(*Path(p).parts[-2:])
                (dst / rel.parent).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(CAMVID / rel, dst / rel)
        (dst / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return dst


def names(root: Path, split: str) -> list[str]:
    return [Path(line.split()[0]).name for line in (root / f"{split}.txt").read_text().splitlines()]


def plant_bad_files(root: Path) -> dict[str, str]:
    """Break four files in four ways; return file -> the words its report must contain."""
    train, val, test = names(root, "train"), names(root, "val"), names(root, "test")
    truncated = root / "train" / train[0]
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    small = root / "trainannot" / train[1]
    Image.open(small).resize((10, 10), Image.NEAREST).save(small)
    out_of_range = root / "valannot" / val[0]
    a = np.array(Image.open(out_of_range))
    a[:3, :3] = 40
    Image.fromarray(a).save(out_of_range)
    missing = root / "test" / test[1]
    missing.unlink()
    return {
        str(truncated): "unreadable image",
        str(small): "mask is 10x10 but its image",
        str(out_of_range): "label values [40] outside",
        str(missing): "file not found",
    }


def assert_reports(problems: list[str], expected: dict[str, str]) -> None:
    for path, words in expected.items():
        hits = [p for p in problems if p.startswith(path + ":")]
        assert len(hits) == 1 and words in hits[0], (path, words, problems)
    assert len(problems) == len(expected), problems


@needs_camvid
def test_real_camvid_passes_the_full_check(zoo):
    assert check_dataset(zoo, {"name": "camvid", "root": str(CAMVID)}) == []


@needs_camvid
def test_planted_bad_files_in_a_camvid_copy_are_all_reported(zoo, tmp_path):
    root = copy_camvid(tmp_path / "camvid")
    assert check_dataset(zoo, {"name": "camvid", "root": str(root)}) == []
    expected = plant_bad_files(root)
    assert_reports(check_dataset(zoo, {"name": "camvid", "root": str(root)}), expected)


def test_planted_bad_files_in_a_synthetic_camvid(zoo, tmp_path):
    root = make_camvid_root(tmp_path / "camvid", counts=(4, 2, 2))
    assert check_dataset(zoo, {"name": "camvid", "root": str(root)}) == []
    expected = plant_bad_files(root)
    assert_reports(check_dataset(zoo, {"name": "camvid", "root": str(root)}), expected)


def test_missing_split_file_and_empty_split_are_reported(zoo, tmp_path):
    root = make_camvid_root(tmp_path / "camvid")
    (root / "val.txt").unlink()
    (root / "test.txt").write_text("")
    problems = check_dataset(zoo, {"name": "camvid", "root": str(root)})
    assert len(problems) == 2
    assert "val.txt is missing" in problems[0] and "lists no samples (empty split)" in problems[1]
    assert check_dataset(zoo, {"name": "camvid", "root": str(root)}, splits=["train"]) == []


def test_layouts_without_a_test_split_skip_it(zoo, tmp_path):
    root = make_npy_root(tmp_path / "nyuv2", NYU_FOLDERS)
    assert check_dataset(zoo, {"name": "nyuv2", "root": str(root)}) == []
    np.save(root / "val" / "label" / "0.npy", np.full((6, 8), 20, np.float32))
    np.save(root / "train" / "depth" / "1.npy", np.full((6, 8), np.nan, np.float32))
    problems = check_dataset(zoo, {"name": "nyuv2", "root": str(root)})
    assert len(problems) == 2
    assert any("depth/1.npy: depth holds NaN" in p for p in problems)
    assert any("label/0.npy: label values [20]" in p for p in problems)
    only_test = check_dataset(zoo, {"name": "nyuv2", "root": str(root)}, splits=["test"])
    assert len(only_test) == 1 and only_test[0].startswith("no split found: test")


def test_image_folder_check_reports_every_bad_file(zoo, tmp_path):
    from test_datasets import FOLDER_OPTS, make_image_folder

    base = make_image_folder(tmp_path / "train", ("a", "b", "c", "d"))
    opts = {"root": str(tmp_path), **FOLDER_OPTS}
    assert check_dataset(zoo, {"name": "image_folder", **opts}) == []
    save_png(base / "masks" / "a.png", np.full((6, 8), 9, np.uint8))
    save_png(base / "normals" / "b.png", np.zeros((6, 8), np.uint8))
    save_png(base / "depth" / "c.png", np.zeros((4, 8), np.uint16))
    problems = check_dataset(zoo, {"name": "image_folder", **opts})
    assert len(problems) == 3, problems
    assert any("masks/a.png: label values [9]" in p for p in problems)
    assert any("normals/b.png: a normal map must be an 8-bit RGB PNG" in p for p in problems)
    assert any("depth/c.png: depth is 4x8 but its image c.png is 6x8" in p for p in problems)


class Flaky:
    """No check(): every sample is loaded and compared with the info."""

    info = DatasetInfo("flaky", {"semseg": TargetInfo("segmentation", 2, ("a", "b"), 255)})

    def __init__(self, split):
        if split == "test":
            raise SplitNotFound("flaky has no test split")

    def __len__(self):
        return 3

    def __getitem__(self, i):
        import torch

        if i == 1:
            raise OSError("disk on fire")
        mask = torch.zeros(4, 4, dtype=torch.long)
        mask[0, 0] = 7 if i == 2 else 0
        return {"image": torch.rand(3, 4, 4), "semseg": mask}


def problems_factory(split):
    raise DataProblems("2 bad", ["x.png: bad", "y.png: bad"]) if split == "train" else DataError("z: gone")


class Datasets:
    @hookimpl
    def register_datasets(self, register):
        register("flaky", Flaky)
        register("problems", problems_factory)


def test_datasets_without_check_are_checked_by_loading_every_sample():
    zoo = Zoo.load(plugins=[("test_datasets", Datasets())], strict=True)
    problems = check_dataset(zoo, {"name": "flaky"})
    assert problems == [
        "flaky train[1]: OSError: disk on fire",
        "flaky train[2]: target 'semseg' (segmentation): values 7 are not class indices (0..1 or 255)",
        "flaky val[1]: OSError: disk on fire",
        "flaky val[2]: target 'semseg' (segmentation): values 7 are not class indices (0..1 or 255)",
    ]
    assert check_dataset(zoo, {"name": "problems"}, splits=["train", "val"]) == [
        "x.png: bad",
        "y.png: bad",
        "z: gone",
    ]


def test_cli_data_check(tmp_path, capsys):
    from mtlzoo.apps.cli import main

    root = make_camvid_root(tmp_path / "camvid")
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"name: t\nmodel: {{backbone: {{name: cnn}}}}\ntasks: {{semseg: {{type: segmentation}}}}\n"
        f"combiner: {{name: sum}}\ndata: {{name: camvid, root: {root}}}\n"
    )
    assert main(["data", "check", str(spec)]) == 0
    assert "no problems" in capsys.readouterr().out
    bad = root / "trainannot" / names(root, "train")[2]
    save_png(bad, np.full((12, 16), 99, np.uint8))
    assert main(["data", "check", str(spec)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}: label values [99]" in out and "1 problem(s)" in out


def test_every_planted_fault_of_an_image_folder_is_reported_in_one_pass(zoo, tmp_path, capsys):
    """Issue 11: truncated and zero-byte images, a non-image file, a mask/image size mismatch,
    labels out of range, an RGB mask, NaN depth, images without a target, targets without an
    image and an empty split: one `data check` names each by file, with a count."""
    from mtlzoo.apps.cli import main
    from mtlzoo.builtin.datasets.layouts import FOLDER_CLASSES, FOLDER_TARGETS, write_image_folder

    stems = tuple("abcdefghijkl")
    base = write_image_folder(tmp_path / "train", stems)
    (tmp_path / "val" / "images").mkdir(parents=True)  # an empty split
    for folder in FOLDER_TARGETS.values():
        (tmp_path / "val" / folder).mkdir(parents=True)
    data = (base / "images" / "a.png").read_bytes()
    (base / "images" / "a.png").write_bytes(data[: len(data) // 3])  # truncated
    (base / "images" / "b.png").write_bytes(b"")  # zero bytes
    (base / "images" / "c.png").write_bytes(b"this is not an image at all")  # not an image
    save_png(base / "masks" / "d.png", np.zeros((3, 8), np.uint8))  # size mismatch
    save_png(base / "masks" / "e.png", np.full((6, 8), 17, np.uint8))  # label out of range
    save_png(base / "masks" / "f.png", np.zeros((6, 8, 3), np.uint8))  # RGB where an index mask is expected
    (base / "depth" / "g.png").unlink()
    depth = np.full((6, 8), 2.5, np.float32)
    depth[0, 0] = np.nan
    Image.fromarray(depth, mode="F").save(base / "depth" / "g.tif")  # NaN depth
    (base / "normals" / "h.png").unlink()  # an image without its normals target
    (base / "masks" / "i.png").unlink()  # an image without its mask
    save_png(base / "masks" / "orphan.png", np.zeros((6, 8), np.uint8))  # a target without an image
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: t\nmodel: {backbone: {name: cnn}}\ntasks: {semseg: {type: segmentation}}\ncombiner: {name: sum}\n"
        f"data: {{name: image_folder, root: {tmp_path}, targets: {dict(FOLDER_TARGETS)}, "
        f"classes: {list(FOLDER_CLASSES)}}}\n"
    )
    assert main(["data", "check", str(spec), "--splits", "train", "val"]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    expected = {
        "images/a.png": "unreadable image",
        "images/b.png": "unreadable image",
        "images/c.png": "unreadable image",
        "masks/d.png": "semseg is 3x8 but its image d.png is 6x8",
        "masks/e.png": "label values [17] outside the classes",
        "masks/f.png": "must be a single-channel image",
        "depth/g.tif": "depth holds 1 NaN or infinite values",
        "normals/h.png": "normals target of image 'h' not found",
        "masks/i.png": "semseg target of image 'i' not found",
        "masks/orphan.png": "semseg target without an image 'orphan'",
        "val/images": "empty split",
    }
    for where, words in expected.items():
        assert any(where in line and words in line for line in out), (where, words, out)
    assert out[-1] == f"{len(out) - 1} problem(s) found in dataset 'image_folder'"
    assert len(out) - 1 == len(expected), out
