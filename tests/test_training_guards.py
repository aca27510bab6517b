"""What training refuses, warns about or survives: samples of the wrong kind, NaN metrics,
a failing report, a skipped step's BatchNorm statistics, a non-finite checkpoint on resume,
and the one host copy per step."""

from __future__ import annotations

import dataclasses
import json
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from mtlzoo import CheckpointError, DataError, TrainingError
from mtlzoo.apps.cli import main
from mtlzoo.runtime import checkpoint as ckpt
from mtlzoo.runtime.train import Trainer, new_run_dir


class Broken:
    """Wraps a dataset and changes one target of every sample with ``fn``."""

    def __init__(self, base, key, fn):
        self.base, self.info, self.key, self.fn = base, base.info, key, fn

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        sample = dict(self.base[index])
        sample[self.key] = self.fn(sample[self.key])
        return sample


@pytest.mark.parametrize(
    ("fn", "problem"),
    [
        (lambda m: m.float(), r"target 'semseg' \(segmentation\) must be int64, got float32"),
        (
            lambda m: m[None],
            r"target 'semseg' \(segmentation\) must have shape \[32, 32\] .*got \[1, 32, 32\]",
        ),
    ],
)
def test_training_refuses_a_sample_of_the_wrong_kind(zoo, spec_factory, fn, problem):
    exp = zoo.build(spec_factory(**{"train.cache": "off"}))
    train = exp.dataset("train")
    train.base = Broken(train.base, "semseg", fn)
    with pytest.raises(DataError, match=r"^shapes train\[\d+\]: " + problem):
        Trainer(exp, None).fit()


def test_a_worker_error_stays_one_line(zoo, spec_factory):
    exp = zoo.build(spec_factory(**{"train.cache": "off", "train.num_workers": 1}))
    train = exp.dataset("train")
    train.base = Broken(train.base, "semseg", lambda m: m.float())
    with pytest.raises(DataError) as err:
        Trainer(exp, None).fit()
    assert "\n" not in str(err.value) and str(err.value).startswith("shapes train[")


def nan_metric(trainer, task, key):
    metric = trainer.tasks[task].metrics[key]
    metric.compute = lambda: torch.tensor(float("nan"))


def test_a_nan_metric_is_warned_about(zoo, tmp_path, spec_factory, capsys):
    d = new_run_dir(tmp_path, "nanmetric")
    trainer = Trainer(zoo.build(spec_factory(**{"train.epochs": 2})), d)
    nan_metric(trainer, "depth", "abs_err")
    summary = trainer.fit()
    err = capsys.readouterr().err
    warned = [
        line for line in err.splitlines() if line.startswith("warning: val metric depth.abs_err is nan")
    ]
    assert len(warned) == 1  # once, not every epoch
    assert summary["warnings"] == [warned[0].removeprefix("warning: ")]
    assert json.loads((d / "summary.json").read_text())["warnings"] == summary["warnings"]
    assert summary["best"]["metric"] == "semseg.miou"  # the selection metric is fine


def test_a_run_that_cannot_choose_a_best_checkpoint_fails_after_saving_everything(
    zoo, tmp_path, spec_factory
):
    d = new_run_dir(tmp_path, "nanselect")
    trainer = Trainer(zoo.build(spec_factory(**{"train.epochs": 2})), d)
    nan_metric(trainer, "semseg", "miou")
    with pytest.raises(TrainingError, match=r"chose no best checkpoint: train.select semseg.miou was NaN"):
        trainer.fit()
    summary = json.loads((d / "summary.json").read_text())
    assert (
        summary["best"] == {} and "train.select chooses the best checkpoint on it" in summary["warnings"][0]
    )
    assert (d / "checkpoints" / "last").is_dir() and len((d / "metrics.jsonl").read_text().splitlines()) == 2


def test_a_failing_picture_never_stops_training(zoo, tmp_path, spec_factory, capsys):
    # tensorboard installed, matplotlib missing: depth pictures raise; the run goes on and resumes
    pytest.importorskip("tensorboard")
    d = new_run_dir(tmp_path, "pictures")
    spec = spec_factory(**{"train.epochs": 2, "train.tensorboard": "on"})
    trainer = Trainer(zoo.build(spec), d)
    calls = []

    def no_matplotlib(value, info):
        calls.append(1)
        raise ImportError("depth pictures need matplotlib; pip install 'mtlzoo[bench]'")

    depth = trainer.tasks["depth"]
    depth.kind = dataclasses.replace(depth.kind, render=no_matplotlib)
    summary = trainer.fit()
    assert summary["epochs"] == 2 and (d / "checkpoints" / "last").is_dir()
    warned = [x for x in capsys.readouterr().err.splitlines() if x.startswith("warning: pictures")]
    assert len(warned) == 1 and "depth pictures need matplotlib" in warned[0] and len(calls) == 1
    assert len((d / "metrics.jsonl").read_text().splitlines()) == 2


def test_a_skipped_step_leaves_the_batchnorm_statistics_as_they_were(zoo, spec_factory):
    spec = spec_factory(
        **{
            "train.nonfinite": "skip",
            "train.max_skips": 100,
            "model.backbone.norm": "batch",
            "train.cache": "off",
        }
    )
    trainer = Trainer(zoo.build(spec), None)
    batch = next(iter(trainer.train_loader))
    trainer.train_step(batch)
    stats = {
        k: v.clone() for k, v in trainer.model.state_dict().items() if "running" in k or "num_batches" in k
    }
    assert stats
    poisoned = dict(batch, image=batch["image"].clone())
    poisoned["image"][0] = float("nan")
    assert trainer.train_step(poisoned) == (None, {}) and trainer.skipped == 1
    after = trainer.model.state_dict()
    for key, value in stats.items():
        assert torch.equal(after[key], value), key


