"""Plugin loading: every hook, isolation of broken plugins, names never order-dependent,
strict mode, blocking, refused entries."""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Literal

import pytest

from mtlzoo import PluginError, Zoo, hookimpl
from mtlzoo.contract import hooks
from mtlzoo.zoo.loader import HOOK_KINDS


def plugin_module(name: str, **hook_fns) -> types.ModuleType:
    """A module object holding hookimpl-marked functions, as an imported plugin would."""
    mod = types.ModuleType(name)
    for hook_name, fn in hook_fns.items():
        fn.__name__ = hook_name
        setattr(mod, hook_name, hookimpl(fn))
    return mod


def zoo_of(*plugins, strict=False, block=()) -> Zoo:
    return Zoo.load(entry_points=False, plugins=list(plugins), strict=strict, block=block)


@dataclass
class Width:
    width: int = 4


def factory_for(kind: str):
    """A factory with the signature the zoo calls for ``kind`` (its args, then the options)."""
    args = ", ".join([*hooks.KINDS[kind].args, "options"])
    namespace: dict = {}
    exec(f"def make({args}):\n    return options\n", namespace)  # noqa: S102 - builds a signature in a test
    return namespace["make"]


def _one_hook(hook: str, kind: str) -> None:
    def impl(register):
        register(f"my_{kind}", factory_for(kind), Width, f"a {kind}\nsecond line dropped")

    zoo = zoo_of(("myplugin", plugin_module("p", **{hook: impl})), strict=True)
    entry = zoo.entry(kind, f"my_{kind}")
    assert (entry.plugin, entry.options, entry.help, entry.builtin) == ("myplugin", Width, f"a {kind}", False)
    record = next(r for r in zoo.records if r.name == "myplugin")
    assert record.registered == {kind: [f"my_{kind}"]} and record.status == "loaded" and not record.refused
    # the factory is called with the kind's arguments, then one options instance
    args = ["arg"] * len(hooks.KINDS[kind].args)
    assert entry.call(*args, options=entry.build_options({"width": 7}, "x")) == Width(7)


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


def test_hook_register_target_kinds():
    _one_hook("register_target_kinds", "target_kind")


def test_hook_register_architectures():
    _one_hook("register_architectures", "architecture")


def test_hook_kinds_cover_every_hookspec():
    specs = {n for n in dir(hooks) if n.startswith("register_")}
    assert specs == set(HOOK_KINDS)


def test_failed_registration_is_undone_and_others_still_load():
    def bad(register):
        register("half", factory_for("head"), Width)
        raise RuntimeError("boom inside plugin")

    def good(register):
        register("fine", factory_for("head"), Width)

    zoo = zoo_of(
        ("bad", plugin_module("bad", register_heads=bad)),
        ("good", plugin_module("good", register_heads=good)),
    )
    rec_bad, rec_good = zoo.records
    assert (
        rec_bad.status == "failed"
        and "registration failed" in rec_bad.error
        and "boom inside plugin" in rec_bad.error
    )
    assert "half" not in zoo.registries["head"] and rec_bad.registered == {}
    assert rec_good.status == "loaded" and "fine" in zoo.registries["head"]
    assert any("boom inside plugin" in w for w in zoo.warnings)


def test_misspelled_hook_keeps_pluggys_whole_reason():
    def register_heads(register, extra):
        """A hookimpl with an argument the hookspec does not have."""

    zoo = zoo_of(
        ("typo", plugin_module("typo", register_haeds=lambda register: None)),
        ("args", plugin_module("args", register_heads=register_heads)),
    )
    typo, args = zoo.records
    assert typo.status == "failed" and "register_haeds" in typo.error
    # pluggy's message spans lines; the reason at the end is kept
    assert (
        args.status == "failed" and "can not be found in the hookspec" in args.error and "extra" in args.error
    )
    assert "\n" not in args.error


def test_a_name_two_third_party_plugins_register_is_refused_for_both():
    a = plugin_module(
        "a",
        register_losses=lambda register: (
            register("l1x", factory_for("loss"), Width),
            register("only_a", factory_for("loss"), Width),
        ),
    )
    b = plugin_module("b", register_losses=lambda register: register("l1x", factory_for("loss"), Width))
    for order in ([("a", a), ("b", b)], [("b", b), ("a", a)]):
        zoo = zoo_of(*order)
        assert "l1x" not in zoo.registries["loss"] and "only_a" in zoo.registries["loss"]
        refused = {r.name: r.refused for r in zoo.records}
        for name, other in (("a", "b"), ("b", "a")):
            (msg,) = refused[name]
            assert msg.startswith("loss 'l1x' is registered by plugins ") and f"'{other}'" in msg
            assert "both entries refused" in msg and f"MTLZOO_BLOCK_PLUGINS={other}" in msg
    # blocking one of them lets the other have the name
    zoo = zoo_of(("a", a), ("b", b), block=["b"])
    assert zoo.entry("loss", "l1x").plugin == "a"


