"""Trainer: run folder contents, determinism, resume, evaluation, schedules, sampling."""

from __future__ import annotations

import json
import math

import pytest
import torch
from omegaconf import OmegaConf

from mtlzoo import CheckpointError, PluginError, TrainingError, Zoo
from mtlzoo.runtime.checkpoint import load_weights
from mtlzoo.runtime.distributed import ShardedSampler
from mtlzoo.runtime.train import Trainer, lr_factor, new_run_dir


def run(zoo, spec, run_dir=None, resume=None):
    trainer = Trainer(zoo.build(spec), run_dir, resume=resume)
    return trainer, trainer.fit()


def test_run_folder_holds_config_metrics_summary_and_checkpoints(zoo, tmp_path, spec_factory):
    spec = spec_factory(**{"train.epochs": 2})
    run_dir = new_run_dir(tmp_path, "tiny")
    _, summary = run(zoo, spec, run_dir)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    assert set(lines[0]["val"]) == {"semseg", "depth", "labels"}
    assert set(lines[0]["train"]["loss"]) == {"semseg", "depth", "labels"}
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["final"] == lines[-1]["val"] == summary["final"]
    assert on_disk["directions"]["depth"]["abs_err"] is False
    # last/ can be resumed; best/ keeps what evaluation needs (no optimizer moments)
    assert {p.name for p in (run_dir / "checkpoints" / "last").iterdir()} == {
        "weights.safetensors",
        "optimizer.safetensors",
        "state.json",
    }
    assert {p.name for p in (run_dir / "checkpoints" / "best").iterdir()} == {
        "weights.safetensors",
        "state.json",
    }
    saved = zoo.spec(run_dir / "config.yaml")
    assert saved == zoo.spec(spec)


def test_same_seed_same_metrics_and_new_folder_each_time(zoo, tmp_path, spec_factory):
    a = new_run_dir(tmp_path, "tiny")
    b = new_run_dir(tmp_path, "tiny")
    assert (a.name, b.name) == ("tiny", "tiny-2")
    _, s1 = run(zoo, spec_factory(), a)
    _, s2 = run(zoo, spec_factory(), b)
    assert s1["final"] == s2["final"]
    _, s3 = run(zoo, spec_factory(seed=1), None)
    assert s3["final"] != s1["final"]


def test_resume_continues_exactly(zoo, tmp_path, spec_factory):
    spec = spec_factory(**{"train.epochs": 2})
    t_full, full = run(zoo, spec, new_run_dir(tmp_path, "straight"))
    part = new_run_dir(tmp_path, "part")
    Trainer(zoo.build(spec), part).fit(until_epoch=1)
    run(zoo, spec_factory(seed=5), None)  # unrelated work in between must not matter
    t2, resumed = run(zoo, spec, part, resume=part / "checkpoints" / "last")
    assert resumed["final"] == full["final"]
    for (k, a), b in zip(t_full.model.state_dict().items(), t2.model.state_dict().values()):
        assert torch.equal(a, b), k
    lines = (part / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]
    # the resumed run's wall time counts the epoch before the resume too (a bench reads it as
    # the cell's cost): at least the two epochs' own times
    first, second = (json.loads(x)["timing"]["total"] for x in lines)
    assert resumed["seconds"] >= round(first + second, 2) - 0.01
    assert resumed["timing"]["total"] == pytest.approx(first + second, abs=0.01)


def test_resume_of_a_finished_run_says_how_to_go_on(zoo, tmp_path, spec_factory):
    d = new_run_dir(tmp_path, "done")
    run(zoo, spec_factory(), d)
    with pytest.raises(CheckpointError, match="raise train.epochs"):
        run(zoo, spec_factory(), d, resume=d / "checkpoints" / "last")


def test_evaluate_reloaded_checkpoint_matches_summary(zoo, tmp_path, spec_factory):
    d = new_run_dir(tmp_path, "ev")
    _, summary = run(zoo, spec_factory(), d)
    exp = zoo.build(d / "config.yaml")
    trainer = Trainer(exp, None)
    load_weights(d / "checkpoints" / "last", trainer.model, trainer.combiner)
    assert trainer.evaluate("val") == summary["final"]


def test_metrics_do_not_depend_on_eval_batch_size(zoo, spec_factory):
    exp = zoo.build(spec_factory())
    trainer = Trainer(exp, None)
    a = trainer.evaluate("val")
    trainer.cfg.train.eval_batch_size = 3
    b = trainer.evaluate("val")
    for task in a:
        for key in a[task]:
            assert a[task][key] == pytest.approx(b[task][key], rel=1e-5, abs=1e-6), (task, key)


def test_nan_loss_stops_with_a_clear_error(zoo, spec_factory):
    exp = zoo.build(spec_factory())
    trainer = Trainer(exp, None)
    trainer.tasks["depth"].loss = lambda pred, target: pred.sum() * float("nan")
    with pytest.raises(TrainingError, match="task 'depth': loss is nan"):
        trainer.fit()


