"""Built-in heads: output shapes at any size, gradients, per-head behaviour, errors, old
state dicts, registry."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mtlzoo.builtin.heads as plugin
from mtlzoo import Zoo
from mtlzoo.builtin.backbones import CNNOptions, SmpOptions, TimmOptions
from mtlzoo.builtin.backbones.cnn import CNNBackbone
from mtlzoo.builtin.backbones.smp import SmpBackbone
from mtlzoo.builtin.backbones.timm import TimmBackbone
from mtlzoo.builtin.heads import (
    BoundaryOptions,
    ClassificationOptions,
    DeepLabV3PlusOptions,
    DenseOptions,
    FCNOptions,
    FPNOptions,
    NormalsOptions,
    UnetOptions,
)
from mtlzoo.builtin.heads.classification import ClassificationHead
from mtlzoo.builtin.heads.deeplabv3plus import DeepLabV3PlusHead
from mtlzoo.builtin.heads.fpn import FPNHead
from mtlzoo.builtin.heads.fusion import Fusion, FusionHead, make_boundary, make_dense, make_fcn, make_normals
from mtlzoo.builtin.heads.unet import UnetHead
from mtlzoo.contract.errors import ConfigError
from mtlzoo.contract.features import FeatureInfo
from mtlzoo.contract.layers import make_norm

SIZES = [(64, 64), (50, 46)]  # the second is not a multiple of any stride

DENSE = {
    "fcn": (make_fcn, FCNOptions()),
    "fcn-all": (make_fcn, FCNOptions(use="all")),
    "fcn-last": (make_fcn, FCNOptions(use="last")),
    "unet": (UnetHead, UnetOptions()),
    "fpn": (FPNHead, FPNOptions(dropout=0.1)),
    "deeplabv3plus": (DeepLabV3PlusHead, DeepLabV3PlusOptions()),
    "dense": (make_dense, DenseOptions()),
    "normals": (make_normals, NormalsOptions()),
    "boundary": (make_boundary, BoundaryOptions()),
}
# "dense": any dense target kind (plugin kinds too), "image": any image-level kind
TARGETS = {
    "fcn": ("dense",),
    "unet": ("dense",),
    "fpn": ("dense",),
    "deeplabv3plus": ("dense",),
    "dense": ("dense",),
    "normals": ("normals",),
    "boundary": ("dense",),
    "classification": ("image",),
}
NAMES = list(TARGETS)
OPTIONS = {
    "fcn": FCNOptions,
    "unet": UnetOptions,
    "fpn": FPNOptions,
    "deeplabv3plus": DeepLabV3PlusOptions,
    "dense": DenseOptions,
    "normals": NormalsOptions,
    "boundary": BoundaryOptions,
    "classification": ClassificationOptions,
}
FACTORIES = {
    "fcn": "fusion:make_fcn",
    "unet": "unet:UnetHead",
    "fpn": "fpn:FPNHead",
    "deeplabv3plus": "deeplabv3plus:DeepLabV3PlusHead",
    "dense": "fusion:make_dense",
    "normals": "fusion:make_normals",
    "boundary": "fusion:make_boundary",
    "classification": "classification:ClassificationHead",
}
FOUR = [FeatureInfo(8, 2), FeatureInfo(16, 4), FeatureInfo(32, 8), FeatureInfo(64, 16)]


@pytest.fixture(scope="module")
def plugin_zoo() -> Zoo:
    """A zoo of this plugin only (other built-in packages may be mid-migration)."""
    return Zoo.load(entry_points=False, plugins=[("builtin_heads", plugin)], strict=True)


def config_error(zoo: Zoo, node, feature_info=FOUR, out_channels: int = 2) -> str:
    with pytest.raises(ConfigError) as err:
        zoo.make("head", node, feature_info, out_channels, path="tasks.t.head")
    return str(err.value)


@pytest.fixture(scope="module")
def backbones():
    torch.manual_seed(0)
    return {
        "resnet18": TimmBackbone(TimmOptions("resnet18")).eval(),
        "cnn": CNNBackbone(CNNOptions([8, 16, 32, 64])).eval(),
    }


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
    factory, options = DENSE[head_name]
    out_channels = 3 if head_name == "normals" else 5
    head = factory(backbones[backbone].feature_info, out_channels, options).train()
    out = head(features[backbone, size], size)
    assert out.shape == (2, out_channels, *size)
    assert torch.isfinite(out).all()
    _grads_reach_every_param(head, out)


@pytest.fixture(scope="module")
def other_features():
    """(feature_info, detached maps at 48x40) of convnext_atto (first map at stride 4) and of
    the smp resnet18 encoder (the other backbone family)."""
    out = {}
    for name, backbone in [
        ("convnext_atto", TimmBackbone(TimmOptions("convnext_atto"))),
        ("smp", SmpBackbone(SmpOptions("resnet18"))),
    ]:
        with torch.no_grad():
            out[name] = backbone.feature_info, backbone.eval()(torch.randn(2, 3, 48, 40))
    return out


@pytest.mark.parametrize("arch", ["convnext_atto", "smp"])
@pytest.mark.parametrize("head_name", ["unet", "fpn", "deeplabv3plus"])
def test_smp_decoders_on_other_backbones(arch, head_name, other_features):
    info, feats = other_features[arch]
    head = DENSE[head_name][0](info, 4, OPTIONS[head_name]())
    out = head(feats, torch.Size([48, 40]))
    assert out.shape == (2, 4, 48, 40)
    _grads_reach_every_param(head, out)


def test_fcn_last_reads_only_the_coarsest_map_and_all_reads_every_map(backbones, features):
    info = backbones["cnn"].feature_info
    feats = features["cnn", (64, 64)]
    changed = [feats[0] + 1.0, *feats[1:]]  # perturb the finest map only
    last = make_fcn(info, 3, FCNOptions(use="last")).eval()
    every = make_fcn(info, 3, FCNOptions(use="all", min_stride=1)).eval()
    boundary = make_boundary(info, 1, BoundaryOptions()).eval()
    with torch.no_grad():
        assert torch.equal(last(feats, (64, 64)), last(changed, (64, 64)))
        assert not torch.allclose(every(feats, (64, 64)), every(changed, (64, 64)))
        assert not torch.allclose(boundary(feats, (64, 64)), boundary(changed, (64, 64)))
    assert sum(p.numel() for p in every.parameters()) != sum(p.numel() for p in last.parameters())
    assert last.fuse is None and every.fuse is not None


def test_the_fusion_heads_are_one_class(backbones):
    info = backbones["cnn"].feature_info
    heads = {
        name: DENSE[name][0](info, 3, DENSE[name][1])
        for name in ("fcn", "fcn-last", "dense", "normals", "boundary")
    }
    assert all(type(h) is FusionHead for h in heads.values())
    assert [len(h.convs) for h in heads.values()] == [1, 1, 1, 1, 2]
    assert [h.output for h in heads.values()] == ["none", "none", "softplus", "unit", "none"]
    # each keeps its own defaults: boundary fuses from stride 2 with 32 channels, the others from 4 with 64
    assert heads["boundary"].fuse.first == 0 and heads["boundary"].out.in_channels == 32
    assert heads["fcn"].fuse.first == 1 and heads["fcn"].out.in_channels == 64


def test_normals_are_unit_vectors(backbones, features):
    head = make_normals(backbones["resnet18"].feature_info, 3, NormalsOptions())
    out = head(features["resnet18", (50, 46)], (50, 46))
    assert torch.allclose(out.norm(dim=1), torch.ones(2, 50, 46), atol=1e-5)
    with pytest.raises(ConfigError, match="out_channels must be 3, got 4"):
        make_normals(backbones["resnet18"].feature_info, 4, NormalsOptions())


def test_dense_activations(backbones, features, plugin_zoo):
    info, feats = backbones["cnn"].feature_info, features["cnn", (64, 64)]
    torch.manual_seed(1)
    raw_head = make_dense(info, 1, DenseOptions(activation="none")).eval()
    with torch.no_grad():
        raw_head.out.bias.sub_(raw_head(feats, (64, 64)).median())  # centre it: both signs occur
        raw = raw_head(feats, (64, 64))
        assert raw.min() < 0 < raw.max()  # an unconstrained output
        for activation, fn in [
            ("softplus", F.softplus),
            ("relu", F.relu),
            ("sigmoid", torch.sigmoid),
            ("exp", torch.exp),
        ]:
            head = make_dense(info, 1, DenseOptions(activation=activation)).eval()
            head.load_state_dict(raw_head.state_dict())
            assert torch.allclose(head(feats, (64, 64)), fn(raw), atol=1e-6), activation
    assert make_dense(info, 1, DenseOptions()).output == "softplus"  # depth is positive
    assert config_error(plugin_zoo, {"name": "dense", "activation": "tanhh"}, info, 1).startswith(
        "tasks.t.head.activation: 'tanhh' is not one of 'none', 'relu', 'softplus', 'sigmoid', 'exp'"
    )


@pytest.mark.parametrize("pool", ["avg", "max", "avgmax"])
def test_classification_pools_the_coarsest_map(pool):
    info = [FeatureInfo(2, 2), FeatureInfo(4, 4)]
    head = ClassificationHead(info, 4, ClassificationOptions(pool=pool))
    linear = head.mlp[-1]
    with torch.no_grad():  # identity readout: the logits are the pooled features
        eye = torch.eye(4)
        linear.weight.copy_(torch.cat([eye, eye], dim=1) if pool == "avgmax" else eye)
        linear.bias.zero_()
    coarse = torch.randn(3, 4, 5, 7)
    out = head([torch.randn(3, 2, 10, 14), coarse], (20, 28))
    expected = {
        "avg": coarse.mean((2, 3)),
        "max": coarse.amax((2, 3)),
        "avgmax": coarse.mean((2, 3)) + coarse.amax((2, 3)),
    }[pool]
    assert out.shape == (3, 4)
    assert torch.allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize("backbone", ["resnet18", "cnn"])
def test_classification_with_hidden_layer(backbone, backbones, features):
    options = ClassificationOptions(pool="avgmax", hidden=16, dropout=0.2)
    head = ClassificationHead(backbones[backbone].feature_info, 6, options)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (2 * backbones[backbone].feature_info[-1].channels, 16),
        (16, 6),
    ]
    out = head(features[backbone, (50, 46)], (50, 46))
    assert out.shape == (2, 6)
    _grads_reach_every_param(head, out)


def test_deeplab_uses_the_stride4_map():
    options = DeepLabV3PlusOptions()
    assert DeepLabV3PlusHead(FOUR, 2, options).high == 1
    convnext = [FeatureInfo(40, 4), FeatureInfo(80, 8), FeatureInfo(160, 16), FeatureInfo(320, 32)]
    assert DeepLabV3PlusHead(convnext, 2, options).high == 0
    assert DeepLabV3PlusHead([FeatureInfo(8, 8), FeatureInfo(16, 32)], 2, options).high == 0


def test_deeplab_atrous_rates_reach_the_aspp():
    head = DeepLabV3PlusHead(FOUR, 2, DeepLabV3PlusOptions(atrous_rates=(2, 3, 5)))
    dilations = sorted({m.dilation[0] for m in head.decoder.aspp.modules() if isinstance(m, nn.Conv2d)} - {1})
    assert dilations == [2, 3, 5]


def test_head_build_time_errors():
    """Checks that depend on the backbone or the task (not on the options) stay in the heads."""
    with pytest.raises(ConfigError, match="'fpn' needs at least 4 feature maps, the backbone gives 3"):
        FPNHead(FOUR[:3], 2, FPNOptions())
    with pytest.raises(ConfigError, match=r"strides s, 2s, 4s, 8s; got \[2, 4, 8, 32\]"):
        FPNHead([*FOUR[:3], FeatureInfo(64, 32)], 2, FPNOptions())
    with pytest.raises(ConfigError, match="decoder_channels needs 4 positive widths"):
        UnetHead(FOUR, 2, UnetOptions(decoder_channels=[32, 16, 8]))
    with pytest.raises(ConfigError, match="'deeplabv3plus' needs at least 2 feature maps"):
        DeepLabV3PlusHead(FOUR[:1], 2, DeepLabV3PlusOptions())
    with pytest.raises(ConfigError, match="no feature maps"):
        make_fcn([], 2, FCNOptions())
    with pytest.raises(ConfigError, match="head 'classification': out_channels must be >= 1, got 0"):
        ClassificationHead(FOUR, 0, ClassificationOptions())


def test_head_option_errors(plugin_zoo):
    """Ranges and choices are the options' own: refused with the key path before any head is built."""
    errors = [
        (
            "fpn",
            {"segmentation_channels": 48},
            "segmentation_channels: must be a multiple of 32 (smp normalises it with 32 groups), got 48",
        ),
        ("fpn", {"segmentation_channels": 16}, "segmentation_channels: must be >= 32 and <= 8192, got 16"),
        ("fpn", {"dropout": 1.0}, "dropout: must be >= 0 and < 1, got 1"),
        ("unet", {"attention": "cbam"}, "attention: 'cbam' is not one of 'scse'"),
        ("unet", {"decoder_channels": [32, 0, 8, 8]}, "decoder_channels[1]: must be >= 1 and <= 8192, got 0"),
        ("fcn", {"use": "first"}, "use: 'first' is not one of 'all', 'last'"),
        ("fcn", {"channels": 0}, "channels: must be >= 1 and <= 8192, got 0"),
        ("boundary", {"norm": "layer"}, "norm: 'layer' is not one of 'batch', 'group', 'none'"),
        ("classification", {"pool": "sum"}, "pool: 'sum' is not one of 'avg', 'max', 'avgmax'"),
        ("classification", {"hidden": -1}, "hidden: must be >= 0 and <= 65536, got -1"),
        ("classification", {"dropout": -0.1}, "dropout: must be >= 0 and < 1, got -0.1"),
        (
            "deeplabv3plus",
            {"atrous_rates": [12, 24]},
            "atrous_rates: expected 3 values (tuple[int, int, int]), got 2: [12, 24]",
        ),
        ("deeplabv3plus", {"atrous_rates": [0, 24, 36]}, "atrous_rates[0]: must be >= 1 and <= 1024, got 0"),
        ("normals", {"min_stride": 0}, "min_stride: must be >= 1 and <= 256, got 0"),
    ]
    for name, values, message in errors:
        assert config_error(plugin_zoo, {"name": name, **values}) == f"tasks.t.head.{message}"
    unet = plugin_zoo.entry("head", "unet")
    assert unet.build_options({"attention": None}, "tasks.t.head").attention is None


