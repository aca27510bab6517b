"""Every config in configs/ builds and predicts (on a tiny copy of its dataset's layout), and the
CPU try-out lines the configs document are valid."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest
import torch
import yaml

from mtlzoo import Zoo

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(ROOT.glob("configs/**/*.yaml"))
EXAMPLE_PLUGIN = ROOT / "plugins" / "mtlzoo-example"


@pytest.fixture(scope="module")
def full_zoo():
    """The installed plugins plus mtlzoo-example (configs/examples/third_party_plugin.yaml uses
    it). Installed, or with its package metadata in its source folder (after a local `pip
    install`), its entry point loads from sys.path; in a fresh checkout it is added in-process."""
    sys.path.insert(0, str(EXAMPLE_PLUGIN))
    try:
        zoo = Zoo.load(strict=True)
        if "example" not in {r.name for r in zoo.records}:
            import mtlzoo_example.plugin as example

            zoo = Zoo.load(strict=True, plugins=[("example", example)])
        yield zoo
    finally:
        sys.path.remove(str(EXAMPLE_PLUGIN))


def tiny_overrides(zoo: Zoo, raw: dict, folder: Path) -> list[str]:
    """Overrides that point a config at a tiny copy of its dataset (the dataset's own
    conformance examples) and keep its sizes small; the rest of the config stays as written."""
    data = dict(raw["data"]) if isinstance(raw["data"], dict) else {"name": raw["data"]}
    out = ["train.device=cpu"]
    entry = zoo.entry("dataset", data["name"])
    if data["name"] == "shapes":
        out += ["data.size=[32,32]", "data.train_size=4", "data.val_size=2", "data.test_size=2"]
    elif entry.examples is not None:
        examples = entry.examples(folder)
        # the example whose options agree with the config's (cityscapes: 7 or 19 classes)
        agree = [e for e in examples if all(data.get(k, v) == v for k, v in e.items() if k != "root")]
        for key, value in (agree or examples)[0].items():
            out.append(f"data.{key}={yaml.safe_dump(value, default_flow_style=True).strip()}")
        if data.get("size") is not None and "size" not in (agree or examples)[0]:
            out.append("data.size=null")
    if (raw.get("augment") or {}).get("crop"):
        out.append("augment.crop=[32,32]")
    return out


@pytest.mark.parametrize("path", CONFIGS, ids=[p.relative_to(ROOT / "configs").as_posix() for p in CONFIGS])
def test_every_config_builds_and_predicts(full_zoo, path, tmp_path):
    raw = yaml.safe_load(path.read_text())
    exp = full_zoo.build(path, tiny_overrides(full_zoo, raw, tmp_path))
    assert list(exp.tasks) == list(raw["tasks"])
    sample = exp.dataset("train")[0]
    assert sample["image"].ndim == 3 and all(t.target in sample for t in exp.tasks.values())
    exp.model.eval()
    with torch.no_grad():
        preds = exp.model(torch.rand(2, 3, 64, 64))
    assert set(preds) == set(raw["tasks"])
    assert all(p.shape[0] == 2 and torch.isfinite(p).all() for p in preds.values())


def test_the_configs_are_the_ones_this_file_checks():
    # a new config directory is picked up by the glob; one outside configs/ is not a config
    assert len(CONFIGS) >= 20 and ROOT / "configs" / "quickstart.yaml" in CONFIGS


TRY_OUT = re.compile(r"^# +(mtlzoo train (configs/\S+) .*)$", re.M)


def try_out_lines() -> list[tuple[Path, str]]:
    """``(config, command)`` of every `mtlzoo train <config> ...` line a config documents."""
    out = []
    for path in CONFIGS:
        for command, named in TRY_OUT.findall(path.read_text()):
            assert ROOT / named == path, f"{path.name} documents a command for {named}"
            out.append((path, command))
    return out


def test_the_real_data_mtan_configs_document_a_cpu_try_out():
    documented = {path.relative_to(ROOT).as_posix() for path, _ in try_out_lines()}
    for path in ROOT.glob("configs/*/mtan.yaml"):
        assert path.relative_to(ROOT).as_posix() in documented, path


@pytest.mark.parametrize(
    "path, command", try_out_lines(), ids=lambda x: x.name if isinstance(x, Path) else ""
)
def test_each_documented_command_is_a_valid_cpu_spec(full_zoo, path, command, tmp_path):
    args = shlex.split(command)[3:]  # mtlzoo train <config> <overrides>
    assert all("=" in a for a in args), command
    cfg = full_zoo.spec(path, args)
    assert cfg.train.device in ("cpu", "auto"), command
    # and it builds and trains one step on a tiny copy of the data
    raw = yaml.safe_load(path.read_text())
    tiny = [o for o in tiny_overrides(full_zoo, raw, tmp_path) if o.startswith("data.")]
    exp = full_zoo.build(path, [*args, *tiny])
    batch = torch.utils.data.default_collate([exp.dataset("train")[i] for i in range(2)])
    preds = exp.model(batch["image"])
    loss = sum(t.loss(preds[n], batch[t.target]) for n, t in exp.tasks.items())
    loss.backward()
    assert torch.isfinite(loss)
