"""Separate packages installed with pip: the example package (one part of every kind, and its
own conformance tests), the broken one (isolation, and one broken part per contract), and
packages that try to take a built-in name under entry-point names sorting either side of mtlzoo's."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# every test runs `mtlzoo` in a fresh process against packages pip-installed for the module
pytestmark = pytest.mark.slow


def pip_install(target: Path, *packages: Path) -> None:
    for pkg in packages:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                "--no-index",
                "--target",
                str(target),
                str(pkg),
            ],
            check=True,
            capture_output=True,
            text=True,
        )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """pip-install both example packages into a private folder put on PYTHONPATH."""
    target = tmp_path_factory.mktemp("site")
    pip_install(target, ROOT / "plugins" / "mtlzoo-example", ROOT / "plugins" / "mtlzoo-broken")
    return target


def mtlzoo(
    site: Path, *args: str, env: dict | None = None, module: str = "mtlzoo"
) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MTLZOO_")}
    full_env.update({"PYTHONPATH": str(site), "OMP_NUM_THREADS": "1", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=full_env,
        timeout=600,
    )


def test_plugins_lists_installed_packages_failures_and_refusals(site):
    out = mtlzoo(site, "plugins", "--json")
    assert out.returncode == 0, out.stderr
    records = {r["name"]: r for r in json.loads(out.stdout)}
    ex = records["example"]
    assert (ex["distribution"], ex["version"], ex["status"], ex["builtin"]) == (
        "mtlzoo-example",
        "0.3.0",
        "loaded",
        False,
    )
    assert ex["registered"] == {
        "architecture": ["task_adapters"],
        "backbone": ["tiny_convnet"],
        "head": ["tiny_head"],
        "loss": ["soft_dice"],
        "combiner": ["max_weighted"],
        "dataset": ["stripes"],
        "metric": ["saliency_mae"],
        "task": ["saliency"],
        "target_kind": ["saliency"],
    }
    assert ex["refused"] == []
    assert records["broken_import"]["status"] == "failed"
    assert "mtlzoo_dependency_that_is_not_installed" in records["broken_import"]["error"]
    assert records["broken_register"]["status"] == "failed"
    assert "something inside the plugin went wrong" in records["broken_register"]["error"]
    assert (
        records["broken_hook"]["status"] == "failed" and "register_haeds" in records["broken_hook"]["error"]
    )
    parts = records["broken_parts"]
    assert parts["status"] == "loaded"
    refused = "\n".join(parts["refused"])
    assert "combiner 'sum' is a built-in name" in refused
    assert "loss 'loss_without_task' (plugin broken_parts): factory" in refused
    assert "combiner 'bad_default' (plugin broken_parts): options BadDefault: invalid default" in refused
    heads = json.loads(mtlzoo(site, "list", "head", "--json").stdout)
    names = [h["name"] for h in heads]
    assert "half_registered_head" not in names and "tiny_head" in names and "fcn" in names


def test_plugins_human_output_names_distribution_and_error(site):
    out = mtlzoo(site, "plugins")
    assert "example  (mtlzoo-example 0.3.0)  loaded" in out.stdout
    assert "broken_import  (mtlzoo-broken 0.1.0)  failed" in out.stdout
    assert "refused: combiner 'sum' is a built-in name" in out.stdout
    assert "3 plugin(s) failed to load and 3 entries were refused" in out.stdout


def test_strict_mode_reports_every_broken_plugin_one_per_line(site):
    out = mtlzoo(site, "list", "head", env={"MTLZOO_STRICT_PLUGINS": "1"})
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert lines[0].startswith("error: 6 plugin problem(s), one per line below"), out.stderr
    assert len(lines) == 7 and all(line.startswith("  plugin '") for line in lines[1:]), out.stderr
    for name in ("broken_import", "broken_register", "broken_hook", "broken_parts"):
        assert any(f"'{name}'" in line for line in lines[1:])
    out = mtlzoo(site, "--strict-plugins", "list", "head")
    assert out.returncode == 2 and "broken_hook" in out.stderr


def test_debug_shows_the_frame_inside_a_plugin_where_its_import_failed(site):
    out = mtlzoo(site, "plugins", "--debug")
    assert out.returncode == 0, out.stderr
    assert "traceback of plugin 'broken_import' (import failed: ModuleNotFoundError" in out.stderr
    assert "bad_import.py" in out.stderr and "import mtlzoo_dependency_that_is_not_installed" in out.stderr
    assert "bad_import.py" not in mtlzoo(site, "plugins").stderr  # only with --debug
    out = mtlzoo(site, "--debug", "list", "head", env={"MTLZOO_STRICT_PLUGINS": "1"})
    assert out.returncode == 1 and "bad_import.py" in out.stderr and "PluginError" in out.stderr


def test_a_spec_naming_a_refused_part_is_told_why(site):
    spec = ROOT / "configs" / "examples" / "third_party_plugin.yaml"
    out = mtlzoo(site, "config", "show", str(spec), "combiner.name=bad_default")
    assert out.returncode == 2
    assert out.stderr.splitlines()[-1].startswith(
        "error: combiner.name: combiner 'bad_default' is not available: it was refused when plugins loaded "
        "(combiner 'bad_default' (plugin broken_parts): options BadDefault: invalid default"
    )


def test_blocking_broken_plugins_by_env_makes_strict_mode_pass(site):
    env = {
        "MTLZOO_STRICT_PLUGINS": "1",
        "MTLZOO_BLOCK_PLUGINS": "broken_import,broken_register,broken_hook,broken_parts",
    }
    out = mtlzoo(site, "plugins", "--json", env=env)
    assert out.returncode == 0, out.stderr
    status = {r["name"]: r["status"] for r in json.loads(out.stdout)}
    assert status["broken_import"] == "blocked" and status["example"] == "loaded"


def test_third_party_parts_train_from_yaml(site, tmp_path):
    spec = ROOT / "configs" / "examples" / "third_party_plugin.yaml"
    out = mtlzoo(site, "train", str(spec), f"train.out_dir={tmp_path}", "train.run_name=plug")
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((tmp_path / "plug" / "summary.json").read_text())
    assert set(summary["final"]) == {"semseg", "present", "salient"}
    assert "miou" in summary["final"]["semseg"] and "mae" in summary["final"]["salient"]
    # the warnings about the broken plugins went to stderr, training was not stopped
    assert "warning: plugin 'broken_import'" in out.stderr


@pytest.mark.parametrize("combiner", ["sum", "mgda"])
def test_a_third_party_architecture_trains_the_quickstart_by_its_name(site, tmp_path, combiner):
    # mtlzoo-example's task_adapters: written against the documented architecture API only
    small = [
        "train.epochs=1",
        "data.size=[32,32]",
        "data.train_size=8",
        "data.val_size=4",
        "data.test_size=4",
    ]
    out = mtlzoo(
        site,
        "train",
        str(ROOT / "configs" / "quickstart.yaml"),
        "model.architecture.name=task_adapters",
        "model.architecture.rank=2",
        f"combiner.name={combiner}",
        *(["combiner.wrt=features"] if combiner == "mgda" else []),
        *small,
        f"train.out_dir={tmp_path}",
        "train.run_name=adapters",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((tmp_path / "adapters" / "summary.json").read_text())
    assert set(summary["final"]) == {"semseg", "depth", "normals", "boundary", "labels"}
    assert "task_adapters" in (tmp_path / "adapters" / "config.yaml").read_text()


def test_blocking_a_plugin_in_the_spec_removes_its_parts(site):
    spec = ROOT / "configs" / "examples" / "third_party_plugin.yaml"
    out = mtlzoo(site, "config", "show", str(spec), "plugins.block=[example]")
    assert out.returncode == 2
    # the broken plugins are warned about; the error itself is one line
    assert out.stderr.splitlines()[-1].startswith(
        "error: model.backbone.name: unknown backbone 'tiny_convnet'"
    )


def test_the_example_package_runs_the_conformance_kit_in_its_own_tests(site):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTLZOO_")}
    # its fixtures load plugins strictly: the broken package sharing this site is blocked
    env.update(
        {
            "PYTHONPATH": str(site),
            "OMP_NUM_THREADS": "1",
            "MTLZOO_BLOCK_PLUGINS": "broken_import,broken_register,broken_hook,broken_parts",
        }
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-o",
            "addopts=",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(ROOT / "plugins" / "mtlzoo-example"),
            str(ROOT / "plugins" / "mtlzoo-example" / "tests"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=ROOT / "plugins" / "mtlzoo-example",
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "2 passed" in out.stdout
    check = mtlzoo(site, "check", "example")
    assert check.returncode == 0 and check.stdout.startswith("example: ok"), check.stdout[-2000:]


def test_the_kit_names_the_broken_contract_of_each_broken_part(site):
    out = mtlzoo(site, "check", "broken_parts", "--json")
    assert out.returncode == 1
    (report,) = json.loads(out.stdout)
    failed = {(r["part"].split(" (")[0], r["contract"]) for r in report["results"] if not r["ok"]}
    expected = {
        ("backbone 'wrong_feature_info'", "backbone.feature_info"),
        ("head 'wrong_channels'", "head.output"),
        ("loss 'not_scalar'", "loss.scalar[depth]"),
        ("metric 'batch_average'", "metric.exact[depth]"),
        ("metric 'no_direction'", "metric.higher_is_better"),
        ("metric 'nan_metric'", "metric.finite[depth]"),
        ("backbone 'feature_info_only'", "backbone.attributes"),
        ("combiner 'no_backward'", "combiner.gradients"),
        ("combiner 'state_in_attribute'", "combiner.state"),
        ("dataset 'bad_samples'", "dataset.samples[train]"),
        ("task 'bad_derivation'", "task.derive"),
        ("target_kind 'bad_example'", "target_kind.example"),
        ("broken_parts", "registration"),
    }
    assert expected <= failed, failed
    messages = {(r["part"].split(" (")[0], r["contract"]): r["message"] for r in report["results"]}
    assert (
        "map 0 has 16 channels but feature_info says 32"
        in messages[("backbone 'wrong_feature_info'", "backbone.feature_info")]
    )
    assert "[2, 5, 64, 64]" in messages[("head 'wrong_channels'", "head.output")]
    samples = messages[("dataset 'bad_samples'", "dataset.samples[train]")]
    assert "'semseg' (segmentation) must be int64, got float32" in samples
    assert "'depth' (depth) must have shape [1, 8, 8]" in samples


def test_the_conforms_fixture_ignores_other_installed_plugins_even_broken_ones(site):
    # the broken package is installed beside the example one and not blocked
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTLZOO_")}
    env.update({"PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"})
    example = ROOT / "plugins" / "mtlzoo-example"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-o",
            "addopts=",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(example),
            f"{example / 'tests' / 'test_conformance.py'}::test_every_part_conforms",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=example,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "1 passed" in out.stdout


# broken part -> (the kit's contract, `mtlzoo train` overrides that use the part, the problem both
# must name: a substring or a check of the message). Contracts that only the kit can test (exact
# metric states, a combiner's state through a checkpoint, a target kind's example) are not here:
# training never sees them break.
AGREE = {
    "wrong_feature_info": (
        "backbone.feature_info",
        ["model.backbone={name: wrong_feature_info}"],
        "broke its feature_info: map 0 has 16 channels but feature_info says 32",
    ),
    "feature_info_only": (
        "backbone.attributes",
        ["model.backbone={name: feature_info_only}"],
        "FeatureInfoOnly has no input_mean, input_std, size_divisor attribute",
    ),
    "wrong_channels": (
        "head.output",
        ["tasks={semseg: {type: segmentation, head: {name: wrong_channels}}}"],
        re.compile(r"returned float32 \[2, (\d+), \d+, \d+\], but a \w+ task needs \[2, (\d+), "),
    ),
    "not_scalar": (
        "loss.scalar[depth]",
        ["tasks={depth: {type: depth, loss: {name: not_scalar}}}"],
        "; a loss returns a scalar tensor",
    ),
    "no_direction": (
        "metric.higher_is_better",
        ["tasks={depth: {type: depth, metrics: [{name: no_direction}]}}"],
        "higher_is_better",
    ),
    "nan_metric": (
        "metric.finite[depth]",
        ["tasks={depth: {type: depth, metrics: [{name: nan_metric}]}}"],
        "nan",
    ),
    "no_backward": ("combiner.gradients", ["combiner.name=no_backward"], "the combiner made none"),
    "bad_samples": (
        "dataset.samples[train]",
        ["data={name: bad_samples}"],
        "target 'semseg' (segmentation) must be int64, got float32",
    ),
    "bad_derivation": (
        "task.derive",
        ["tasks={semseg: {type: segmentation}, d: {type: bad_derivation, from: semseg}}"],
        "target 'derived' (depth) must have shape [1, 12, 16]",
    ),
}


@pytest.fixture(scope="module")
def kit_report(site) -> dict[tuple[str, str], str]:
    out = mtlzoo(site, "check", "broken_parts", "--json")
    (report,) = json.loads(out.stdout)
    return {
        (r["part"].split("'")[1], r["contract"]): r["message"]
        for r in report["results"]
        if not r["ok"] and "'" in r["part"]
    }


def _names(problem, message: str) -> bool:
    if isinstance(problem, re.Pattern):  # out_channels + 2 channels, at any size and task
        found = problem.search(message)
        return found is not None and int(found.group(1)) == int(found.group(2)) + 2
    return problem.lower() in message.lower()


@pytest.mark.slow
@pytest.mark.parametrize("part", sorted(AGREE))
def test_the_kit_and_train_refuse_each_broken_part_naming_the_same_problem(site, kit_report, tmp_path, part):
    contract, overrides, problem = AGREE[part]
    kit = kit_report.get((part, contract))
    assert kit is not None and _names(problem, kit), (part, kit)
    spec = tmp_path / "agree.yaml"
    spec.write_text(
        "name: agree\nseed: 0\nmodel: {backbone: {name: cnn, channels: [8, 16]}}\n"
        "tasks: {semseg: {type: segmentation}}\ncombiner: {name: sum}\n"
        "data: {name: shapes, size: [32, 32], train_size: 8, val_size: 4, test_size: 4}\n"
        f"train: {{epochs: 1, batch_size: 4, progress: false, out_dir: {tmp_path / 'runs'}}}\n"
    )
    out = mtlzoo(site, "train", str(spec), *overrides)
    assert out.returncode != 0, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and _names(problem, last), (part, last)


def test_data_check_compares_every_sample_with_the_dataset_info(site, tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "name: bad\nmodel: {backbone: {name: cnn}}\ntasks: {semseg: {type: segmentation}}\n"
        "combiner: {name: sum}\ndata: {name: bad_samples}\n"
    )
    out = mtlzoo(site, "data", "check", str(spec), "--splits", "train")
    assert out.returncode == 1
    lines = out.stdout.strip().splitlines()
    assert lines[-1] == "12 problem(s) found in dataset 'bad_samples'"
    assert any(
        "bad_samples train[0]: target 'labels' declared by the dataset's info is missing" in x for x in lines
    )
    assert any("bad_samples train[3]: target 'depth' (depth) must have shape [1, 8, 8]" in x for x in lines)


WOULD_BE_SUM = """
from mtlzoo import Combiner, hookimpl


