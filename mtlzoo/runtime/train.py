"""Trainer: fit, checkpoint, log. Knows no concrete plugin.

A run folder holds::

    config.yaml      the resolved, validated spec
    metrics.jsonl    one JSON line per epoch: training losses, evaluations, where the time went
    summary.json     final metrics, best epoch, parameter counts, timing
    checkpoints/last checkpoints/best   (see mtlzoo.checkpoint)

Each epoch is trained, evaluated, **checkpointed, and only then reported** (log lines,
metrics.csv, TensorBoard, pictures): a report that fails (a missing picture library, a full
disk for the event files) prints one warning and training goes on; it can never cost the
epoch. A training step copies from the device to the host once: the task losses, the
gradient norm of the non-finite guard and the combiner's logged values together.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..contract import checks
from ..contract.combine import Step
from ..contract.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    MtlzooError,
    PluginError,
    TrainingError,
    one_line,
)
from . import checkpoint as ckpt
from . import distributed as D
from .epoch_timing import epoch_seconds, with_logged_timing
from .evaluate import Evaluator, amp_dtype, nonfinite_metrics
from .experiment import Experiment
from .files import RunLock, json_safe, new_run_dir, spec_yaml, write_atomic, write_json
from .guards import BatchNormGuard
from .heldout import HeldOutBatches, functional_forward
from .loading import make_loader, to_device, unwrap_worker_error
from .monitor import Monitor
from .optim import build_optimizer, lr_factor, shared_batchnorms
from .partial import Labelled, check_partial, flags
from .pipeline import fill_cache
from .predictor import CARD
from .process import Process, prepare, seed_everything
from .reporting import Reporter, data_hint, format_table, prediction_pictures
from .selection import better, primary_tasks, selection

__all__ = ["Trainer", "format_table", "lr_factor", "new_run_dir", "seed_everything", "amp_dtype"]


class Trainer:
    """Trains a built :class:`~mtlzoo.runtime.experiment.Experiment`.

    Args:
        exp: what :meth:`mtlzoo.Zoo.build` returned.
        run_dir: the run folder (created by the CLI); ``None`` writes nothing.
        resume: a checkpoint (folder) to continue from: model, combiner, optimizer,
            scheduler, RNG states and the epoch counter are restored.
        process: what :func:`mtlzoo.runtime.process.prepare` returned; ``None`` calls it
            (device, distributed set-up, seeds, determinism).
    """

    def __init__(
        self,
        exp: Experiment,
        run_dir: str | Path | None = None,
        resume: str | Path | None = None,
        process: Process | None = None,
    ):
        self.exp = exp
        self.cfg = exp.cfg
        t = self.cfg.train
        self.process = process if process is not None else prepare(self.cfg)
        self.device = self.process.device
        self.distributed = self.process.distributed
        self.main = self.process.main
        self.evaluator = Evaluator(exp, self.process)
        self.model = self.evaluator.model
        self.channels_last = self.evaluator.channels_last
        self.amp_dtype = self.evaluator.amp_dtype
        self.combiner = exp.combiner.to(self.device)
        D.broadcast_module(self.model)
        D.broadcast_module(self.combiner)
        self.tasks = exp.tasks
        if t.compile:
            # compile the modules the training step calls (forward_train), not only forward
            for child in self.model.children():
                if isinstance(child, nn.ModuleDict | nn.ModuleList):
                    for module in child.children():
                        module.compile()
                else:
                    child.compile()
        self._checked_gradients = False
        self.skipped = 0  # steps skipped for a non-finite loss or gradient (train.nonfinite: skip)
        self.skipped_in_a_row = 0
        self.bn_guard = BatchNormGuard(self.model) if t.nonfinite == "skip" else None
        self.optimizer = build_optimizer(self.cfg, self.model, self.combiner)
        self.frozen_bn = shared_batchnorms(self.model) if t.optimizer.freeze_bn else []
        self.train_set = self.evaluator.dataset("train")
        self.primary = primary_tasks(self.cfg)
        check_partial(exp, self.train_set)  # refused before the run folder is touched
        self.heldout = HeldOutBatches.for_trainer(self)
        sampler = D.ShardedSampler(len(self.train_set), seed=int(self.cfg.seed), keyed=True)
        settings = self.evaluator.loader_settings
        self.train_loader = make_loader(self.train_set, sampler, t.batch_size, settings, int(self.cfg.seed))
        self.steps_per_epoch = len(self.train_loader)
        if t.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, t.max_steps_per_epoch)
        if self.steps_per_epoch == 0:
            raise DataError(
                f"data: the train split has {len(self.train_set)} samples, fewer than one batch per process "
                f"(batch_size {t.batch_size} x {D.world_size()} processes); lower train.batch_size"
            )
        total = self.steps_per_epoch * t.epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(self.cfg, s, total, self.steps_per_epoch)
        )
        self.epoch = 0
        self.global_step = 0
        self.best: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self._write_seconds = 0.0
        self._filled = 0.0
        self.run_dir = Path(run_dir) if run_dir is not None else None
        if self.run_dir is not None and self.main:
            try:  # from Python a run folder may be given before it exists
                self.run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"run folder {self.run_dir}: cannot create it ({one_line(exc)})") from None
        self.lock = RunLock(self.run_dir) if self.run_dir is not None and self.main else None
        monitor = Monitor(self.run_dir, t.tensorboard, t.tensorboard_images_every, self.main, True)
        self.reporter = Reporter(self.run_dir, monitor, self.main)
        self.select_task, self.select_key = selection(t.select, self.tasks, self.primary)
        if resume is not None:
            try:
                self._resume(resume)
            except BaseException:
                if self.lock is not None:  # a refused resume leaves the run as it was, unlocked
                    self.lock.release()
                raise
        if self.run_dir is not None and self.main:
            # a relative data root stays relative (to the run folder): the run moves with its data
            write_atomic(self.run_dir / "config.yaml", spec_yaml(self.cfg, self.run_dir, exp.relative_paths))
            write_json(self.run_dir / CARD, self.exp.card())

    # -- set-up ---------------------------------------------------------------------------
    def _resume(self, path: str | Path) -> None:
        folder = ckpt.load_weights(path, self.model, self.combiner)
        try:
            ckpt.check_finite(self.model, f"{folder}")
        except ckpt.NonFiniteWeights as exc:
            raise CheckpointError(
                f"{exc}; this checkpoint cannot be resumed: start the run again (or resume an earlier copy "
                f"of the run folder) with a lower train.optimizer.lr or train.grad_clip"
            ) from None
        state = ckpt.load_training_state(folder, self.optimizer, self.scheduler)
        self.epoch = int(state.get("epoch", 0))
        self.global_step = int(state.get("step", 0))
        self.best = state.get("best", {})
        self.history = [r for r in state.get("history", []) if int(r.get("epoch", 0)) <= self.epoch]
        if self.run_dir is not None:
            self.history = with_logged_timing(self.history, self.run_dir / "metrics.jsonl")
        if self.run_dir is not None and self.main:
            # the log holds exactly the checkpoint's epochs: a crash between appending a line
            # and saving the checkpoint leaves no duplicate after the epoch is trained again
            lines = "".join(json.dumps(json_safe(r)) + "\n" for r in self.history)
            write_atomic(self.run_dir / "metrics.jsonl", lines)
        if self.epoch >= self.cfg.train.epochs and (
            self.run_dir is None or (self.run_dir / "summary.json").is_file()
        ):
            epochs = self.cfg.train.epochs
            raise CheckpointError(
                f"{folder}: the run already finished its {epochs} epoch{'s' if epochs != 1 else ''}; raise "
                f"train.epochs to go on"
            )

    # -- training -------------------------------------------------------------------------
    def _task_loss(self, task: Any, pred: Tensor, target: Tensor) -> Tensor:
        loss = task.loss(pred.float(), target)
        checks.loss_value(loss, f"tasks.{task.name}.loss: {task.labels.get('loss', 'the loss')}")
        return loss

    def compute_losses(
        self,
        batch: dict[str, Tensor],
        labelled: Labelled | None = None,
        parameters: Mapping[str, Tensor] | None = None,
    ) -> tuple[list[Tensor] | None, dict[str, Tensor], dict[str, Tensor]]:
        """Forward one batch: the shared representation (or ``None``), predictions and per-task
        losses (deep-supervision losses added with the architecture's ``aux_weight``, and the
        architecture's per-task ``regularizers``), over the labelled samples (``labelled``, see
        :mod:`.partial`); ``parameters``: replaced out of place (:mod:`.heldout`)."""
        images = batch["image"]
        labelled = labelled if labelled is not None else Labelled(flags(batch), images.device)
        with self.evaluator.autocast():
            out = functional_forward(self.model, images, parameters or {})
        aux_weight = float(getattr(self.model, "aux_weight", 0.0))
        extra = set(out.regularizers) - set(self.tasks)
        if extra:
            raise PluginError(
                f"model.architecture: {self.exp.labels.get('architecture', 'the architecture')} returned "
                f"regularizers for {sorted(extra)}, which are not tasks ({sorted(self.tasks)})"
            )
        losses = {}
        for name, task in self.tasks.items():
            if task.target not in batch:
                raise DataError(
                    f"tasks.{name}: the batch has no target {task.target!r} (keys: {sorted(batch)})"
                )
            if task.target in labelled.absent:  # no labelled sample: the task sits this step out
                continue
            if task.target in labelled.empty_here:  # other ranks have labels: a zero loss keeps steps alike
                losses[name] = out.preds[name].float().sum() * 0.0
                continue
            pred, target, *aux = labelled.take(
                task.target, [out.preds[name], batch[task.target], *out.aux.get(name, [])]
            )
            loss = self._task_loss(task, pred, target)
            if aux and aux_weight:
                loss = loss + aux_weight * torch.stack([self._task_loss(task, a, target) for a in aux]).mean()
            reg = out.regularizers.get(name)
            if reg is not None:
                loss = loss + reg.float()
            losses[name] = loss
        return out.shared, out.preds, losses

    def train_step(self, batch: dict[str, Tensor]) -> tuple[dict[str, float] | None, dict[str, float]]:
        """One optimisation step; returns per-task losses and the combiner's logs (``None, {}``
        for a step skipped under ``train.nonfinite: skip``)."""
        self.model.train()
        for m in self.frozen_bn:  # train.optimizer.freeze_bn: running statistics stay as loaded
            m.eval()
        marks = Labelled(flags(batch), self.device, self.distributed)  # host flags: no device sync
        batch = to_device(batch, self.device, self.channels_last)
        if self.bn_guard is not None:
            self.bn_guard.save()
        shared, preds, losses = self.compute_losses(batch, marks)
        del preds  # the losses hold what backward needs; the predictions need not outlive them
        if not losses:  # no sample carries a label of any task: nothing to learn from this batch
            self.global_step += 1
            return {}, {}
        stacked = torch.stack([loss.detach().float() for loss in losses.values()])
        if self.bn_guard is not None:
            # skip mode pays a second copy to the host: no combiner may see a non-finite loss,
            # or its running state (loss histories, weights) would keep it
            if self._skip_nonfinite_losses(losses, stacked.tolist()):
                return None, {}
        step = Step(
            losses,
            shared,
            self.model.shared_parameters(),
            {t: self.model.task_parameters(t) for t in self.tasks},
            step=self.global_step,
            epoch=self.epoch,
        )
        if self.heldout is not None:  # a bilevel combiner: its held-out batch and extra passes
            step.heldout = self.heldout.context(self, batch, marks)
        try:
            logs: Mapping[str, Any] = self.combiner.backward(losses, step) or {}
        except Exception:
            # a combiner may fail on non-finite losses (a solver, say): report those, not its error
            if self._skip_nonfinite_losses(losses, stacked.tolist()):
                return None, {}
            raise
        if not self._checked_gradients:
            self._check_gradients()
        if self.distributed:
            for p in self.combiner.parameters():
                if p.grad is not None:
                    D.all_reduce_sum(p.grad).div_(D.world_size())
        grads = [
            p.grad for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None
        ]
        norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=self.device)
        logged_tensors = {k: v for k, v in logs.items() if isinstance(v, Tensor)}
        tensor_logs = list(logged_tensors)
        parts = [stacked, norm.detach().float().reshape(1).to(stacked.device)]
        parts += [v.detach().float().reshape(1).to(stacked.device) for v in logged_tensors.values()]
        host = torch.cat(parts).tolist()  # the step's one copy to the host
        values, norm_value = host[: len(losses)], host[len(losses)]
        logged = {k: float(v) for k, v in logs.items() if k not in tensor_logs}
        logged.update(zip(tensor_logs, host[len(losses) + 1 :]))
        if self._skip_nonfinite_losses(losses, values):
            return None, {}
        if not math.isfinite(norm_value):  # a non-finite update is never applied
            self._nonfinite(
                f"the gradient norm is {norm_value} at step {self.global_step}; lower "
                f"train.optimizer.lr or set train.grad_clip"
            )
            return None, {}
        self.skipped_in_a_row = 0
        if self.cfg.train.grad_clip:
            torch.nn.utils.clip_grads_with_norm_(grads, self.cfg.train.grad_clip, norm)
        self.optimizer.step()
        if self.combiner.needs_losses_after_step:  # FAMO: the same batch's losses after the update
            with torch.no_grad():
                _, _, after = self.compute_losses(batch, marks)
            self.combiner.after_step({k: v.detach() for k, v in after.items()})
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        return dict(zip(losses, values)), logged

    def _skip_nonfinite_losses(self, losses: dict[str, Tensor], values: list[float]) -> bool:
        """Stop or skip (``train.nonfinite``) when a loss value is not finite; True when skipped."""
        for name, value in zip(losses, values):
            if not math.isfinite(value):
                self._nonfinite(
                    f"task {name!r}: loss is {value} at step {self.global_step}; lower train.optimizer.lr "
                    f"or check the targets of {self.tasks[name].target!r} (`mtlzoo data check SPEC`)"
                )
                return True
        return False

    def _nonfinite(self, reason: str) -> None:
        """A step whose loss or gradient is not finite: stop, or skip it (``train.nonfinite``)."""
        t = self.cfg.train
        if t.nonfinite == "stop":
            raise TrainingError(reason + self._last_good())
        self.optimizer.zero_grad(set_to_none=True)
        if self.bn_guard is not None:
            self.bn_guard.restore()
        self.skipped += 1
        self.skipped_in_a_row += 1
        with warnings.catch_warnings():  # a skip before any optimizer step is not the misuse torch warns of
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()  # the schedule follows the steps taken or skipped
        self.global_step += 1
        if self.skipped_in_a_row >= t.max_skips:
            raise TrainingError(
                f"{t.max_skips} steps in a row skipped (train.nonfinite: skip), the last because {reason}"
                + self._last_good()
            )

    def _last_good(self) -> str:
        if self.run_dir is None:
            return ""
        last = self.run_dir / "checkpoints" / "last"
        return f"; the last good checkpoint is {last}" if last.is_dir() else "; no checkpoint was written"

    def _check_gradients(self) -> None:
        """After the first step: every trainable shared parameter got a gradient; the error
        blames the combiner, unread backbone maps or the architecture, whichever caused it."""
        checks.first_step_gradients(self.model, self.exp.labels, self.cfg.model.backbone)
        for task, missing in checks.task_parameters_without_gradient(self.model).items():
            self.reporter.warn(
                f"tasks.{task}: {missing} of its own parameters got no gradient at the first step: they do not "
                f"train (a part computed before the architecture's shared representation, or unused by design: "
                f"then mark them with mtlzoo.mark_unused)"
            )
        self._checked_gradients = True

    # -- the loop -------------------------------------------------------------------------
    def fit(self, until_epoch: int | None = None) -> dict[str, Any]:
        """Train for ``train.epochs`` epochs (or stop after ``until_epoch``, leaving a run that
        ``--resume`` continues), evaluating and checkpointing as configured; return the
        summary (also written to ``summary.json``)."""
        t = self.cfg.train
        started = time.perf_counter()
        # a resumed run's wall time includes its epochs from before the resume (their timing)
        earlier = sum(epoch_seconds(r) for r in self.history)
        last = t.epochs if until_epoch is None else min(until_epoch, t.epochs)
        for done, epoch in enumerate(range(self.epoch, last), 1):
            epoch_started = time.perf_counter()
            self.epoch = epoch  # epochs done so far, while this one trains
            skipped = self.skipped
            self._write_seconds = 0.0
            train_log, timing = self._train_epoch(epoch)
            self.epoch = epoch + 1  # one numbering everywhere: epochs completed
            self._require_finite(f"after epoch {epoch + 1}")
            record: dict[str, Any] = {"epoch": epoch + 1, "step": self.global_step, "train": train_log}
            if self.skipped > skipped:
                record["skipped_steps"] = self.skipped - skipped
            if (epoch + 1) % t.eval_every == 0 or epoch + 1 == t.epochs:
                eval_started = time.perf_counter()
                results = self.evaluate(t.eval_split)
                record[t.eval_split] = results
                self._update_best(epoch + 1, results)  # saves best/: its time counts as writing
                timing["eval"] = time.perf_counter() - eval_started - self._write_seconds
            record["timing"] = timing
            self.history.append(record)
            # the checkpoint first: nothing after it (logs, pictures) can cost the epoch
            write_started = time.perf_counter()
            if (epoch + 1) % t.checkpoint_every == 0 or epoch + 1 == last:
                self._save("last")
            self.reporter.pictures(record, self._pictures)
            timing["write"] = self._write_seconds + time.perf_counter() - write_started
            record["time"] = round(time.perf_counter() - started, 3)
            timing["total"] = time.perf_counter() - epoch_started
            for key in timing:
                timing[key] = round(timing[key], 3)
            eta = (time.perf_counter() - started) / done * (last - epoch - 1)
            self.reporter.epoch(record, self.history, t.epochs, t.eval_split, eta, self._data_hint(timing))
        summary = self._summary(earlier + time.perf_counter() - started)
        if self.run_dir is not None and self.main:
            write_json(self.run_dir / "summary.json", summary)
        D.barrier()
        self.reporter.close()
        if self.lock is not None:
            self.lock.release()
        if self.history and not self.best and any(t.eval_split in r for r in self.history):
            raise TrainingError(
                f"the run finished but chose no best checkpoint: train.select "
                f"{self.select_task}.{self.select_key} was NaN or infinite at every evaluation on "
                f"{t.eval_split!r} (see {'summary.json' if self.run_dir else 'the summary'}); choose another "
                f"train.select, or check that split's targets (`mtlzoo data check SPEC`)"
            )
        return summary

    def _train_epoch(self, epoch: int) -> tuple[dict[str, Any], dict[str, float]]:
        """One epoch of steps; the epoch's log and its time split (waiting for data, computing)."""
        sampler = self.train_loader.sampler
        sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}  # with partial labels a task may sit steps out
        logs_sum: dict[str, float] = {}
        n = 0
        timing = {"data": 0.0, "compute": 0.0, "eval": 0.0}
        clock = time.perf_counter()
        if getattr(self.train_set, "cached", False):
            fill_cache(self.train_set, self.evaluator.loader_settings["num_workers"])
        self._filled = time.perf_counter() - clock  # counts as data, not as waiting between steps
        bar = self._progress(self.steps_per_epoch, f"epoch {epoch + 1}/{self.cfg.train.epochs}")
        batches = iter(self.train_loader)
        for _ in range(self.steps_per_epoch):
            try:
                batch = next(batches)
            except StopIteration:
                break
            except MtlzooError as exc:
                raise unwrap_worker_error(exc) from None
            loaded = time.perf_counter()
            timing["data"] += loaded - clock
            losses, logs = self.train_step(batch)
            clock = time.perf_counter()
            timing["compute"] += clock - loaded
            if bar is not None:
                bar.update(1)
            if losses is None:  # skipped (train.nonfinite: skip)
                continue
            n += 1
            for k, v in losses.items():
                sums[k], counts[k] = sums.get(k, 0.0) + v, counts.get(k, 0) + 1
            for k, v in logs.items():
                logs_sum[k] = logs_sum.get(k, 0.0) + v
            if bar is not None:
                bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()}, refresh=False)
        if bar is not None:
            bar.close()
        out: dict[str, Any] = {
            "loss": {k: v / counts[k] for k, v in sums.items()},
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        if logs_sum:
            out["combiner"] = {k: v / max(n, 1) for k, v in logs_sum.items()}
        return out, timing

    def _progress(self, total: int, desc: str) -> Any:
        if not (self.cfg.train.progress and self.main):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)

    # -- evaluation and the best checkpoint -----------------------------------------------
    def evaluate(self, split: str | None = None, loader: Any = None) -> dict[str, dict[str, float]]:
        """Metrics of every task over a whole split (see :meth:`Evaluator.evaluate`)."""
        return self.evaluator.evaluate(split, loader)

    def _update_best(self, epoch: int, results: dict[str, dict[str, float]]) -> None:
        for name in nonfinite_metrics(results):
            note = f"{self.cfg.train.eval_split} metric {name} is {_value(results, name)} at epoch {epoch}"
            if name == f"{self.select_task}.{self.select_key}":
                note += " and train.select chooses the best checkpoint on it: this epoch cannot be chosen"
            self.reporter.warn(note, once=name)
        value = results[self.select_task][self.select_key]
        higher = (
            self.select_key != "loss"
            and self.tasks[self.select_task].metrics[self.select_key].higher_is_better
        )
        if better(value, self.best, higher):  # a NaN metric is never the best
            self.best = {
                "epoch": epoch,
                "metric": f"{self.select_task}.{self.select_key}",
                "value": value,
                "results": results,
            }
            started = time.perf_counter()
            self._save("best")
            self._write_seconds += time.perf_counter() - started

    def _require_finite(self, when: str) -> None:
        """Stop before a model with NaN or infinite weights is evaluated or saved."""
        try:
            ckpt.check_finite(self.model, f"the model {when}")
        except ckpt.NonFiniteWeights as exc:
            raise TrainingError(
                f"{exc}; lower train.optimizer.lr or set train.grad_clip" + self._last_good()
            ) from None

    # -- writing and reporting ------------------------------------------------------------
    def _save(self, name: str) -> None:
        if self.run_dir is None or not self.main:
            return
        state = {
            "epoch": self.epoch,
            "step": self.global_step,
            "best": self.best,
            "history": self.history,
            "config_name": self.cfg.name,
            "optimizer_class": type(self.optimizer).__name__,
        }
        resume = name == "last"  # best/ keeps what evaluation and inference need, last/ what resuming needs
        ckpt.save_checkpoint(
            self.run_dir / "checkpoints" / name,
            self.model,
            self.combiner,
            self.optimizer if resume else None,
            self.scheduler if resume else None,
            state,
        )

    def _data_hint(self, timing: dict[str, float]) -> str:
        """What to change when this epoch's steps waited for data (filling the cache aside)."""
        cached = getattr(self.train_set, "cached", True)
        base = getattr(self.train_set, "base", None)
        cacheable = bool(base is not None and base.info.cacheable)
        workers = self.evaluator.loader_settings["num_workers"]
        return data_hint(timing["data"] - self._filled, timing["compute"], workers, cached, cacheable)

    def _pictures(self) -> dict[str, Any]:
        split = self.cfg.train.eval_split
        return prediction_pictures(self.model, self.evaluator.dataset(split), self.tasks, split, self.device)

    def _summary(self, seconds: float) -> dict[str, Any]:
        t = self.cfg.train
        final: dict[str, Any] = next(
            (r[t.eval_split] for r in reversed(self.history) if t.eval_split in r), {}
        )
        timing = {k: round(sum(r.get("timing", {}).get(k, 0.0) for r in self.history), 3) for k in _PHASES}
        summary: dict[str, Any] = {
            "name": self.cfg.name,
            "epochs": t.epochs,
            "steps": self.global_step,
            "seconds": round(seconds, 2),
            "timing": timing,
            "device": str(self.device),
            "world_size": D.world_size(),
            "parameters": self.model.num_parameters(),
            "eval_split": t.eval_split,
            "primary": self.primary,
            "final": final,
            "best": self.best,
            "directions": {n: task.metric_directions() for n, task in self.tasks.items()},
        }
        if t.test_split:
            # report the test split with the checkpoint chosen on the validation split
            if self.run_dir is not None and (self.run_dir / "checkpoints" / "best").exists():
                ckpt.load_weights(self.run_dir / "checkpoints" / "best", self.model, self.combiner)
            summary["test_split"] = t.test_split
            summary["test"] = self.evaluate(t.test_split)
            for name in nonfinite_metrics(summary["test"]):
                self.reporter.warn(
                    f"{t.test_split} metric {name} is {_value(summary['test'], name)}", once=f"test {name}"
                )
        if self.reporter.warnings:
            summary["warnings"] = list(self.reporter.warnings)
        return summary


#: the parts of an epoch's time (``timing`` in metrics.jsonl and the summary)
_PHASES = ("data", "compute", "eval", "write", "total")


def _value(results: dict[str, dict[str, float]], name: str) -> float:
    task, _, key = name.partition(".")
    return results[task][key]