def test_unet_attention_and_trimmed_channels():
    head = UnetHead(FOUR, 2, UnetOptions(attention="scse"))
    widths = [block.conv2[0].out_channels for block in head.decoder.blocks]
    assert widths == [128, 64, 32, 16]
    feats = [torch.randn(2, c, 32 // (s // 2), 32 // (s // 2)) for c, s in FOUR]
    assert head(feats, (32, 32)).shape == (2, 2, 32, 32)


@pytest.mark.parametrize(
    "head_name", ["fcn-all", "fcn-last", "unet", "deeplabv3plus", "dense", "normals", "boundary"]
)
@pytest.mark.parametrize("norm", ["group", "none"])
def test_norm_option_removes_batch_statistics(head_name, norm, backbones, features):
    factory, options = DENSE[head_name]
    head = factory(backbones["cnn"].feature_info, 3, dataclasses.replace(options, norm=norm))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in head.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in head.modules()) == (norm == "group")
    head.eval()  # (dropout off) a batch gives the same output as its images one by one
    feats = features["cnn", (50, 46)]
    with torch.no_grad():
        whole = head(feats, (50, 46))
        alone = torch.cat([head([f[i : i + 1] for f in feats], (50, 46)) for i in range(2)])
    assert torch.allclose(whole, alone, atol=1e-5)


def test_min_stride_fuses_only_maps_at_or_above_it():
    infos = [FeatureInfo(4, 2), FeatureInfo(8, 4), FeatureInfo(16, 8)]
    feats = [torch.randn(1, 4, 16, 16), torch.randn(1, 8, 8, 8), torch.randn(1, 16, 4, 4)]
    fuse = Fusion(infos, 5, min_stride=4)
    assert fuse.first == 1 and len(fuse.proj) == 2
    assert fuse(feats).shape == (1, 5, 8, 8)  # at stride 4, the finest map kept
    # changing the stride-2 map changes nothing: it is not used
    feats2 = [torch.zeros(1, 4, 16, 16), *feats[1:]]
    assert torch.equal(fuse(feats), fuse(feats2))
    assert Fusion(infos, 5, min_stride=64).first == 2  # the coarsest map is always kept


# -- state dicts of the classes FusionHead replaced ------------------------------------------
# The four classes as they were (mtlzoo/builtin/heads.py before the FusionHead merge), checks
# dropped: their parameter layouts and their forward passes are the reference.


def _old_resize(x, size):
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _old_conv_norm_relu(cin, cout, norm, kernel=3):
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=norm == "none"),
        make_norm(norm, cout),
        nn.ReLU(inplace=True),
    )


