"""The data pipeline: joint transforms with known answers, derived targets, per-sample randomness."""

from __future__ import annotations

import functools

import pytest
import torch

from mtlzoo import ConfigError, DataError, DatasetInfo, TargetInfo
from mtlzoo.builtin import targets as K
from mtlzoo.builtin.derive import boundary_from_mask, labels_from_mask
from mtlzoo.runtime.pipeline import Derived, build_pipeline, sample_generator

KINDS = {
    k.name: k for k in (K.segmentation(), K.boundary(), K.depth(), K.normals(), K.labels(), K.class_index())
}

H, W = 10, 12


class Toy(torch.utils.data.Dataset):
    """One fixed sample with every target kind; every pixel value of the image is distinct."""

    info = DatasetInfo(
        "toy",
        {
            "semseg": TargetInfo("segmentation", 4, ("a", "b", "c", "d"), 255),
            "depth": TargetInfo("depth"),
            "normals": TargetInfo("normals"),
            "class": TargetInfo("class", 3, ("x", "y", "z")),
        },
    )

    def __init__(self, h: int = H, w: int = W):
        g = torch.Generator().manual_seed(0)
        n = torch.randn(3, h, w, generator=g)
        self.sample = {
            "image": torch.arange(3 * h * w, dtype=torch.float32).reshape(3, h, w) / (3 * h * w),
            "semseg": torch.randint(0, 4, (h, w), generator=g),
            "depth": torch.rand(1, h, w, generator=g) * 9 + 1,
            "normals": n / n.norm(dim=0, keepdim=True),
            "class": torch.tensor(2),
        }

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> dict:
        return {k: v.clone() for k, v in self.sample.items()}


def raw_pipeline(split="train", derive=(), **aug):
    return build_pipeline(Toy(), split, aug, list(derive), KINDS, seed=0)


def boundary(source="semseg", key="boundary", width=1):
    return Derived(
        key,
        source,
        functools.partial(boundary_from_mask, width=width, ignore_index=255),
        TargetInfo("boundary", ignore_index=255),
    )


def labels(source="semseg", key="labels"):
    return Derived(
        key,
        source,
        functools.partial(labels_from_mask, num_classes=4, ignore_index=255),
        TargetInfo("labels", 4, ("a", "b", "c", "d")),
    )


def find_offset(big: torch.Tensor, crop: torch.Tensor) -> list[tuple[int, int]]:
    """Every (top, left) where ``crop`` equals a window of ``big`` (last two dims)."""
    h, w = crop.shape[-2:]
    return [
        (i, j)
        for i in range(big.shape[-2] - h + 1)
        for j in range(big.shape[-1] - w + 1)
        if torch.equal(big[..., i : i + h, j : j + w], crop)
    ]


def test_hflip_mirrors_everything_and_negates_normal_x():
    raw = Toy()[0]
    out = raw_pipeline(hflip=1.0)[0]
    for key in ("image", "semseg", "depth"):
        assert torch.equal(out[key], raw[key].flip(-1)), key
    assert torch.equal(out["normals"][0], -raw["normals"][0].flip(-1))
    assert torch.equal(out["normals"][1:], raw["normals"][1:].flip(-1))
    # a hand-made normal: pointing right at the left edge -> pointing left at the right edge
    n = torch.zeros(3, H, W)
    n[0, :, 0] = 1.0
    ds = raw_pipeline(hflip=1.0)
    ds.base.sample["normals"] = n
    flipped = ds[0]["normals"]
    assert torch.all(flipped[0, :, -1] == -1.0) and flipped[0, :, :-1].abs().sum() == 0
    assert out["class"].item() == 2


def test_hflip_zero_probability_and_eval_split_leave_sample_alone():
    raw = Toy()[0]
    for ds in (raw_pipeline(hflip=0.0), raw_pipeline("val", hflip=1.0, color_jitter=0.5)):
        out = ds[0]
        for key in raw:
            assert torch.equal(out[key], raw[key]), key


