"""Registries: register, look up, list with wildcards, and the errors users meet."""

from dataclasses import dataclass

import pytest

from mtlzoo.errors import DuplicateNameError, UnknownNameError
from mtlzoo.registry import KINDS, Registries, Registry


@dataclass
class Opts:
    width: int = 3


def make():
    reg = Registry("backbone")
    for name in ["resnet18", "resnet50", "convnext_atto", "cnn"]:
        reg.register(name, dict, Opts, f"{name} help\nsecond line dropped", plugin="p1")
    return reg


def test_register_and_get_records_everything():
    reg = make()
    e = reg.get("resnet18")
    assert (e.kind, e.name, e.factory, e.schema, e.plugin) == ("backbone", "resnet18", dict, Opts, "p1")
    assert e.help == "resnet18 help"
    assert [f.name for f in e.options()] == ["width"]
    assert "cnn" in reg and len(reg) == 4


def test_list_with_shell_wildcards_is_sorted_and_case_insensitive():
    reg = make()
    assert reg.names("*resnet*") == ["resnet18", "resnet50"]
    assert reg.names("RESNET?8") == ["resnet18"]
    assert reg.names() == ["cnn", "convnext_atto", "resnet18", "resnet50"]
    assert reg.names("[cr]*t*") == ["convnext_atto", "resnet18", "resnet50"]


def test_duplicate_names_both_plugins():
    reg = make()
    with pytest.raises(DuplicateNameError) as err:
        reg.register("resnet18", dict, plugin="p2")
    msg = str(err.value)
    assert "'p1'" in msg and "'p2'" in msg and "resnet18" in msg and "MTLZOO_BLOCK_PLUGINS" in msg


def test_unknown_name_names_kind_close_names_and_list_command():
    reg = make()
    with pytest.raises(UnknownNameError) as err:
        reg.get("resnt18")
    msg = str(err.value)
    assert msg.startswith("unknown backbone 'resnt18'")
    assert "'resnet18'" in msg
    assert "`mtlzoo list backbone`" in msg
    # a KeyError subclass prints without KeyError's quotes
    assert not msg.startswith('"')


def test_bad_registrations_are_rejected():
    reg = Registry("head")
    with pytest.raises(ValueError):
        reg.register("has space", dict)
    with pytest.raises(TypeError):
        reg.register("x", 3)
    with pytest.raises(TypeError):
        reg.register("x", dict, schema=int)


def test_remove_plugin_drops_only_its_entries():
    reg = make()
    reg.register("other", dict, plugin="p2")
    reg.remove_plugin("p1")
    assert reg.names() == ["other"]


def test_registries_has_one_per_kind_and_helps_with_typos():
    regs = Registries()
    assert [r.kind for r in regs] == list(KINDS)
    with pytest.raises(UnknownNameError, match="did you mean 'backbone'"):
        regs["backbones"]