class OldFusion(nn.Module):
    def __init__(self, feature_info, channels, min_stride=1):
        super().__init__()
        strides = [fi.stride for fi in feature_info]
        self.first = next((i for i, st in enumerate(strides) if st >= min_stride), len(strides) - 1)
        self.proj = nn.ModuleList(nn.Conv2d(fi.channels, channels, 1) for fi in feature_info[self.first :])

    def forward(self, features):
        features = features[self.first :]
        target = features[0].shape[-2:]
        out = self.proj[0](features[0])
        for proj, x in zip(self.proj[1:], features[1:]):
            out = out + _old_resize(proj(x), target)
        return out


class OldFCNHead(nn.Module):
    def __init__(self, feature_info, out_channels, channels=64, use="all", min_stride=4, norm="batch"):
        super().__init__()
        infos = [FeatureInfo(int(c), int(s)) for c, s in feature_info]
        self.use = use
        self.fuse = OldFusion(infos, channels, min_stride) if use == "all" else None
        cin = channels if use == "all" else infos[-1].channels
        self.conv = _old_conv_norm_relu(cin, channels, norm)
        self.classifier = nn.Conv2d(channels, out_channels, 1)

    def forward(self, features, size):
        x = self.fuse(features) if self.fuse is not None else features[-1]
        return _old_resize(self.classifier(self.conv(x)), size)


