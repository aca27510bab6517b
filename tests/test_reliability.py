"""Reliability: non-finite training never corrupts a run, checkpoints survive crashes and bad
disks, damaged run folders are one line, two processes cannot train one run."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from mtlzoo import CheckpointError, TrainingError
from mtlzoo.apps.cli import main
from mtlzoo.runtime import checkpoint as ckpt
from mtlzoo.runtime.train import Trainer, new_run_dir


def train(zoo, spec, run_dir=None, resume=None, until=None):
    trainer = Trainer(zoo.build(spec), run_dir, resume=resume)
    return trainer, trainer.fit(until)


def all_finite(folder) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in load_file(str(folder / "weights.safetensors")).values())


def test_a_diverging_run_stops_with_one_line_and_keeps_finite_checkpoints(zoo, tmp_path, spec_factory):
    d = new_run_dir(tmp_path, "div")
    spec = spec_factory(**{"train.epochs": 3, "train.optimizer.lr": 1e6, "train.scheduler.name": "none"})
    with pytest.raises(TrainingError) as err:
        train(zoo, spec, d)
    msg = str(err.value)
    assert "\n" not in msg and ("loss is" in msg or "gradient norm" in msg or "NaN or infinite" in msg)
    for name in ("last", "best"):
        folder = d / "checkpoints" / name
        if folder.exists():
            assert all_finite(folder)
    for line in (d / "metrics.jsonl").read_text().splitlines() if (d / "metrics.jsonl").exists() else []:
        json.loads(line)  # strict JSON: NaN would not parse with parse_constant refusing it


def test_skip_policy_drops_non_finite_updates_and_counts_them(zoo, tmp_path, spec_factory):
    d = new_run_dir(tmp_path, "skip")
    spec = spec_factory(**{"train.epochs": 2, "train.nonfinite": "skip", "train.max_skips": 100})
    exp = zoo.build(spec)
    trainer = Trainer(exp, d)
    real = trainer.tasks["depth"].loss
    calls = {"n": 0}

    def sometimes_nan(pred, target):
        calls["n"] += 1
        value = real(pred, target)
        return value * float("nan") if calls["n"] == 1 else value

    trainer.tasks["depth"].loss = sometimes_nan
    summary = trainer.fit()
    first = json.loads((d / "metrics.jsonl").read_text().splitlines()[0])
    assert first["skipped_steps"] == 1 and summary["steps"] == 2 * trainer.steps_per_epoch
    assert all_finite(d / "checkpoints" / "last") and all_finite(d / "checkpoints" / "best")


def test_skipping_stops_after_max_skips_in_a_row(zoo, spec_factory):
    trainer = Trainer(zoo.build(spec_factory(**{"train.nonfinite": "skip", "train.max_skips": 2})), None)
    trainer.tasks["depth"].loss = lambda pred, target: pred.sum() * float("nan")
    with pytest.raises(TrainingError, match=r"^2 steps in a row skipped \(train.nonfinite: skip\)"):
        trainer.fit()


def test_non_finite_weights_are_never_saved_or_evaluated(zoo, tmp_path, spec_factory, capsys):
    d = new_run_dir(tmp_path, "nan")
    trainer, _ = train(zoo, spec_factory(), d)
    before = (d / "checkpoints" / "last" / "weights.safetensors").read_bytes()
    with torch.no_grad():
        next(trainer.model.parameters()).fill_(float("nan"))
    with pytest.raises(ckpt.NonFiniteWeights, match="not written: 1 of .* tensors hold NaN"):
        trainer._save("last")
    assert (d / "checkpoints" / "last" / "weights.safetensors").read_bytes() == before

    # a checkpoint that holds NaN (written by hand) is refused by eval in one line
    def poison(weights):
        key = next(k for k, v in weights.items() if v.is_floating_point())
        weights[key] = torch.full_like(weights[key], float("nan"))

    rewrite_weights(d / "checkpoints" / "best", poison)
    capsys.readouterr()  # what training printed
    assert main(["eval", str(d)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "hold NaN or infinite values" in err[0]


def test_best_and_last_share_one_epoch_numbering(zoo, tmp_path, spec_factory):
    d = new_run_dir(tmp_path, "num")
    train(zoo, spec_factory(**{"train.epochs": 2}), d)
    last = ckpt.read_state(d / "checkpoints" / "last")
    best = ckpt.read_state(d / "checkpoints" / "best")
    assert last["epoch"] == 2 and best["epoch"] == best["best"]["epoch"]


@pytest.mark.parametrize("leftover", ["tmp", "old", "both"])
def test_resume_recovers_a_checkpoint_interrupted_between_its_renames(zoo, tmp_path, spec_factory, leftover):
    spec = spec_factory(**{"train.epochs": 2})
    _, full = train(zoo, spec, new_run_dir(tmp_path, "full"))
    d = new_run_dir(tmp_path, "cut")
    train(zoo, spec, d, until=1)
    ckdir = d / "checkpoints"
    if leftover in ("old", "both"):
        shutil.copytree(ckdir / "last", ckdir / ".last.old")
    if leftover in ("tmp", "both"):
        shutil.copytree(ckdir / "last", ckdir / ".last.tmp")
    shutil.rmtree(ckdir / "last")
    _, resumed = train(zoo, spec, d, resume=ckpt.resolve_checkpoint(ckdir / "last"))
    assert resumed["final"] == full["final"]


def test_a_finished_run_without_its_summary_writes_it_on_resume(zoo, tmp_path, spec_factory):
    d = new_run_dir(tmp_path, "fin")
    spec = spec_factory(**{"train.test_split": "test"})
    _, summary = train(zoo, spec, d)
    (d / "summary.json").unlink()
    _, again = train(zoo, spec, d, resume=d / "checkpoints" / "last")
    assert json.loads((d / "summary.json").read_text())["test"] == summary["test"] == again["test"]
    with pytest.raises(CheckpointError, match="already finished"):
        train(zoo, spec, d, resume=d / "checkpoints" / "last")


def test_resume_rewrites_the_log_to_the_checkpoints_epochs(zoo, tmp_path, spec_factory):
    spec = spec_factory(**{"train.epochs": 2})
    d = new_run_dir(tmp_path, "dup")
    train(zoo, spec, d, until=1)
    with open(d / "metrics.jsonl", "a") as f:  # a crash after appending epoch 2's line, before its checkpoint
        f.write(json.dumps({"epoch": 2, "step": 99}) + "\n")
    train(zoo, spec, d, resume=d / "checkpoints" / "last")
    assert [json.loads(x)["epoch"] for x in (d / "metrics.jsonl").read_text().splitlines()] == [1, 2]


@pytest.mark.parametrize(
    "content, words",
    [
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b"[]", "holds list, not a mapping"),
        (b'{"epoch": "abc"}', "epoch is 'abc', not a count"),
        (b'{"epoch": 1, "step": 2, "rng": {"python": [1, 2, 3]}}', "scheduler or RNG state is damaged"),
    ],
)
def test_a_damaged_state_json_is_one_line(zoo, tmp_path, spec_factory, content, words, capsys):
    d = new_run_dir(tmp_path, "bad")
    train(zoo, spec_factory(**{"train.epochs": 1}), d)
    (d / "checkpoints" / "last" / "state.json").write_bytes(content)
    capsys.readouterr()  # what training printed
    assert main(["train", "--resume", str(d), "train.epochs=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err


def test_resume_with_another_optimizer_is_one_line(zoo, tmp_path, spec_factory, capsys):
    d = new_run_dir(tmp_path, "opt")
    train(zoo, spec_factory(), d)
    capsys.readouterr()  # what training printed
    assert main(["train", "--resume", str(d), "train.epochs=2", "train.optimizer.name=sgd"]) == 2
    err = capsys.readouterr().err
    assert "was trained with AdamW, this spec builds SGD" in err and err.count("\n") == 1


def test_a_run_interrupted_before_its_first_checkpoint_says_so(tmp_path, capsys):
    run = tmp_path / "early"
    run.mkdir()
    (run / "config.yaml").write_text("name: early\n")
    assert main(["train", "--resume", str(run)]) == 2
    assert "stopped before its first checkpoint" in capsys.readouterr().err


def test_a_full_disk_leaves_earlier_checkpoints_and_no_temporary_folder(
    zoo, tmp_path, spec_factory, monkeypatch
):
    d = new_run_dir(tmp_path, "full")
    trainer, _ = train(zoo, spec_factory(), d)
    before = (d / "checkpoints" / "last" / "weights.safetensors").read_bytes()

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt, "save_file", no_space)
    with pytest.raises(CheckpointError) as err:
        trainer._save("last")
    assert "cannot write the checkpoint (OSError: [Errno 28] No space left on device)" in str(err.value)
    assert "earlier checkpoints are intact" in str(err.value)
    assert not (d / "checkpoints" / ".last.tmp").exists()
    assert (d / "checkpoints" / "last" / "weights.safetensors").read_bytes() == before


def test_an_out_dir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(Exception, match=r"^train.out_dir: .*afile is a file, not a folder"):
        new_run_dir(tmp_path / "afile", "x")


def test_two_processes_cannot_train_one_run(zoo, tmp_path, spec_factory, root):
    d = new_run_dir(tmp_path, "locked")
    train(zoo, spec_factory(**{"train.epochs": 1}), d)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from mtlzoo.runtime.files import RunLock; "
            f"lock = RunLock({str(d)!r}); print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        out = subprocess.run(
            [sys.executable, "-m", "mtlzoo", "train", "--resume", str(d), "train.epochs=2"],
            capture_output=True,
            text=True,
            cwd=root,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        assert out.returncode == 2
        assert (
            out.stderr.strip()
            .splitlines()[-1]
            .startswith(f"error: {d}: in use by mtlzoo process {holder.pid}")
        )
    finally:
        holder.kill()
        holder.wait()


# -- checkpoint integrity (issue 21) --------------------------------------------------------------
def rewrite_weights(folder, change) -> None:
    """Rewrite a checkpoint's weights by hand (``change`` edits the tensor dict) and record the new
    file's checksum, as a deliberate edit would: only damage is refused, not an edit."""
    weights = load_file(str(folder / "weights.safetensors"))
    change(weights)
    save_file(weights, str(folder / "weights.safetensors"))
    state = json.loads((folder / "state.json").read_text())
    state["checksums"]["weights.safetensors"] = ckpt.sha256(folder / "weights.safetensors")
    (folder / "state.json").write_text(json.dumps(state))


