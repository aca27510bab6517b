"""After training: `mtlzoo predict` (files, pictures, contact sheets) and `mtlzoo export` (ONNX, pt2),
and the built-in target kinds' decode / render / save."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import mtlzoo
from mtlzoo import TargetInfo, Zoo
from mtlzoo.apps import export as export_app
from mtlzoo.apps.cli import main
from mtlzoo.builtin import targets as T
from mtlzoo.runtime.train import Trainer, new_run_dir

TASKS = ("semseg", "depth", "normals", "boundary", "labels")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny shapes run with every dense kind and image-level labels, on a backbone whose
    inputs must be multiples of 32 (smp resnet18)."""
    spec = {
        "name": "tiny",
        "model": {"backbone": {"name": "smp", "arch": "resnet18"}},
        "tasks": {
            "semseg": {"type": "segmentation"},
            "depth": {"type": "depth"},
            "normals": {"type": "normals"},
            "boundary": {"type": "boundary", "from": "semseg"},
            "labels": {"type": "labels", "from": "semseg"},
        },
        "combiner": {"name": "sum"},
        "data": {"name": "shapes", "size": [40, 48], "train_size": 4, "val_size": 3, "test_size": 2},
        "train": {"epochs": 1, "batch_size": 2, "progress": False},
    }
    d = new_run_dir(tmp_path_factory.mktemp("runs"), "tiny")
    Trainer(Zoo.load(strict=True).build(spec), d).fit()
    return d


def _image(path, h, w, seed):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


# -- predict ------------------------------------------------------------------------------------
def test_predict_files_folders_and_globs_write_every_task(run, tmp_path, capsys):
    a = _image(tmp_path / "in" / "a.png", 45, 70, 0)  # no side a multiple of 32
    _image(tmp_path / "in" / "b.png", 37, 51, 1)
    _image(tmp_path / "in" / "sub" / "x.png", 8, 8, 2)  # in a sub-folder: not taken by the folder
    _image(tmp_path / "more" / "deep" / "c.jpg", 33, 65, 3)
    out = tmp_path / "preds"
    args = ["predict", str(run), str(a), str(tmp_path / "in"), str(tmp_path / "more" / "**" / "*.jpg")]
    assert main([*args, "--out", str(out), "--batch-size", "2", "--device", "cpu"]) == 0
    assert "wrote predictions of 3 image(s) x 5 task(s)" in capsys.readouterr().out
    index = json.loads((out / "predictions.json").read_text())
    assert [i["folder"] for i in index["images"]] == ["a", "b", "c"]  # a.png named twice, predicted once
    assert index["tasks"] == dict(zip(TASKS, ["segmentation", "depth", "normals", "boundary", "labels"]))
    assert index["sheets"] == ["sheets/batch_0000.png", "sheets/batch_0001.png"]

    predictor = mtlzoo.load(run)
    assert predictor.size_divisor == 32
    raw = predictor.predict([a])[0]
    f = out / "a"
    seg = Image.open(f / "semseg.png")
    assert seg.mode == "P" and seg.size == (70, 45)
    assert seg.getpalette()[:6] == [0, 0, 0, 128, 0, 0]  # the VOC palette (shapes gives none)
    assert np.array_equal(np.asarray(seg), raw["semseg"].argmax(0).numpy())
    depth = Image.open(f / "depth.png")
    assert depth.mode.startswith("I") and depth.size == (70, 45) and depth.text["depth_scale"] == "1000"
    want = np.clip(np.round(raw["depth"][0].numpy() * 1000), 0, 65535)
    assert np.abs(np.asarray(depth).astype(np.int64) - want).max() <= 1
    colour = Image.open(f / "depth_color.png")
    assert colour.mode == "RGB" and colour.text["colormap"] == "magma"
    valid = raw["depth"][raw["depth"] > 0]
    assert math.isclose(float(colour.text["depth_min"]), float(valid.min()), rel_tol=1e-4)
    assert math.isclose(float(colour.text["depth_max"]), float(valid.max()), rel_tol=1e-4)
    normals = np.asarray(Image.open(f / "normals.png"))
    unit = torch.nn.functional.normalize(raw["normals"], dim=0).permute(1, 2, 0).numpy()
    assert normals.shape == (45, 70, 3) and np.abs(normals / 255 * 2 - 1 - unit).max() < 0.01
    boundary = Image.open(f / "boundary.png")
    assert boundary.mode == "L"
    assert np.abs(np.asarray(boundary) / 255 - raw["boundary"][0].sigmoid().numpy()).max() < 0.003
    labels = json.loads((f / "labels.json").read_text())
    names = list(predictor.tasks["labels"].info.class_names)
    assert list(labels) == names and names[1] == "sphere"
    assert np.allclose(list(labels.values()), raw["labels"].sigmoid().numpy(), atol=1e-5)
    for task in ("semseg", "depth", "normals", "boundary"):
        over = Image.open(f / f"{task}_overlay.png")
        assert over.mode == "RGB" and over.size == (70, 45)
    for name, size in (("b", (51, 37)), ("c", (65, 33))):
        assert Image.open(out / name / "semseg.png").size == size
        assert Image.open(out / name / "image.png").size == size
    sheet = Image.open(out / "sheets" / "batch_0000.png")
    assert sheet.mode == "RGB" and sheet.width > 5 * 100  # image + 4 dense tasks + scores


