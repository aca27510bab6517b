"""Following and shaping training: the per-epoch line, metrics.csv, TensorBoard events,
`mtlzoo plot`, `mtlzoo summary`, fine-tuning parameter groups, and the small breaks of issue 12
(options and overrides in any order, relative data roots, the `name` shorthand, taken run names)."""

from __future__ import annotations

import csv
import json
import re

import pytest
import torch
import yaml

from mtlzoo import ConfigError
from mtlzoo.apps.cli import main
from mtlzoo.runtime.train import Trainer, new_run_dir


def write_spec(tmp_path, spec, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def test_each_epoch_prints_a_line_and_writes_csv_and_tensorboard(zoo, tmp_path, spec_factory, capsys):
    d = new_run_dir(tmp_path, "watch")
    spec = spec_factory(**{"train.epochs": 2, "train.progress": True, "train.tensorboard": "on"})
    Trainer(zoo.build(spec), d).fit()
    lines = [x for x in re.split(r"[\r\n]", capsys.readouterr().err) if re.match(r"epoch \d+/\d+  loss", x)]
    assert len(lines) == 2
    assert re.match(
        r"epoch 1/2  loss semseg \d+\.\d{3} depth \d+\.\d{3} labels \d+\.\d{3}  val semseg\.miou "
        r"\d\.\d{4} .*  \d+m\d\ds \(data \d+% compute \d+% eval \d+% write \d+%.*\)  eta \d+m\d\ds$",
        lines[0],
    ), lines[0]
    rows = list(csv.DictReader(open(d / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"train.loss.semseg", "val.semseg.miou", "val.depth.abs_err", "train.lr", "step"} <= set(rows[0])
    log = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert float(rows[1]["val.semseg.miou"]) == pytest.approx(log[1]["val"]["semseg"]["miou"])
    events = list((d / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(d / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    assert "val.semseg.miou" in acc.Tags()["scalars"] and "train.loss.depth" in acc.Tags()["scalars"]
    # where the time went: seconds per part in metrics.jsonl, metrics.csv and TensorBoard
    timing = log[0]["timing"]
    assert set(timing) == {"data", "compute", "eval", "write", "total"}
    for record in log:  # every part measured, none negative (best/'s save is writing, not evaluating)
        assert all(v >= 0 for v in record["timing"].values()) and record["timing"]["eval"] > 0
    assert timing["compute"] > 0 and timing["write"] > 0
    assert sum(timing[k] for k in ("data", "compute", "eval", "write")) <= timing["total"] + 0.01
    assert {"timing.data", "timing.compute", "timing.eval", "timing.write"} <= set(rows[0])
    assert {"timing.data", "timing.compute"} <= set(acc.Tags()["scalars"])


def test_the_epoch_line_is_printed_without_the_progress_bar(zoo, tmp_path, spec_factory, capsys):
    # train.progress: false turns off the step bar only; a batch job's log still shows each epoch
    Trainer(zoo.build(spec_factory(**{"train.epochs": 2, "train.progress": False})), None).fit()
    err = capsys.readouterr().err
    assert [x.split("  ")[0] for x in err.splitlines() if x.startswith("epoch ")] == [
        "epoch 1/2",
        "epoch 2/2",
    ]
    assert "\r" not in err and "it/s" not in err  # no progress bar


def test_plot_draws_the_curves_of_several_runs(zoo, tmp_path, spec_factory, capsys):
    runs = []
    for seed in (0, 1):
        d = new_run_dir(tmp_path, f"run{seed}")
        Trainer(zoo.build(spec_factory(seed=seed, **{"train.epochs": 2})), d).fit()
        runs.append(str(d))
    out = tmp_path / "curves.png"
    assert main(["plot", *runs, "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from mtlzoo.apps.plot import curves

    data = curves([tmp_path / "run0", tmp_path / "run1"])
    assert set(data["val.semseg.miou"]) == {"run0", "run1"} and data["val.semseg.miou"]["run0"][0] == [1, 2]
    assert main(["plot", str(tmp_path)]) == 2
    assert "has no metrics.jsonl" in capsys.readouterr().err


def test_summary_prints_shared_and_per_task_parameter_counts(tmp_path, spec_factory, capsys):
    spec = write_spec(tmp_path, spec_factory())
    assert main(["summary", str(spec), "--json", "--names"]) == 0
    data = json.loads(capsys.readouterr().out)
    counts = data["parameters"]
    assert counts["total"] == counts["shared"] + counts["semseg"] + counts["depth"] + counts["labels"]
    assert "backbone.stages.0.0.weight" in data["names"]


def test_parameter_groups_for_fine_tuning(zoo, spec_factory):
    spec = spec_factory(
        **{
            "train.optimizer": {
                "lr": 0.01,
                "weight_decay": 0.1,
                "shared_lr_scale": 0.1,
                "no_decay_norm_bias": True,
                "freeze": ["backbone.stages.0.*"],
            }
        }
    )
    trainer = Trainer(zoo.build(spec), None)
    groups = trainer.optimizer.param_groups
    frozen = [n for n, p in trainer.model.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith("backbone.stages.0.") for n in frozen)
    shared = {id(p) for p in trainer.model.shared_parameters()}
    for g in groups:
        ids = {id(p) for p in g["params"]}
        is_shared = ids <= shared
        assert g["lr"] == pytest.approx(0.001 if is_shared else 0.01)
        assert all(p.ndim >= 2 for p in g["params"]) == (g["weight_decay"] == 0.1)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.fit()
    after = dict(trainer.model.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in frozen)
    assert not torch.equal(before["backbone.stages.1.0.weight"], after["backbone.stages.1.0.weight"])
    with pytest.raises(
        ConfigError, match=r"^train.optimizer.freeze: 'backbone.stagez.\*' matches no parameter"
    ):
        Trainer(zoo.build(spec_factory(**{"train.optimizer.freeze": ["backbone.stagez.*"]})), None)


def test_freeze_bn_keeps_the_shared_running_statistics(zoo, spec_factory):
    spec = spec_factory(
        **{
            "model.backbone": {"name": "cnn", "channels": [8, 16], "norm": "batch"},
            "train.optimizer.freeze_bn": True,
        }
    )
    trainer = Trainer(zoo.build(spec), None)
    bn = trainer.model.backbone.stages[0][1]
    before = bn.running_mean.clone()
    trainer.fit()
    assert torch.equal(bn.running_mean, before)


def test_overrides_may_follow_options_in_every_command(tmp_path, spec_factory, capsys):
    spec = write_spec(tmp_path, spec_factory(**{"train.out_dir": str(tmp_path / "runs")}))
    assert main(["config", "show", str(spec), "--debug", "train.epochs=3"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["train"]["epochs"] == 3
    assert main(["train", str(spec), "train.run_name=o"]) == 0
    capsys.readouterr()
    run = tmp_path / "runs" / "o"
    assert main(["eval", str(run), "--json", "train.eval_batch_size=3"]) == 0
    assert json.loads(capsys.readouterr().out)["split"] == "val"
    assert main(["train", "--resume", str(run), "--debug", "train.epochs=2"]) == 0
    with pytest.raises(SystemExit):
        main(["config", "show", str(spec), "--bogus-flag"])


def test_a_taken_run_name_says_where_the_new_run_goes(tmp_path, spec_factory, capsys):
    spec = write_spec(
        tmp_path, spec_factory(**{"train.out_dir": str(tmp_path / "runs"), "train.run_name": "same"})
    )
    assert main(["train", str(spec)]) == 0
    capsys.readouterr()
    assert main(["train", str(spec)]) == 0
    err = capsys.readouterr().err
    assert f"note: {tmp_path / 'runs' / 'same'} exists (continue it with `mtlzoo train --resume" in err
    assert f"this run writes {tmp_path / 'runs' / 'same-2'}" in err


def test_a_relative_data_root_is_read_from_the_specs_folder(zoo, tmp_path, spec_factory, monkeypatch):
    from mtlzoo.builtin.datasets.layouts import write_camvid

    write_camvid(tmp_path / "data" / "camvid", counts=(2, 1, 1), hw=(12, 16))
    (tmp_path / "specs").mkdir()
    spec = spec_factory(
        data={"name": "camvid", "root": "../data/camvid"}, tasks={"semseg": {"type": "segmentation"}}
    )
    path = write_spec(tmp_path / "specs", spec)
    monkeypatch.chdir(tmp_path / "data")  # anywhere else
    cfg = zoo.spec(path)
    assert cfg.data.root == str(tmp_path / "data" / "camvid")
    assert zoo.spec(path, ["data.root=camvid"]).data.root == "camvid"  # a command-line value: the cwd's
    assert len(zoo.build(path).dataset("train")) == 2


def test_the_name_shorthand_works_in_overrides(zoo, spec_factory):
    cfg = zoo.spec(spec_factory(), ["combiner=sum", "model.backbone=cnn"])
    assert cfg.combiner.name == "sum" and cfg.model.backbone.name == "cnn"


def test_eval_builds_no_trainer_and_no_optimizer_and_gives_the_runs_metrics(
    tmp_path, spec_factory, capsys, monkeypatch
):
    spec = write_spec(
        tmp_path, spec_factory(**{"train.out_dir": str(tmp_path / "runs"), "train.run_name": "e"})
    )
    assert main(["train", str(spec)]) == 0
    capsys.readouterr()
    run = tmp_path / "runs" / "e"
    final = json.loads((run / "summary.json").read_text())["final"]

    def refuse(*args, **kwargs):
        raise AssertionError("eval built a training-side object")

    import mtlzoo.runtime.train as train_module

    monkeypatch.setattr(train_module.Trainer, "__init__", refuse)
    monkeypatch.setattr(torch.optim.Optimizer, "__init__", refuse)
    assert main(["eval", str(run), "--json", "--checkpoint", str(run / "checkpoints" / "last")]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    for task, values in final.items():
        for key, value in values.items():
            if key != "loss":
                assert metrics[task][key] == pytest.approx(value, rel=1e-5), (task, key)