_OLD_ACT = {
    "none": lambda x: x,
    "relu": F.relu,
    "softplus": F.softplus,
    "sigmoid": torch.sigmoid,
    "exp": torch.exp,
}


class OldDenseHead(nn.Module):
    def __init__(
        self, feature_info, out_channels, channels=64, activation="softplus", min_stride=4, norm="batch"
    ):
        super().__init__()
        infos = [FeatureInfo(int(c), int(s)) for c, s in feature_info]
        self.activation = activation
        self.fuse = OldFusion(infos, channels, min_stride)
        self.conv = _old_conv_norm_relu(channels, channels, norm)
        self.out = nn.Conv2d(channels, out_channels, 1)

    def forward(self, features, size):
        x = _old_resize(self.out(self.conv(self.fuse(features))), size)
        return _OLD_ACT[self.activation](x)


class OldNormalsHead(nn.Module):
    def __init__(self, feature_info, out_channels=3, channels=64, min_stride=4, norm="batch"):
        super().__init__()
        infos = [FeatureInfo(int(c), int(s)) for c, s in feature_info]
        self.fuse = OldFusion(infos, channels, min_stride)
        self.conv = _old_conv_norm_relu(channels, channels, norm)
        self.out = nn.Conv2d(channels, 3, 1)

    def forward(self, features, size):
        x = _old_resize(self.out(self.conv(self.fuse(features))), size)
        return F.normalize(x, dim=1, eps=1e-6)


