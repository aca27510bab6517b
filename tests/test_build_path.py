"""The build path as one typed path: a spec is read and validated once per command, the built
spec carries the validated options, each kind's product is checked in one place, built-ins
import only the public contract, and the plugin-loading errors say why."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import mtlzoo
from mtlzoo import ConfigError, PluginError, Zoo, hookimpl
from mtlzoo.apps.cli import main
from mtlzoo.contract.hooks import KINDS
from mtlzoo.zoo import spec as spec_module
from mtlzoo.zoo.parts import Part, Spec
from mtlzoo.zoo.registry import Entry

ROOT = Path(__file__).resolve().parents[1]


# -- one validation per command -------------------------------------------------------------------
def test_train_reads_the_spec_once_and_validates_each_parts_options_once(
    tmp_path, spec_factory, monkeypatch, capsys
):
    spec = tmp_path / "tiny.yaml"
    tiny = spec_factory(**{"train.out_dir": str(tmp_path / "runs"), "data.train_size": 8})
    tiny["tasks"]["boundary"] = {"type": "boundary", "from": "semseg"}
    spec.write_text(yaml.safe_dump(tiny))
    validated: Counter[str] = Counter()
    reads: Counter[str] = Counter()
    build_options, read_spec = Entry.build_options, spec_module.read_spec

    def counting_build_options(self, values, path):
        validated[path] += 1
        return build_options(self, values, path)

    def counting_read_spec(source, overrides=()):
        reads[str(source) if isinstance(source, (str, Path)) else type(source).__name__] += 1
        return read_spec(source, overrides)

    monkeypatch.setattr(Entry, "build_options", counting_build_options)
    monkeypatch.setattr(spec_module, "read_spec", counting_read_spec)
    monkeypatch.setattr("mtlzoo.zoo.zoo.read_spec", counting_read_spec)
    assert main(["train", str(spec), "train.run_name=once"]) == 0, capsys.readouterr().err
    # every part of the spec (the task types' defaults included), each validated exactly once
    metrics = {"semseg": 2, "depth": 2, "labels": 2, "boundary": 1}
    expected = ["model.backbone", "combiner", "data"]
    for t, n in metrics.items():
        expected += [
            f"tasks.{t}",
            f"tasks.{t}.head",
            f"tasks.{t}.loss",
            *(f"tasks.{t}.metrics[{i}]" for i in range(n)),
        ]
    assert validated == Counter(expected)
    assert dict(reads) == {str(spec): 1}
    assert (tmp_path / "runs" / "once" / "summary.json").is_file()


def test_a_validated_spec_carries_its_parts_and_builds_without_validating_again(
    zoo, spec_factory, monkeypatch
):
    spec = zoo.validate(spec_factory(**{"combiner": {"name": "weighted", "weights": {"semseg": 2.0}}}))
    assert isinstance(spec, Spec) and zoo.validate(spec) is spec
    assert spec.combiner.label == "combiner 'weighted' (plugin builtin_combiners)"
    assert spec.combiner.options.weights == {"semseg": 2.0}
    assert [p.path for p in spec.parts()][:3] == ["model.backbone", "tasks.semseg", "tasks.semseg.head"]
    assert spec.tasks["semseg"].head.name == "fcn" and spec.cfg.tasks.semseg.head.name == "fcn"

    def refuse(self, values, path):
        raise AssertionError(f"{path} validated again")

    monkeypatch.setattr(Entry, "build_options", refuse)
    exp = zoo.build(spec)
    assert exp.combiner.weights.tolist() == [2.0, 1.0, 1.0] and exp.cfg is spec.cfg


def test_a_validated_spec_with_overrides_is_validated_again(zoo, spec_factory):
    spec = zoo.validate(spec_factory())
    again = zoo.validate(spec, ["train.epochs=3"])
    assert again is not spec and again.cfg.train.epochs == 3 and spec.cfg.train.epochs == 1
    with pytest.raises(ConfigError, match=r"^train.epochs: must be >= 1"):
        zoo.validate(spec, ["train.epochs=0"])


def test_relative_data_roots_resolve_against_the_spec_file_in_the_options_too(zoo, tmp_path):
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "s.yaml").write_text(
        yaml.safe_dump(
            {
                "model": {"backbone": "cnn"},
                "tasks": {"semseg": {"type": "segmentation"}},
                "combiner": "sum",
                "data": {"name": "camvid", "root": "../data/camvid"},
            }
        )
    )
    spec = zoo.validate(folder / "s.yaml")
    assert spec.data.options.root == str(tmp_path / "data" / "camvid") == spec.cfg.data.root
    given = zoo.validate(folder / "s.yaml", ["data.root=rel/camvid"])
    assert given.data.options.root == "rel/camvid"  # an override stays relative to the current folder


# -- each kind's product, checked once in Zoo.make -------------------------------------------------
@dataclass
class _Nothing:
    """Options that make a factory return the wrong thing."""

    value: int = 0


def _wrong(*args):
    return {"not": "a part"}


class _NoDirection:
    higher_is_better = None


class _NoInfo:
    info = None


class _Plugin:
    @hookimpl
    def register_backbones(self, register):
        register("dict_backbone", _wrong)

    @hookimpl
    def register_heads(self, register):
        register("dict_head", lambda feature_info, out_channels: 3)

    @hookimpl
    def register_losses(self, register):
        register("int_loss", lambda task: 3)

    @hookimpl
    def register_metrics(self, register):
        register("undirected", lambda task: _NoDirection())

    @hookimpl
    def register_combiners(self, register):
        register("dict_combiner", lambda task_names: {})

    @hookimpl
    def register_datasets(self, register):
        register("no_info", lambda split: _NoInfo())

    @hookimpl
    def register_tasks(self, register):
        register("not_a_type", lambda: "segmentation")

    @hookimpl
    def register_target_kinds(self, register):
        from mtlzoo.builtin.targets import depth

        register("misnamed", depth)

    @hookimpl
    def register_architectures(self, register):
        register("list_model", lambda parts: [])


@pytest.fixture(scope="module")
def wrong_zoo():
    return Zoo.load(plugins=[("wrong", _Plugin())], strict=True)


@pytest.mark.parametrize(
    ("kind", "name", "args", "message"),
    [
        ("backbone", "dict_backbone", (), "built dict, not an nn.Module"),
        ("head", "dict_head", ([], 3), "built int, not an nn.Module"),
        ("loss", "int_loss", (None,), "built int, which is not callable; a loss factory returns a callable"),
        (
            "metric",
            "undirected",
            (None,),
            "built _NoDirection whose higher_is_better is None, not a metric that sets higher_is_better",
        ),
        ("combiner", "dict_combiner", (["a"],), "built dict, not a mtlzoo Combiner"),
        (
            "dataset",
            "no_info",
            ("train",),
            "built _NoInfo whose info is None, not a dataset with an `info: DatasetInfo` attribute",
        ),
        ("task", "not_a_type", (), "built str, not a mtlzoo TaskType"),
        ("architecture", "list_model", (None,), "built list, not a mtlzoo Architecture"),
    ],
)
def test_make_checks_what_each_kind_returns_in_one_line(wrong_zoo, kind, name, args, message):
    with pytest.raises(PluginError) as err:
        wrong_zoo.make(kind, {"name": name}, *args, path="the.key")
    assert str(err.value).startswith(f"the.key: {kind} {name!r} (plugin wrong) {message}")
    assert "\n" not in str(err.value)
    # a validated part is checked the same way, at its own path
    part = Part("at.its.path", wrong_zoo.entry(kind, name), None)
    with pytest.raises(PluginError, match=rf"^at\.its\.path: {kind} '{name}' \(plugin wrong\) built"):
        wrong_zoo.make(kind, part, *args)


def test_every_kind_declares_what_its_factory_returns():
    for kind, spec in KINDS.items():
        assert spec.returns.words, kind
        assert spec.returns.type or spec.returns.callable or spec.returns.attributes, kind


def test_a_target_kind_whose_name_is_not_its_registered_name_is_refused(wrong_zoo):
    with pytest.raises(
        PluginError, match=r"target_kind 'misnamed' \(plugin wrong\) built .*whose name is its"
    ):
        wrong_zoo.target_kind("misnamed")


def test_a_task_type_of_the_wrong_type_is_refused_when_the_spec_is_validated(wrong_zoo, spec_factory):
    with pytest.raises(
        PluginError,
        match=r"^tasks.semseg: task 'not_a_type' \(plugin wrong\) built str, not a mtlzoo TaskType",
    ):
        wrong_zoo.validate(spec_factory(**{"tasks.semseg": {"type": "not_a_type"}}))


def test_the_kit_still_calls_factories_without_the_product_check(wrong_zoo):
    entry = wrong_zoo.entry("combiner", "dict_combiner")
    assert wrong_zoo.call(entry, ["a"], path="combiner") == {}


# -- built-ins use only the public contract ------------------------------------------------------------
def _imports(path: Path) -> list[str]:
    """Every module a file imports (relative imports resolved against its package)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                out.append(".".join([*base, *([node.module] if node.module else [])]))
            else:
                out.append(node.module or "")
    return out


