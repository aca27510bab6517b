"""A separate package installed with pip adds a backbone, a head, a combiner and a dataset
usable from YAML; a broken package is reported and does not stop the rest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """pip-install both example packages into a private folder put on PYTHONPATH."""
    target = tmp_path_factory.mktemp("site")
    for pkg in ("mtlzoo-example", "mtlzoo-broken"):
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
             "--no-index", "--target", str(target), str(ROOT / "plugins" / pkg)],
            check=True, capture_output=True, text=True,
        )
    return target


def mtlzoo(site: Path, *args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MTLZOO_")}
    full_env.update({"PYTHONPATH": str(site), **(env or {})})
    return subprocess.run([sys.executable, "-m", "mtlzoo.cli", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=full_env, timeout=300)


def test_plugins_lists_installed_packages_and_failures(site):
    out = mtlzoo(site, "plugins", "--json")
    assert out.returncode == 0, out.stderr
    records = {r["name"]: r for r in json.loads(out.stdout)}
    ex = records["example"]
    assert ex["distribution"] == "mtlzoo-example" and ex["version"] == "0.2.0" and ex["status"] == "loaded"
    assert ex["registered"] == {"backbone": ["tiny_convnet"], "head": ["tiny_head"],
                                "combiner": ["max_weighted"], "dataset": ["stripes"]}
    assert records["broken_import"]["status"] == "failed"
    assert "mtlzoo_dependency_that_is_not_installed" in records["broken_import"]["error"]
    assert records["broken_register"]["status"] == "failed"
    assert "something inside the plugin went wrong" in records["broken_register"]["error"]
    assert records["broken_hook"]["status"] == "failed" and "register_haeds" in records["broken_hook"]["error"]
    # the half-registered head of the broken plugin is gone, built-ins are there
    heads = json.loads(mtlzoo(site, "list", "head", "--json").stdout)
    names = [h["name"] for h in heads]
    assert "half_registered_head" not in names and "tiny_head" in names and "fcn" in names


def test_plugins_human_output_names_distribution_and_error(site):
    out = mtlzoo(site, "plugins")
    assert "example  (mtlzoo-example 0.2.0)  loaded" in out.stdout
    assert "broken_import  (mtlzoo-broken 0.0.1)  failed" in out.stdout
    assert "3 plugin(s) failed to load" in out.stdout


def test_strict_mode_turns_a_broken_plugin_into_one_error(site):
    out = mtlzoo(site, "list", "head", env={"MTLZOO_STRICT_PLUGINS": "1"})
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: plugin 'broken_hook'"), out.stderr
    out = mtlzoo(site, "--strict-plugins", "list", "head")
    assert out.returncode == 2 and "broken_hook" in out.stderr


def test_blocking_broken_plugins_by_env_makes_strict_mode_pass(site):
    env = {"MTLZOO_STRICT_PLUGINS": "1", "MTLZOO_BLOCK_PLUGINS": "broken_import,broken_register,broken_hook"}
    out = mtlzoo(site, "plugins", "--json", env=env)
    assert out.returncode == 0, out.stderr
    status = {r["name"]: r["status"] for r in json.loads(out.stdout)}
    assert status["broken_import"] == "blocked" and status["example"] == "loaded"


def test_third_party_parts_train_from_yaml(site, tmp_path):
    spec = ROOT / "configs" / "examples" / "third_party_plugin.yaml"
    out = mtlzoo(site, "train", str(spec), f"train.out_dir={tmp_path}", "train.run_name=plug")
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((tmp_path / "plug" / "summary.json").read_text())
    assert set(summary["final"]) == {"semseg", "present"}
    assert "miou" in summary["final"]["semseg"]
    # the warning about the broken plugins went to stderr, training was not stopped
    assert "warning: plugin 'broken_import'" in out.stderr


def test_blocking_a_plugin_in_the_spec_removes_its_parts(site, tmp_path):
    spec = ROOT / "configs" / "examples" / "third_party_plugin.yaml"
    out = mtlzoo(site, "config", "show", str(spec), "plugins.block=[example]")
    assert out.returncode == 2
    # the broken plugins are warned about; the error itself is one line
    assert out.stderr.splitlines()[-1].startswith("error: model.backbone.name: unknown backbone 'tiny_convnet'")