class OldBoundaryHead(nn.Module):
    def __init__(self, feature_info, out_channels=1, channels=32, min_stride=2, norm="batch"):
        super().__init__()
        infos = [FeatureInfo(int(c), int(s)) for c, s in feature_info]
        self.fuse = OldFusion(infos, channels, min_stride)
        self.conv = nn.Sequential(
            _old_conv_norm_relu(channels, channels, norm), _old_conv_norm_relu(channels, channels, norm)
        )
        self.out = nn.Conv2d(channels, out_channels, 1)

    def forward(self, features, size):
        return _old_resize(self.out(self.conv(self.fuse(features))), size)


# (old class, its keyword options, the new factory, the same options, out_channels)
OLD_CASES = {
    "fcn-all": (
        OldFCNHead,
        {"channels": 16, "use": "all", "min_stride": 4},
        make_fcn,
        FCNOptions(channels=16, use="all", min_stride=4),
        5,
    ),
    "fcn-last": (
        OldFCNHead,
        {"channels": 16, "use": "last"},
        make_fcn,
        FCNOptions(channels=16, use="last"),
        5,
    ),
    "dense": (
        OldDenseHead,
        {"channels": 16, "activation": "softplus", "min_stride": 2},
        make_dense,
        DenseOptions(channels=16, activation="softplus", min_stride=2),
        1,
    ),
    "dense-sigmoid": (
        OldDenseHead,
        {"channels": 8, "activation": "sigmoid"},
        make_dense,
        DenseOptions(channels=8, activation="sigmoid"),
        2,
    ),
    "normals": (OldNormalsHead, {"channels": 16}, make_normals, NormalsOptions(channels=16), 3),
    "boundary": (
        OldBoundaryHead,
        {"channels": 8, "min_stride": 2},
        make_boundary,
        BoundaryOptions(channels=8, min_stride=2),
        1,
    ),
}


