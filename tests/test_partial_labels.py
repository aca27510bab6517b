"""Partial labels (issue 23): samples that carry only some tasks' targets.

A test dataset, ``shapes_halves``, mixes two label sets: its even samples carry only the
segmentation mask, its odd samples only depth (two datasets' worth of labels in one). The
contract, the pipeline (fills and flags, derived targets), the losses and metrics (over the
labelled samples only, checked against computing them on the labelled subset alone), batches
without any label of a task (the task sits the step out, for loss- and gradient-level
combiners), and the refusal of combiners that cannot take such steps."""

from __future__ import annotations

import dataclasses
import types

import pytest
import torch
from torch.utils.data import default_collate

from mtlzoo import Zoo, hookimpl
from mtlzoo.builtin.combiners import gradients as gr
from mtlzoo.builtin.datasets import ShapesOptions
from mtlzoo.builtin.datasets.shapes import ShapesDataset
from mtlzoo.contract.combine import Step
from mtlzoo.contract.data import DatasetInfo, TargetInfo, present_key, sample_problems
from mtlzoo.contract.errors import ConfigError
from mtlzoo.runtime.loading import to_device
from mtlzoo.runtime.partial import Labelled, flags
from mtlzoo.runtime.train import Trainer


class Halves(torch.utils.data.Dataset):
    """``shapes`` whose even samples keep only ``semseg`` and odd samples only ``depth``."""

    def __init__(self, split: str, options: ShapesOptions):
        self.base = ShapesDataset(split, options)
        targets = {
            k: dataclasses.replace(self.base.info.targets[k], partial=True) for k in ("semseg", "depth")
        }
        self.info = dataclasses.replace(self.base.info, name="shapes_halves", targets=targets)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.base[index]
        keep = "semseg" if index % 2 == 0 else "depth"
        return {"image": sample["image"], keep: sample[keep]}


@hookimpl
def register_datasets(register):
    register("shapes_halves", Halves, ShapesOptions, "shapes, half with semseg only, half with depth only")


PLUGIN = types.SimpleNamespace(register_datasets=register_datasets)


@pytest.fixture(scope="module")
def halves_zoo() -> Zoo:
    return Zoo.load(plugins=[("halves", PLUGIN)], strict=True)


def halves_spec(spec_factory, **overrides):
    base = {
        "tasks": {
            "semseg": {"type": "segmentation"},
            "depth": {"type": "depth"},
            "boundary": {"type": "boundary", "from": "semseg"},
        },
        "data": {"name": "shapes_halves", "size": [32, 32], "train_size": 16, "val_size": 8, "test_size": 8},
        "train.eval_batch_size": 8,
        "augment": {"hflip": 0.5, "crop": [28, 28]},
    }
    return spec_factory(**{**base, **overrides})


# -- the contract ---------------------------------------------------------------------------------
def test_a_partial_target_may_be_missing_and_a_full_one_may_not(zoo):
    kinds = {k: zoo.target_kind(k) for k in ("segmentation", "depth")}
    info = DatasetInfo(
        "d",
        {
            "seg": TargetInfo("segmentation", 3, ("a", "b", "c"), 255, partial=True),
            "depth": TargetInfo("depth"),
        },
    )
    image = torch.rand(3, 8, 8)
    depth = torch.rand(1, 8, 8)
    assert sample_problems({"image": image, "depth": depth}, info, kinds, "d[0]") == []
    (problem,) = sample_problems(
        {"image": image, "seg": torch.zeros(8, 8, dtype=torch.long)}, info, kinds, "d[1]"
    )
    assert "target 'depth' declared by the dataset's info is missing" in problem
    assert "declares it with TargetInfo(partial=True)" in problem
    # a partial target that is present is checked like any other
    bad = {"image": image, "depth": depth, "seg": torch.zeros(8, 8)}
    assert "must be int64" in sample_problems(bad, info, kinds, "d[2]")[0]


