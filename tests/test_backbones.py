"""Built-in backbones: timm, smp and cnn (shapes, strides, weights files, errors, registry)."""

from __future__ import annotations

import socket

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from mtlzoo.builtin.backbones import CNNBackbone, SmpBackbone, TimmBackbone, read_state_dict
from mtlzoo.config import validate_options
from mtlzoo.errors import CheckpointError, ConfigError, MtlzooError, UnknownNameError
from mtlzoo.model import FeatureInfo
from mtlzoo.plugins import PluginManager

# channels and strides of each arch's features, read off timm's model cards / source
TIMM_EXPECTED = {
    "resnet18": ([64, 64, 128, 256, 512], [2, 4, 8, 16, 32]),
    "convnext_atto": ([40, 80, 160, 320], [4, 8, 16, 32]),
    "efficientnet_b0": ([16, 24, 40, 112, 320], [2, 4, 8, 16, 32]),
    "mobilenetv3_small_100": ([16, 16, 24, 48, 576], [2, 4, 8, 16, 32]),
    "regnetx_002": ([32, 24, 56, 152, 368], [2, 4, 8, 16, 32]),
}


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


# -- timm -----------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", sorted(TIMM_EXPECTED))
def test_timm_feature_maps_match_feature_info(arch):
    channels, strides = TIMM_EXPECTED[arch]
    _check_maps(TimmBackbone(arch), channels, strides)


def test_timm_out_indices_and_drop_path():
    backbone = TimmBackbone("convnext_atto", out_indices=[1, 3], drop_path_rate=0.1)
    _check_maps(backbone, [80, 320], [8, 32])
    rates = [m.drop_prob for m in backbone.modules() if isinstance(m, timm.layers.DropPath)]
    assert rates and max(rates) == pytest.approx(0.1)
    # zero rate is not passed on: no DropPath module at all
    assert not any(isinstance(m, timm.layers.DropPath) for m in TimmBackbone("convnext_atto").modules())


def test_timm_bad_out_indices_is_config_error():
    with pytest.raises(ConfigError, match="resnet18"):
        TimmBackbone("resnet18", out_indices=[7])


def test_timm_unknown_arch_lists_close_names():
    with pytest.raises(UnknownNameError) as err:
        TimmBackbone("resnet19")
    message = str(err.value)
    assert "'resnet19'" in message and "'resnet18'" in message
    assert "mtlzoo list backbone 'timm:*pattern*'" in message


def test_pretrained_without_weights_is_refused_before_any_download(monkeypatch, no_network):
    def boom(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(timm, "create_model", boom)
    with pytest.raises(ConfigError, match="never downloads weights.*model.backbone.weights"):
        TimmBackbone("resnet18", pretrained=True)
    with pytest.raises(ConfigError, match="never downloads weights"):
        SmpBackbone("resnet18", pretrained=True)


def test_timm_weights_roundtrip_safetensors_and_pth(tmp_path, no_network):
    source = TimmBackbone("resnet18")
    with torch.no_grad():  # make sure loading really changes something
        for p in source.parameters():
            p.add_(0.01)
    save_file(source.model.state_dict(), str(tmp_path / "feats.safetensors"))
    torch.save(source.state_dict(), tmp_path / "wrapper.pth")  # keys prefixed "model."
    assert not _same_outputs(source, TimmBackbone("resnet18"))
    for name in ("feats.safetensors", "wrapper.pth"):
        loaded = TimmBackbone("resnet18", pretrained=True, weights=str(tmp_path / name))
        assert _same_outputs(source, loaded), name


def test_timm_weights_from_classifier_checkpoint(tmp_path, no_network):
    # timm's published format: the classifier model's state dict; convnext's feature
    # extractor renames modules (stages.0 -> stages_0), timm maps them
    full = timm.create_model("convnext_atto").eval()
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(tmp_path / "model.safetensors"))
    loaded = TimmBackbone("convnext_atto", weights=str(tmp_path / "model.safetensors")).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x)[-1], full.forward_features(x), atol=1e-6)


def test_weights_file_errors_are_clear(tmp_path):
    path = tmp_path / "w.safetensors"
    with pytest.raises(CheckpointError, match=f"{path} does not exist"):
        TimmBackbone("resnet18", weights=str(path))
    path.write_bytes(b"not a safetensors file" * 4)
    with pytest.raises(CheckpointError, match=f"cannot read weights file {path}"):
        TimmBackbone("resnet18", weights=str(path))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage" * 10)
    with pytest.raises(CheckpointError, match=f"cannot read weights file {bad}"):
        read_state_dict(bad)
    with pytest.raises(CheckpointError, match="unknown format '.npz'"):
        (tmp_path / "w.npz").write_bytes(b"x")
        read_state_dict(tmp_path / "w.npz")

    sd = TimmBackbone("resnet18").model.state_dict()
    del sd["conv1.weight"], sd["layer1.0.conv1.weight"]
    sd["extra.weight"] = torch.zeros(2)
    save_file(sd, str(path))
    with pytest.raises(CheckpointError) as err:
        TimmBackbone("resnet18", weights=str(path))
    assert str(path) in str(err.value)
    assert "2 keys missing" in str(err.value) and "1 unexpected ('extra.weight')" in str(err.value)

    sd = TimmBackbone("resnet18").model.state_dict()
    sd["conv1.weight"] = torch.zeros(8, 3, 7, 7)
    save_file(sd, str(path))
    with pytest.raises(CheckpointError, match=r"1 tensor of the wrong shape \(conv1.weight \(8, 3, 7, 7\)"):
        TimmBackbone("resnet18", weights=str(path))
    # weights of another architecture
    save_file(TimmBackbone("regnetx_002").model.state_dict(), str(path))
    with pytest.raises(MtlzooError, match="does not fit timm 'resnet18'"):
        TimmBackbone("resnet18", weights=str(path))


