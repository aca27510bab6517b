"""The CUDA path, on a GPU: ``device: auto`` picks it with the device's defaults; a tiny run trains
in fp32, bf16 and compiled; evaluation on the GPU gives the CPU's metrics; a resumed run continues
where it stopped; the sample cache feeds the GPU through loader workers and pinned memory;
``mtlzoo.load(run, device="cuda")``, ``mtlzoo predict --device cuda`` and ``mtlzoo export`` of a
GPU-trained run; a 2-process NCCL run takes the steps of one process (two GPUs).

Every test here is marked ``cuda`` and skipped without a CUDA device; the rest of the suite pins
``train.device: cpu`` where it compares exact figures. ``python benchmarks/gpu_check.py`` runs
these (``pytest -m cuda``). Figures computed on a GPU are compared with tolerances: CUDA's
atomic additions and TF32 convolutions sum in another order than the CPU.
"""

from __future__ import annotations

import json
import math
import os
import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

# before any cuBLAS handle exists: deterministic runs (train.deterministic=true) need it
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import mtlzoo  # noqa: E402
from mtlzoo.apps.cli import main  # noqa: E402
from mtlzoo.runtime.loading import to_device  # noqa: E402
from mtlzoo.runtime.train import Trainer, new_run_dir  # noqa: E402

DEVICE = "cuda"
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
AUGMENT = {"hflip": 0.5, "scale": [0.8, 1.25], "crop": [24, 24], "color_jitter": 0.2}


