"""mtlzoo 0.1's import paths still work (with a warning naming the new import) until 0.3, and
docs/api.md states the public API the code has."""

from __future__ import annotations

import importlib
import re
import sys
import types
import warnings
from pathlib import Path

import pytest
from packaging.version import Version

import mtlzoo
from mtlzoo._deprecated import REMOVED_IN

ROOT = Path(__file__).resolve().parents[1]
API = (ROOT / "docs" / "api.md").read_text()

#: every public name of mtlzoo 0.1's modules (git show 033a3eb^:mtlzoo/<module>.py) -> its 0.2 import
OLD_NAMES = {
    "mtlzoo.errors": {
        "MtlzooError": "mtlzoo",
        "ConfigError": "mtlzoo",
        "UnknownNameError": "mtlzoo",
        "DuplicateNameError": "mtlzoo",
        "PluginError": "mtlzoo",
        "DataError": "mtlzoo",
        "TrainingError": "mtlzoo",
        "CheckpointError": "mtlzoo",
        "close_matches": "mtlzoo.contract.errors",
        "did_you_mean": "mtlzoo.contract.errors",
    },
    "mtlzoo.data": {"TargetInfo": "mtlzoo", "DatasetInfo": "mtlzoo", "TARGET_KINDS": None},
    "mtlzoo.model": {"FeatureInfo": "mtlzoo", "MultiTaskModel": "mtlzoo"},
    "mtlzoo.tasks": {"TaskInfo": "mtlzoo", "TaskType": "mtlzoo", "TargetInfo": "mtlzoo"},
    "mtlzoo.combine": {
        "Combiner": "mtlzoo",
        "Step": "mtlzoo",
        "Wrt": "mtlzoo.contract.combine",
        "WRT_CHOICES": "mtlzoo.contract.combine",
        "HEADS_CHOICES": "mtlzoo.contract.combine",
        "check_wrt": "mtlzoo.contract.combine",
        "world_size": "mtlzoo.contract.dist",
        "all_reduce_mean": "mtlzoo.contract.dist",
        "all_reduce_sum": "mtlzoo.contract.dist",
    },
}
CASES = [(module, name, new) for module, names in OLD_NAMES.items() for name, new in names.items()]


@pytest.mark.parametrize("module, name, new", CASES, ids=[f"{m}.{n}" for m, n, _ in CASES])
def test_every_old_name_imports_and_warns_with_its_new_import(module, name, new):
    old = importlib.import_module(module)
    with pytest.warns(DeprecationWarning) as caught:
        value = getattr(old, name)
    (warning,) = caught
    text = str(warning.message)
    assert text.startswith(f"{module}.{name} is deprecated since mtlzoo 0.2 and removed in 0.3: ")
    assert warning.filename == __file__  # the warning points at the import, not at the shim
    if new is None:  # no new place: the old value, and why
        assert value == ("segmentation", "boundary", "depth", "normals", "labels", "class")
        assert "Zoo.load().list('target_kind')" in text
        return
    new_name = "PluginError" if name == "DuplicateNameError" else name
    assert f"use `from {new} import {new_name}`" in text
    assert value is getattr(importlib.import_module(new), new_name)


def test_a_plugin_written_for_0_1_imports(monkeypatch):
    # the import block of mtlzoo 0.1's example plugin (git show 033a3eb^:plugins/mtlzoo-example/...)
    code = (
        "from mtlzoo import hookimpl\n"
        "from mtlzoo.combine import Combiner\n"
        "from mtlzoo.data import DatasetInfo, TargetInfo\n"
        "from mtlzoo.errors import DataError\n"
        "from mtlzoo.model import FeatureInfo\n"
    )
    module = types.ModuleType("old_plugin")
    monkeypatch.setitem(sys.modules, "old_plugin", module)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(compile(code, "old_plugin.py", "exec"), module.__dict__)  # noqa: S102 - fixed text
    assert module.DataError is mtlzoo.DataError and module.FeatureInfo is mtlzoo.FeatureInfo
    assert len(caught) == 5 and {w.category for w in caught} == {DeprecationWarning}
    assert all(w.filename == "old_plugin.py" for w in caught)


def test_unknown_old_names_are_attribute_errors():
    import mtlzoo.errors

    with pytest.raises(ImportError, match="cannot import name 'NoSuchError' from 'mtlzoo.errors'"):
        from mtlzoo.errors import NoSuchError  # noqa: F401
    assert dir(mtlzoo.errors) == sorted(OLD_NAMES["mtlzoo.errors"])


def test_the_shims_go_in_the_version_they_announce():
    assert Version(mtlzoo.__version__) < Version(REMOVED_IN), (
        f"mtlzoo {mtlzoo.__version__}: remove the 0.1 shims (mtlzoo/_deprecated.py and the modules using it)"
    )
    assert f"until **{REMOVED_IN}**" in API


def test_the_api_page_names_every_public_name():
    public = set(mtlzoo.__all__)
    table = API.split("## Public and stable", 1)[1].split("**`mtlzoo.contract`**", 1)[0]
    named = set(re.findall(r"`(\w+)`", table))
    assert public - named == set(), "docs/api.md does not name these public names"
    assert named - public - {"mtlzoo"} == set(), "docs/api.md names what mtlzoo does not export"


def test_the_api_page_names_the_old_modules_and_the_contract_modules_that_exist():
    for module in OLD_NAMES:
        assert f"`{module}" in API
    contract = API.split("**`mtlzoo.contract`**", 1)[1].split("**`mtlzoo.testing`**", 1)[0]
    for name in re.findall(r"`(\w+)` \(", contract) + ["hooks", "options", "errors", "data", "tasks"]:
        assert (ROOT / "mtlzoo" / "contract" / f"{name}.py").is_file(), name


def test_the_api_page_example_runs(monkeypatch):
    (code,) = re.findall(r"```python\n(.*?)```", API, flags=re.S)
    for module in OLD_NAMES:  # the example imports a shim afresh
        monkeypatch.delitem(sys.modules, module, raising=False)
    exec(compile(code, "docs/api.md", "exec"), {})  # noqa: S102 - our own docs