# -- the pipeline ---------------------------------------------------------------------------------
def test_the_pipeline_fills_missing_targets_flags_them_and_batches_collate(halves_zoo, spec_factory):
    exp = halves_zoo.build(halves_spec(spec_factory))
    ds = exp.dataset("train")
    assert sorted(ds.partial) == ["boundary", "depth", "semseg"]  # boundary derives from semseg
    even, odd = ds[(0, 0)], ds[(0, 1)]
    assert even[present_key("semseg")].item() and not even[present_key("depth")].item()
    assert even[present_key("boundary")].item() and not odd[present_key("boundary")].item()
    assert not odd[present_key("semseg")].item() and odd[present_key("depth")].item()
    # the fill is the kind's: ignore for segmentation (and so boundary), 0 (no measurement) for depth
    assert (odd["semseg"] == 255).all() and (even["depth"] == 0).all() and (odd["boundary"] == 255).all()
    assert even["semseg"].shape == (28, 28) and even["depth"].shape == (1, 28, 28)
    batch = default_collate([ds[(0, i)] for i in range(4)])
    assert batch[present_key("semseg")].tolist() == [True, False, True, False]
    assert batch["semseg"].shape == (4, 28, 28) and batch["depth"].dtype == torch.float32


def test_labelled_narrows_the_tasks_that_need_it():
    present = {"semseg": torch.tensor([True, False, True, False]), "depth": torch.tensor([False] * 4)}
    marks = Labelled(present, torch.device("cpu"))
    assert marks.counts == {"semseg": 2, "depth": 0} and marks.absent == {"depth"} and not marks.empty_here
    x = torch.arange(4.0)
    assert marks.take("semseg", [x])[0].tolist() == [0.0, 2.0]
    assert marks.take("normals", [x])[0] is x and marks.count("normals", 4) == 4  # a full target
    full = Labelled({"semseg": torch.ones(4, dtype=torch.bool)}, torch.device("cpu"))
    assert full.take("semseg", [x])[0] is x  # all labelled: nothing is indexed


# -- training and evaluation ----------------------------------------------------------------------
def labelled_subset(ds, key, parity):
    samples = [ds[i] for i in range(len(ds)) if i % 2 == parity]
    assert all(s[present_key(key)].item() for s in samples)
    return default_collate(samples)


def test_each_task_trains_and_is_evaluated_on_its_own_samples(halves_zoo, spec_factory):
    trainer = Trainer(halves_zoo.build(halves_spec(spec_factory, **{"combiner": {"name": "mgda"}})), None)
    summary = trainer.fit()
    assert set(summary["final"]) == {"semseg", "depth", "boundary"}
    results = trainer.evaluate("val")
    ds = trainer.evaluator.dataset("val")
    model = trainer.model.eval()
    for name, key, parity in (("semseg", "semseg", 0), ("boundary", "boundary", 0), ("depth", "depth", 1)):
        batch = labelled_subset(ds, key, parity)  # the labelled samples alone, no flags used
        task = trainer.tasks[name]
        with torch.no_grad():
            pred = model(batch["image"])[name].float()
        for metric in task.metrics.values():
            metric.reset()
            metric.update(pred, batch[key])
        for k, metric in task.metrics.items():
            assert results[name][k] == pytest.approx(float(metric.compute()), rel=1e-6, abs=1e-9), (name, k)
        assert results[name]["loss"] == pytest.approx(float(task.loss(pred, batch[key])), rel=1e-6)


def test_a_training_loss_is_the_loss_of_the_labelled_samples(halves_zoo, spec_factory):
    trainer = Trainer(halves_zoo.build(halves_spec(spec_factory)), None)
    trainer.model.eval()  # one forward gives the same predictions twice
    batch = to_device(next(iter(trainer.train_loader)), trainer.device, False)
    _, preds, losses = trainer.compute_losses(batch)
    for name, key in (("semseg", "semseg"), ("depth", "depth")):
        idx = batch[present_key(key)].nonzero().flatten()
        expected = trainer.tasks[name].loss(preds[name].float()[idx], batch[key][idx])
        assert torch.allclose(losses[name], expected, rtol=1e-6)


def one_sided_batch(trainer, parity):
    ds = trainer.train_set
    return default_collate([ds[(0, i)] for i in range(len(ds)) if i % 2 == parity][:8])