def test_resume_refuses_a_checkpoint_with_nan_weights(zoo, tmp_path, spec_factory, capsys):
    d = new_run_dir(tmp_path, "nanresume")
    Trainer(zoo.build(spec_factory(**{"train.epochs": 2})), d).fit(until_epoch=1)
    folder = d / "checkpoints" / "last"
    weights = load_file(str(folder / "weights.safetensors"))
    key = next(k for k, v in weights.items() if v.is_floating_point())
    weights[key] = torch.full_like(weights[key], float("nan"))
    save_file(weights, str(folder / "weights.safetensors"))
    state = json.loads((folder / "state.json").read_text())
    if "checksums" in state:  # a deliberate edit: record the new checksum so only the NaN is refused
        state["checksums"]["weights.safetensors"] = ckpt.sha256(folder / "weights.safetensors")
        (folder / "state.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="NaN or infinite.*cannot be resumed"):
        Trainer(zoo.build(spec_factory(**{"train.epochs": 2})), d, resume=folder)
    capsys.readouterr()
    assert main(["train", "--resume", str(d)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be resumed" in err[0]


HOST_READS = ("cpu", "item", "tolist", "numpy", "__float__", "__bool__", "__int__")


def count_host_reads(monkeypatch):
    """Count the calls mtlzoo's own code makes that read a tensor's value on the host (each a
    device synchronisation on a GPU)."""
    calls = []
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, _original=original, _name=name, **kwargs):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith("mtlzoo"):
                calls.append((_name, caller))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    return calls


# loss-level combiners without a host-side history; gradient-level ones solve small problems
# on the host by design, and DWA keeps its epoch bookkeeping there
@pytest.mark.parametrize("combiner", ["sum", "weighted", "uncertainty"])
def test_a_training_step_reads_the_device_once(zoo, spec_factory, monkeypatch, combiner):
    trainer = Trainer(zoo.build(spec_factory(**{"combiner.name": combiner})), None)
    batches = iter(trainer.train_loader)
    trainer.train_step(next(batches))  # the first step also checks every shared parameter's gradient
    batch = next(batches)  # loading checks samples on the host: not the step's business
    calls = count_host_reads(monkeypatch)
    losses, logs = trainer.train_step(batch)
    assert losses is not None
    assert calls == [("tolist", "mtlzoo.runtime.train")], calls
    assert all(isinstance(v, float) for v in [*losses.values(), *logs.values()])


def test_a_run_folder_given_from_python_is_created(zoo, tmp_path, spec_factory):
    d = tmp_path / "not" / "yet"
    Trainer(zoo.build(spec_factory()), d).fit()
    assert (d / "summary.json").is_file() and (d / "checkpoints" / "last").is_dir()


def test_task_parameters_without_a_gradient_are_warned_about(zoo, spec_factory, capsys):
    exp = zoo.build(spec_factory())
    exp.model.heads["depth"].register_parameter("never_used", torch.nn.Parameter(torch.zeros(3)))
    Trainer(exp, None).fit()
    warned = [x for x in capsys.readouterr().err.splitlines() if x.startswith("warning: tasks.depth")]
    assert len(warned) == 1 and "1 of" in warned[0] and "never_used" in warned[0]


@pytest.mark.parametrize("architecture", ["hps", "mtan", "padnet", "mti_net", "mmoe", "ltb", "lora"])
def test_built_in_architectures_train_every_task_parameter(zoo, spec_factory, capsys, architecture):
    spec = spec_factory(**{"model.architecture": {"name": architecture}, "data.train_size": 8})
    spec["tasks"] = {"semseg": {"type": "segmentation"}, "depth": {"type": "depth"}}
    Trainer(zoo.build(spec), None).fit()
    assert "warning: tasks." not in capsys.readouterr().err


def test_a_run_keeps_a_relative_data_root_relative_and_resumes_from_it(tmp_path, spec_factory, capsys):
    import yaml

    from mtlzoo.builtin.datasets.layouts import FOLDER_CLASSES, FOLDER_TARGETS, write_image_folder

    project = tmp_path / "project"
    write_image_folder(project / "data" / "train", ("a", "b", "c", "d"), hw=(32, 32))
    write_image_folder(project / "data" / "val", ("e", "f"), hw=(32, 32))
    spec = spec_factory(**{"train.epochs": 2, "train.batch_size": 2, "train.out_dir": str(tmp_path / "runs")})
    spec["data"] = {
        "name": "image_folder",
        "root": "data",  # relative to the spec file's folder
        "targets": dict(FOLDER_TARGETS),
        "classes": list(FOLDER_CLASSES),
    }
    spec["tasks"] = {"semseg": {"type": "segmentation"}, "depth": {"type": "depth"}}
    (project / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["train", str(project / "spec.yaml"), "train.epochs=1"]) == 0
    run = tmp_path / "runs" / "tiny"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (
        saved["data"]["root"] == "../../project/data"
    )  # relative to the run folder, not this machine's path
    assert (run / saved["data"]["root"]).resolve() == (project / "data").resolve()
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "train.epochs=2"]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["root"] == "../../project/data"
    assert main(["eval", str(run)]) == 0
