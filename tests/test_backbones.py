"""Built-in backbones: timm, smp and cnn (shapes, strides, input statistics, weights files,
errors, registry)."""

from __future__ import annotations

import socket

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

import mtlzoo.builtin.backbones as plugin
from mtlzoo import Zoo
from mtlzoo.builtin.backbones import GIVE_FILE, CNNOptions, SmpOptions, TimmOptions
from mtlzoo.builtin.backbones.cnn import CNNBackbone
from mtlzoo.builtin.backbones.smp import IMAGENET_MEAN, IMAGENET_STD, SmpBackbone
from mtlzoo.builtin.backbones.timm import TimmBackbone
from mtlzoo.contract.backbone import Backbone
from mtlzoo.contract.errors import CheckpointError, ConfigError, MtlzooError, UnknownNameError
from mtlzoo.contract.features import FeatureInfo
from mtlzoo.contract.weights import describe_mismatch, fit_prefix, mismatch, read_state_dict

# channels and strides of each arch's features, read off timm's model cards / source
TIMM_EXPECTED = {
    "resnet18": ([64, 64, 128, 256, 512], [2, 4, 8, 16, 32]),
    "convnext_atto": ([40, 80, 160, 320], [4, 8, 16, 32]),
    "efficientnet_b0": ([16, 24, 40, 112, 320], [2, 4, 8, 16, 32]),
    "mobilenetv3_small_100": ([16, 16, 24, 48, 576], [2, 4, 8, 16, 32]),
    "regnetx_002": ([32, 24, 56, 152, 368], [2, 4, 8, 16, 32]),
}
# a tiny timm model whose pretrained weights expect other statistics than ImageNet's
HALF_ARCH = "mobilenetv4_conv_small_035"
HALF = (0.5, 0.5, 0.5)


def tb(arch: str = "resnet18", **options) -> TimmBackbone:
    return TimmBackbone(TimmOptions(arch=arch, **options))


def sb(arch: str = "resnet18", **options) -> SmpBackbone:
    return SmpBackbone(SmpOptions(arch=arch, **options))


def cnn(channels=(16, 32, 64, 128), norm="batch") -> CNNBackbone:
    return CNNBackbone(CNNOptions(channels=list(channels), norm=norm))


@pytest.fixture(scope="module")
def plugin_zoo() -> Zoo:
    """A zoo of this plugin only (other built-in packages may be mid-migration)."""
    return Zoo.load(entry_points=False, plugins=[("builtin_backbones", plugin)], strict=True)


def config_error(zoo: Zoo, node) -> str:
    with pytest.raises(ConfigError) as err:
        zoo.make("backbone", node, path="model.backbone")
    return str(err.value)