class Mine(Combiner):
    def backward(self, losses, step):
        step.backward(2 * self.stack(losses).sum())
        return {{}}


@hookimpl
def register_combiners(register):
    register("sum", Mine, None, "tries to replace the built-in sum")
    register("{other}", Mine, None, "a name of its own")
"""


@pytest.mark.parametrize("entry_name", ["aaa_takes_sum", "zzz_takes_sum"])
def test_a_package_registering_sum_is_refused_for_that_entry_alone(tmp_path, entry_name):
    """Written only against docs/plugins.md; entry-point names sort before and after 'builtin_*'."""
    pkg = tmp_path / "pkg"
    (pkg / "takes_sum").mkdir(parents=True)
    (pkg / "takes_sum" / "__init__.py").write_text(WOULD_BE_SUM.format(other=f"{entry_name}_own"))
    (pkg / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "takes-sum-{entry_name}"\nversion = "1.0"\n'
        f'[project.entry-points.mtlzoo]\n{entry_name} = "takes_sum"\n[tool.setuptools]\npackages = ["takes_sum"]\n'
    )
    site = tmp_path / "site"
    pip_install(site, pkg)
    out = mtlzoo(site, "plugins", "--json")
    record = next(r for r in json.loads(out.stdout) if r["name"] == entry_name)
    assert record["registered"] == {"combiner": [f"{entry_name}_own"]}
    assert record["refused"] == [
        "combiner 'sum' is a built-in name (plugin builtin_combiners); register yours under another name"
    ]
    listed = {r["name"]: r["plugin"] for r in json.loads(mtlzoo(site, "list", "combiner", "--json").stdout)}
    assert listed["sum"] == "builtin_combiners" and listed["weighted"] == "builtin_combiners"
    assert listed[f"{entry_name}_own"] == entry_name
    # built-in sum and weighted train as before
    for combiner in ("sum", "weighted"):
        run = mtlzoo(
            site,
            "train",
            str(ROOT / "configs" / "quickstart.yaml"),
            f"combiner.name={combiner}",
            "train.epochs=1",
            "data.train_size=16",
            "data.val_size=8",
            "data.test_size=8",
            "train.batch_size=8",
            "train.progress=false",
            f"train.out_dir={tmp_path / 'runs'}",
            f"train.run_name={combiner}",
            "tasks={semseg: {type: segmentation}}",
            "model.backbone={name: cnn, channels: [8, 16]}",
        )
        assert run.returncode == 0, run.stderr[-2000:]
        assert "warning: plugin " in run.stderr and "'sum' is a built-in name" in run.stderr
