"""Plain ViTs through the ``timm`` backbone: a DINOv2-architecture ViT (14-pixel patches,
random init, made small with ``model_args``) builds and trains at sizes that are multiples of
its patch with the ``fcn`` and ``unet`` heads; its ViTDet-style pyramid gives strides 4 to 32;
other sizes are refused in one line; timm's size options pass through; a local weights file
loads as for CNNs; the pyramid feeds the architectures that read maps."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from mtlzoo import ConfigError
from mtlzoo.contract.checks import feature_maps
from mtlzoo.runtime.train import Trainer

DINO = "vit_small_patch14_dinov2"
SMALL = {"depth": 3, "embed_dim": 24, "num_heads": 2}


def vit(**options) -> dict:
    """The timm backbone node of a small random DINOv2-architecture ViT."""
    return {"name": "timm", "arch": DINO, "model_args": dict(SMALL), "pyramid_channels": 16, **options}


def make(zoo, node: dict):
    return zoo.make("backbone", node, path="model.backbone")


def spec(size: list[int], backbone: dict | None = None, architecture: dict | None = None) -> dict:
    """Segmentation with the fcn head and depth with the unet head on ``shapes`` scenes of ``size``."""
    out = {
        "name": "vit",
        "seed": 0,
        "model": {"backbone": backbone or vit()},
        "tasks": {
            "semseg": {"type": "segmentation", "head": {"name": "fcn", "channels": 16}},
            "depth": {"type": "depth", "head": {"name": "unet", "decoder_channels": [32, 16, 16, 8]}},
        },
        "combiner": {"name": "sum"},
        "data": {"name": "shapes", "size": size, "train_size": 8, "val_size": 4, "test_size": 4},
        "train": {"epochs": 1, "batch_size": 4, "progress": False, "device": "cpu"},
    }
    if architecture is not None:
        out["model"]["architecture"] = architecture
    return out


@pytest.mark.parametrize("size", [[70, 70], [98, 126]], ids=lambda s: f"{s[0]}x{s[1]}")
def test_a_dinov2_vit_trains_with_fcn_and_unet_heads(zoo, size):
    exp = zoo.build(spec(size))
    backbone = exp.model.backbone
    assert type(backbone.model).__name__ == "FeatureGetterNet" and backbone.size_divisor == 14
    assert [fi.stride for fi in backbone.feature_info] == [4, 8, 16, 32]
    summary = Trainer(exp, None).fit()
    assert summary["steps"] == 2 and set(summary["final"]) == {"semseg", "depth"}
    preds = exp.model.eval()(torch.rand(2, 3, *size))
    assert preds["semseg"].shape[-2:] == tuple(size) and preds["depth"].shape == (2, 1, *size)


def test_the_pyramid_levels_are_at_strides_4_to_32(zoo):
    backbone = make(zoo, vit()).eval()
    info = backbone.feature_info
    assert [(fi.channels, fi.stride) for fi in info] == [(16, 4), (16, 8), (16, 16), (16, 32)]
    with torch.no_grad():
        for h, w in ((70, 70), (98, 126), (28, 252)):
            maps = backbone(torch.rand(1, 3, h, w))
            feature_maps(maps, info, (h, w), "vit")  # within one pixel of size / stride
            assert tuple(maps[2].shape[-2:]) == (-(-h // 16), -(-w // 16))
    # ViTDet's scale factors exactly with 16-pixel patches: no resampling, sizes are size / stride
    b16 = make(zoo, vit(arch="vit_small_patch16_224")).eval()
    with torch.no_grad():
        assert [tuple(m.shape[-2:]) for m in b16(torch.rand(1, 3, 64, 96))] == [
            (16, 24),
            (8, 12),
            (4, 6),
            (2, 3),
        ]


def test_four_chosen_blocks_feed_one_level_each_and_widths_follow_vitdet(zoo):
    deeper = {**SMALL, "depth": 4}
    backbone = make(zoo, vit(out_indices=[0, 1, 2, 3], pyramid_channels=None, model_args=deeper))
    # no projection: scale 4 and 2 halve the width per transposed conv, 1 and 1/2 keep it
    assert [fi.channels for fi in backbone.feature_info] == [6, 12, 24, 24]
    assert [tuple(m.shape) for m in backbone(torch.rand(1, 3, 42, 56))] == [
        (1, 6, 11, 14),
        (1, 12, 6, 7),
        (1, 24, 3, 4),
        (1, 24, 2, 2),
    ]
    with pytest.raises(
        ConfigError, match=r"out_indices: the feature pyramid of a plain ViT reads one block or 4"
    ):
        make(zoo, vit(out_indices=[1, 2]))
    plain = make(zoo, vit(pyramid=False))
    assert [fi.stride for fi in plain.feature_info] == [14, 14, 14] and plain.pyramid is None


def test_sizes_it_cannot_take_are_refused_in_one_line(zoo):
    backbone = make(zoo, vit())
    with pytest.raises(ConfigError) as err:
        backbone(torch.rand(1, 3, 100, 126))
    message = str(err.value)
    assert message.startswith(
        f"model.backbone: timm '{DINO}' takes images whose height and width are multiples of its 14-pixel patch, "
        "got 100x126"
    )
    assert "98x126" in message and "\n" not in message
    fixed = make(zoo, vit(dynamic_img_size=False, img_size=[56, 56]))
    with pytest.raises(
        ConfigError, match=r"was built for 56x56 images and got 70x70; set dynamic_img_size: true"
    ):
        fixed(torch.rand(1, 3, 70, 70))
    assert fixed(torch.rand(1, 3, 56, 56))[0].shape == (1, 16, 14, 14)
    padded = make(zoo, vit(dynamic_img_pad=True))
    assert padded.size_divisor == 1 and padded(torch.rand(1, 3, 50, 61))[0].shape == (1, 16, 13, 16)


def test_a_spec_whose_images_are_off_the_patch_is_refused_at_build(zoo):
    # the build's dry forward uses the data's own size (training does not pad), so the
    # refusal comes before any data loader or step, in the backbone's one line
    with pytest.raises(ConfigError) as err:
        zoo.build(spec([64, 64]))
    message = str(err.value)
    assert message.startswith(
        f"model.backbone: timm '{DINO}' takes images whose height and width are multiples"
    )
    assert "got 64x64" in message and "56x56" in message and "\n" not in message


def test_timm_size_options_pass_through(zoo):
    b = make(zoo, vit(patch_size=8, img_size=[64, 96], dynamic_img_size=False))
    pe = b.model.model.patch_embed
    assert pe.patch_size == (8, 8) and pe.img_size == (64, 96) and b.size_divisor == 8
    assert [tuple(m.shape[-2:]) for m in b(torch.rand(1, 3, 64, 96))] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    with pytest.raises(ConfigError, match=r"model.backbone.model_args: 'img_size' is an option of its own"):
        zoo.spec(spec([70, 70], vit(model_args={"img_size": 70})))
    # a CNN ignores them: resnet18 is built as before
    cnn = make(zoo, {"name": "timm", "arch": "resnet18"})
    assert cnn.pyramid is None and cnn.size_divisor == 32 and cnn.staged() is not None


def test_a_local_weights_file_loads_as_for_cnns(zoo, tmp_path):
    full = timm.create_model(DINO, pretrained=False, **SMALL)  # timm's classifier model, as published
    with torch.no_grad():
        for p in full.parameters():
            p.normal_(0, 0.02)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(path))
    b = make(zoo, vit(weights=str(path)))
    inner = b.model.model
    torch.testing.assert_close(inner.blocks[2].mlp.fc2.weight, full.blocks[2].mlp.fc2.weight)
    torch.testing.assert_close(inner.pos_embed, full.pos_embed)  # 518x518 grid, resampled at run time
    assert b.input_mean == pytest.approx((0.485, 0.456, 0.406))  # DINOv2's statistics with weights
    assert b(torch.rand(1, 3, 70, 70))[0].shape == (1, 16, 18, 18)


def test_the_pyramid_feeds_the_architectures_that_read_maps(zoo):
    for node in (
        {"name": "mmoe", "experts": 2},
        {"name": "padnet", "channels": 8},
        {"name": "mti_net", "channels": [8, 8, 8, 8]},
        {"name": "ltb"},
    ):
        exp = zoo.build(spec([70, 70], architecture=node))
        preds = exp.model.eval()(torch.rand(1, 3, 70, 70))
        assert preds["depth"].shape == (1, 1, 70, 70)
    with pytest.raises(ConfigError, match=r"architecture 'mtan' runs the backbone stage by stage"):
        zoo.build(spec([70, 70], architecture={"name": "mtan"}))


def test_sams_encoder_takes_other_sizes(zoo):
    b = make(
        zoo,
        {
            "name": "timm",
            "arch": "samvit_base_patch16",
            "model_args": {"depth": 2, "embed_dim": 24, "num_heads": 2, "global_attn_indexes": [1]},
            "out_indices": [1],
            "pyramid_channels": 8,
        },
    )
    assert [tuple(m.shape[-2:]) for m in b(torch.rand(1, 3, 64, 96))] == [(16, 24), (8, 12), (4, 6), (2, 3)]


def test_a_trained_vit_predicts_any_size_padded_to_its_patch(zoo, tmp_path):
    import mtlzoo

    exp = zoo.build(spec([70, 70]))
    Trainer(exp, tmp_path).fit()
    predictor = mtlzoo.load(tmp_path)
    assert predictor.size_divisor == 14
    raw = predictor.predict(torch.rand(1, 3, 50, 61))  # padded to 56x70 inside, cropped back
    assert raw[0]["semseg"].shape[-2:] == (50, 61) and raw[0]["depth"].shape[-2:] == (50, 61)


@pytest.mark.slow
def test_a_trained_vit_exports_to_pt2_for_any_size(zoo, tmp_path, capsys):
    """The pyramid's size arithmetic (patch-14 grid, ceil-mode pooling, resizes to powers of two)
    is beyond torch.export's proofs for a named size range; export keeps H and W symbolic anyway
    and the file matches predict at sizes on and off the patch grid."""
    import mtlzoo
    from mtlzoo.apps.cli import main

    Trainer(zoo.build(spec([70, 70])), tmp_path).fit()
    assert main(["export", str(tmp_path), "--format", "pt2"]) == 0
    out = capsys.readouterr().out
    assert f"exported {tmp_path / 'model-best.pt2'}" in out and "padded to multiples of 14 inside" in out
    program = torch.export.load(str(tmp_path / "model-best.pt2")).module()
    predictor = mtlzoo.load(tmp_path)
    for size in [(84, 112), (61, 90)]:
        x = torch.rand(2, 3, *size)
        got = program(x)
        want = predictor.predict(x, batch_size=2)
        for task in ("semseg", "depth"):
            torch.testing.assert_close(got[task], torch.stack([p[task] for p in want]), atol=1e-5, rtol=1e-5)
