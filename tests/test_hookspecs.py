"""Every hook is documented and has a test (as datasette checks its own hooks)."""

import inspect
import re
from pathlib import Path

import pytest

from mtlzoo.contract import hooks

HOOKS = sorted(n for n, f in vars(hooks).items() if n.startswith("register_") and callable(f))
TESTS = Path(__file__).parent


def test_there_is_one_hook_per_kind():
    assert len(HOOKS) == len(hooks.KINDS) == 9
    assert sorted(spec.hook for spec in hooks.KINDS.values()) == HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_docstring_stating_the_factory_contract(hook):
    doc = inspect.getdoc(getattr(hooks, hook)) or ""
    assert "factory(" in doc, f"{hook} docstring must state the factory signature"
    assert list(inspect.signature(getattr(hooks, hook)).parameters) == ["register"]


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook):
    source = "\n".join(p.read_text() for p in TESTS.glob("test_*.py"))
    assert re.search(rf"def test_hook_{hook}\b", source), f"no test named test_hook_{hook}"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_for_plugin_authors(hook):
    docs = (TESTS.parent / "docs" / "plugins.md").read_text()
    assert f"`{hook}`" in docs, f"docs/plugins.md does not document {hook}"