@pytest.fixture
def no_network(monkeypatch):
    """Fail any attempt to open a network connection."""

    def refuse(*args, **kwargs):
        raise AssertionError("mtlzoo tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _check_maps(backbone: nn.Module, channels: list[int], strides: list[int], size: int = 64) -> None:
    assert list(backbone.feature_info) == [FeatureInfo(c, s) for c, s in zip(channels, strides)]
    backbone.eval()
    with torch.no_grad():
        maps = backbone(torch.randn(2, 3, size, size))
    assert isinstance(maps, list)
    assert [tuple(m.shape) for m in maps] == [(2, c, size // s, size // s) for c, s in zip(channels, strides)]


def _same_outputs(a: nn.Module, b: nn.Module) -> bool:
    a.eval(), b.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        return all(torch.equal(u, v) for u, v in zip(a(x), b(x)))


def _perturbed(backbone: nn.Module) -> nn.Module:
    with torch.no_grad():  # make sure loading really changes something
        for p in backbone.parameters():
            p.add_(0.01)
    return backbone


# -- timm -----------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", sorted(TIMM_EXPECTED))
def test_timm_feature_maps_match_feature_info(arch):
    channels, strides = TIMM_EXPECTED[arch]
    backbone = tb(arch)
    assert isinstance(backbone, Backbone)
    _check_maps(backbone, channels, strides)
    # random init: no expected statistics; padding to the coarsest stride aligns every map
    assert backbone.input_mean is None and backbone.input_std is None
    assert backbone.size_divisor == max(strides)


def test_timm_out_indices_and_drop_path():
    backbone = tb("convnext_atto", out_indices=[1, 3], drop_path_rate=0.1)
    _check_maps(backbone, [80, 320], [8, 32])
    rates = [m.drop_prob for m in backbone.modules() if isinstance(m, timm.layers.DropPath)]
    assert rates and max(rates) == pytest.approx(0.1)
    # zero rate is not passed on: no DropPath module at all
    assert not any(isinstance(m, timm.layers.DropPath) for m in tb("convnext_atto").modules())


def test_timm_size_divisor_is_the_largest_stride_returned():
    assert tb("convnext_atto", out_indices=[1, 3]).size_divisor == 32
    fine = tb("convnext_atto", out_indices=[0, 1])
    assert fine.size_divisor == 8
    _check_maps(fine, [40, 80], [4, 8], size=40)  # 40 = 5 * 8: both maps exact


def test_timm_bad_out_indices_is_config_error():
    with pytest.raises(ConfigError, match="resnet18"):
        tb("resnet18", out_indices=[7])


def test_timm_unknown_arch_lists_close_names():
    with pytest.raises(UnknownNameError) as err:
        tb("resnet19")
    message = str(err.value)
    assert "'resnet19'" in message and "'resnet18'" in message
    assert "mtlzoo list backbone 'timm:*pattern*'" in message


def test_pretrained_options_are_checked_before_any_build(monkeypatch, no_network, plugin_zoo):
    def boom(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(timm, "create_model", boom)
    timm_entry, smp_entry = plugin_zoo.entry("backbone", "timm"), plugin_zoo.entry("backbone", "smp")
    # timm (and tu- encoders): pretrained alone is valid, timm loads its own weights
    # (tests/test_pretrained.py: from the cache, and the one-line failure offline)
    assert timm_entry.build_options({"pretrained": True}, "model.backbone").pretrained is True
    assert smp_entry.build_options({"arch": "tu-resnet18", "pretrained": True}, "model.backbone").pretrained
    # smp's own encoders: smp would download them; refused with the way out
    message = config_error(plugin_zoo, {"name": "smp", "pretrained": True})
    assert message == (
        "model.backbone.pretrained: smp would download the weights of its own encoder 'resnet18'; "
        f"{GIVE_FILE} (a state dict of the smp encoder), or use a tu-<timm name> encoder "
        "(timm's weights, from its local cache)"
    )
    assert "model.backbone.weights: /path/file.safetensors" in message
    assert config_error(plugin_zoo, {"name": "smp", "weights": "package:efficientnet-lite0"}).startswith(
        "model.backbone.weights: packaged weights are for the timm backbone"
    )
    # a weights file satisfies it (the options are valid; building would read the file)
    for entry in (timm_entry, smp_entry):
        options = entry.build_options({"pretrained": True, "weights": "w.pth"}, "model.backbone")
        assert options.weights == "w.pth"


def test_timm_weights_roundtrip_safetensors_and_pth(tmp_path, no_network):
    source = _perturbed(tb("resnet18"))
    save_file(source.model.state_dict(), str(tmp_path / "feats.safetensors"))
    torch.save(source.state_dict(), tmp_path / "wrapper.pth")  # keys prefixed "model."
    assert not _same_outputs(source, tb("resnet18"))
    for name in ("feats.safetensors", "wrapper.pth"):
        loaded = tb("resnet18", pretrained=True, weights=str(tmp_path / name))
        assert _same_outputs(source, loaded), name
        # loaded weights expect the statistics of timm's pretrained config
        assert loaded.input_mean == IMAGENET_MEAN and loaded.input_std == IMAGENET_STD
        assert loaded.size_divisor == 32


def test_timm_input_stats_come_from_the_pretrained_config(tmp_path, no_network):
    source = tb(HALF_ARCH)
    assert source.input_mean is None and source.input_std is None
    assert tuple(source.model.pretrained_cfg["mean"]) == HALF  # not ImageNet's: read, not assumed
    save_file(source.model.state_dict(), str(tmp_path / "w.safetensors"))
    loaded = tb(HALF_ARCH, weights=str(tmp_path / "w.safetensors"))
    assert loaded.input_mean == HALF and loaded.input_std == HALF
    assert all(isinstance(v, float) for v in (*loaded.input_mean, *loaded.input_std))


def test_timm_weights_from_classifier_checkpoint(tmp_path, no_network):
    # timm's published format: the classifier model's state dict; convnext's feature
    # extractor renames modules (stages.0 -> stages_0), timm maps them
    full = timm.create_model("convnext_atto").eval()
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(tmp_path / "model.safetensors"))
    loaded = tb("convnext_atto", weights=str(tmp_path / "model.safetensors")).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x)[-1], full.forward_features(x), atol=1e-6)
    assert loaded.input_mean == tuple(full.pretrained_cfg["mean"])
    assert loaded.input_std == tuple(full.pretrained_cfg["std"])


def test_weights_file_errors_are_clear(tmp_path):
    path = tmp_path / "w.safetensors"
    with pytest.raises(CheckpointError, match=f"{path} does not exist"):
        tb("resnet18", weights=str(path))
    path.write_bytes(b"not a safetensors file" * 4)
    with pytest.raises(CheckpointError, match=f"cannot read weights file {path}"):
        tb("resnet18", weights=str(path))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage" * 10)
    with pytest.raises(CheckpointError, match=f"cannot read weights file {bad}"):
        read_state_dict(bad)
    with pytest.raises(CheckpointError, match="unknown format '.npz'"):
        (tmp_path / "w.npz").write_bytes(b"x")
        read_state_dict(tmp_path / "w.npz")

    sd = tb("resnet18").model.state_dict()
    del sd["conv1.weight"], sd["layer1.0.conv1.weight"]
    sd["extra.weight"] = torch.zeros(2)
    save_file(sd, str(path))
    with pytest.raises(CheckpointError) as err:
        tb("resnet18", weights=str(path))
    assert str(path) in str(err.value)
    assert "2 keys missing" in str(err.value) and "1 unexpected ('extra.weight')" in str(err.value)

    sd = tb("resnet18").model.state_dict()
    sd["conv1.weight"] = torch.zeros(8, 3, 7, 7)
    save_file(sd, str(path))
    with pytest.raises(CheckpointError, match=r"1 tensor of the wrong shape \(conv1.weight \(8, 3, 7, 7\)"):
        tb("resnet18", weights=str(path))
    # weights of another architecture
    save_file(tb("regnetx_002").model.state_dict(), str(path))
    with pytest.raises(MtlzooError, match="does not fit timm 'resnet18'"):
        tb("resnet18", weights=str(path))


def test_read_state_dict_unwraps_training_checkpoints(tmp_path):
    sd = {"a.weight": torch.ones(2), "b.bias": torch.zeros(1)}
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": torch.tensor(3)},
        tmp_path / "ckpt.pt",
    )
    got = read_state_dict(tmp_path / "ckpt.pt")
    assert list(got) == list(sd) and all(torch.equal(got[k], sd[k]) for k in sd)
    torch.save({"epoch": 3}, tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="holds no state dict"):
        read_state_dict(tmp_path / "empty.pt")


