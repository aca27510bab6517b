"""Spec loading: validation with key paths, overrides, defaults, and configs-are-data."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from mtlzoo.config import load, read_spec, to_yaml
from mtlzoo.errors import ConfigError


def test_tiny_spec_loads_with_defaults_filled(spec_factory):
    cfg = load(spec_factory())
    assert cfg.train.optimizer.name == "adamw" and cfg.train.scheduler.name == "cosine"
    assert cfg.model.backbone.name == "cnn" and list(cfg.model.backbone.channels) == [8, 16, 32]
    seg = cfg.tasks.semseg
    assert seg.target == "semseg" and seg.head.name == "fcn" and seg.loss.name == "ce"
    assert [m.name for m in seg.metrics] == ["miou", "pixel_acc"]
    assert "channels" in seg.head  # head defaults filled from its schema
    assert cfg.combiner.name == "sum"


def test_unknown_plugin_option_names_full_path_and_suggestion(spec_factory):
    spec = spec_factory(**{"tasks.semseg.head": {"name": "fcn", "chanels": 8}})
    with pytest.raises(ConfigError) as err:
        load(spec)
    msg = str(err.value)
    assert msg.startswith("tasks.semseg.head.chanels: unknown option of head 'fcn'")
    assert "did you mean 'channels'" in msg


def test_wrong_type_names_path_and_expected_type(spec_factory):
    with pytest.raises(ConfigError) as err:
        load(spec_factory(**{"train.epochs": "many"}))
    assert str(err.value).startswith("train.epochs: Value 'many'")
    assert "expected int" in str(err.value)
    with pytest.raises(ConfigError, match=r"^model.backbone.channels\[1\]: .*could not be converted"):
        load(spec_factory(**{"model.backbone.channels": [8, "wide"]}))


def test_unknown_top_level_key_and_section_key(spec_factory):
    with pytest.raises(ConfigError, match=r"^trian: unknown option of the spec \(did you mean 'train'\?\)"):
        load({**spec_factory(), "trian": {}})
    with pytest.raises(ConfigError, match=r"^train.epoch: unknown option .*did you mean 'epochs'"):
        load(spec_factory(**{"train.epoch": 3}))


def test_misspelled_plugin_name_lists_close_names(spec_factory):
    with pytest.raises(ConfigError) as err:
        load(spec_factory(**{"combiner.name": "summ"}))
    msg = str(err.value)
    assert msg.startswith("combiner.name: unknown combiner 'summ'; did you mean 'sum'")
    assert "mtlzoo list combiner" in msg
    with pytest.raises(ConfigError, match=r"^tasks.depth.type: unknown task 'dept'"):
        load(spec_factory(**{"tasks.depth.type": "dept"}))


def test_dot_list_overrides_apply_before_validation(tmp_path, spec_factory):
    path = tmp_path / "s.yaml"
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(spec_factory())))
    cfg = load(path, ["train.epochs=3", "combiner.name=weighted", "combiner.weights={semseg: 2.0}",
                      "~tasks.labels"])
    assert cfg.train.epochs == 3 and cfg.combiner.name == "weighted"
    assert cfg.combiner.weights == {"semseg": 2.0} and "labels" not in cfg.tasks
    with pytest.raises(ConfigError, match="not of the form key.path=value"):
        load(path, ["train.epochs"])


def test_oc_coerce_never_imports(tmp_path, spec_factory, monkeypatch):
    import sys

    spec = spec_factory(name="${oc.coerce:mtlzoo_never_imported_module.Thing,1}")
    with pytest.raises(ConfigError, match="resolver 'oc.coerce' is not allowed"):
        load(spec)
    # even if the allow-list check were bypassed, the resolver itself refuses
    cfg = OmegaConf.create({"x": "${oc.coerce:os.path.Thing,1}"})
    with pytest.raises(Exception, match="disabled"):
        OmegaConf.to_container(cfg, resolve=True)
    assert "mtlzoo_never_imported_module" not in sys.modules


def test_yaml_tags_are_not_executed(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        read_spec(path)


def test_plain_interpolation_and_env_resolver_work(spec_factory, monkeypatch):
    monkeypatch.setenv("MTLZOO_TEST_EPOCHS", "4")
    spec = spec_factory(**{"train.epochs": "${oc.env:MTLZOO_TEST_EPOCHS}", "name": "${data.name}-run"})
    cfg = load(spec)
    assert cfg.train.epochs == 4 and cfg.name == "shapes-run"


def test_missing_file_and_bad_yaml_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="spec file .*nope.yaml' not found"):
        load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\nb: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+, column \d+: invalid YAML"):
        load(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load(listy)


def test_semantic_checks(spec_factory):
    with pytest.raises(ConfigError, match=r"^train.optimizer.name: 'adam' is not one of adamw, sgd"):
        load(spec_factory(**{"train.optimizer": {"name": "adam"}}))
    with pytest.raises(ConfigError, match=r"^train.batch_size: must be >= 1"):
        load(spec_factory(**{"train.batch_size": 0}))
    with pytest.raises(ConfigError, match=r"^tasks: no tasks given"):
        load(spec_factory(tasks={}))
    with pytest.raises(ConfigError, match=r"^data: no dataset given"):
        load(spec_factory(data={}))


def test_from_round_trips_through_yaml(spec_factory):
    cfg = load(spec_factory(**{"tasks.edges": {"type": "boundary", "from": "semseg", "width": 3}}))
    assert cfg.tasks.edges.source == "semseg"
    text = to_yaml(cfg)
    assert "from: semseg" in text and "source:" not in text
    again = load(OmegaConf.create(__import__("yaml").safe_load(text)))
    assert again.tasks.edges.source == "semseg" and again == cfg


def test_head_options_without_name_refine_the_task_type_default(spec_factory):
    cfg = load(spec_factory(**{"tasks.semseg.head": {"channels": 12}}))
    assert cfg.tasks.semseg.head.name == "fcn" and cfg.tasks.semseg.head.channels == 12
    cfg = load(spec_factory(**{"tasks.semseg.head": {"name": "unet"}}))
    assert cfg.tasks.semseg.head.name == "unet" and "channels" not in cfg.tasks.semseg.head