def flip_bytes_mid_tensors(file) -> int:
    """XOR the lowest byte of a few float32 values in the middle of a safetensors file's tensor
    region (never a NaN: only the mantissa's last bits change); the offset changed."""
    data = bytearray(file.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")  # u64 header length, the JSON header, the tensors
    offset = start + ((len(data) - start) // 2) // 4 * 4
    for i in range(0, 16, 4):
        data[offset + i] ^= 0x5A
    file.write_bytes(bytes(data))
    return offset


def test_a_checkpoint_records_the_checksum_of_each_weights_file(zoo, tmp_path, spec_factory):
    d = new_run_dir(tmp_path, "sums")
    train(zoo, spec_factory(), d)
    for name, files in (
        ("last", ["weights.safetensors", "optimizer.safetensors"]),
        ("best", ["weights.safetensors"]),
    ):
        folder = d / "checkpoints" / name
        state = json.loads((folder / "state.json").read_text())
        assert state["checksums"] == {f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in files}


def test_flipped_bytes_in_the_weights_are_one_line_naming_the_file(zoo, tmp_path, spec_factory, capsys):
    import mtlzoo

    d = new_run_dir(tmp_path, "flip")
    train(zoo, spec_factory(), d)
    best = d / "checkpoints" / "best" / "weights.safetensors"
    before = {k: v.clone() for k, v in load_file(str(best)).items()}  # load_file may map the file
    flip_bytes_mid_tensors(best)
    after = load_file(str(best))  # still a readable file, and every value finite: only the checksum tells
    assert all(bool(torch.isfinite(v).all()) for v in after.values() if v.is_floating_point())
    assert any(not torch.equal(before[k], after[k]) for k in before)
    capsys.readouterr()  # what training printed
    assert main(["eval", str(d)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{best}: damaged, its bytes differ from those saved" in err[0], err
    with pytest.raises(CheckpointError, match="damaged, its bytes differ"):
        mtlzoo.load(d)
    # the optimizer's file is checked on resume
    flip_bytes_mid_tensors(d / "checkpoints" / "last" / "optimizer.safetensors")
    assert main(["train", "--resume", str(d), "train.epochs=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "last/optimizer.safetensors: damaged" in err[0], err


def test_a_checkpoint_saved_without_checksums_still_loads(zoo, tmp_path, spec_factory):
    d = new_run_dir(tmp_path, "old")
    trainer, _ = train(zoo, spec_factory(), d)
    folder = d / "checkpoints" / "best"
    state = json.loads((folder / "state.json").read_text())
    del state["checksums"]
    (folder / "state.json").write_text(json.dumps(state))
    assert ckpt.load_weights(folder, trainer.model) == folder


# -- resume: NaN weights, read-only folders, the lock, file modes (issue 21) ----------------------
def test_resume_refuses_a_checkpoint_with_nan_weights_in_one_line(zoo, tmp_path, spec_factory, capsys):
    d = new_run_dir(tmp_path, "nanresume")
    train(zoo, spec_factory(), d)

    def poison(weights):
        key = next(k for k, v in weights.items() if v.is_floating_point())
        weights[key][..., 0] = float("nan")

    rewrite_weights(d / "checkpoints" / "last", poison)
    capsys.readouterr()  # what training printed
    assert main(["train", "--resume", str(d), "train.epochs=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "hold NaN or infinite values" in err[0] and "cannot be resumed" in err[0], err
    assert ckpt.read_state(d / "checkpoints" / "last")["epoch"] == 1  # nothing was trained or saved


def test_resume_on_a_read_only_run_folder_is_one_line(zoo, tmp_path, spec_factory, monkeypatch, capsys):
    from mtlzoo.runtime import files

    d = new_run_dir(tmp_path, "ro")
    train(zoo, spec_factory(), d)

    def read_only(path, *args, **kwargs):  # what open() meets on a read-only disk (root ignores chmod)
        raise OSError(30, "Read-only file system", str(path))

    monkeypatch.setattr(files, "open", read_only, raising=False)
    capsys.readouterr()  # what training printed
    assert main(["train", "--resume", str(d), "train.epochs=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{d}: cannot write its lock file .lock" in err[0] and "Read-only" in err[0], err


def test_a_finished_run_keeps_no_lock_file(zoo, tmp_path, spec_factory):
    d = new_run_dir(tmp_path, "unlocked")
    train(zoo, spec_factory(), d)
    assert not (d / ".lock").exists()
    # and the lock is taken again on resume, released again at the end
    train(zoo, spec_factory(**{"train.epochs": 2}), d, resume=d / "checkpoints" / "last")
    assert not (d / ".lock").exists()


def test_a_lock_on_a_removed_lock_file_is_taken_again(tmp_path):
    from mtlzoo.runtime.files import RunLock

    first = RunLock(tmp_path)
    first.release()  # removes .lock
    second = RunLock(tmp_path)
    assert (tmp_path / ".lock").read_text() == f"mtlzoo process {os.getpid()}\n"
    with pytest.raises(CheckpointError, match="in use by mtlzoo process"):
        RunLock(tmp_path)  # flock is per open file: a second open in one process conflicts too
    second.release()


def test_run_files_get_the_umask_permissions(zoo, tmp_path, spec_factory):
    old = os.umask(0o022)
    try:
        d = new_run_dir(tmp_path, "modes")
        train(zoo, spec_factory(), d)
        os.umask(0o027)
        from mtlzoo.runtime.files import write_atomic

        assert stat.S_IMODE(write_atomic(tmp_path / "x.json", "{}").stat().st_mode) == 0o640
    finally:
        os.umask(old)
    files = [d / "config.yaml", d / "summary.json", d / "metrics.csv", d / "model.json", d / "metrics.jsonl"]
    files += [d / "checkpoints" / n / "state.json" for n in ("last", "best")]
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


def test_spec_yaml_keeps_a_relative_data_root_relative_to_the_folder_it_is_written_to(zoo, tmp_path):
    import yaml

    from mtlzoo.runtime.files import spec_yaml

    (tmp_path / "configs" / "camvid").mkdir(parents=True)
    spec = tmp_path / "configs" / "camvid" / "spec.yaml"
    base = dict(
        name="rel",
        model={"backbone": {"name": "cnn"}},
        tasks={"semseg": {"type": "segmentation"}},
        combiner={"name": "sum"},
        data={"name": "camvid", "root": "../../data/camvid"},
    )
    spec.write_text(yaml.safe_dump(base))
    cfg = zoo.spec(spec)
    assert cfg.data.root == str(tmp_path / "data" / "camvid")  # resolved against the spec's folder
    run = tmp_path / "runs" / "deep" / "rel"
    run.mkdir(parents=True)
    text = spec_yaml(cfg, run, {"data.root": cfg.data.root})
    assert yaml.safe_load(text)["data"]["root"] == "../../../data/camvid"  # relative, to the run folder
    (run / "config.yaml").write_text(text)
    assert zoo.spec(run / "config.yaml").data.root == cfg.data.root  # the zoo finds the same data
    assert yaml.safe_load(spec_yaml(cfg))["data"]["root"] == cfg.data.root  # without them: as validated
