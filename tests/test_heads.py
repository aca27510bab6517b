"""Built-in heads: output shapes at any size, gradients, per-head behaviour, errors, registry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtlzoo.builtin.backbones import CNNBackbone, SmpBackbone, TimmBackbone
from mtlzoo.builtin.heads import (
    BoundaryHead,
    ClassificationHead,
    DeepLabV3PlusHead,
    DenseHead,
    FCNHead,
    FPNHead,
    NormalsHead,
    UnetHead,
)
from mtlzoo.config import validate_options
from mtlzoo.errors import ConfigError
from mtlzoo.model import FeatureInfo
from mtlzoo.plugins import PluginManager

SIZES = [(64, 64), (50, 46)]  # the second is not a multiple of any stride

DENSE = {
    "fcn": (FCNHead, {}),
    "fcn-all": (FCNHead, {"use": "all"}),
    "unet": (UnetHead, {}),
    "fpn": (FPNHead, {"dropout": 0.1}),
    "deeplabv3plus": (DeepLabV3PlusHead, {}),
    "dense": (DenseHead, {}),
    "normals": (NormalsHead, {}),
    "boundary": (BoundaryHead, {}),
}


@pytest.fixture(scope="module")
def backbones():
    torch.manual_seed(0)
    return {"resnet18": TimmBackbone("resnet18").eval(), "cnn": CNNBackbone([8, 16, 32, 64]).eval()}


@pytest.fixture(scope="module")
def features(backbones):
    """Detached feature maps of 2 random images per backbone and size."""
    torch.manual_seed(0)
    out = {}
    with torch.no_grad():
        for name, backbone in backbones.items():
            for size in SIZES:
                out[name, size] = backbone(torch.randn(2, 3, *size))
    return out


def _grads_reach_every_param(head: nn.Module, out: torch.Tensor) -> None:
    # random weights: a plain sum would give zero gradient through the normals' normalisation
    (out * torch.randn_like(out)).sum().backward()
    params = list(head.named_parameters())
    assert params
    assert [n for n, p in params if p.grad is None] == []
    assert sum(float(p.grad.abs().sum()) for _, p in params) > 0


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("backbone", ["resnet18", "cnn"])
@pytest.mark.parametrize("head_name", sorted(DENSE))
def test_dense_heads_give_exact_size_and_gradients(head_name, backbone, size, backbones, features):
    cls, options = DENSE[head_name]
    out_channels = 3 if head_name == "normals" else 5
    head = cls(backbones[backbone].feature_info, out_channels, **options).train()
    out = head(features[backbone, size], size)
    assert out.shape == (2, out_channels, *size)
    assert torch.isfinite(out).all()
    _grads_reach_every_param(head, out)


@pytest.fixture(scope="module")
def other_features():
    """(feature_info, detached maps at 48x40) of convnext_atto (first map at stride 4) and of
    the smp resnet18 encoder (the other backbone family)."""
    out = {}
    for name, backbone in [("convnext_atto", TimmBackbone("convnext_atto")),
                           ("smp", SmpBackbone("resnet18"))]:
        with torch.no_grad():
            out[name] = backbone.feature_info, backbone.eval()(torch.randn(2, 3, 48, 40))
    return out


@pytest.mark.parametrize("arch", ["convnext_atto", "smp"])
@pytest.mark.parametrize("head_name", ["unet", "fpn", "deeplabv3plus"])
def test_smp_decoders_on_other_backbones(arch, head_name, other_features):
    info, feats = other_features[arch]
    head = DENSE[head_name][0](info, 4)
    out = head(feats, torch.Size([48, 40]))
    assert out.shape == (2, 4, 48, 40)
    _grads_reach_every_param(head, out)


def test_fcn_last_reads_only_the_coarsest_map_and_all_reads_every_map(backbones, features):
    info = backbones["cnn"].feature_info
    feats = features["cnn", (64, 64)]
    changed = [feats[0] + 1.0, *feats[1:]]  # perturb the finest map only
    last, every = FCNHead(info, 3, use="last").eval(), FCNHead(info, 3, use="all", min_stride=1).eval()
    boundary = BoundaryHead(info, 1).eval()
    with torch.no_grad():
        assert torch.equal(last(feats, (64, 64)), last(changed, (64, 64)))
        assert not torch.allclose(every(feats, (64, 64)), every(changed, (64, 64)))
        assert not torch.allclose(boundary(feats, (64, 64)), boundary(changed, (64, 64)))
    assert sum(p.numel() for p in every.parameters()) != sum(p.numel() for p in last.parameters())


def test_normals_are_unit_vectors(backbones, features):
    head = NormalsHead(backbones["resnet18"].feature_info, 3)
    out = head(features["resnet18", (50, 46)], (50, 46))
    assert torch.allclose(out.norm(dim=1), torch.ones(2, 50, 46), atol=1e-5)
    with pytest.raises(ConfigError, match="out_channels must be 3, got 4"):
        NormalsHead(backbones["resnet18"].feature_info, 4)


def test_dense_activations(backbones, features):
    info, feats = backbones["cnn"].feature_info, features["cnn", (64, 64)]
    torch.manual_seed(1)
    raw_head = DenseHead(info, 1, activation="none").eval()
    with torch.no_grad():
        raw_head.out.bias.sub_(raw_head(feats, (64, 64)).median())  # centre it: both signs occur
        raw = raw_head(feats, (64, 64))
        assert raw.min() < 0 < raw.max()  # an unconstrained output
        for activation, fn in [("softplus", F.softplus), ("relu", F.relu), ("sigmoid", torch.sigmoid),
                               ("exp", torch.exp)]:
            head = DenseHead(info, 1, activation=activation).eval()
            head.load_state_dict(raw_head.state_dict())
            assert torch.allclose(head(feats, (64, 64)), fn(raw), atol=1e-6), activation
    assert DenseHead(info, 1).activation == "softplus"  # depth is positive
    with pytest.raises(ConfigError, match="activation must be one of"):
        DenseHead(info, 1, activation="tanhh")


@pytest.mark.parametrize("pool", ["avg", "max", "avgmax"])
def test_classification_pools_the_coarsest_map(pool):
    info = [FeatureInfo(2, 2), FeatureInfo(4, 4)]
    head = ClassificationHead(info, 4, pool=pool)
    linear = head.mlp[-1]
    with torch.no_grad():  # identity readout: the logits are the pooled features
        eye = torch.eye(4)
        linear.weight.copy_(torch.cat([eye, eye], dim=1) if pool == "avgmax" else eye)
        linear.bias.zero_()
    coarse = torch.randn(3, 4, 5, 7)
    out = head([torch.randn(3, 2, 10, 14), coarse], (20, 28))
    expected = {"avg": coarse.mean((2, 3)), "max": coarse.amax((2, 3)),
                "avgmax": coarse.mean((2, 3)) + coarse.amax((2, 3))}[pool]
    assert out.shape == (3, 4)
    assert torch.allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize("backbone", ["resnet18", "cnn"])
def test_classification_with_hidden_layer(backbone, backbones, features):
    head = ClassificationHead(backbones[backbone].feature_info, 6, pool="avgmax", hidden=16, dropout=0.2)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (2 * backbones[backbone].feature_info[-1].channels, 16), (16, 6)]
    out = head(features[backbone, (50, 46)], (50, 46))
    assert out.shape == (2, 6)
    _grads_reach_every_param(head, out)


def test_deeplab_uses_the_stride4_map():
    cnn = [FeatureInfo(8, 2), FeatureInfo(16, 4), FeatureInfo(32, 8), FeatureInfo(64, 16)]
    assert DeepLabV3PlusHead(cnn, 2).high == 1
    convnext = [FeatureInfo(40, 4), FeatureInfo(80, 8), FeatureInfo(160, 16), FeatureInfo(320, 32)]
    assert DeepLabV3PlusHead(convnext, 2).high == 0
    assert DeepLabV3PlusHead([FeatureInfo(8, 8), FeatureInfo(16, 32)], 2).high == 0


def test_head_option_errors():
    four = [FeatureInfo(8, 2), FeatureInfo(16, 4), FeatureInfo(32, 8), FeatureInfo(64, 16)]
    with pytest.raises(ConfigError, match="'fpn' needs at least 4 feature maps, the backbone gives 3"):
        FPNHead(four[:3], 2)
    with pytest.raises(ConfigError, match=r"strides s, 2s, 4s, 8s; got \[2, 4, 8, 32\]"):
        FPNHead([*four[:3], FeatureInfo(64, 32)], 2)
    with pytest.raises(ConfigError, match="multiple of 32"):
        FPNHead(four, 2, segmentation_channels=48)
    with pytest.raises(ConfigError, match="decoder_channels needs 4 positive widths"):
        UnetHead(four, 2, decoder_channels=[32, 16, 8])
    with pytest.raises(ConfigError, match="attention must be null or 'scse'"):
        UnetHead(four, 2, attention="cbam")
    with pytest.raises(ConfigError, match="use must be 'last' or 'all'"):
        FCNHead(four, 2, use="first")
    with pytest.raises(ConfigError, match="norm must be one of"):
        BoundaryHead(four, 1, norm="layer")
    with pytest.raises(ConfigError, match="pool must be one of avg, max, avgmax"):
        ClassificationHead(four, 2, pool="sum")
    with pytest.raises(ConfigError, match="no feature maps"):
        FCNHead([], 2)


def test_unet_attention_and_trimmed_channels():
    four = [FeatureInfo(8, 2), FeatureInfo(16, 4), FeatureInfo(32, 8), FeatureInfo(64, 16)]
    head = UnetHead(four, 2, attention="scse")
    widths = [block.conv2[0].out_channels for block in head.decoder.blocks]
    assert widths == [128, 64, 32, 16]
    feats = [torch.randn(2, c, 32 // (s // 2), 32 // (s // 2)) for c, s in four]
    assert head(feats, (32, 32)).shape == (2, 2, 32, 32)


@pytest.mark.parametrize("head_name", ["fcn-all", "unet", "deeplabv3plus", "dense", "normals", "boundary"])
@pytest.mark.parametrize("norm", ["group", "none"])
def test_norm_option_removes_batch_statistics(head_name, norm, backbones, features):
    cls, options = DENSE[head_name]
    head = cls(backbones["cnn"].feature_info, 3, **{**options, "norm": norm})
    assert not any(isinstance(m, nn.BatchNorm2d) for m in head.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in head.modules()) == (norm == "group")
    head.eval()  # (dropout off) a batch gives the same output as its images one by one
    feats = features["cnn", (50, 46)]
    with torch.no_grad():
        whole = head(feats, (50, 46))
        alone = torch.cat([head([f[i : i + 1] for f in feats], (50, 46)) for i in range(2)])
    assert torch.allclose(whole, alone, atol=1e-5)


def test_registered_through_entry_points(backbones, features):
    pm = PluginManager()
    pm.load_entry_points()
    heads = pm.registries["head"]
    names = ["boundary", "classification", "deeplabv3plus", "dense", "fcn", "fpn", "normals", "unet"]
    for name in names:
        entry = heads.get(name)
        assert entry.plugin == "builtin_heads" and entry.help
        options = validate_options({}, entry.schema, "tasks.t.head", f"head {name!r}")
        head = entry.factory(backbones["cnn"].feature_info, 3, **options)
        out = head(features["cnn", (50, 46)], (50, 46))
        assert out.shape == ((2, 3) if name == "classification" else (2, 3, 50, 46))
    with pytest.raises(ConfigError, match="tasks.t.head.decoder_channels"):
        validate_options({"decoder_channels": "wide"}, heads.get("unet").schema, "tasks.t.head",
                         "head 'unet'")


def test_min_stride_fuses_only_maps_at_or_above_it():
    from mtlzoo.builtin.heads import Fusion
    from mtlzoo.model import FeatureInfo

    infos = [FeatureInfo(4, 2), FeatureInfo(8, 4), FeatureInfo(16, 8)]
    feats = [torch.randn(1, 4, 16, 16), torch.randn(1, 8, 8, 8), torch.randn(1, 16, 4, 4)]
    fuse = Fusion(infos, 5, min_stride=4)
    assert fuse.first == 1 and len(fuse.proj) == 2
    assert fuse(feats).shape == (1, 5, 8, 8)  # at stride 4, the finest map kept
    # changing the stride-2 map changes nothing: it is not used
    feats2 = [torch.zeros(1, 4, 16, 16), *feats[1:]]
    assert torch.equal(fuse(feats), fuse(feats2))
    assert Fusion(infos, 5, min_stride=64).first == 2  # the coarsest map is always kept
