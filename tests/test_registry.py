"""Registries and entries: look-up, wildcard listing, lazy factories, signature checks."""

from dataclasses import dataclass

import pytest

from mtlzoo import PluginError, UnknownNameError
from mtlzoo.contract.hooks import KINDS
from mtlzoo.zoo.registry import Entry, Registries, Registry, check_factory_signature


@dataclass
class Opts:
    width: int = 3


def make_backbone(options):
    return options


def make():
    reg = Registry("backbone")
    for name in ["resnet18", "resnet50", "convnext_atto", "cnn"]:
        reg.add(Entry("backbone", name, make_backbone, Opts, f"{name} help", "p1"))
    return reg


def test_get_returns_the_entry_with_everything_recorded():
    e = make().get("resnet18")
    assert (e.kind, e.name, e.factory, e.options, e.plugin) == (
        "backbone",
        "resnet18",
        make_backbone,
        Opts,
        "p1",
    )
    assert e.label == "backbone 'resnet18' (plugin p1)"
    assert [o["name"] for o in e.describe_options()] == ["width"]
    assert e.call(options=e.build_options({"width": 5}, "model.backbone")) == Opts(5)


def test_list_with_shell_wildcards_is_sorted_and_case_insensitive():
    reg = make()
    assert reg.names("*resnet*") == ["resnet18", "resnet50"]
    assert reg.names("RESNET?8") == ["resnet18"]
    assert reg.names() == ["cnn", "convnext_atto", "resnet18", "resnet50"]
    assert reg.names("[cr]*t*") == ["convnext_atto", "resnet18", "resnet50"]


def test_unknown_name_names_kind_close_names_and_list_command():
    with pytest.raises(UnknownNameError) as err:
        make().get("resnt18")
    msg = str(err.value)
    assert msg.startswith("unknown backbone 'resnt18'") and "'resnet18'" in msg
    assert "`mtlzoo list backbone` shows all 4" in msg
    assert not msg.startswith('"')  # a KeyError subclass prints without KeyError's quotes


def test_a_name_is_added_once():
    reg = make()
    with pytest.raises(ValueError, match="already registered by p1"):
        reg.add(Entry("backbone", "cnn", make_backbone, Opts))


def test_factory_signatures_are_checked_against_the_kind():
    def head(feature_info, out_channels, options):
        return None

    def head_without_options(feature_info, out_channels):
        return None

    def head_defaults(feature_info=None, out_channels=1, options=None):
        return None

    assert check_factory_signature(head, "head", True) is None
    assert check_factory_signature(head_without_options, "head", False) is None
    assert "cannot be called as factory(feature_info, out_channels, options)" in check_factory_signature(
        head_without_options, "head", True
    )
    assert "'feature_info' has a default" in check_factory_signature(head_defaults, "head", True)
    assert check_factory_signature(lambda *a: a, "loss", True) is None  # *args takes anything


def test_lazy_factory_is_imported_once_and_validated():
    entry = Entry("dataset", "later", "collections:OrderedDict", None, plugin="p")
    entry.validate()
    assert entry.load() is __import__("collections").OrderedDict and entry.load() is entry.load()
    with pytest.raises(PluginError, match=r"dataset 'bad' \(plugin p\): factory 'no colon' is not"):
        Entry("dataset", "bad", "no colon", plugin="p").validate()


def test_registries_has_one_per_kind_and_helps_with_typos():
    regs = Registries()
    assert [r.kind for r in regs] == list(KINDS)
    with pytest.raises(UnknownNameError, match="did you mean 'backbone'"):
        regs["backbones"]