@pytest.fixture
def exact_fp32(monkeypatch):
    """cuDNN's convolutions in full fp32 (its default, TF32, keeps 10 mantissa bits): for the
    tests that compare GPU figures with the CPU's, where an argmax near a tie must not flip."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)


def on_gpu(spec_factory, **overrides) -> dict:
    """The tiny spec (conftest) on the GPU."""
    return spec_factory(**{"train.device": DEVICE, **overrides})


def finite(results: dict) -> bool:
    return all(math.isfinite(v) for values in results.values() for v in values.values())


def write_spec(tmp_path, spec, name="spec.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def test_auto_picks_the_gpu_with_its_defaults(zoo, spec_factory):
    trainer = Trainer(zoo.build(spec_factory(**{"train.device": "auto"})), None)
    assert trainer.device == torch.device("cuda", torch.cuda.current_device())
    assert next(trainer.model.parameters()).device.type == "cuda"
    # CUDA's defaults: speed over bit-exactness, NHWC, pinned host batches copied without waiting
    assert not trainer.process.deterministic and torch.backends.cudnn.benchmark
    assert trainer.channels_last
    assert trainer.evaluator.loader_settings["pin_memory"]
    assert trainer.evaluator.loader_settings["num_workers"] >= 1


@pytest.mark.parametrize(
    "overrides",
    [{}, {"train.amp": "bf16"}, {"train.compile": True}],
    ids=["fp32", "bf16", "compiled"],
)
def test_a_tiny_run_trains_on_the_gpu(zoo, spec_factory, tmp_path, overrides):
    run = new_run_dir(tmp_path, "gpu")
    trainer = Trainer(zoo.build(on_gpu(spec_factory, **{"train.epochs": 2, **overrides})), run)
    summary = trainer.fit()
    assert summary["device"] == str(trainer.device) and summary["device"].startswith(DEVICE)
    assert trainer.amp_dtype is (torch.bfloat16 if overrides.get("train.amp") == "bf16" else None)
    assert finite({r["epoch"]: r["train"]["loss"] for r in trainer.history})
    assert finite(summary["final"])
    log = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    assert set(log[-1]["timing"]) == {"data", "compute", "eval", "write", "total"}
    assert log[-1]["timing"]["compute"] > 0
    assert (run / "checkpoints" / "best" / "weights.safetensors").is_file()


def test_evaluation_on_the_gpu_gives_the_cpu_metrics(tmp_path, spec_factory, capsys, exact_fp32):
    spec = spec_factory(**{"train.out_dir": str(tmp_path / "runs"), "train.epochs": 2})
    assert main(["train", write_spec(tmp_path, spec), "train.run_name=r"]) == 0
    run = str(tmp_path / "runs" / "r")
    capsys.readouterr()
    assert main(["eval", run, "--json"]) == 0
    cpu = json.loads(capsys.readouterr().out)["metrics"]
    assert main(["eval", run, "--json", f"train.device={DEVICE}"]) == 0
    gpu = json.loads(capsys.readouterr().out)["metrics"]
    assert gpu.keys() == cpu.keys()
    for task, values in cpu.items():
        assert gpu[task].keys() == values.keys()
        for key, value in values.items():
            assert gpu[task][key] == pytest.approx(value, rel=1e-3, abs=1e-4), f"{task}.{key}"


def test_a_resumed_gpu_run_continues_where_it_stopped(zoo, spec_factory, tmp_path):
    spec = on_gpu(spec_factory, **{"train.epochs": 2, "train.deterministic": True})
    whole = Trainer(zoo.build(spec), new_run_dir(tmp_path, "whole"))
    whole.fit()
    part = new_run_dir(tmp_path, "part")
    Trainer(zoo.build(spec), part).fit(until_epoch=1)
    resumed = Trainer(zoo.build(spec), part, resume=part / "checkpoints" / "last")
    assert resumed.epoch == 1 and next(resumed.model.parameters()).device.type == DEVICE
    resumed.fit()
    assert [json.loads(x)["epoch"] for x in (part / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        # equal up to the order of CUDA's atomic sums (bilinear upsampling's backward has no
        # deterministic kernel), not up to a lost or repeated step
        torch.testing.assert_close(b[key].float(), a[key].float(), rtol=1e-3, atol=1e-4, msg=key)


def test_the_sample_cache_feeds_the_gpu_through_pinned_worker_batches(zoo, spec_factory):
    spec = on_gpu(spec_factory, **{"train.cache": "on", "train.num_workers": 2, "train.epochs": 2})
    spec["augment"] = AUGMENT
    trainer = Trainer(zoo.build(spec), None)
    settings = trainer.evaluator.loader_settings
    assert settings["pin_memory"] and settings["num_workers"] == 2 and settings["persistent_workers"]
    summary = trainer.fit()
    assert trainer.train_set.cached and trainer.train_set.missing == []
    assert finite(summary["final"])
    batch = next(iter(trainer.train_loader))
    assert batch["image"].is_pinned()
    moved = to_device(batch, trainer.device, trainer.channels_last)
    torch.cuda.synchronize()
    assert moved["image"].is_contiguous(memory_format=torch.channels_last)
    for key, value in batch.items():
        if torch.is_tensor(value):
            assert moved[key].device.type == DEVICE and torch.equal(moved[key].cpu(), value), key
    # the cached, worker-made samples are the uncached ones
    plain = Trainer(zoo.build({**spec, "train": {**spec["train"], "cache": "off"}}), None)
    for index in range(3):
        cached, fresh = trainer.train_set[(1, index)], plain.train_set[(1, index)]
        for key in fresh:
            assert torch.equal(cached[key], fresh[key]), key


class Trunk(torch.nn.Module):
    """Four maps at strides 2-16, each computed from the one before (as a backbone's)."""

    def __init__(self):
        super().__init__()
        chans = [3, 8, 16, 16, 32]
        self.stages = torch.nn.ModuleList(
            torch.nn.Sequential(
                torch.nn.Conv2d(a, b, 3, stride=2, padding=1), torch.nn.GroupNorm(4, b), torch.nn.ReLU()
            )
            for a, b in zip(chans, chans[1:])
        )

    def forward(self, x):
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


def combiner_cases():
    from conftest import GRADIENT_LEVEL_COMBINERS, LOSS_LEVEL_COMBINERS

    out = [(name, {}) for name in LOSS_LEVEL_COMBINERS if name != "gradnorm"]
    out += [("gradnorm", {"wrt": "features"}), ("gradnorm", {"wrt": "params"})]
    out += [("famo", {"update": "same_batch"})]
    return out + [(name, {"wrt": wrt}) for name in GRADIENT_LEVEL_COMBINERS for wrt in ("params", "features")]


@pytest.mark.parametrize(("name", "options"), combiner_cases(), ids=lambda v: str(v or ""))
def test_every_combiner_steps_on_the_gpu(zoo, name, options):
    """Two steps (two epochs: the loss-history weightings roll over) of every combiner in every
    mode, with its state on the GPU: finite gradients on the GPU for every shared tensor."""
    import torch.nn.functional as F

    from mtlzoo.contract.combine import Step

    torch.manual_seed(0)
    device = torch.device(DEVICE)
    trunk = Trunk().to(device)
    # each head reads its own map and the last one: every task reaches the last map's every coordinate
    heads = torch.nn.ModuleDict(
        {
            t: torch.nn.ModuleList([torch.nn.Conv2d(c, k, 1), torch.nn.Conv2d(32, k, 1)])
            for t, c, k in (("seg", 8, 3), ("depth", 16, 1), ("cls", 32, 5))
        }
    ).to(device)
    tasks = list(heads)
    entry = zoo.registries["combiner"].get(name)
    combiner = entry.call(tasks, options=entry.build_options(options, "combiner")).to(device)
    shared = list(trunk.parameters())
    params = shared + list(heads.parameters()) + [p for p in combiner.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 32, 32, generator=g).to(device)
    seg = torch.randint(0, 3, (4, 16, 16), generator=g).to(device)
    depth = torch.rand(4, 1, 8, 8, generator=g).to(device)
    cls = torch.randint(0, 5, (4,), generator=g).to(device)

    def head(t, feats, k):
        out = heads[t][0](feats[k])
        return out + F.interpolate(heads[t][1](feats[3]), size=out.shape[-2:], mode="nearest")

    def losses_of():
        feats = trunk(x)
        return feats, {
            "seg": F.cross_entropy(head("seg", feats, 0), seg),
            "depth": F.l1_loss(head("depth", feats, 1), depth) + 0.1,
            "cls": F.cross_entropy(head("cls", feats, 3).mean((2, 3)), cls),
        }

    for k in range(2):
        feats, losses = losses_of()
        step = Step(losses, feats, shared, {t: list(heads[t].parameters()) for t in tasks}, step=k, epoch=k)
        logs = combiner.backward(losses, step) or {}
        for key, value in logs.items():
            assert math.isfinite(float(value)), f"{name}: log {key} is {value}"
        assert all(p.grad is not None and p.grad.device.type == DEVICE for p in shared), name
        assert all(bool(torch.isfinite(p.grad).all()) for p in shared), name
        assert any(bool(p.grad.abs().sum() > 0) for p in shared), name
        optimizer.step()
        if combiner.needs_losses_after_step:
            with torch.no_grad():
                _, after = losses_of()
            combiner.after_step({t: v.detach() for t, v in after.items()})
        optimizer.zero_grad(set_to_none=True)
    assert all(b.device.type == DEVICE for b in combiner.buffers())


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory):
    """A tiny run trained on the GPU, with every dense kind and image-level labels, on a backbone
    that exports at any size (smp resnet18, as tests/test_predict_export.py)."""
    from conftest import tiny_spec

    from mtlzoo import Zoo

    spec = tiny_spec(
        **{
            "train.device": DEVICE,
            "model.backbone": {"name": "smp", "arch": "resnet18"},
            "tasks.normals": {"type": "normals"},
            "tasks.boundary": {"type": "boundary", "from": "semseg"},
        }
    )
    run = new_run_dir(tmp_path_factory.mktemp("runs"), "gpu")
    Trainer(Zoo.load(strict=True).build(spec), run).fit()
    return run