def test_builtin_plugins_import_only_what_a_third_party_plugin_can():
    files = sorted((ROOT / "mtlzoo" / "builtin").rglob("*.py"))
    assert len(files) > 20
    offending = {
        str(f.relative_to(ROOT)): m
        for f in files
        for m in _imports(f)
        if m.startswith(("mtlzoo.runtime", "mtlzoo.zoo", "mtlzoo.apps"))
    }
    assert offending == {}
    # nor do they point readers there
    assert [f for f in files if "mtlzoo.runtime" in f.read_text(encoding="utf-8")] == []


def test_the_import_check_sees_relative_imports():
    hps = ROOT / "mtlzoo" / "builtin" / "architectures" / "hps.py"
    assert "mtlzoo.contract.model" in _imports(hps)


def test_the_moved_helpers_keep_their_old_import_paths():
    from mtlzoo.contract import model, weights
    from mtlzoo.runtime import model as old_model
    from mtlzoo.runtime import weights as old_weights

    assert mtlzoo.MultiTaskModel is model.MultiTaskModel is old_model.MultiTaskModel
    assert old_model.Normalize is model.Normalize
    assert old_weights.read_state_dict is weights.read_state_dict
    assert set(old_weights.__all__) == set(weights.__all__)


def test_an_experiments_model_is_typed_as_any_architecture():
    from typing import get_type_hints

    from mtlzoo.contract.architecture import Architecture
    from mtlzoo.runtime.experiment import Experiment

    assert get_type_hints(Experiment)["model"] is Architecture


