"""The in-memory sample cache (``train.cache``): exactly the uncached samples, each decoded once."""

from __future__ import annotations

import pytest
import torch

from mtlzoo.contract.errors import ConfigError
from mtlzoo.runtime.pipeline import fill_cache
from mtlzoo.runtime.train import Trainer

AUGMENT = {"hflip": 0.5, "scale": [0.8, 1.25], "crop": [24, 24], "color_jitter": 0.2}


class Counting:
    """Wraps a dataset and counts ``__getitem__`` calls per index."""

    def __init__(self, base):
        self.base, self.info, self.calls = base, base.info, {}

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        self.calls[index] = self.calls.get(index, 0) + 1
        return self.base[index]


def pipeline(zoo, spec_factory, split, augment=None):
    spec = spec_factory(**{"tasks.boundary": {"type": "boundary", "from": "semseg"}})
    if augment:
        spec["augment"] = augment
    exp = zoo.build(spec)
    ds = exp.dataset(split)
    ds.base = Counting(ds.base)
    return ds


def same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize(("split", "augment"), [("train", AUGMENT), ("train", None), ("val", AUGMENT)])
def test_cached_samples_equal_uncached_ones_every_epoch(zoo, spec_factory, split, augment):
    plain = pipeline(zoo, spec_factory, split, augment)
    cached = pipeline(zoo, spec_factory, split, augment)
    cached.enable_cache()
    for epoch in range(3):
        for i in range(len(plain)):
            key = (epoch, i) if split == "train" else i
            same(plain[key], cached[key])
    assert set(plain.base.calls.values()) == {3}
    assert set(cached.base.calls.values()) == {1}  # decoded (rendered) once, not every epoch
    # the random part still differs from epoch to epoch
    if split == "train" and augment:
        assert not torch.equal(cached[(0, 0)]["image"], cached[(1, 0)]["image"])


def test_a_split_without_random_augmentation_caches_the_finished_sample(zoo, spec_factory):
    ds = pipeline(zoo, spec_factory, "val", {"crop": [24, 24]})
    ds.enable_cache()
    first = ds[0]
    assert isinstance(ds._cache[0], dict) and first["boundary"].shape == (1, 24, 24)
    first["image"].zero_()  # a consumer changing its copy never changes the cache
    assert ds[0]["image"].abs().sum() > 0


def test_fill_cache_with_workers_matches_the_samples(zoo, spec_factory):
    ds = pipeline(zoo, spec_factory, "train", AUGMENT)
    reference = [ds[(2, i)] for i in range(len(ds))]
    ds.enable_cache()
    assert fill_cache(ds, num_workers=2) == len(ds) and ds.missing == []
    assert fill_cache(ds, num_workers=2) == 0
    for i in range(len(ds)):
        same(reference[i], ds[(2, i)])


def test_a_dataset_that_is_not_cacheable_refuses_the_cache(zoo, spec_factory):
    import dataclasses

    ds = pipeline(zoo, spec_factory, "val")
    ds.base.info = dataclasses.replace(ds.base.info, cacheable=False)
    ds.base.base.info = ds.base.info
    with pytest.raises(ConfigError, match=r"train.cache: dataset 'shapes' says .* set train.cache: off"):
        ds.enable_cache()


@pytest.mark.parametrize("workers", [0, 2])
def test_training_with_the_cache_gives_the_same_run(zoo, spec_factory, workers):
    results = []
    for cache in ("on", "off"):
        spec = spec_factory(**{"train.cache": cache, "train.num_workers": workers, "train.epochs": 2})
        spec["augment"] = AUGMENT
        trainer = Trainer(zoo.build(spec), None)
        summary = trainer.fit()
        assert trainer.train_set.cached == (cache == "on")
        results.append((summary["final"], [r["train"]["loss"] for r in trainer.history]))
    assert results[0] == results[1]


def test_cache_auto_keeps_the_small_shapes_splits(zoo, spec_factory):
    trainer = Trainer(zoo.build(spec_factory()), None)
    trainer.fit()
    assert trainer.train_set.cached and trainer.evaluator.dataset("val").cached