def test_load_on_the_gpu_predicts_what_the_cpu_predicts(gpu_run, exact_fp32):
    x = torch.rand(2, 3, 40, 56)
    on_cpu = mtlzoo.load(gpu_run).predict(x)
    predictor = mtlzoo.load(gpu_run, device=DEVICE)
    assert next(predictor.model.parameters()).device.type == DEVICE
    on_gpu_ = predictor.predict(x)
    for a, b in zip(on_cpu, on_gpu_):
        assert a.keys() == b.keys()
        for task in a:
            assert a[task].shape == b[task].shape and b[task].device.type == "cpu"
            torch.testing.assert_close(b[task], a[task], rtol=1e-3, atol=1e-3, msg=task)


def test_predict_and_export_of_a_gpu_run(gpu_run, tmp_path, capsys):
    rng = np.random.default_rng(0)
    image = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (45, 70, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "preds"
    assert main(["predict", str(gpu_run), str(image), "--device", DEVICE, "--out", str(out)]) == 0
    index = json.loads((out / "predictions.json").read_text())
    assert index["device"] == DEVICE and [i["folder"] for i in index["images"]] == ["photo"]
    assert (out / "photo" / "semseg_overlay.png").is_file() and (
        out / "photo" / "depth_overlay.png"
    ).is_file()
    capsys.readouterr()
    formats = ["pt2"] + (["onnx"] if all(map(_has, ("onnx", "onnxscript", "onnxruntime"))) else [])
    for fmt in formats:
        file = tmp_path / f"model.{fmt}"
        assert main(["export", str(gpu_run), "--format", fmt, "--out", str(file)]) == 0, fmt
        assert file.is_file() and "max |difference| per task" in capsys.readouterr().out


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_gpus_over_nccl_take_the_steps_of_one_process(tmp_path, zoo):
    from safetensors.torch import load_file
    from test_distributed import TORCHRUN, TRAIN_EACH, launch, spec

    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    combiner = {"name": "pcgrad", "wrt": "params"}  # per-task gradients averaged over the ranks
    one = spec(tmp_path / "one", combiner, batch=8, name="one", device=DEVICE)
    two = spec(tmp_path / "two", combiner, batch=4, name="two", device=DEVICE)
    launch([sys.executable, TRAIN_EACH, str(tmp_path / "one.json"), str(one)], tmp_path)
    launch([*TORCHRUN, TRAIN_EACH, str(tmp_path / "two.json"), str(two)], tmp_path)
    for result in ("one.json", "two.json"):
        assert set(json.loads((tmp_path / result).read_text()).values()) == {0}, result
    model = zoo.build(yaml.safe_load(one.read_text())).model  # the seeded initial weights of both runs
    start = {f"model.{k}": v.float() for k, v in model.state_dict().items()}
    a = load_file(str(tmp_path / "one" / "one" / "checkpoints" / "last" / "weights.safetensors"))
    b = load_file(str(tmp_path / "two" / "two" / "checkpoints" / "last" / "weights.safetensors"))
    assert a.keys() == b.keys()
    # the same update, up to NCCL's and TF32's rounding: compare the steps taken, not the weights
    step_one = torch.cat([(a[k].float() - start[k]).flatten() for k in a if k in start])
    step_two = torch.cat([(b[k].float() - start[k]).flatten() for k in a if k in start])
    assert step_one.norm() > 0
    assert float((step_two - step_one).norm() / step_one.norm()) < 0.02
    assert len((tmp_path / "two" / "two" / "metrics.jsonl").read_text().splitlines()) == 1