def _randomise(module: nn.Module) -> None:
    """Random parameters and batch-norm statistics, so that every tensor of a state dict matters."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(7)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.3)


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
@pytest.mark.parametrize("case", sorted(OLD_CASES))
def test_fusion_head_loads_old_state_dicts_and_computes_the_same(case, norm, backbones, features):
    old_cls, old_kwargs, factory, options, out_channels = OLD_CASES[case]
    info = backbones["cnn"].feature_info
    old = old_cls(info, out_channels, **old_kwargs, norm=norm)
    _randomise(old)
    new = factory(info, out_channels, dataclasses.replace(options, norm=norm))
    assert set(new.state_dict()) != set(old.state_dict())  # the names did change
    assert len(new.state_dict()) == len(old.state_dict())
    new.load_state_dict(old.state_dict())  # strict: every key renamed, none left over
    for key, value in new.state_dict().items():  # e.g. the batch-norm counters came along
        assert torch.equal(value, old.state_dict()[_old_name(key, case)]), key
    for size in SIZES:
        feats = features["cnn", size]
        old.eval(), new.eval()
        with torch.no_grad():
            assert torch.equal(new(feats, size), old(feats, size)), size
        old.train(), new.train()  # batch statistics too
        with torch.no_grad():
            assert torch.equal(new(feats, size), old(feats, size)), size


def _old_name(key: str, case: str) -> str:
    """The old layout's name of a FusionHead key (the inverse of its renaming)."""
    if key.startswith("out.") and case.startswith("fcn"):
        return "classifier." + key[len("out.") :]
    if key.startswith("convs."):
        block, rest = key[len("convs.") :].split(".", 1)
        return f"conv.{block}.{rest}" if case == "boundary" else f"conv.{rest}"
    return key