# -- the mismatch helpers (shared with the checkpoint code) ---------------------------------


def test_mismatch_and_its_description():
    own = {
        "conv.weight": torch.zeros(4, 3),
        "bn.num_batches_tracked": torch.zeros(()),
        "bn.weight": torch.zeros(4),
    }
    given = {"conv.weight": torch.zeros(8, 3), "extra": torch.zeros(1)}
    missing, unexpected, wrong = mismatch(own, given)
    assert missing == ["bn.weight"]  # BatchNorm counters may be absent
    assert unexpected == ["extra"]
    assert wrong == [("conv.weight", (8, 3), (4, 3))]
    assert describe_mismatch(missing, unexpected, wrong) == (
        "1 key missing ('bn.weight'), 1 unexpected ('extra'), 1 tensor of the wrong shape "
        "(conv.weight (8, 3) vs (4, 3))"
    )
    fits = {"conv.weight": own["conv.weight"], "bn.weight": own["bn.weight"]}
    assert mismatch(own, fits) == ([], [], [])
    assert describe_mismatch(*mismatch(own, fits)) == ""
    many = [f"k{i}" for i in range(5)]
    assert describe_mismatch(many, [], []) == "5 keys missing ('k0', 'k1', 'k2', ...), 0 unexpected"


def test_fit_prefix_strips_or_adds_a_wrapper_prefix():
    own = {"conv1.weight": torch.zeros(1)}
    assert set(fit_prefix(own, {"model.conv1.weight": torch.zeros(1)}, ("model.",))) == set(own)
    wrapped = {"model.conv1.weight": torch.zeros(1)}
    assert set(fit_prefix(wrapped, {"conv1.weight": torch.zeros(1)}, ("model.",))) == set(wrapped)
    other = {"x.weight": torch.zeros(1)}
    assert fit_prefix(own, other, ("model.",)) is other