def test_invalid_entries_are_refused_one_by_one_naming_plugin_and_part():
    @dataclass
    class BadDefault:
        wrt: Literal["params", "features"] = "parmas"

    @dataclass
    class BadType:
        seen: set = None

    def no_task(options):
        return options

    def impl(register):
        register("bad default", factory_for("loss"))  # not a name
        register("bad_default", factory_for("loss"), BadDefault)
        register("bad_type", factory_for("loss"), BadType)
        register("no_task", no_task, Width)
        register("defaulted_task", lambda alpha=1.0: alpha)
        register("bad_lazy", "not a reference", Width)
        register("fine", factory_for("loss"), Width)

    zoo = zoo_of(("p", plugin_module("p", register_losses=impl)))
    record = zoo.records[0]
    assert record.status == "loaded" and record.registered == {"loss": ["fine"]}
    text = "\n".join(record.refused)
    assert len(record.refused) == 6
    assert "loss 'bad default': a name is letters" in text
    assert (
        "loss 'bad_default' (plugin p): options BadDefault: invalid default: wrt: 'parmas' is not one of"
        in text
    )
    assert "loss 'bad_type' (plugin p): options BadType.seen: unsupported option type set" in text
    assert (
        "loss 'no_task' (plugin p): factory" in text and "cannot be called as factory(task, options)" in text
    )
    assert (
        "loss 'defaulted_task' (plugin p)" in text and "'alpha' has a default but receives the 'task'" in text
    )
    assert "'not a reference' is not 'package.module:attribute'" in text


def test_lazy_factories_import_on_first_use_and_report_import_errors():
    def impl(register):
        register("later", "mtlzoo_no_such_module_anywhere:Thing", Width)
        register("dataclass_later", "dataclasses:dataclass", None)

    zoo = zoo_of(("p", plugin_module("p", register_heads=impl)), strict=True)
    entry = zoo.entry("head", "later")
    with pytest.raises(
        PluginError,
        match=r"head 'later' \(plugin p\): cannot import its factory "
        r"'mtlzoo_no_such_module_anywhere:Thing': ModuleNotFoundError",
    ):
        entry.load()
    # a lazily imported factory's signature is checked when it is imported
    with pytest.raises(
        PluginError, match=r"head 'dataclass_later' \(plugin p\): factory dataclasses:dataclass"
    ):
        zoo.entry("head", "dataclass_later").load()


def test_strict_mode_reports_every_failing_plugin_at_once(monkeypatch):
    def bad(register):
        raise ValueError("nope")

    with pytest.raises(PluginError) as err:
        zoo_of(
            ("bad1", plugin_module("bad1", register_heads=bad)),
            ("bad2", plugin_module("bad2", register_heads=bad)),
            strict=True,
        )
    head, *lines = str(err.value).splitlines()
    assert head.startswith("2 plugin problem(s), one per line below; unset MTLZOO_STRICT_PLUGINS")
    # one problem per line, each naming its plugin and the reason
    assert len(lines) == 2 and "'bad1'" in lines[0] and "'bad2'" in lines[1]
    assert all("registration failed: ValueError: nope" in line for line in lines)
    assert len(err.value.tracebacks) == 2 and all("nope" in tb for tb in err.value.tracebacks)
    monkeypatch.setenv("MTLZOO_STRICT_PLUGINS", "1")
    assert Zoo.load(entry_points=False).strict is True


def test_blocking_by_argument_and_env_and_unknown_names_are_warned(monkeypatch):
    monkeypatch.setenv("MTLZOO_BLOCK_PLUGINS", "envblocked, other")
    mods = [
        (n, plugin_module(n, register_heads=lambda register: register("h", factory_for("head"), Width)))
        for n in ("envblocked", "argblocked")
    ]
    zoo = zoo_of(*mods, block=["argblocked", "mispelled"])
    assert [r.status for r in zoo.records] == ["blocked", "blocked"] and len(zoo.registries["head"]) == 0
    assert any("'mispelled', which is no installed plugin" in w for w in zoo.warnings)
    assert any("'other'" in w for w in zoo.warnings)


def test_builtin_plugins_load_through_entry_points_and_win_every_name(zoo):
    builtin = {r.name: r for r in zoo.records if r.builtin}
    assert {
        "builtin_combiners",
        "builtin_backbones",
        "builtin_heads",
        "builtin_datasets",
        "builtin_targets",
        "builtin_tasks",
        "builtin_losses",
        "builtin_metrics",
    } <= set(builtin)
    assert all(r.distribution == "mtlzoo" for r in builtin.values())
    assert builtin["builtin_combiners"].registered["combiner"][:2] == ["sum", "weighted"]
    assert zoo.entry("combiner", "sum").plugin == "builtin_combiners" and zoo.entry("combiner", "sum").builtin
    assert not zoo.problems, zoo.problems


def test_a_third_party_entry_reusing_a_builtin_name_is_refused_alone():
    """In-process plugins load after the entry points, as third-party ones would; the
    entry-point ordering case is tested with real packages in test_third_party_plugins."""

    def impl(register):
        register("sum", factory_for("combiner"), Width)
        register("also_mine", factory_for("combiner"), Width)

    zoo = Zoo.load(plugins=[("aaa_first", plugin_module("aaa_first", register_combiners=impl))])
    record = next(r for r in zoo.records if r.name == "aaa_first")
    assert record.registered == {"combiner": ["also_mine"]}
    assert record.refused == [
        "combiner 'sum' is a built-in name (plugin builtin_combiners); register yours under another name"
    ]
    assert (
        zoo.entry("combiner", "sum").plugin == "builtin_combiners"
        and "weighted" in zoo.registries["combiner"]
    )