# -- smp ------------------------------------------------------------------------------------

def test_smp_drops_identity_map_and_placeholders():
    _check_maps(SmpBackbone("resnet18"), [64, 64, 128, 256, 512], [2, 4, 8, 16, 32])
    _check_maps(SmpBackbone("resnet18", depth=3), [64, 64, 128], [2, 4, 8])
    # transformer-style encoder: smp inserts a 0-channel map at stride 2
    _check_maps(SmpBackbone("tu-convnext_atto"), [40, 80, 160, 320], [4, 8, 16, 32])


def test_smp_errors():
    with pytest.raises(UnknownNameError, match="'resnet18'.*mtlzoo list backbone 'smp:"):
        SmpBackbone("resnet19")
    with pytest.raises(UnknownNameError, match="'tu-resnet18'"):
        SmpBackbone("tu-resnet19")
    with pytest.raises(ConfigError, match="depth must be between 1 and 5"):
        SmpBackbone("resnet18", depth=6)


def test_smp_weights_roundtrip(tmp_path, no_network):
    source = SmpBackbone("resnet18", depth=3)
    with torch.no_grad():
        for p in source.parameters():
            p.mul_(1.1)
    save_file(source.encoder.state_dict(), str(tmp_path / "enc.safetensors"))
    loaded = SmpBackbone("resnet18", depth=3, weights=str(tmp_path / "enc.safetensors"))
    assert _same_outputs(source, loaded)
    with pytest.raises(CheckpointError, match="does not fit smp encoder 'resnet34'"):
        SmpBackbone("resnet34", depth=3, weights=str(tmp_path / "enc.safetensors"))


# -- cnn ------------------------------------------------------------------------------------

def test_cnn_shapes_and_strides():
    _check_maps(CNNBackbone(), [16, 32, 64, 128], [2, 4, 8, 16])
    _check_maps(CNNBackbone([8, 12]), [8, 12], [2, 4])


@pytest.mark.parametrize("norm,kind", [("batch", nn.BatchNorm2d), ("group", nn.GroupNorm), ("none", None)])
def test_cnn_norms(norm, kind):
    backbone = CNNBackbone([8, 16], norm=norm)
    norms = [m for m in backbone.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]
    assert len(norms) == (4 if kind else 0) and all(isinstance(m, kind) for m in norms)
    # without batch statistics, a batch gives the same maps as its images one by one
    backbone.train()
    x = torch.randn(4, 3, 16, 16)
    whole = backbone(x)[-1]
    alone = torch.cat([backbone(x[i : i + 1])[-1] for i in range(4)])
    assert torch.allclose(whole, alone, atol=1e-5) == (norm != "batch")


def test_cnn_errors():
    with pytest.raises(ConfigError, match="norm must be one of batch, group, none"):
        CNNBackbone(norm="layer")
    with pytest.raises(ConfigError, match="non-empty list"):
        CNNBackbone([])


# -- registry -------------------------------------------------------------------------------

def test_registered_through_entry_points():
    pm = PluginManager()
    pm.load_entry_points()
    backbones = pm.registries["backbone"]
    for name in ("timm", "smp", "cnn"):
        entry = backbones.get(name)
        assert entry.plugin == "builtin_backbones" and entry.help
        options = validate_options({}, entry.schema, "model.backbone", f"backbone {name!r}")
        assert options["arch" if name != "cnn" else "channels"]  # defaults filled in
    assert "resnet18" in backbones.get("timm").variants()
    assert "convnext_atto" in backbones.get("timm").variants()
    assert "resnet18" in backbones.get("smp").variants()
    # schemas are typed: OmegaConf rejects a wrong type with the option's path
    with pytest.raises(ConfigError, match="model.backbone.depth"):
        validate_options({"depth": "deep"}, backbones.get("smp").schema, "model.backbone", "backbone 'smp'")
    opts = validate_options({"channels": [4, 8], "norm": "group"}, backbones.get("cnn").schema,
                            "model.backbone", "backbone 'cnn'")
    _check_maps(backbones.get("cnn").factory(**opts), [4, 8], [2, 4])