# -- smp ------------------------------------------------------------------------------------


def test_smp_drops_identity_map_and_placeholders():
    _check_maps(sb("resnet18"), [64, 64, 128, 256, 512], [2, 4, 8, 16, 32])
    _check_maps(sb("resnet18", depth=3), [64, 64, 128], [2, 4, 8])
    # transformer-style encoder: smp inserts a 0-channel map at stride 2
    _check_maps(sb("tu-convnext_atto"), [40, 80, 160, 320], [4, 8, 16, 32])


def test_smp_contract_attributes_without_weights():
    cases = [(sb("resnet18"), 32), (sb("resnet18", depth=3), 8), (sb("tu-convnext_atto"), 32)]
    for backbone, divisor in cases:
        assert isinstance(backbone, Backbone)
        assert backbone.input_mean is None and backbone.input_std is None
        assert backbone.size_divisor == divisor == max(fi.stride for fi in backbone.feature_info)


def test_smp_errors(plugin_zoo):
    with pytest.raises(UnknownNameError, match="'resnet18'.*mtlzoo list backbone 'smp:"):
        sb("resnet19")
    with pytest.raises(UnknownNameError, match="'tu-resnet18'"):
        sb("tu-resnet19")
    assert (
        config_error(plugin_zoo, {"name": "smp", "depth": 6})
        == "model.backbone.depth: must be >= 1 and <= 5, got 6"
    )
    assert (
        config_error(plugin_zoo, {"name": "smp", "depth": 0})
        == "model.backbone.depth: must be >= 1 and <= 5, got 0"
    )


def test_smp_weights_roundtrip(tmp_path, no_network):
    source = sb("resnet18", depth=3)
    with torch.no_grad():
        for p in source.parameters():
            p.mul_(1.1)
    save_file(source.encoder.state_dict(), str(tmp_path / "enc.safetensors"))
    loaded = sb("resnet18", depth=3, weights=str(tmp_path / "enc.safetensors"))
    assert _same_outputs(source, loaded)
    # smp's own encoders' weights expect ImageNet's statistics
    assert loaded.input_mean == IMAGENET_MEAN == (0.485, 0.456, 0.406)
    assert loaded.input_std == IMAGENET_STD == (0.229, 0.224, 0.225)
    assert loaded.size_divisor == 8
    with pytest.raises(CheckpointError, match="does not fit smp encoder 'resnet34'"):
        sb("resnet34", depth=3, weights=str(tmp_path / "enc.safetensors"))


def test_smp_timm_encoder_stats_come_from_timm(tmp_path, no_network):
    arch = f"tu-{HALF_ARCH}"
    source = _perturbed(sb(arch))
    assert source.input_mean is None
    save_file(source.encoder.state_dict(), str(tmp_path / "enc.safetensors"))
    loaded = sb(arch, weights=str(tmp_path / "enc.safetensors"))
    assert _same_outputs(source, loaded)
    assert loaded.input_mean == HALF and loaded.input_std == HALF
    assert loaded.size_divisor == 32


# -- cnn ------------------------------------------------------------------------------------


def test_cnn_shapes_and_strides():
    _check_maps(cnn(), [16, 32, 64, 128], [2, 4, 8, 16])
    _check_maps(cnn([8, 12]), [8, 12], [2, 4])


