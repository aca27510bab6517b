"""Trainer: fit, evaluate, checkpoint, log. Knows no concrete plugin.

A run folder holds::

    config.yaml      the resolved, validated spec
    metrics.jsonl    one JSON line per evaluation (and per-epoch training losses)
    summary.json     final metrics, best epoch, parameter counts, timing
    checkpoints/last checkpoints/best   (see mtlzoo.checkpoint)
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..contract import checks
from ..contract.combine import Step
from ..contract.errors import CheckpointError, ConfigError, DataError, PluginError, TrainingError, one_line
from . import checkpoint as ckpt
from . import distributed as D
from .experiment import Experiment
from .files import RunLock, close_inherited_locks, json_safe, spec_yaml, write_atomic, write_json
from .monitor import Monitor, write_csv
from .optim import build_optimizer, shared_batchnorms
from .predictor import CARD


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _worker_init(worker_id: int) -> None:
    close_inherited_locks()  # a killed trainer's orphaned workers must not hold its run's lock
    # augmentation draws from per-sample generators; this seeds what a dataset plugin might
    # draw from Python's or NumPy's global generators, distinctly per worker
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def lr_factor(cfg: DictConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Learning-rate multiplier at optimisation ``step``: linear warm-up, then the schedule."""
    s = cfg.train.scheduler
    warmup = int(round(s.warmup_epochs * steps_per_epoch))
    if warmup and step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total_steps - warmup)
    base = cfg.train.optimizer.lr
    if s.name == "cosine":
        floor = s.min_lr / base
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    if s.name == "step":
        return s.gamma ** ((step // steps_per_epoch) // max(1, s.step_epochs))
    if s.name == "poly":
        return (1 - min(t, 1.0)) ** s.power
    return 1.0


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":  # never fp16: combiners own the backward pass, so nothing scales the loss
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16


def _to(batch: dict[str, Tensor], device: torch.device, channels_last: bool) -> dict[str, Tensor]:
    out = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
    if channels_last:
        out["image"] = out["image"].contiguous(memory_format=torch.channels_last)
    return out


def new_run_dir(out_dir: str | Path, name: str) -> Path:
    """A fresh run folder ``out_dir/name`` (``name-2``, ``name-3``... if taken): never reuses one."""
    base = Path(out_dir)
    if base.exists() and not base.is_dir():
        raise ConfigError(f"train.out_dir: {base} is a file, not a folder; point train.out_dir at a folder")
    try:
        base.mkdir(parents=True, exist_ok=True)
        for i in range(1, 10_000):
            candidate = base / (name if i == 1 else f"{name}-{i}")
            try:
                candidate.mkdir()
                return candidate
            except FileExistsError:
                continue
    except OSError as exc:
        raise ConfigError(f"train.out_dir: cannot create a run folder in {base} ({one_line(exc)})") from None
    raise ConfigError(f"train.out_dir: could not find a free run folder for {name!r} in {base}")


class Trainer:
    """Trains a built :class:`~mtlzoo.runtime.experiment.Experiment`.

    Args:
        exp: what :meth:`mtlzoo.Zoo.build` returned.
        run_dir: the run folder (created by the CLI); ``None`` writes nothing.
        resume: a checkpoint (folder) to continue from: model, combiner, optimizer,
            scheduler, RNG states and the epoch counter are restored.
    """

    def __init__(self, exp: Experiment, run_dir: str | Path | None = None, resume: str | Path | None = None):
        self.exp = exp
        self.cfg = exp.cfg
        t = self.cfg.train
        self.device = D.local_device(t.device)
        self.distributed = D.setup(self.device)
        self.main = D.is_main()
        seed_everything(int(self.cfg.seed))
        if t.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            # deterministic mode also NaN-fills every new tensor: pure memory traffic, no benefit here
            torch.utils.deterministic.fill_uninitialized_memory = False
        self.model = exp.model.to(self.device)
        if t.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.combiner = exp.combiner.to(self.device)
        D.broadcast_module(self.model)
        D.broadcast_module(self.combiner)
        self.tasks = exp.tasks
        for task in self.tasks.values():
            task.loss.to(self.device)
            for m in task.metrics.values():
                m.to(self.device)
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
        self.amp_dtype = _amp_dtype(t.amp, self.device)
        self.optimizer = build_optimizer(self.cfg, self.model, self.combiner)
        self.frozen_bn = shared_batchnorms(self.model) if t.optimizer.freeze_bn else []
        self.train_set = exp.dataset("train")
        self.train_loader = self._loader(self.train_set, train=True)
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
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.lock = RunLock(self.run_dir) if self.run_dir is not None and self.main else None
        self.monitor = Monitor(self.run_dir, t.tensorboard, t.tensorboard_images_every, self.main, t.progress)
        self.select_task, self.select_key = self._selection()
        if resume is not None:
            self._resume(resume)
        if self.run_dir is not None and self.main:
            write_atomic(self.run_dir / "config.yaml", spec_yaml(self.cfg))
            write_json(self.run_dir / CARD, self.exp.card())

    # -- set-up ---------------------------------------------------------------------------
    def _loader(self, dataset: Any, train: bool) -> DataLoader:
        t = self.cfg.train
        sampler = D.ShardedSampler(
            len(dataset), seed=int(self.cfg.seed), shuffle=train, drop_last=train, keyed=train
        )
        pin = t.pin_memory if t.pin_memory is not None else self.device.type == "cuda"
        batch = t.batch_size if train else (t.eval_batch_size or t.batch_size)
        return DataLoader(
            dataset,
            batch_size=batch,
            sampler=sampler,
            num_workers=t.num_workers,
            pin_memory=pin,
            persistent_workers=t.num_workers > 0,
            worker_init_fn=_worker_init,
            drop_last=False,
            generator=torch.Generator().manual_seed(int(self.cfg.seed)),
        )

    def _selection(self) -> tuple[str, str]:
        select = self.cfg.train.select
        if select is None:
            first = next(iter(self.tasks.values()))
            if not first.metrics:
                return first.name, "loss"
            return first.name, next(iter(first.metrics))
        task, _, key = select.partition(".")
        if task not in self.tasks or (key not in self.tasks[task].metrics and key != "loss"):
            options = [f"{n}.{k}" for n, tk in self.tasks.items() for k in [*tk.metrics, "loss"]]
            raise ConfigError(
                f"train.select: {select!r} is not a task metric; choose one of {', '.join(options)}"
            )
        return task, key

    def _resume(self, path: str | Path) -> None:
        folder = ckpt.load_weights(path, self.model, self.combiner)
        state = ckpt.load_training_state(folder, self.optimizer, self.scheduler)
        self.epoch = int(state.get("epoch", 0))
        self.global_step = int(state.get("step", 0))
        self.best = state.get("best", {})
        self.history = [r for r in state.get("history", []) if int(r.get("epoch", 0)) <= self.epoch]
        if self.run_dir is not None and self.main:
            # the log holds exactly the checkpoint's epochs: a crash between appending a line
            # and saving the checkpoint leaves no duplicate after the epoch is trained again
            lines = "".join(json.dumps(json_safe(r)) + "\n" for r in self.history)
            write_atomic(self.run_dir / "metrics.jsonl", lines)
        if self.epoch >= self.cfg.train.epochs and (
            self.run_dir is None or (self.run_dir / "summary.json").is_file()
        ):
            raise CheckpointError(
                f"{folder}: the run already finished its {self.cfg.train.epochs} epochs; raise train.epochs to go on"
            )

    # -- training -------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _task_loss(self, task: Any, pred: Tensor, target: Tensor) -> Tensor:
        loss = task.loss(pred.float(), target)
        if not (torch.is_tensor(loss) and loss.dim() == 0):
            shape = list(loss.shape) if torch.is_tensor(loss) else type(loss).__name__
            raise PluginError(
                f"tasks.{task.name}.loss: {task.labels.get('loss', 'the loss')} returned {shape}; a "
                f"loss returns a scalar tensor"
            )
        return loss

    def compute_losses(
        self, batch: dict[str, Tensor]
    ) -> tuple[list[Tensor] | None, dict[str, Tensor], dict[str, Tensor]]:
        """Forward one batch: the shared representation (or ``None``), predictions and per-task
        losses (deep-supervision losses added with the architecture's ``aux_weight``)."""
        images = batch["image"]
        with self._autocast():
            out = self.model.forward_train(images)
        aux_weight = float(getattr(self.model, "aux_weight", 0.0))
        losses = {}
        for name, task in self.tasks.items():
            if task.target not in batch:
                raise DataError(
                    f"tasks.{name}: the batch has no target {task.target!r} (keys: {sorted(batch)})"
                )
            target = batch[task.target]
            loss = self._task_loss(task, out.preds[name], target)
            aux = out.aux.get(name) or []
            if aux and aux_weight:
                loss = loss + aux_weight * torch.stack([self._task_loss(task, a, target) for a in aux]).mean()
            reg = out.regularizers.get(name)
            if reg is not None:
                loss = loss + reg.float()
            losses[name] = loss
        return out.shared, out.preds, losses

    def train_step(self, batch: dict[str, Tensor]) -> tuple[dict[str, float], dict[str, float]]:
        """One optimisation step; returns per-task losses and the combiner's logs."""
        self.model.train()
        for m in self.frozen_bn:  # train.optimizer.freeze_bn: running statistics stay as loaded
            m.eval()
        batch = _to(batch, self.device, self.cfg.train.channels_last)
        shared, _, losses = self.compute_losses(batch)
        # one device-to-host copy for all tasks (not one sync per task): the NaN check and the log
        host = torch.stack([loss.detach().float() for loss in losses.values()]).cpu().tolist()
        for name, value in zip(losses, host):
            if not math.isfinite(value):
                self._nonfinite(
                    f"task {name!r}: loss is {value} at step {self.global_step}; lower train.optimizer.lr "
                    f"or check the targets of {self.tasks[name].target!r} (`mtlzoo data check SPEC`)"
                )
                return None, {}
        step = Step(
            losses,
            shared,
            self.model.shared_parameters(),
            {t: self.model.task_parameters(t) for t in self.tasks},
            step=self.global_step,
            epoch=self.epoch,
        )
        logs = self.combiner.backward(losses, step) or {}
        if not self._checked_gradients:
            self._check_gradients()
        if self.distributed:
            D_params = [p for p in self.combiner.parameters() if p.grad is not None]
            for p in D_params:
                D.all_reduce_sum(p.grad).div_(D.world_size())
        grads = [
            p.grad for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None
        ]
        norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
        if not math.isfinite(float(norm)):  # one host sync; a non-finite update is never applied
            self.optimizer.zero_grad(set_to_none=True)
            self._nonfinite(
                f"the gradient norm is {float(norm)} at step {self.global_step}; lower "
                f"train.optimizer.lr or set train.grad_clip"
            )
            return None, {}
        self.skipped_in_a_row = 0
        if self.cfg.train.grad_clip:
            torch.nn.utils.clip_grads_with_norm_(grads, self.cfg.train.grad_clip, norm)
        self.optimizer.step()
        if self.combiner.needs_losses_after_step:  # FAMO: the same batch's losses after the update
            with torch.no_grad():
                _, _, after = self.compute_losses(batch)
            self.combiner.after_step({k: v.detach() for k, v in after.items()})
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        return dict(zip(losses, host)), {k: float(v) for k, v in logs.items()}

    def _nonfinite(self, reason: str) -> None:
        """A step whose loss or gradient is not finite: stop, or skip it (``train.nonfinite``)."""
        t = self.cfg.train
        if t.nonfinite == "stop":
            raise TrainingError(reason + self._last_good())
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
        """After the first step: every trainable shared parameter got a gradient."""
        checks.shared_gradients(
            self.model.named_shared_parameters(), f"combiner: {self.exp.labels.get('combiner', '?')}"
        )
        self._checked_gradients = True

    def fit(self, until_epoch: int | None = None) -> dict[str, Any]:
        """Train for ``train.epochs`` epochs (or stop after ``until_epoch``, leaving a run that
        ``--resume`` continues), evaluating and checkpointing as configured; return the
        summary (also written to ``summary.json``)."""
        t = self.cfg.train
        started = time.time()
        last = t.epochs if until_epoch is None else min(until_epoch, t.epochs)
        for done, epoch in enumerate(range(self.epoch, last), 1):
            epoch_started = time.time()
            self.epoch = epoch  # epochs done so far, while this one trains
            skipped = self.skipped
            train_log = self._train_epoch(epoch)
            self.epoch = epoch + 1  # one numbering everywhere: epochs completed
            self._require_finite(f"after epoch {epoch + 1}")
            record: dict[str, Any] = {"epoch": epoch + 1, "step": self.global_step, "train": train_log}
            if self.skipped > skipped:
                record["skipped_steps"] = self.skipped - skipped
            if (epoch + 1) % t.eval_every == 0 or epoch + 1 == t.epochs:
                results = self.evaluate(t.eval_split)
                record[t.eval_split] = results
                self._update_best(epoch + 1, results)
            record["time"] = round(time.time() - started, 3)
            self.history.append(record)
            self._log(record)
            eta = (time.time() - started) / done * (last - epoch - 1)
            self._report(record, time.time() - epoch_started, eta)
            if (epoch + 1) % t.checkpoint_every == 0 or epoch + 1 == last:
                self._save("last")
        summary = self._summary(time.time() - started)
        if self.run_dir is not None and self.main:
            write_json(self.run_dir / "summary.json", summary)
        D.barrier()
        self.monitor.close()
        if self.lock is not None:
            self.lock.release()
        return summary

    def _report(self, record: dict[str, Any], seconds: float, eta: float) -> None:
        """The epoch's console line, metrics.csv, TensorBoard scalars and pictures."""
        if not self.main:
            return
        if self.run_dir is not None:
            write_csv(self.run_dir / "metrics.csv", self.history)
        self.monitor.epoch(record, self.cfg.train.epochs, self.cfg.train.eval_split, seconds, eta)
        if self.monitor.wants_images:
            self.monitor.images(record["epoch"], record["step"], self._pictures())

    @torch.no_grad()
    def _pictures(self, count: int = 2) -> dict[str, Any]:
        """Pictures of the first validation images' predictions (kinds with ``render``)."""
        import numpy as np

        dataset = self.exp.dataset(self.cfg.train.eval_split)
        samples = [dataset[i] for i in range(min(count, len(dataset)))]
        if not samples:
            return {}
        self.model.eval()
        images = torch.stack([s["image"] for s in samples]).to(self.device)
        preds = self.model(images)
        out = {}
        for name, task in self.tasks.items():
            kind, info = task.kind, task.info.target_info
            if kind.render is None:
                continue
            for i in range(len(samples)):
                value = preds[name][i].float().cpu()
                value = kind.decode(value, info) if kind.decode else value
                out[f"{self.cfg.train.eval_split}/{name}/{i}"] = np.asarray(kind.render(value, info))
        return out

    def _require_finite(self, when: str) -> None:
        """Stop before a model with NaN or infinite weights is evaluated or saved."""
        try:
            ckpt.check_finite(self.model, f"the model {when}")
        except ckpt.NonFiniteWeights as exc:
            raise TrainingError(
                f"{exc}; lower train.optimizer.lr or set train.grad_clip" + self._last_good()
            ) from None

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        sampler = self.train_loader.sampler
        sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        sums: dict[str, float] = {}
        logs_sum: dict[str, float] = {}
        n = 0
        bar = self._progress(self.steps_per_epoch, f"epoch {epoch + 1}/{self.cfg.train.epochs}")
        for i, batch in enumerate(self.train_loader):
            if i >= self.steps_per_epoch:
                break
            losses, logs = self.train_step(batch)
            if losses is None:  # skipped (train.nonfinite: skip)
                if bar is not None:
                    bar.update(1)
                continue
            n += 1
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v
            for k, v in logs.items():
                logs_sum[k] = logs_sum.get(k, 0.0) + v
            if bar is not None:
                bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()}, refresh=False)
                bar.update(1)
        if bar is not None:
            bar.close()
        out: dict[str, Any] = {
            "loss": {k: v / max(n, 1) for k, v in sums.items()},
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        if logs_sum:
            out["combiner"] = {k: v / max(n, 1) for k, v in logs_sum.items()}
        return out

    def _progress(self, total: int, desc: str) -> Any:
        if not (self.cfg.train.progress and self.main):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)

    @torch.no_grad()
    def evaluate(
        self, split: str | None = None, loader: Iterable | None = None
    ) -> dict[str, dict[str, float]]:
        """Metrics of every task over a whole split (exact, reduced over ranks), plus its mean loss."""
        split = split or self.cfg.train.eval_split
        if loader is None:
            loader = self._loader(self.exp.dataset(split), train=False)
        self.model.eval()
        for task in self.tasks.values():
            for m in task.metrics.values():
                m.reset()
        loss_sum = torch.zeros(len(self.tasks) + 1, dtype=torch.float64)
        for batch in loader:
            batch = _to(batch, self.device, self.cfg.train.channels_last)
            images = batch["image"]
            with self._autocast():
                preds = self.model(images)
            n = images.shape[0]
            for i, (name, task) in enumerate(self.tasks.items()):
                pred = preds[name].float()
                target = batch[task.target]
                loss_sum[i] += float(task.loss(pred, target)) * n
                for m in task.metrics.values():
                    m.update(pred, target)
            loss_sum[-1] += n
        D.all_reduce_sum(loss_sum)
        if loss_sum[-1] == 0:
            raise DataError(f"data: the {split!r} split is empty; nothing to evaluate")
        results: dict[str, dict[str, float]] = {}
        for i, (name, task) in enumerate(self.tasks.items()):
            results[name] = {k: float(m.compute()) for k, m in task.metrics.items()}
            results[name]["loss"] = float(loss_sum[i] / loss_sum[-1])
        return results

    def _update_best(self, epoch: int, results: dict[str, dict[str, float]]) -> None:
        value = results[self.select_task][self.select_key]
        if not math.isfinite(value):  # a NaN metric is never the best
            return
        higher = (
            self.select_key != "loss"
            and self.tasks[self.select_task].metrics[self.select_key].higher_is_better
        )
        better = not self.best or (value > self.best["value"] if higher else value < self.best["value"])
        if better:
            self.best = {
                "epoch": epoch,
                "metric": f"{self.select_task}.{self.select_key}",
                "value": value,
                "results": results,
            }
            self._save("best")

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

    def _log(self, record: dict[str, Any]) -> None:
        if self.run_dir is None or not self.main:
            return
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(json_safe(record)) + "\n")

    def _summary(self, seconds: float) -> dict[str, Any]:
        t = self.cfg.train
        final = next((r[t.eval_split] for r in reversed(self.history) if t.eval_split in r), {})
        summary: dict[str, Any] = {
            "name": self.cfg.name,
            "epochs": t.epochs,
            "steps": self.global_step,
            "seconds": round(seconds, 2),
            "device": str(self.device),
            "world_size": D.world_size(),
            "parameters": self.model.num_parameters(),
            "eval_split": t.eval_split,
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
        return summary


def format_table(
    results: dict[str, dict[str, float]], directions: dict[str, dict[str, bool]] | None = None
) -> str:
    """A per-task metrics table (markdown-compatible) for the terminal."""
    rows = [("task", "metric", "value")]
    for task, metrics in results.items():
        for key, value in metrics.items():
            arrow = ""
            if directions and key in directions.get(task, {}):
                arrow = " (higher is better)" if directions[task][key] else " (lower is better)"
            rows.append((task, key + arrow, f"{value:.4f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