def test_random_crop_equals_slicing_for_every_target():
    raw = Toy()[0]
    ds = raw_pipeline(crop=[6, 7])
    offsets = set()
    for epoch in range(8):
        out = ds[(epoch, 0)]
        ((i, j),) = find_offset(raw["image"], out["image"])  # image pixels are unique
        offsets.add((i, j))
        for key in ("semseg", "depth", "normals"):
            assert torch.equal(out[key], raw[key][..., i : i + 6, j : j + 7]), key
        assert out["class"].shape == () and out["class"].item() == 2
    assert len(offsets) > 1  # really random


def test_center_crop_on_eval_is_the_middle_window():
    raw = Toy()[0]
    out = raw_pipeline("val", crop=[6, 8])[0]
    top, left = (H - 6) // 2, (W - 8) // 2  # 2, 2
    for key in ("image", "semseg", "depth", "normals"):
        assert torch.equal(out[key], raw[key][..., top : top + 6, left : left + 8]), key


def test_crop_larger_than_image_pads_with_ignore_and_no_measurement():
    raw = Toy()[0]
    out = raw_pipeline("val", crop=[H + 2, W + 4])[0]
    # padded at the bottom/right, then the center crop of the padded image: find where it landed
    ((i, j),) = find_offset(out["image"], raw["image"])
    pad = torch.ones(H + 2, W + 4, dtype=torch.bool)
    pad[i : i + H, j : j + W] = False
    assert torch.all(out["semseg"][pad] == 255)
    assert torch.all(out["depth"][0][pad] == 0) and torch.all(out["normals"][:, pad] == 0)
    assert torch.all(out["image"][:, pad] == 0)
    assert torch.equal(out["semseg"][i : i + H, j : j + W], raw["semseg"])


def test_nearest_resize_of_depth_and_mask_introduces_no_new_values():
    raw = Toy()[0]
    for size in ([23, 17], [4, 5]):
        out = raw_pipeline(resize=size)[0]
        assert out["depth"].shape == (1, *size) and out["semseg"].shape == tuple(size)
        assert set(out["depth"].unique().tolist()) <= set(raw["depth"].unique().tolist())
        assert set(out["semseg"].unique().tolist()) <= set(raw["semseg"].unique().tolist())
        norms = out["normals"].norm(dim=0)
        assert torch.allclose(norms, torch.ones_like(norms))  # nearest keeps unit normals
    # the image is interpolated (bilinear): new values appear
    img = raw_pipeline(resize=[23, 17])[0]["image"]
    assert not set(img.unique().tolist()) <= set(raw["image"].unique().tolist())


def test_random_scale_doubles_size_and_halves_depth():
    raw = Toy()[0]
    out = raw_pipeline(scale=[2.0, 2.0])[0]
    assert out["semseg"].shape == (2 * H, 2 * W)
    assert torch.equal(out["semseg"][::2, ::2], raw["semseg"])
    assert torch.allclose(out["depth"][:, ::2, ::2], raw["depth"] / 2.0)
    assert torch.equal(out["normals"][:, ::2, ::2], raw["normals"])


def test_color_jitter_touches_the_image_only():
    raw = Toy()[0]
    out = raw_pipeline(color_jitter=0.8)[(1, 0)]
    assert not torch.equal(out["image"], raw["image"])
    assert out["image"].min() >= 0 and out["image"].max() <= 1
    for key in ("semseg", "depth", "normals", "class"):
        assert torch.equal(out[key], raw[key]), key


