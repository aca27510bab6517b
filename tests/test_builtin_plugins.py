"""mtlzoo's own plugins: one entry point per package, registration imports nothing heavy, and
every built-in part passes the conformance kit."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import subprocess
import sys

import pytest
from conftest import HEAVY_MODULES

from mtlzoo.testing import check_plugin

PACKAGES = {
    "builtin_backbones": "mtlzoo.builtin.backbones",
    "builtin_heads": "mtlzoo.builtin.heads",
    "builtin_losses": "mtlzoo.builtin.losses",
    "builtin_metrics": "mtlzoo.builtin.metrics",
    "builtin_combiners": "mtlzoo.builtin.combiners",
    "builtin_datasets": "mtlzoo.builtin.datasets",
    "builtin_tasks": "mtlzoo.builtin.tasks",
    "builtin_targets": "mtlzoo.builtin.targets",
    "builtin_architectures": "mtlzoo.builtin.architectures",
}


def test_every_builtin_package_is_an_entry_point_of_mtlzoo():
    eps = {
        ep.name: ep
        for ep in md.entry_points(group="mtlzoo")
        if ep.dist and ep.dist.metadata["Name"] == "mtlzoo"
    }
    assert {n: ep.value for n, ep in eps.items()} == PACKAGES
    for name, module in PACKAGES.items():
        assert eps[name].load() is importlib.import_module(module)


def test_registering_every_builtin_part_imports_nothing_heavy():
    code = (
        "import sys; from mtlzoo import Zoo; zoo = Zoo.load(strict=True); "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY_MODULES)!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("plugin", sorted(PACKAGES))
def test_builtin_plugin_conforms(zoo, plugin):
    report = check_plugin(zoo, plugin)
    assert report.ok, [(r.part, r.contract, r.message) for r in report.failures()]