def test_cnn_contract_attributes():
    backbone = cnn([8, 12])
    assert isinstance(backbone, Backbone)
    assert backbone.input_mean is None and backbone.input_std is None
    assert backbone.size_divisor == 1
    # any size: odd sizes round up at each stride-2 conv
    with torch.no_grad():
        maps = backbone.eval()(torch.randn(1, 3, 15, 9))
    assert [tuple(m.shape[-2:]) for m in maps] == [(8, 5), (4, 3)]


@pytest.mark.parametrize("norm,kind", [("batch", nn.BatchNorm2d), ("group", nn.GroupNorm), ("none", None)])
def test_cnn_norms(norm, kind):
    backbone = cnn([8, 16], norm=norm)
    norms = [m for m in backbone.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]
    assert len(norms) == (4 if kind else 0) and all(isinstance(m, kind) for m in norms)
    # without batch statistics, a batch gives the same maps as its images one by one
    backbone.train()
    x = torch.randn(4, 3, 16, 16)
    whole = backbone(x)[-1]
    alone = torch.cat([backbone(x[i : i + 1])[-1] for i in range(4)])
    assert torch.allclose(whole, alone, atol=1e-5) == (norm != "batch")


def test_cnn_errors(plugin_zoo):
    assert (
        config_error(plugin_zoo, {"name": "cnn", "norm": "layer"})
        == "model.backbone.norm: 'layer' is not one of 'batch', 'group', 'none'"
    )
    assert (
        config_error(plugin_zoo, {"name": "cnn", "channels": []})
        == "model.backbone.channels: needs at least 1 values, got 0"
    )
    assert (
        config_error(plugin_zoo, {"name": "cnn", "channels": [8, 0]})
        == "model.backbone.channels[1]: must be >= 1 and <= 8192, got 0"
    )


# -- registry -------------------------------------------------------------------------------


def test_hook_registers_every_backbone_lazily():
    seen = {}

    def register(name, factory, options=None, help="", *, targets=None, examples=None, variants=None):
        seen[name] = (factory, options, help, variants)

    plugin.register_backbones(register)
    pkg = "mtlzoo.builtin.backbones"
    assert seen == {
        "timm": (f"{pkg}.timm:TimmBackbone", TimmOptions, seen["timm"][2], plugin.timm_names),
        "smp": (f"{pkg}.smp:SmpBackbone", SmpOptions, seen["smp"][2], plugin.smp_names),
        "cnn": (f"{pkg}.cnn:CNNBackbone", CNNOptions, seen["cnn"][2], None),
    }
    assert all(help for _, _, help, _ in seen.values())


def test_registered_through_the_zoo(plugin_zoo):
    for name in ("timm", "smp", "cnn"):
        entry = plugin_zoo.entry("backbone", name)
        assert entry.plugin == "builtin_backbones" and entry.help
        assert entry.targets is None
        options = entry.build_options({}, "model.backbone")
        assert getattr(options, "arch" if name != "cnn" else "channels")  # defaults filled in
    assert plugin_zoo.problems == []
    assert "resnet18" in plugin_zoo.entry("backbone", "timm").variants()
    assert "convnext_atto" in plugin_zoo.entry("backbone", "timm").variants()
    assert "resnet18" in plugin_zoo.entry("backbone", "smp").variants()
    assert plugin_zoo.entry("backbone", "cnn").variants is None
    # options are typed: a wrong type is refused with the option's path
    assert config_error(plugin_zoo, {"name": "smp", "depth": "deep"}).startswith("model.backbone.depth:")
    backbone = plugin_zoo.make(
        "backbone", {"name": "cnn", "channels": [4, 8], "norm": "group"}, path="model.backbone"
    )
    assert isinstance(backbone, CNNBackbone)
    _check_maps(backbone, [4, 8], [2, 4])
    timm_backbone = plugin_zoo.make("backbone", {"name": "timm", "arch": "resnet18"}, path="model.backbone")
    assert isinstance(timm_backbone, TimmBackbone)
    smp = plugin_zoo.make("backbone", {"name": "smp", "depth": 3}, path="model.backbone")
    _check_maps(smp, [64, 64, 128], [2, 4, 8])