def test_predict_split_val_draws_the_ground_truth_beside(run, tmp_path):
    out = tmp_path / "val"
    assert (
        main(["predict", str(run), "--split", "val", "--limit", "2", "--out", str(out), "--device", "cpu"])
        == 0
    )
    index = json.loads((out / "predictions.json").read_text())
    assert [i["input"] for i in index["images"]] == ["val[0]", "val[1]"]
    zoo, raw = Zoo.for_spec(run / "config.yaml")
    from mtlzoo.zoo.build import base_dataset, build_pipeline_for

    cfg = zoo.spec(raw)
    sample = build_pipeline_for(zoo, cfg, "val", base_dataset(zoo, cfg, "val"))[1]
    info = mtlzoo.load(run).tasks["semseg"].info.target_info
    gt = np.asarray(Image.open(out / "val_0001" / "semseg_gt.png"))
    assert np.array_equal(gt, T.render_classes(sample["semseg"], info))
    for task in ("depth", "normals", "boundary"):
        assert (out / "val_0001" / f"{task}_gt.png").is_file()
    with_truth = Image.open(out / "sheets" / "batch_0000.png")
    plain = tmp_path / "plain"
    assert main(["predict", str(run), str(out / "val_0000" / "image.png"), "--out", str(plain)]) == 0
    assert with_truth.width > Image.open(plain / "sheets" / "batch_0000.png").width + 4 * 100