def test_old_state_dicts_load_inside_a_model_and_stay_strict(backbones):
    info = backbones["cnn"].feature_info
    old = nn.ModuleDict(
        {"semseg": OldFCNHead(info, 3, channels=8), "edges": OldBoundaryHead(info, 1, channels=8)}
    )
    _randomise(old)
    new = nn.ModuleDict(
        {
            "semseg": make_fcn(info, 3, FCNOptions(channels=8)),
            "edges": make_boundary(info, 1, BoundaryOptions(channels=8)),
        }
    )
    new.load_state_dict(old.state_dict())
    assert torch.equal(new["semseg"].out.weight, old["semseg"].classifier.weight)
    assert torch.equal(new["edges"].convs[1][0].weight, old["edges"].conv[1][0].weight)
    # the current layout loads as usual
    fresh = make_fcn(info, 3, FCNOptions(channels=8))
    fresh.load_state_dict(new["semseg"].state_dict())
    assert torch.equal(fresh.out.weight, old["semseg"].classifier.weight)
    # a key missing from an old state dict is still reported, under its new name
    sd = old["semseg"].state_dict()
    del sd["classifier.bias"]
    with pytest.raises(RuntimeError, match="out.bias"):
        make_fcn(info, 3, FCNOptions(channels=8)).load_state_dict(sd)


# -- registry -------------------------------------------------------------------------------


def test_hook_registers_every_head_lazily_with_options_and_targets():
    seen = {}

    def register(name, factory, options=None, help="", *, targets=None, examples=None, variants=None):
        seen[name] = (factory, options, help, targets)

    plugin.register_heads(register)
    assert list(seen) == NAMES
    for name, (factory, options, help, targets) in seen.items():
        assert factory == f"mtlzoo.builtin.heads.{FACTORIES[name]}"  # imported only when built
        assert options is OPTIONS[name]
        assert help
        assert targets == TARGETS[name]


def test_registered_through_the_zoo(plugin_zoo, backbones, features):
    info = backbones["cnn"].feature_info
    for name in NAMES:
        entry = plugin_zoo.entry("head", name)
        assert entry.plugin == "builtin_heads" and entry.help
        assert entry.options is OPTIONS[name]
        assert entry.targets == TARGETS[name]
        head = plugin_zoo.make("head", {"name": name}, info, 3, path="tasks.t.head")
        out = head(features["cnn", (50, 46)], (50, 46))
        assert out.shape == ((2, 3) if name == "classification" else (2, 3, 50, 46))
    assert plugin_zoo.problems == []
    from mtlzoo.builtin.targets import depth

    assert plugin_zoo.entry("head", "unet").accepts(depth())  # the quickstart's depth task uses unet
    head = plugin_zoo.make(
        "head", {"name": "fcn", "channels": 8, "use": "last"}, info, 3, path="tasks.semseg.head"
    )
    assert isinstance(head, FusionHead) and head.fuse is None and head.out.in_channels == 8
    assert config_error(plugin_zoo, {"name": "unet", "decoder_channels": "wide"}).startswith(
        "tasks.t.head.decoder_channels"
    )
    # build-time errors name the key path too
    assert config_error(plugin_zoo, {"name": "fpn"}, FOUR[:3]).startswith(
        "tasks.t.head: head 'fpn' needs at least 4 feature maps, the backbone gives 3"
    )