def test_test_split_is_reported_with_the_checkpoint_chosen_on_val(zoo, tmp_path, spec_factory):
    d = new_run_dir(tmp_path, "t")
    _, summary = run(zoo, spec_factory(**{"train.test_split": "test", "train.epochs": 2}), d)
    assert summary["test_split"] == "test" and set(summary["test"]) == {"semseg", "depth", "labels"}
    assert summary["best"]["metric"] == "semseg.miou"


def test_lr_schedules_by_hand():
    cfg = OmegaConf.create(
        {
            "train": {
                "optimizer": {"lr": 0.1},
                "scheduler": {
                    "name": "cosine",
                    "warmup_epochs": 1.0,
                    "min_lr": 0.0,
                    "step_epochs": 1,
                    "gamma": 0.5,
                    "power": 1.0,
                },
            }
        }
    )
    # 10 steps per epoch, 30 steps: 10 warm-up steps then cosine over 20
    assert lr_factor(cfg, 0, 30, 10) == pytest.approx(0.1)
    assert lr_factor(cfg, 9, 30, 10) == pytest.approx(1.0)
    assert lr_factor(cfg, 20, 30, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    cfg.train.scheduler.name = "step"
    cfg.train.scheduler.warmup_epochs = 0
    assert [lr_factor(cfg, s, 30, 10) for s in (0, 10, 25)] == [1.0, 0.5, 0.25]
    cfg.train.scheduler.name = "poly"
    assert lr_factor(cfg, 15, 30, 10) == pytest.approx(0.5)


def test_sharded_sampler_two_ranks_cover_the_one_rank_batches():
    one = list(ShardedSampler(20, seed=3, rank_=0, world=1))
    r0 = list(ShardedSampler(20, seed=3, rank_=0, world=2))
    r1 = list(ShardedSampler(20, seed=3, rank_=1, world=2))
    b = 2  # per-rank batch; the 1-rank run uses batch 4
    for k in range(5):
        assert sorted(one[4 * k : 4 * k + 4]) == sorted(r0[b * k : b * k + b] + r1[b * k : b * k + b])
    ev = [list(ShardedSampler(7, shuffle=False, drop_last=False, rank_=r, world=2)) for r in (0, 1)]
    assert sorted(ev[0] + ev[1]) == list(range(7))


@pytest.mark.parametrize(
    "combiner",
    [{"name": "gradvac", "wrt": "params"}, {"name": "dwa"}, {"name": "famo", "update": "same_batch"}],
)
def test_stateful_combiner_state_is_checkpointed_and_restored(zoo, tmp_path, spec_factory, combiner):
    d = new_run_dir(tmp_path, "state")
    t, _ = run(zoo, spec_factory(**{"combiner": combiner, "train.epochs": 2}), d)
    state = {k: v.clone() for k, v in t.combiner.state_dict().items()}
    assert state, "a stateful combiner must keep its state in buffers or parameters"
    fresh = Trainer(zoo.build(d / "config.yaml"), None)
    load_weights(d / "checkpoints" / "last", fresh.model, fresh.combiner)
    restored = fresh.combiner.state_dict()
    assert restored.keys() == state.keys()
    for k in state:
        assert torch.equal(restored[k], state[k]), k


def test_sampler_hands_the_pipeline_epoch_and_index_keys():
    sampler = ShardedSampler(6, seed=1, keyed=True)
    sampler.set_epoch(3)
    keys = list(sampler)
    assert [e for e, _ in keys] == [3] * 6 and sorted(i for _, i in keys) == list(range(6))


def test_a_combiner_that_never_calls_backward_is_named_after_the_first_step(spec_factory):
    from mtlzoo import Combiner, hookimpl

    class Lazy(Combiner):
        def backward(self, losses, step):
            return {}

    class Plugin:
        @hookimpl
        def register_combiners(self, register):
            register("lazy", Lazy, None, "never calls backward")

    z = Zoo.load(plugins=[("lazy_plugin", Plugin())], strict=True)
    trainer = Trainer(z.build(spec_factory(**{"combiner": {"name": "lazy"}})), None)
    with pytest.raises(PluginError) as err:
        trainer.fit()
    msg = str(err.value)
    assert msg.startswith("combiner: combiner 'lazy' (plugin lazy_plugin): after the first step ")
    assert "shared parameters have no gradient" in msg and "step.backward" in msg and "\n" not in msg


def test_a_loss_that_is_not_a_scalar_is_named(zoo, spec_factory):
    trainer = Trainer(zoo.build(spec_factory()), None)
    trainer.tasks["depth"].loss = lambda pred, target: (pred - target).abs()
    with pytest.raises(
        PluginError, match=r"^tasks.depth.loss: .* returned \[8, 1, 32, 32\]; a loss returns a scalar"
    ):
        trainer.fit()