def test_derived_targets_follow_the_augmented_mask():
    ds = raw_pipeline(derive=[boundary(width=2), labels()], crop=[4, 4], hflip=0.5)
    # left half class 1, right half class 3: a 4-wide crop may see one class or both
    mask = torch.ones(H, W, dtype=torch.int64)
    mask[:, W // 2 :] = 3
    mask[0, 0] = 255
    ds.base.sample["semseg"] = mask
    seen = set()
    for epoch in range(20):
        out = ds[(epoch, 0)]
        m = out["semseg"]
        assert torch.equal(out["boundary"], boundary_from_mask(m, 2, 255))
        assert torch.equal(out["labels"], labels_from_mask(m, 4, 255))
        present = {int(v) for v in m.unique() if v != 255}
        assert {i for i in range(4) if out["labels"][i] == 1} == present
        seen.add(tuple(sorted(present)))
    assert {(1,), (3,), (1, 3)} <= seen
    info = ds.info.targets
    assert info["boundary"] == TargetInfo("boundary", ignore_index=255)
    assert info["labels"] == TargetInfo("labels", 4, ("a", "b", "c", "d"))
    assert "semseg" in info and "class" in info


def test_derive_errors_are_config_errors():
    with pytest.raises(ConfigError, match="no target 'mask'.*semseg"):
        raw_pipeline(derive=[boundary(source="mask")])
    with pytest.raises(ConfigError, match="overwrite"):
        raw_pipeline(derive=[labels(key="semseg")])
    with pytest.raises(ConfigError, match="differently"):
        raw_pipeline(derive=[boundary(key="b", width=1), boundary(key="b", width=2)])


def test_augmentation_is_a_function_of_seed_epoch_and_index_only():
    ds = raw_pipeline(crop=[6, 7], hflip=0.5, scale=[0.8, 1.4], color_jitter=0.3)
    torch.manual_seed(123)
    first = ds[(3, 0)]
    torch.manual_seed(456)  # the global generator plays no part, and is not consumed
    state = torch.random.get_rng_state()
    again = ds[(3, 0)]
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(first[k], again[k]) for k in first)
    other = ds[(4, 0)]
    assert any(first[k].shape != other[k].shape or not torch.equal(first[k], other[k]) for k in first)
    assert sample_generator(0, 3, 0).initial_seed() != sample_generator(0, 0, 3).initial_seed()
    assert all(torch.equal(ds[0][k], ds[(0, 0)][k]) for k in first)  # a plain index is epoch 0


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"hflip": 1.5}, "augment.hflip: must be >= 0 and <= 1, got 1.5"),
        ({"scale": [2.0, 1.0]}, "augment.scale: give [lo, hi] with lo <= hi, got [2.0, 1.0]"),
        ({"crop": [0, 5]}, "augment.crop[0]: must be >= 1 and <= 16384, got 0"),
        ({"resize": [5]}, "augment.resize: expected 2 values (tuple[int, int]), got 1: [5]"),
        ({"color_jitter": -0.1}, "augment.color_jitter: must be >= 0, got -0.1"),
    ],
)
def test_bad_augment_options(bad, message):
    from mtlzoo.contract.options import build_options
    from mtlzoo.zoo.sections import AugmentConfig

    with pytest.raises(ConfigError) as err:
        build_options(AugmentConfig, bad, "augment", "augment")
    assert str(err.value) == message


def test_mismatched_target_size_is_a_data_error():
    ds = raw_pipeline()
    ds.base.sample["depth"] = torch.ones(1, H + 1, W)
    pattern = r"toy train\[0\]: target 'depth' \(depth\) must have shape \[1, 10, 12\].*got \[1, 11, 12\]"
    with pytest.raises(DataError, match=pattern):
        ds[0]


def test_batches_collate_to_plain_tensors():
    ds = raw_pipeline(derive=[boundary()], crop=[8, 8], hflip=0.5)
    batch = next(iter(torch.utils.data.DataLoader(torch.utils.data.ConcatDataset([ds] * 4), batch_size=4)))
    assert batch["image"].shape == (4, 3, 8, 8) and batch["semseg"].dtype == torch.int64
    assert batch["boundary"].shape == (4, 1, 8, 8) and batch["class"].tolist() == [2, 2, 2, 2]
    assert type(batch["semseg"]) is torch.Tensor  # plain tensors