@pytest.mark.parametrize(
    "combiner", [{"name": "sum"}, {"name": "mgda", "wrt": "params"}, {"name": "uncertainty"}]
)
def test_a_batch_without_labels_of_a_task_leaves_it_out_of_the_step(halves_zoo, spec_factory, combiner):
    trainer = Trainer(halves_zoo.build(halves_spec(spec_factory, combiner=combiner)), None)
    head = [p.detach().clone() for p in trainer.model.task_parameters("depth")]
    before = [p.detach().clone() for p in trainer.combiner.parameters()]
    shared = [p.detach().clone() for p in trainer.model.shared_parameters()]
    losses, logs = trainer.train_step(one_sided_batch(trainer, 0))  # semseg samples only
    assert set(losses) == {"semseg", "boundary"} and all(
        torch.isfinite(torch.tensor(v)) for v in losses.values()
    )
    assert all(torch.equal(a, b) for a, b in zip(head, trainer.model.task_parameters("depth")))
    assert any(not torch.equal(a, b) for a, b in zip(shared, trainer.model.shared_parameters()))
    if combiner["name"] == "uncertainty":  # the absent task's log-variance is not moved either
        i = trainer.combiner.task_names.index("depth")
        assert trainer.combiner.log_vars.detach()[i] == before[0][i]
        assert any(trainer.combiner.log_vars.detach() != before[0])
    losses, _ = trainer.train_step(one_sided_batch(trainer, 1))  # depth samples only
    assert set(losses) == {"depth"}


def test_why_a_task_without_labels_is_left_out_rather_than_given_a_zero_loss():
    """Given a zero loss, a task is a zero row of the Gramian: MGDA's min-norm point is then
    that zero gradient and the step would train nothing."""
    J = torch.tensor([[1.0, 0.5, 0.0], [-0.3, 1.0, 0.2], [0.0, 0.0, 0.0]], dtype=torch.float64)
    w = gr.min_norm_weights(J @ J.T)
    assert float((J.T @ w).norm()) < 1e-12
    w2 = gr.min_norm_weights(J[:2] @ J[:2].T)
    assert float((J[:2].T @ w2).norm()) > 0.1


PARTIAL_CAPABLE = [
    *("sum", "weighted", "uncertainty", "rlw", "gls", "imtl_l", "mgda", "pcgrad", "cagrad", "nash_mtl"),
    *("imtl_g", "aligned_mtl", "gradvac", "graddrop", "upgrad", "config", "fairgrad", "dualproj"),
]


class Linear(torch.nn.Module):
    """Shared ``theta`` through one feature map; loss of task t ``<A_t, theta> + c_t`` (> 0)."""

    def __init__(self):
        super().__init__()
        self.A = torch.tensor([[1.0, 0.2, -0.5, 0.3], [-0.8, 1.0, 0.4, 0.0], [0.3, -0.6, 1.0, 0.7]])
        self.theta = torch.nn.Parameter(torch.zeros(4))

    def step(self, tasks):
        self.theta.grad = None
        feats = (self.theta * 1.0)[None]
        losses = {f"t{i}": (self.A[i] * feats[0]).sum() + 2.0 + i for i in tasks}
        return losses, Step(losses, [feats], [self.theta], {n: [] for n in losses}, step=5)


@pytest.mark.parametrize("name", PARTIAL_CAPABLE)
def test_a_partial_step_equals_the_step_of_a_combiner_of_those_tasks_alone(zoo, name):
    model = Linear()
    three = zoo.make("combiner", {"name": name}, ["t0", "t1", "t2"], path="combiner")
    two = zoo.make("combiner", {"name": name}, ["t0", "t2"], path="combiner")
    assert three.partial_steps
    grads = []
    for combiner in (three, two):
        losses, step = model.step([0, 2])
        combiner.backward(losses, step)
        grads.append(model.theta.grad.clone())
    assert torch.allclose(grads[0], grads[1], rtol=1e-6, atol=1e-7)
    assert float(grads[0].norm()) > 0


@pytest.mark.parametrize("name", ["famo", "dwa", "db_mtl", "moco", "krum", "auto_lambda"])
def test_combiners_with_per_task_state_refuse_a_partial_step(zoo, name):
    combiner = zoo.make("combiner", {"name": name}, ["t0", "t1", "t2"], path="combiner")
    assert not combiner.partial_steps
    losses, step = Linear().step([0, 2])
    with pytest.raises(KeyError, match="combiner was built for tasks"):
        combiner.backward(losses, step)


