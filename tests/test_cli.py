"""The `mtlzoo` command: every subcommand, --help, one-line errors, --debug."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import HEAVY_MODULES, assert_process_gone

from mtlzoo.apps.cli import main


def write_spec(tmp_path, spec) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["train"],
        ["eval"],
        ["list"],
        ["plugins"],
        ["config"],
        ["config", "show"],
        ["data"],
        ["data", "check"],
        ["check"],
        ["bench"],
    ],
)
def test_help_of_every_command(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    assert "usage: mtlzoo" in capsys.readouterr().out


def test_train_prints_per_task_table_and_writes_run(tmp_path, capsys, spec_factory):
    spec = write_spec(tmp_path, spec_factory(**{"train.out_dir": str(tmp_path / "runs")}))
    assert main(["train", spec, "train.run_name=cli"]) == 0
    out = capsys.readouterr().out
    assert "| semseg | miou (higher is better)" in out
    assert "\ntiny: 1 epoch in " in out  # not "1 epochs"
    assert "| depth  | abs_err (lower is better)" in out
    assert (tmp_path / "runs" / "cli" / "summary.json").is_file()
    # eval of the run folder reproduces the summary
    assert (
        main(
            [
                "eval",
                str(tmp_path / "runs" / "cli"),
                "--json",
                "--checkpoint",
                str(tmp_path / "runs" / "cli" / "checkpoints" / "last"),
            ]
        )
        == 0
    )
    ev = json.loads(capsys.readouterr().out)
    summary = json.loads((tmp_path / "runs" / "cli" / "summary.json").read_text())
    assert ev["metrics"] == summary["final"] and ev["split"] == "val"
    # resume with more epochs continues the same folder
    assert main(["train", "--resume", str(tmp_path / "runs" / "cli"), "train.epochs=2"]) == 0
    lines = (tmp_path / "runs" / "cli" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]


def test_eval_of_a_spec_needs_a_checkpoint(tmp_path, capsys, spec_factory):
    spec = write_spec(tmp_path, spec_factory())
    assert main(["eval", spec]) == 2
    assert capsys.readouterr().err.startswith("error: eval: give a run folder, or a spec with --checkpoint")
    assert main(["eval", spec, "--checkpoint", str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err


def test_config_show_prints_resolved_spec(tmp_path, capsys, spec_factory):
    spec = write_spec(tmp_path, spec_factory())
    assert main(["config", "show", spec, "train.epochs=7"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["train"]["epochs"] == 7 and shown["tasks"]["semseg"]["head"]["name"] == "fcn"


def test_unknown_key_is_one_line_error_and_debug_shows_traceback(tmp_path, capsys, spec_factory):
    spec = write_spec(tmp_path, spec_factory(**{"train.epohcs": 2}))
    assert main(["config", "show", spec]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: train.epohcs: unknown option")
    assert "Traceback" not in err
    from mtlzoo import ConfigError

    with pytest.raises(ConfigError):
        main(["config", "show", spec, "--debug"])


def test_misspelled_backbone_is_one_line(tmp_path, capsys, spec_factory):
    spec = write_spec(tmp_path, spec_factory(**{"model.backbone": {"name": "timm", "arch": "resnet81"}}))
    assert main(["train", spec]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "resnet18" in err[0] and err[0].startswith("error:")


def test_list_backbones_shows_timm_and_smp(capsys):
    assert main(["list", "backbone"]) == 0
    out = capsys.readouterr().out
    assert "  timm " in out and "  smp " in out and "  cnn " in out
    assert main(["list", "backbone", "timm:resnet1*", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    timm_row = next(r for r in rows if r["name"] == "timm")
    assert "resnet18" in timm_row["variants"] and all(v.startswith("resnet1") for v in timm_row["variants"])
    assert main(["list", "combiner", "w*"]) == 0
    assert "weighted" in capsys.readouterr().out


def test_list_every_kind(capsys):
    assert main(["list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {
        "backbone",
        "head",
        "loss",
        "combiner",
        "dataset",
        "metric",
        "task",
        "target_kind",
        "architecture",
    }
    assert all(data[k] for k in data)


def test_plugins_command_lists_builtin_plugins(capsys):
    assert main(["plugins", "--json"]) == 0
    records = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert records["builtin_combiners"]["registered"]["combiner"][:2] == ["sum", "weighted"]
    assert records["builtin_combiners"]["distribution"] == "mtlzoo"


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "mtlzoo", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "train" in out.stdout
    import shutil

    script = shutil.which("mtlzoo", path=str(Path(sys.executable).parent))
    assert script and subprocess.run([script, "list", "task"], capture_output=True, text=True).returncode == 0


def test_check_command_runs_the_conformance_kit(capsys):
    assert main(["check", "builtin_targets", "builtin_tasks"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("builtin_targets: ok") and "builtin_tasks: ok" in out
    assert "ok   target_kind 'depth' (plugin builtin_targets): target_kind.transforms" in out
    assert main(["check", "no_such_plugin", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)[0]
    assert report["ok"] is False and "no plugin named 'no_such_plugin'" in report["results"][0]["message"]


def test_list_shows_targets_and_option_names(capsys):
    assert main(["list", "loss", "ce", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["targets"] == ["segmentation", "class"] and row["options"] == [
        "class_weights",
        "label_smoothing",
    ]


@pytest.mark.parametrize("args", [["list"], ["plugins"], ["config", "show", "configs/quickstart.yaml"]])
def test_commands_that_only_read_plugins_never_import_torch(args, root):
    code = (
        f"import sys; from mtlzoo.apps.cli import main; rc = main({args!r}); "
        f"print('HEAVY', sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules)); sys.exit(rc)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "HEAVY []"


def test_command_speed_script_writes_its_table(tmp_path, root):
    out = subprocess.run(
        [
            sys.executable,
            "benchmarks/command_speed.py",
            "--repeats",
            "1",
            "--limit",
            "600",
            "--out",
            str(tmp_path / "speed.md"),
        ],
        capture_output=True,
        text=True,
        cwd=root,
    )
    assert out.returncode == 0, out.stderr
    table = (tmp_path / "speed.md").read_text()
    assert "| `mtlzoo list combiner` |" in table and "one-line error" in table and "load average" in table


def test_the_readme_states_the_demo_time_that_demo_table_checks(root):
    import importlib.util

    spec = importlib.util.spec_from_file_location("demo_table", root / "benchmarks" / "demo_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # measured on this project's 2-core AMD EPYC with `demo_table.py --check-time`
    assert module.readme_minutes((root / "README.md").read_text()) == (1, "AMD EPYC")
    with pytest.raises(SystemExit, match="no 'about N min"):
        module.readme_minutes("make demo   # trains the quickstart")


def run_as_group(argv: list[str], cwd, timeout: float) -> tuple[int, str, str]:
    """Run ``argv`` in a process session of its own; on timeout, kill the whole group (the
    command and every process it started, e.g. demo_table.py's `mtlzoo train`) and re-raise."""
    import os
    import signal

    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return proc.returncode, stdout, stderr


def test_a_timed_out_command_leaves_no_process_behind(tmp_path):
    pid_file = tmp_path / "grandchild"
    script = (
        "import subprocess, sys, time; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
        f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(120)"
    )
    with pytest.raises(subprocess.TimeoutExpired):
        run_as_group([sys.executable, "-c", script], tmp_path, timeout=5)
    assert_process_gone(int(pid_file.read_text()))  # the grandchild too


@pytest.mark.slow
def test_the_readme_demo_table_is_what_make_demo_prints(root):
    # the README's digits on the CPU they were recorded on, its measured tolerances on any other
    # (tests/test_demo_table.py); a timeout ends the script and its `mtlzoo train` child
    rc, stdout, stderr = run_as_group([sys.executable, "benchmarks/demo_table.py", "--check"], root, 1800)
    assert rc == 0, stdout + stderr[-2000:]


def test_list_headings_are_plurals(capsys):
    assert main(["list"]) == 0
    headings = [
        line.split(" (")[0] for line in capsys.readouterr().out.splitlines() if not line.startswith(" ")
    ]
    assert headings == [
        "backbones",
        "heads",
        "losses",
        "combiners",
        "datasets",
        "metrics",
        "tasks",
        "target_kinds",
        "architectures",
    ]


def test_counts_are_pluralised():
    from mtlzoo.apps.words import count, plural

    assert [count(1, "epoch"), count(2, "epoch"), count(0, "epoch")] == ["1 epoch", "2 epochs", "0 epochs"]
    assert [plural("loss"), plural("head"), plural("target_kind")] == ["losses", "heads", "target_kinds"]


def test_a_range_whose_ends_read_the_same_is_one_value():
    from mtlzoo.apps.words import span

    assert [span(2.51, 2.54), span(2.5, 3.14), span(8.0, 12.0, ".0f")] == ["2.5", "2.5-3.1", "8-12"]


@pytest.mark.parametrize(
    "args, hint",
    [
        (["--epochs", "1"], "train.epochs=1"),
        (["--epochs=1"], "train.epochs=1"),
        (["--batch-size", "4", "--lr", "0.1"], "train.batch_size=4 train.optimizer.lr=0.1"),
        (["--seed", "3"], "seed=3"),
        (["--epochs"], "train.epochs=VALUE"),
    ],
)
def test_an_option_that_is_a_spec_key_hints_the_override(root, capsys, args, hint):
    with pytest.raises(SystemExit) as exc:
        main(["train", str(root / "configs" / "quickstart.yaml"), *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        err
        == f"mtlzoo: error: unrecognized arguments: {' '.join(args)} (spec keys are set as overrides: {hint})"
    )


def test_an_unknown_option_that_is_no_spec_key_gets_no_hint(root, capsys):
    with pytest.raises(SystemExit):
        main(["train", str(root / "configs" / "quickstart.yaml"), "--fast"])
    assert capsys.readouterr().err.strip().splitlines()[-1] == "mtlzoo: error: unrecognized arguments: --fast"


def test_interrupted_starts_a_new_line(monkeypatch, capsys):
    import mtlzoo.apps.cli as cli

    def interrupted(args):
        print("epoch 1/4:  40%|####      | 12/30", end="", file=sys.stderr)  # a progress bar mid-line
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_list", interrupted)
    assert main(["list"]) == 130
    assert capsys.readouterr().err.endswith("12/30\ninterrupted\n")
