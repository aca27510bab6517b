"""Plugin manager: every hook, isolation of broken plugins, strict mode, blocking."""

from __future__ import annotations

import types
from dataclasses import dataclass

import pytest

from mtlzoo import hookimpl
from mtlzoo.errors import PluginError
from mtlzoo.plugins import HOOK_KINDS, PluginManager


def plugin_module(name: str, **hooks) -> types.ModuleType:
    """A module object holding hookimpl-marked functions, as an imported plugin would."""
    mod = types.ModuleType(name)
    for hook_name, fn in hooks.items():
        fn.__name__ = hook_name
        setattr(mod, hook_name, hookimpl(fn))
    return mod


@dataclass
class Width:
    width: int = 4


def _one_hook(hook: str, kind: str) -> None:
    pm = PluginManager(strict=True)

    def impl(register):
        register(f"my_{kind}", dict, Width, f"a {kind}")

    rec = pm.add_plugin(plugin_module("p", **{hook: impl}), "myplugin", "my-dist", "1.2")
    entry = pm.registries[kind].get(f"my_{kind}")
    assert entry.plugin == "myplugin" and entry.schema is Width and entry.help == f"a {kind}"
    assert rec.registered == {kind: [f"my_{kind}"]}
    assert rec.status == "loaded"


def test_hook_register_backbones():
    _one_hook("register_backbones", "backbone")


def test_hook_register_heads():
    _one_hook("register_heads", "head")


def test_hook_register_losses():
    _one_hook("register_losses", "loss")


def test_hook_register_metrics():
    _one_hook("register_metrics", "metric")


def test_hook_register_combiners():
    _one_hook("register_combiners", "combiner")


def test_hook_register_datasets():
    _one_hook("register_datasets", "dataset")


def test_hook_register_tasks():
    _one_hook("register_tasks", "task")


def test_failed_registration_is_undone_and_others_still_load():
    pm = PluginManager(strict=False)

    def bad(register):
        register("half", dict)
        raise RuntimeError("boom inside plugin")

    def good(register):
        register("fine", dict)

    rec_bad = pm.add_plugin(plugin_module("bad", register_heads=bad), "bad")
    rec_good = pm.add_plugin(plugin_module("good", register_heads=good), "good")
    assert rec_bad.status == "failed"
    assert "registration failed" in rec_bad.error and "boom inside plugin" in rec_bad.error
    assert "half" not in pm.registries["head"]
    assert rec_bad.registered == {}
    assert rec_good.status == "loaded" and "fine" in pm.registries["head"]
    assert pm.failures == [rec_bad]


def test_misspelled_hook_is_reported():
    pm = PluginManager(strict=False)
    rec = pm.add_plugin(plugin_module("typo", register_haeds=lambda register: None), "typo")
    assert rec.status == "failed" and "register_haeds" in rec.error


def test_duplicate_name_across_plugins_fails_the_second_only():
    pm = PluginManager(strict=False)
    pm.add_plugin(plugin_module("a", register_losses=lambda register: register("l1x", dict)), "a")
    rec = pm.add_plugin(plugin_module("b", register_losses=lambda register: register("l1x", dict)), "b")
    assert rec.status == "failed" and "'a'" in rec.error and "'b'" in rec.error
    assert pm.registries["loss"].get("l1x").plugin == "a"


def test_strict_mode_raises_with_plugin_and_distribution(monkeypatch):
    pm = PluginManager(strict=True)

    def bad(register):
        raise ValueError("nope")

    with pytest.raises(PluginError) as err:
        pm.add_plugin(plugin_module("bad", register_heads=bad), "bad", "bad-dist", "0.1")
    assert "'bad'" in str(err.value) and "bad-dist" in str(err.value) and "nope" in str(err.value)
    monkeypatch.setenv("MTLZOO_STRICT_PLUGINS", "1")
    assert PluginManager().strict is True


def test_blocking_by_argument_and_env(monkeypatch):
    monkeypatch.setenv("MTLZOO_BLOCK_PLUGINS", "envblocked, other")
    pm = PluginManager(block=["argblocked"])
    for name in ("envblocked", "argblocked"):
        rec = pm.add_plugin(plugin_module(name, register_heads=lambda register: register(name, dict)), name)
        assert rec.status == "blocked"
    assert len(pm.registries["head"]) == 0


def test_builtin_plugins_load_through_entry_points():
    pm = PluginManager(strict=False)
    pm.load_entry_points()
    builtin = {r.name: r for r in pm.records if r.distribution == "mtlzoo"}
    assert {"builtin_combiners", "builtin_backbones", "builtin_heads", "builtin_shapes"} <= set(builtin)
    assert builtin["builtin_combiners"].registered["combiner"][:2] == ["sum", "weighted"]
    assert pm.registries["combiner"].get("sum").plugin == "builtin_combiners"
    assert not pm.failures, [r.error for r in pm.failures]


def test_hook_kinds_cover_every_hookspec():
    from mtlzoo import hookspecs

    specs = {n for n in dir(hookspecs) if n.startswith("register_")}
    assert specs == set(HOOK_KINDS)