def test_predict_mistakes_are_one_line(run, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    cases = [
        ([], "give images (files, folders or globs) or --split val|test"),
        ([str(tmp_path / "nope.png")], "no such file or folder"),
        ([str(tmp_path / "empty")], "the folder has no images"),
        ([str(tmp_path / "*.jpg")], "no image matches the pattern"),
        ([str(tmp_path), "--split", "val"], "give INPUTS or --split, not both"),
    ]
    for extra, message in cases:
        assert main(["predict", str(run), *extra, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    (tmp_path / "bad.png").write_text("not an image")
    assert main(["predict", str(run), str(tmp_path / "bad.png"), "--out", str(tmp_path / "o")]) == 2
    assert "bad.png: cannot read the image" in capsys.readouterr().err


# -- export -------------------------------------------------------------------------------------
@pytest.mark.slow  # exports: tracing and onnxruntime take seconds each
def test_export_onnx_verifies_and_runs_in_onnxruntime(run, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    file = tmp_path / "model.onnx"
    assert main(["export", str(run), "--format", "onnx", "--out", str(file)]) == 0
    out = capsys.readouterr().out
    assert (
        "any H and W from 33 (padded to multiples of 32 inside" in out and "max |difference| per task" in out
    )
    for task in TASKS:
        line = next(x for x in out.splitlines() if x.strip().startswith(task + " "))
        assert float(line.split()[-1]) <= 1e-4
    session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == list(TASKS)
    model = mtlzoo.load(run).model
    for shape in ((1, 3, 64, 96), (3, 3, 96, 160)):
        x = torch.rand(*shape)
        got = dict(zip(TASKS, session.run(None, {"image": x.numpy()})))
        with torch.no_grad():
            eager = model(x)
        for task in TASKS:
            assert got[task].shape == tuple(eager[task].shape)
            assert np.abs(got[task] - eager[task].numpy()).max() < 1e-4
    assert got["semseg"].shape == (3, 6, 96, 160) and got["labels"].shape == (3, 6)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_export_off_the_size_grid_gives_what_predict_gives(run, tmp_path, fmt):
    """36 x 44 is no multiple of the backbone's divisor 32: the file pads and crops as predict does."""
    file = tmp_path / f"model.{fmt}"
    assert main(["export", str(run), "--format", fmt, "--out", str(file)]) == 0
    predictor = mtlzoo.load(run)
    assert predictor.size_divisor == 32
    x = torch.rand(2, 3, 36, 44, generator=torch.Generator().manual_seed(1))
    if fmt == "onnx":
        ort = pytest.importorskip("onnxruntime")
        session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
        got = dict(zip(TASKS, (torch.from_numpy(o) for o in session.run(None, {"image": x.numpy()}))))
    else:
        got = torch.export.load(str(file)).module()(x)
    want = predictor.predict(x)
    for task in TASKS:
        expected = torch.stack([w[task] for w in want])
        assert got[task].shape == expected.shape, task
        torch.testing.assert_close(got[task], expected, atol=1e-4, rtol=1e-4)
    assert got["semseg"].shape == (2, 6, 36, 44) and got["labels"].shape == (2, 6)


@pytest.mark.slow
def test_export_pt2_verifies_and_loads(run, capsys):
    assert main(["export", str(run), "--format", "pt2"]) == 0
    out = capsys.readouterr().out
    assert f"exported {run / 'model-best.pt2'}" in out and "max |difference| per task" in out
    program = torch.export.load(str(run / "model-best.pt2")).module()
    x = torch.rand(2, 3, 96, 64)
    preds = program(x)
    with torch.no_grad():
        eager = mtlzoo.load(run).model(x)
    assert list(preds) == list(TASKS)
    for task in TASKS:
        torch.testing.assert_close(preds[task], eager[task])


def test_export_fails_in_one_line_above_the_tolerance(run, tmp_path, monkeypatch, capsys):
    file = tmp_path / "m.onnx"
    file.write_bytes(b"x")
    fake = {
        "file": file,
        "format": "onnx",
        "opset": 20,
        "inputs": [(1, 3, 64, 128)],
        "min_side": 64,
        "divisor": 32,
        "max_abs_diff": {"semseg": 1e-7, "depth": 3e-3},
    }
    monkeypatch.setattr(export_app, "export", lambda args: fake)
    assert main(["export", str(run), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "depth of" in err and "differs from predict by 0.003 (more than --atol 0.0001)" in err


def test_export_dynamic_shapes_respect_the_divisor():
    from torch import nn

    class Stub(nn.Module):
        backbone = type("B", (), {"feature_info": [(8, 4), (16, 32)]})()

    dynamic, min_side, side = export_app.shapes(Stub(), 32)
    assert (min_side, side) == (33, 63) and set(dynamic) == {0, 2, 3}  # padded to 64, 64 inside
    _, min_side, side = export_app.shapes(Stub(), 1)
    assert (min_side, side) == (64, 64)


# -- the target kinds' hooks --------------------------------------------------------------------
def test_every_builtin_kind_decodes_renders_and_saves(tmp_path):
    import mtlzoo.builtin.targets as targets_plugin

    zoo = Zoo.load(entry_points=False, plugins=[("builtin_targets", targets_plugin)], strict=True)
    info = TargetInfo("segmentation", 3, ("a", "b", "c"), 255)
    seg = zoo.target_kind("segmentation")
    logits = torch.zeros(3, 2, 4)
    logits[2, 0, :2] = 1
    idx = seg.decode(logits, info)
    assert idx.dtype == torch.int64 and idx.tolist() == [[2, 2, 0, 0], [0, 0, 0, 0]]
    pic = seg.render(torch.tensor([[0, 1, 255]]), info)
    assert pic.dtype == np.uint8 and pic.tolist() == [[[0, 0, 0], [128, 0, 0], list(T.VOC_VOID)]]
    (path,) = seg.save(idx, info, tmp_path / "s")
    assert path.name == "s.png" and Image.open(path).mode == "P"

    b = zoo.target_kind("boundary")
    prob = b.decode(torch.tensor([[[0.0, 100.0]]]), TargetInfo("boundary", ignore_index=255))
    assert prob.tolist() == [[[0.5, 1.0]]]
    assert b.render(
        torch.tensor([[[0.0, 1.0, 255.0]]]), TargetInfo("boundary", ignore_index=255)
    ).tolist() == [[[0, 0, 0], [255, 255, 255], list(T.VOC_VOID)]]
    (path,) = b.save(prob, TargetInfo("boundary"), tmp_path / "b")
    assert np.asarray(Image.open(path)).tolist() == [[128, 255]]

    d = zoo.target_kind("depth")
    depth = torch.tensor([[[0.0, 1.0, 2.5, 70.0]]])
    assert d.decode is None
    raw_path, colour_path = d.save(depth, TargetInfo("depth"), tmp_path / "d")
    assert np.asarray(Image.open(raw_path)).tolist() == [[0, 1000, 2500, 65535]]  # clipped at 65.535
    colour = Image.open(colour_path)
    assert colour.text["depth_min"] == "1" and colour.text["depth_max"] == "70"
    rgb = np.asarray(colour)
    assert rgb[0, 0].tolist() == [0, 0, 0]  # no measurement
    assert rgb[0, 1].sum() > rgb[0, 3].sum()  # near bright, far dark

    n = zoo.target_kind("normals")
    unit = n.decode(torch.tensor([[[2.0]], [[0.0]], [[0.0]]]), TargetInfo("normals"))
    assert unit.flatten().tolist() == [1.0, 0.0, 0.0]
    assert n.render(unit, TargetInfo("normals")).tolist() == [[[255, 128, 128]]]
    (path,) = n.save(unit, TargetInfo("normals"), tmp_path / "n")
    assert Image.open(path).mode == "RGB"

    lab = zoo.target_kind("labels")
    scores = lab.decode(torch.tensor([0.0, 20.0]), TargetInfo("labels", 2, ("cat",)))
    (path,) = lab.save(scores, TargetInfo("labels", 2, ("cat",)), tmp_path / "l")
    assert json.loads(path.read_text()) == {"cat": 0.5, "1": 1.0}  # unnamed classes by index
    assert lab.render is None

    cls = zoo.target_kind("class")
    names = tuple(f"c{i}" for i in range(7))
    p = cls.decode(torch.arange(7.0), TargetInfo("class", 7, names))
    assert math.isclose(float(p.sum()), 1.0, rel_tol=1e-6)
    (path,) = cls.save(p, TargetInfo("class", 7, names), tmp_path / "c")
    top = json.loads(path.read_text())["top"]
    assert [t["class"] for t in top] == ["c6", "c5", "c4", "c3", "c2"]
    assert top[0]["score"] == pytest.approx(float(p[6]), abs=1e-6)


def test_palettes_the_dataset_gives_and_many_classes(tmp_path):
    from mtlzoo.builtin.datasets.camvid import CAMVID_CLASSES, CAMVID_PALETTE

    camvid = TargetInfo("segmentation", 11, CAMVID_CLASSES, 255, palette=CAMVID_PALETTE)
    colours = T.palette(camvid)
    assert colours.shape == (256, 3) and colours.dtype == np.uint8
    assert colours[0].tolist() == [128, 128, 128] and colours[4].tolist() == [60, 40, 222]  # Sky, Pavement
    assert colours[255].tolist() == [0, 0, 0]  # void: black, as SegNet draws it
    assert colours[11].tolist() == list(T.voc_palette()[11])
    many = TargetInfo("segmentation", 300)
    (path,) = T.save_classes(torch.tensor([[0, 299]]), many, tmp_path / "many")
    im = Image.open(path)
    assert im.mode.startswith("I") and np.asarray(im).tolist() == [[0, 299]]