def test_partial_labels_with_a_combiner_without_partial_steps_are_refused_before_writing(
    halves_zoo, spec_factory, tmp_path
):
    run = tmp_path / "run"
    with pytest.raises(ConfigError) as err:
        Trainer(halves_zoo.build(halves_spec(spec_factory, combiner={"name": "famo"})), run)
    message = str(err.value)
    assert message.startswith("combiner: combiner 'famo'") and "cannot train on partial labels" in message
    assert "targets ['boundary', 'depth', 'semseg']" in message and "docs/combiners.md" in message
    assert "\n" not in message and not run.exists()


def test_a_full_label_batch_has_no_flags_and_no_index(zoo, spec_factory):
    trainer = Trainer(zoo.build(spec_factory()), None)
    batch = next(iter(trainer.train_loader))
    assert flags(batch) == {} and not any(k.endswith("/present") for k in batch)
    marks = Labelled(flags(batch), trainer.device)
    assert marks.counts == {} and not marks._index


def test_training_on_partial_labels_logs_each_task_over_its_own_steps(halves_zoo, spec_factory):
    trainer = Trainer(halves_zoo.build(halves_spec(spec_factory, **{"train.batch_size": 4})), None)
    logged = {}
    original = trainer.train_step

    def spy(batch):
        out = original(batch)
        for k, v in out[0].items():
            logged.setdefault(k, []).append(v)
        return out

    trainer.train_step = spy
    log, _ = trainer._train_epoch(0)
    for task, values in logged.items():
        assert log["loss"][task] == pytest.approx(sum(values) / len(values))


def test_a_split_without_labels_of_a_task_reports_nan(halves_zoo, spec_factory):
    trainer = Trainer(halves_zoo.build(halves_spec(spec_factory, **{"data.val_size": 1})), None)
    results = trainer.evaluate("val")  # one (even) sample: no depth label in the split
    assert all(v != v for v in results["depth"].values())  # NaN
    assert results["semseg"]["miou"] == results["semseg"]["miou"]


# -- torchrun: the ranks agree on the tasks that sit a step out -------------------------------------
def _rank_agreement(rank: int, init: str, out: str) -> None:
    import json

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        present = {
            "semseg": torch.tensor([False, False]),  # no rank has a label: absent everywhere
            "depth": torch.tensor([False, False]) if rank == 0 else torch.tensor([True, False]),
        }
        marks = Labelled(present, torch.device("cpu"), distributed=True)
        with open(f"{out}.{rank}", "w") as f:
            json.dump({"absent": sorted(marks.absent), "empty_here": sorted(marks.empty_here)}, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two fresh processes (about 14 s on 2 busy cores)
def test_the_ranks_agree_on_the_tasks_that_sit_a_step_out(tmp_path):
    import json

    import torch.multiprocessing as mp

    init = f"file://{tmp_path / 'store'}"
    mp.spawn(_rank_agreement, args=(init, str(tmp_path / "marks")), nprocs=2, join=True)
    zero, one = (json.loads((tmp_path / f"marks.{r}").read_text()) for r in (0, 1))
    assert zero == {"absent": ["semseg"], "empty_here": ["depth"]}
    assert one == {"absent": ["semseg"], "empty_here": []}


def test_a_rank_without_labels_others_have_gives_a_zero_loss_attached_to_the_prediction(
    halves_zoo, spec_factory
):
    trainer = Trainer(halves_zoo.build(halves_spec(spec_factory)), None)
    batch = one_sided_batch(trainer, 0)  # no depth label here
    marks = Labelled(flags(batch), trainer.device)
    marks.absent, marks.empty_here = set(), {"depth"}  # as if another rank had depth labels
    _, _, losses = trainer.compute_losses(to_device(batch, trainer.device, False), marks)
    assert float(losses["depth"].detach()) == 0.0 and losses["depth"].requires_grad
    losses["depth"].backward()
    assert all(p.grad is None or not p.grad.any() for p in trainer.model.task_parameters("depth"))