# -- plugin loading says why ----------------------------------------------------------------------
def _combiner_plugin(name: str):
    class P:
        @hookimpl
        def register_combiners(self, register):
            from mtlzoo.builtin.combiners.basic import SumCombiner

            register(name, SumCombiner)

    return P()


def test_a_name_refused_for_a_collision_says_so(spec_factory):
    z = Zoo.load(plugins=[("a", _combiner_plugin("shared")), ("b", _combiner_plugin("shared"))])
    with pytest.raises(ConfigError) as err:
        z.validate(spec_factory(combiner={"name": "shared"}))
    msg = str(err.value)
    assert msg.startswith(
        "combiner.name: combiner 'shared' is not available: it was refused when plugins loaded"
    )
    assert "plugins 'a' and 'b' both register it" in msg and "block one of them" in msg


def test_a_name_refused_for_an_invalid_registration_says_why(spec_factory):
    class P:
        @hookimpl
        def register_combiners(self, register):
            register("two_args", lambda a, b: None)

    z = Zoo.load(plugins=[("p", P())])
    with pytest.raises(ConfigError, match=r"combiner 'two_args' is not available: .*cannot be called as"):
        z.validate(spec_factory(combiner={"name": "two_args"}))


def test_an_unknown_name_names_the_plugins_that_were_not_loaded(spec_factory):
    class Broken:
        @hookimpl
        def register_combiners(self, register):
            raise RuntimeError("boom")

    z = Zoo.load(plugins=[("broken", Broken()), ("mine", _combiner_plugin("mine"))], block=["mine"])
    with pytest.raises(ConfigError) as err:
        z.validate(spec_factory(combiner={"name": "mine"}))
    assert str(err.value).startswith("combiner.name: unknown combiner 'mine'")
    assert str(err.value).endswith("not loaded: plugin 'broken' (failed to load), 'mine' (blocked)")
    assert "traceback" not in str(err.value).lower()
    record = next(r for r in z.records if r.name == "broken")
    assert 'raise RuntimeError("boom")' in record.traceback


# -- the CLI's spec path ----------------------------------------------------------------------------
def test_a_refused_spec_stops_train_before_torch_is_imported(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "model: {backbone: {name: cnn}}\ntasks: {semseg: {type: segmentation}}\ncombiner: {name: sum}\n"
        "data: {name: shapes}\ntrain: {epohcs: 2}\n"
    )
    code = (
        "import sys; from mtlzoo.apps.cli import main; "
        f"rc = main(['train', {str(bad)!r}]); print('TORCH', 'torch' in sys.modules); sys.exit(rc)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and out.stderr.startswith("error: train.epohcs: unknown option"), out.stderr
    assert out.stdout.strip().splitlines()[-1] == "TORCH False"


def test_config_show_and_train_refuse_an_unknown_timm_architecture_alike(capsys, root, monkeypatch):
    monkeypatch.chdir(root)
    errors = []
    for command in (["config", "show"], ["train"]):
        assert main([*command, "configs/quickstart.yaml", "model.backbone.arch=resnt18"]) == 2
        errors.append(capsys.readouterr().err)
    assert errors[0] == errors[1]
    assert errors[0].startswith(
        "error: model.backbone.arch: unknown timm architecture 'resnt18'; closest timm names: 'resnet18'"
    )
    assert main(["config", "show", "configs/quickstart.yaml", "model.backbone.arch=resnet50.a1_in1k"]) == 0
    assert (
        main(["config", "show", "configs/quickstart.yaml", "model.backbone={name: smp, arch: tu-resnt18}"])
        == 2
    )
    assert "model.backbone.arch: tu-: unknown timm architecture 'resnt18'" in capsys.readouterr().err


def test_the_torch_free_timm_name_scan_finds_every_timm_architecture():
    import timm

    from mtlzoo.builtin.backbones.names import scanned_timm_names

    assert scanned_timm_names(deprecated=False) == set(timm.list_models())
    old = scanned_timm_names() - scanned_timm_names(deprecated=False)
    assert old and all(timm.is_model(name) for name in old)
