"""Spec loading: validation with key paths, overrides, defaults, and configs-are-data."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from mtlzoo import ConfigError
from mtlzoo.runtime.files import spec_yaml as to_yaml
from mtlzoo.zoo.spec import read_spec


@pytest.fixture
def load(zoo):
    """``load(spec, overrides)``: validate a spec against the installed plugins."""
    return zoo.spec


def test_tiny_spec_loads_with_defaults_filled(load, spec_factory):
    cfg = load(spec_factory())
    assert cfg.train.optimizer.name == "adamw" and cfg.train.scheduler.name == "cosine"
    assert cfg.model.backbone.name == "cnn" and list(cfg.model.backbone.channels) == [8, 16, 32]
    seg = cfg.tasks.semseg
    assert seg.target == "semseg" and seg.head.name == "fcn" and seg.loss.name == "ce"
    assert [m.name for m in seg.metrics] == ["miou", "pixel_acc"]
    assert "channels" in seg.head  # head defaults filled from its schema
    assert cfg.combiner.name == "sum"


def test_unknown_plugin_option_names_full_path_and_suggestion(load, spec_factory):
    spec = spec_factory(**{"tasks.semseg.head": {"name": "fcn", "chanels": 8}})
    with pytest.raises(ConfigError) as err:
        load(spec)
    msg = str(err.value)
    assert msg.startswith("tasks.semseg.head.chanels: unknown option of head 'fcn'")
    assert "did you mean 'channels'" in msg


def test_wrong_type_names_path_and_expected_type(load, spec_factory):
    with pytest.raises(ConfigError) as err:
        load(spec_factory(**{"train.epochs": "many"}))
    assert str(err.value) == "train.epochs: expected an integer, got 'many'"
    with pytest.raises(ConfigError, match=r"^model.backbone.channels\[1\]: expected an integer, got 'wide'"):
        load(spec_factory(**{"model.backbone.channels": [8, "wide"]}))


def test_unknown_top_level_key_and_section_key(load, spec_factory):
    with pytest.raises(ConfigError, match=r"^trian: unknown option of the spec \(did you mean 'train'\?\)"):
        load({**spec_factory(), "trian": {}})
    with pytest.raises(ConfigError, match=r"^train.epoch: unknown option .*did you mean 'epochs'"):
        load(spec_factory(**{"train.epoch": 3}))


def test_misspelled_plugin_name_lists_close_names(load, spec_factory):
    with pytest.raises(ConfigError) as err:
        load(spec_factory(**{"combiner.name": "summ"}))
    msg = str(err.value)
    assert msg.startswith("combiner.name: unknown combiner 'summ'; did you mean 'sum'")
    assert "mtlzoo list combiner" in msg
    with pytest.raises(ConfigError, match=r"^tasks.depth.type: unknown task 'dept'"):
        load(spec_factory(**{"tasks.depth.type": "dept"}))


def test_dot_list_overrides_apply_before_validation(load, tmp_path, spec_factory):
    path = tmp_path / "s.yaml"
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(spec_factory())))
    cfg = load(
        path, ["train.epochs=3", "combiner.name=weighted", "combiner.weights={semseg: 2.0}", "~tasks.labels"]
    )
    assert cfg.train.epochs == 3 and cfg.combiner.name == "weighted"
    assert cfg.combiner.weights == {"semseg": 2.0} and "labels" not in cfg.tasks
    with pytest.raises(ConfigError, match="not of the form key.path=value"):
        load(path, ["train.epochs"])


def test_oc_coerce_never_imports(load, tmp_path, spec_factory, monkeypatch):
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


def test_plain_interpolation_and_env_resolver_work(load, spec_factory, monkeypatch):
    monkeypatch.setenv("MTLZOO_TEST_EPOCHS", "4")
    spec = spec_factory(**{"train.epochs": "${oc.env:MTLZOO_TEST_EPOCHS}", "name": "${data.name}-run"})
    cfg = load(spec)
    assert cfg.train.epochs == 4 and cfg.name == "shapes-run"


def test_missing_file_and_bad_yaml_are_one_line_errors(load, tmp_path):
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


def test_semantic_checks(load, spec_factory):
    with pytest.raises(ConfigError, match=r"^train.optimizer.name: 'adam' is not one of 'adamw', 'sgd'"):
        load(spec_factory(**{"train.optimizer": {"name": "adam"}}))
    with pytest.raises(ConfigError, match=r"^train.batch_size: must be >= 1"):
        load(spec_factory(**{"train.batch_size": 0}))
    with pytest.raises(ConfigError, match=r"^tasks: no tasks given"):
        load(spec_factory(tasks={}))
    with pytest.raises(ConfigError, match=r"^data: no dataset given"):
        load(spec_factory(data={}))


def test_from_round_trips_through_yaml(load, spec_factory):
    cfg = load(spec_factory(**{"tasks.edges": {"type": "boundary", "from": "semseg", "width": 3}}))
    assert cfg.tasks.edges["from"] == "semseg" and cfg.tasks.edges.width == 3
    text = to_yaml(cfg)
    assert "from: semseg" in text and "source:" not in text
    again = load(OmegaConf.create(__import__("yaml").safe_load(text)))
    assert again.tasks.edges["from"] == "semseg" and again == cfg


def test_head_options_without_name_refine_the_task_type_default(load, spec_factory):
    cfg = load(spec_factory(**{"tasks.semseg.head": {"channels": 12}}))
    assert cfg.tasks.semseg.head.name == "fcn" and cfg.tasks.semseg.head.channels == 12
    cfg = load(spec_factory(**{"tasks.semseg.head": {"name": "unet"}}))
    assert cfg.tasks.semseg.head.name == "unet" and "channels" not in cfg.tasks.semseg.head


def test_a_tuple_option_of_the_wrong_length_is_one_line(load, spec_factory):
    with pytest.raises(ConfigError) as err:
        load(spec_factory(**{"augment.crop": [16]}))
    assert str(err.value) == "augment.crop: expected 2 values (tuple[int, int]), got 1: [16]"
    with pytest.raises(ConfigError, match=r"^train.optimizer.betas: expected 2 values"):
        load(spec_factory(**{"train.optimizer.betas": [0.9, 0.99, 0.999]}))


def test_numbers_booleans_and_names_are_checked_where_declared(load, spec_factory):
    cases = {
        "train.compile": (7, "train.compile: expected true or false, got 7 (int)"),
        "train.optimizer.lr": (float("inf"), "train.optimizer.lr: must be a finite number, got inf"),
        "train.scheduler.min_lr": (-1.0, "train.scheduler.min_lr: must be >= 0, got -1"),
        "train.grad_clip": (-1.0, "train.grad_clip: must be > 0, got -1"),
        "train.max_steps_per_epoch": (
            -2,
            "train.max_steps_per_epoch: must be >= 1 and <= 1000000000, got -2",
        ),
        "train.run_name": ("../../x", "train.run_name: '../../x' must be a plain folder name"),
        "seed": (10**30, f"seed: must be >= 0 and < {2**63}, got {10**30}"),
        "train.amp": ("fp8", "train.amp: 'fp8' is not one of 'off', 'bf16', 'fp16', 'auto'"),
    }
    for key, (value, message) in cases.items():
        with pytest.raises(ConfigError) as err:
            load(spec_factory(**{key: value}))
        assert str(err.value).startswith(message), (key, str(err.value))
    assert load(spec_factory(**{"train.amp": False})).train.amp == "off"  # YAML's bare `off`


def test_moved_keys_name_their_new_place(load, spec_factory):
    with pytest.raises(ConfigError, match=r"^augment.normalize: moved to model.normalize"):
        load(spec_factory(**{"augment.normalize": "auto"}))
    assert load(spec_factory(**{"model.normalize": "imagenet"})).model.normalize == "imagenet"


def test_duplicate_yaml_keys_are_refused_with_both_lines(load, tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("name: a\ntrain: {epochs: 1}\nseed: 0\ntrain: {epochs: 2}\n")
    with pytest.raises(ConfigError, match=r"dup.yaml: line 4: duplicate key 'train' \(first at line 2\)"):
        load(path)


def test_resolvers_cannot_be_reached_through_oc_decode(load, spec_factory):
    spec = spec_factory(dollar="$", name="${oc.decode:'${dollar}{oc.create:{a: 1}}'}")
    with pytest.raises(ConfigError, match="resolver 'oc.create' is not allowed"):
        load(spec)


def test_alias_bombs_and_deep_nesting_are_refused_quickly(load, tmp_path):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi")
    )
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb)
    with pytest.raises(ConfigError, match="more than 100000 values once YAML aliases are expanded"):
        load(path)
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 200 + "]" * 200 + "\n")
    with pytest.raises(ConfigError, match="nested"):
        load(deep)


def test_backbone_and_combiner_are_required(load, spec_factory):
    spec = spec_factory()
    del spec["combiner"]
    with pytest.raises(ConfigError, match=r"^combiner: missing; say how the task losses become one update"):
        load(spec)
    spec = spec_factory()
    del spec["model"]
    with pytest.raises(ConfigError, match=r"^model.backbone: missing; name the shared backbone"):
        load(spec)


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("tasks", [1, 2], "tasks: expected a mapping"),
        ("model", [1, 2], "model: expected a mapping"),
        ("train", [1, 2], "train: expected a mapping"),
        ("data", [1, 2], "data: expected a name or {name: ..., <options>}"),
        ("combiner", [1, 2], "combiner: expected a name or {name: ..., <options>}"),
        ("train.eval_batch_size", -1, "train.eval_batch_size: must be >= 1"),
        ("train.optimizer.weight_decay", -3.0, "train.optimizer.weight_decay: must be >= 0"),
        (
            "train.optimizer.weight_decay",
            float("nan"),
            "train.optimizer.weight_decay: must be a finite number",
        ),
        ("train.optimizer.betas", [], "train.optimizer.betas: expected 2 values"),
        ("train.optimizer.betas", [-1, -1], "train.optimizer.betas[0]: must be >= 0 and < 1"),
        ("train.optimizer.betas", [1.5, 2], "train.optimizer.betas[0]: must be >= 0 and < 1"),
        (
            "train.scheduler.warmup_epochs",
            float("nan"),
            "train.scheduler.warmup_epochs: must be a finite number",
        ),
        ("train.scheduler.gamma", float("nan"), "train.scheduler.gamma: must be a finite number"),
        ("train.scheduler.power", float("nan"), "train.scheduler.power: must be a finite number"),
        ("augment.color_jitter", float("nan"), "augment.color_jitter: must be a finite number"),
        ("train.scheduler.warmup_epochs", -1.0, "train.scheduler.warmup_epochs: must be >= 0"),
        ("name", "a/b/c", "name: 'a/b/c' must be a plain folder name"),
        ("train.amp", "fp16", "train.amp: fp16 is refused"),
        (
            "tasks.depth.loss",
            {"name": "ce"},
            "tasks.depth.loss: loss 'ce' works on segmentation, class targets",
        ),
        (
            "tasks.depth.metrics",
            [{"name": "miou"}],
            "tasks.depth.metrics[0]: metric 'miou' works on segmentation",
        ),
    ],
)
def test_every_listed_hole_is_one_line(load, spec_factory, key, value, words):
    spec = spec_factory(**{key: value})
    with pytest.raises(ConfigError) as err:
        load(spec)
    assert str(err.value).startswith(words) and "\n" not in str(err.value), str(err.value)
