"""The data pipeline: joint augmentation and derived targets, once for every dataset.

A dataset plugin yields raw samples (``"image"`` float32 ``[3,H,W]`` in [0, 1], targets as
their target kinds say). :func:`build_pipeline` wraps it in a :class:`PipelineDataset` that,
per sample and in this order:

1. augments: ``resize`` (every split) -> random ``scale`` -> pad + random ``crop`` ->
   ``hflip`` -> ``color_jitter`` on the train split; ``resize`` -> pad + center ``crop`` on
   the others. Every dense target moves with the image, as its :class:`TargetKind` says:
   resized with its interpolation (nearest for labels, depth and normals, so no value is
   mixed across an object edge; the image bilinearly with antialiasing), padded with its
   fill (the image with 0), its values changed by ``on_flip`` (normals negate x) and
   ``on_scale`` (zooming in by ``s`` divides depth by ``s``, as in LibMTL's
   RandomScaleCrop). The kernels are torchvision's (``transforms.v2.functional``);
2. derives targets (a boundary map or image-level labels from a segmentation mask) from
   the *augmented* source, so they match what the model sees.

**Partial labels** (targets declared ``TargetInfo(partial=True)``, see
:mod:`mtlzoo.contract.data`): a sample without such a target gets its kind's fill in its
place (before augmentation, so it moves with the image like any target) and
``"<key>/present"`` (a bool scalar, False); a sample with it gets ``True``. A target derived
from a partial one carries its source's flag.

Images stay in [0, 1]: the model normalises them (its first layer). Randomness is a pure
function of ``(seed, epoch, sample index)``: the sampler hands ``(epoch, index)`` keys, so
the same sample gets the same augmentation in any worker, after any resume.

Every sample the dataset yields is checked against its info and target kinds (dtype, shape,
the kind's value check) when it is first loaded, so a float32 or ``[1,H,W]`` segmentation
mask stops training at once with the sample named.

**Sample cache** (:meth:`PipelineDataset.enable_cache`, ``train.cache``): decoding a file or
rendering a procedural scene every epoch is wasted work for a small dataset, so the pipeline
can keep each sample as it is after ``resize`` (the deterministic part) and run only the
random part per epoch; a split without random augmentation keeps the finished sample
(derived targets included). The cached values are exactly what an uncached pipeline
computes, so results do not change. :func:`fill_cache` fills it up front with loader
workers, before the training loader forks its own (which then share the memory).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from ..contract.data import DatasetInfo, TargetInfo, TargetKind, present_key, sample_problems
from ..contract.errors import ConfigError, DataError


@dataclass(frozen=True)
class Derived:
    """A target the pipeline computes from another target of the sample.

    Attributes:
        key: the derived target's key (replaces a target of that key the dataset yields).
        source: key of the target it is computed from.
        fn: ``fn(source tensor) -> target tensor`` (picklable).
        info: what the derived target is.
    """

    key: str
    source: str
    fn: Any
    info: TargetInfo


def _same(a: Derived, b: Derived) -> bool:
    """Two derivations of one key agree (partials compare by function and arguments)."""

    def key(fn: Any) -> Any:
        if isinstance(fn, functools.partial):
            return (fn.func, fn.args, tuple(sorted(fn.keywords.items())))
        return fn

    return a.source == b.source and a.info == b.info and key(a.fn) == key(b.fn)


def unique_derived(derived: list[Derived]) -> list[Derived]:
    """``derived`` without repeats (two tasks may derive one target the same way); two
    different derivations of one key are a :class:`ConfigError`."""
    out: dict[str, Derived] = {}
    for d in derived:
        if d.key in out and not _same(out[d.key], d):
            raise ConfigError(
                f"two tasks derive target {d.key!r} differently; give one of them another `target` key"
            )
        out.setdefault(d.key, d)
    return list(out.values())


def derived_info(info: DatasetInfo, derived: list[Derived]) -> DatasetInfo:
    """``info`` extended by the derived targets (partial where their source is); refuses
    derivations that clash."""
    targets = dict(info.targets)
    for d in derived:
        if d.source not in info.targets:
            have = ", ".join(sorted(info.targets)) or "none"
            raise ConfigError(
                f"`from: {d.source}` (deriving {d.key!r}): dataset {info.name!r} has no target "
                f"{d.source!r}; its targets are: {have}"
            )
        if d.key == d.source or any(x.source == d.key for x in derived):
            raise ConfigError(
                f"deriving {d.key!r} would overwrite the target it is computed from; give the task "
                f"another `target` key"
            )
        source = info.targets[d.source]
        targets[d.key] = dataclasses.replace(d.info, partial=True) if source.partial else d.info
    return dataclasses.replace(info, targets=targets)


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The random generator of one sample's augmentation: a function of its arguments only."""
    mixed = (int(seed) * 1_000_003 + int(epoch) * 7_368_787 + int(index) * 15_485_863 + 1) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


class PipelineDataset(torch.utils.data.Dataset):
    """A dataset split wrapped in the pipeline (see the module docstring).

    Attributes:
        base: the wrapped dataset; ``info``: its info extended by the derived targets.
        split, augment (the ``augment`` options as a dict), derived, kinds (target key ->
        :class:`TargetKind`, derived targets included), train (random augmentation on), seed.
    """

    def __init__(
        self,
        base: Any,
        split: str,
        augment: Mapping[str, Any],
        derived: list[Derived],
        kinds: Mapping[str, TargetKind],
        seed: int = 0,
    ):
        self.base = base
        self.split = split
        self.augment = dict(augment)
        self.derived = unique_derived(derived)
        self.info = derived_info(base.info, self.derived)
        self.train = split == "train"
        self.seed = int(seed)
        self.kinds = {key: kinds[t.kind] for key, t in self.info.targets.items()}
        self._base_kinds = {t.kind: kinds[t.kind] for t in base.info.targets.values()}
        self._dense = [k for k, t in base.info.targets.items() if self.kinds[k].dense]
        self._fills = {k: self.kinds[k].pad_value(base.info.targets[k]) for k in self._dense}
        #: target keys samples may lack (partial labels), derived ones included
        self.partial = [k for k, t in self.info.targets.items() if t.partial]
        self._cache: list[Any] | None = None

    @property
    def random(self) -> bool:
        """True when samples of this split are augmented at random (so they change per epoch)."""
        a = self.augment
        return self.train and bool(
            a.get("scale") or a.get("crop") or a.get("hflip", 0) > 0 or a.get("color_jitter", 0) > 0
        )

    # -- sample cache ------------------------------------------------------------------------
    @property
    def cached(self) -> bool:
        """True when samples are kept in memory (:meth:`enable_cache`)."""
        return self._cache is not None

    def enable_cache(self) -> None:
        """Keep every sample in memory once loaded (see the module docstring); only for a
        dataset whose info says it is ``cacheable``."""
        if not self.base.info.cacheable:
            raise ConfigError(
                f"train.cache: dataset {self.info.name!r} says its samples are not a pure function of the "
                f"index (info.cacheable is False); set train.cache: off"
            )
        if self._cache is None:
            self._cache = [None] * len(self)

    def cache_entry(self, index: int) -> Any:
        """What the cache keeps of sample ``index`` (computed, not stored: :func:`fill_cache`
        calls it in loader workers and stores the result with :meth:`store`)."""
        with _one_thread():
            return self._entry(index)

    def store(self, index: int, entry: Any) -> None:
        """Put a :meth:`cache_entry` result in the cache."""
        if self._cache is not None:
            self._cache[index] = entry

    @property
    def missing(self) -> list[int]:
        """Indices not cached yet."""
        return [] if self._cache is None else [i for i, e in enumerate(self._cache) if e is None]

    def entry_bytes(self, index: int = 0) -> int:
        """Bytes one cache entry takes (sample ``index``'s), to decide whether a split fits."""
        entry = self.cache_entry(index) if len(self) else {}
        parts = entry if not isinstance(entry, tuple) else {**entry[0], **entry[1]}
        return sum(v.element_size() * v.nelement() for v in parts.values() if torch.is_tensor(v))

    def __len__(self) -> int:
        return len(self.base)

    def __repr__(self) -> str:
        return (
            f"PipelineDataset({self.base!r}, split={self.split!r}, augment={self.augment}, "
            f"derived={[d.key for d in self.derived]})"
        )

    def check(self) -> list[str]:
        """The wrapped dataset's own file check, if it has one."""
        check = getattr(self.base, "check", None)
        return list(check()) if callable(check) else []

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Tensor]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        with _one_thread():
            return self._getitem(int(epoch), int(index))

    # -- one sample ------------------------------------------------------------------------------
    def _getitem(self, epoch: int, index: int) -> dict[str, Tensor]:
        if self._cache is None:
            entry = self._entry(index)
        else:
            entry = self._cache[index]
            if entry is None:
                entry = self._cache[index] = self._entry(index)
            entry = _own(entry)  # copies: whoever gets a sample may change it, the cache stays
        if not isinstance(entry, tuple):  # a finished sample (no random augmentation)
            return entry
        return self._finish(dict(entry[0]), dict(entry[1]), epoch, index)

    def _entry(self, index: int) -> Any:
        """Sample ``index`` checked and resized, split into dense and other tensors; when the
        split has no random augmentation, the finished sample."""
        dense, out = self._prepared(index)
        return self._finish(dense, out, 0, index) if not self.random else (dense, out)

    def _prepared(self, index: int) -> tuple[dict[str, Tensor], dict[str, Any]]:
        sample = self.base[index]
        if not isinstance(sample, Mapping) or "image" not in sample:
            raise DataError(
                f"{self.info.name} {self.split}[{index}]: a sample must be a dict with an 'image' "
                f"key (`mtlzoo data check SPEC` checks every sample)"
            )
        problems = sample_problems(
            sample, self.base.info, self._base_kinds, f"{self.info.name} {self.split}[{index}]"
        )
        if problems:
            more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
            raise DataError(f"{problems[0]}{more}; `mtlzoo data check SPEC` lists every bad sample")
        image = sample["image"]
        hw = tuple(image.shape[-2:])
        dense = {"image": image}
        out: dict[str, Any] = {}
        sample = self._fill_missing(dict(sample), out, (int(hw[0]), int(hw[1])))
        for key, value in sample.items():
            if key == "image":
                continue
            if key in self._fills:
                if tuple(value.shape[-2:]) != hw:
                    raise DataError(
                        f"{self.info.name} {self.split}[{index}]: target {key!r} is "
                        f"{tuple(value.shape[-2:])} but the image is {hw} (H, W)"
                    )
                dense[key] = value
            else:
                out[key] = value
        if self.augment.get("resize"):
            dense = self._resize(dense, self.augment["resize"])
        return dense, out

    def _fill_missing(
        self, sample: dict[str, Any], out: dict[str, Any], hw: tuple[int, int]
    ) -> dict[str, Any]:
        """Partial targets: the kind's fill where the sample lacks one, and every partial
        target's ``"<key>/present"`` flag in ``out``."""
        for key, tinfo in self.base.info.targets.items():
            if not tinfo.partial:
                continue
            have = sample.get(key) is not None
            if not have:
                kind = self.kinds[key]
                shape = kind.expected_shape(tinfo, *hw)
                sample[key] = torch.full(shape, kind.pad_value(tinfo), dtype=getattr(torch, kind.dtype))
            out[present_key(key)] = torch.tensor(have)
        return sample

    def _finish(
        self, dense: dict[str, Tensor], out: dict[str, Any], epoch: int, index: int
    ) -> dict[str, Any]:
        """The random augmentation of ``(epoch, index)`` (train split), the crop, the derived targets."""
        a = self.augment
        g = sample_generator(self.seed, epoch, index) if self.train else None
        if g is not None and a.get("scale"):
            s = _uniform(g, *a["scale"])
            h, w = dense["image"].shape[-2:]
            dense = self._resize(dense, (max(1, round(h * s)), max(1, round(w * s))), scale=s)
        if a.get("crop"):
            dense = self._crop(dense, a["crop"], g)
        if g is not None and a.get("hflip", 0) > 0 and float(torch.rand((), generator=g)) < a["hflip"]:
            dense = self._hflip(dense)
        if g is not None and a.get("color_jitter", 0) > 0:
            dense["image"] = _color_jitter(dense["image"], float(a["color_jitter"]), g)
        out.update(dense)
        for d in self.derived:
            out[d.key] = d.fn(out[d.source])
            if present_key(d.source) in out:
                out[present_key(d.key)] = out[present_key(d.source)].clone()
        return out

    def _resize(self, dense: dict[str, Tensor], size: Any, scale: float | None = None) -> dict[str, Tensor]:
        size = [int(size[0]), int(size[1])]
        if tuple(dense["image"].shape[-2:]) == tuple(size):
            return dense
        out = {"image": TF.resize_image(dense["image"], size, antialias=True)}
        for key, value in dense.items():
            if key == "image":
                continue
            kind = self.kinds[key]
            if kind.interpolation == "bilinear":
                value = TF.resize_image(value.float(), size, antialias=True).to(value.dtype)
            else:
                value = TF.resize_mask(value, size)
            if scale is not None and kind.on_scale is not None:
                value = kind.on_scale(value, scale)
            out[key] = value
        return out

    def _crop(self, dense: dict[str, Tensor], crop: Any, g: torch.Generator | None) -> dict[str, Tensor]:
        ch, cw = int(crop[0]), int(crop[1])
        h, w = dense["image"].shape[-2:]
        ph, pw = max(ch - h, 0), max(cw - w, 0)
        if ph or pw:  # pad at the bottom/right, each tensor with its own fill
            fills = {"image": 0.0, **self._fills}
            dense = {k: torch.nn.functional.pad(v, (0, pw, 0, ph), value=fills[k]) for k, v in dense.items()}
            h, w = h + ph, w + pw
        if g is not None:
            top = int(torch.randint(0, h - ch + 1, (), generator=g))
            left = int(torch.randint(0, w - cw + 1, (), generator=g))
        else:  # torchvision's center-crop anchor
            top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
        return {k: v[..., top : top + ch, left : left + cw].contiguous() for k, v in dense.items()}

    def _hflip(self, dense: dict[str, Tensor]) -> dict[str, Tensor]:
        out = {}
        for key, value in dense.items():
            value = value.flip(-1)
            kind = self.kinds.get(key)
            if kind is not None and kind.on_flip is not None:
                value = kind.on_flip(value)
            out[key] = value
        return out


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Per-sample ops are tiny: intra-op threads only contend (measured 50x slower on a busy
    2-core machine); the main process (num_workers=0) loads then steps, never both."""
    threads = torch.get_num_threads()
    if threads == 1:  # DataLoader workers run single-threaded already
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _CacheFill(torch.utils.data.Dataset):
    """The missing cache entries of a pipeline dataset, for a loader that computes them in workers."""

    def __init__(self, dataset: PipelineDataset, indices: list[int]):
        self.dataset = dataset
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[int, Any]:
        return self.indices[i], self.dataset.cache_entry(self.indices[i])


def fill_cache(dataset: PipelineDataset, num_workers: int) -> int:
    """Compute every missing cache entry of ``dataset`` in ``num_workers`` loader workers
    (in this process when 0) and store them here; return how many were computed. Run it
    before a loader with workers forks: its workers then share the filled cache."""
    indices = dataset.missing
    if not indices:
        return 0
    if num_workers == 0:
        for i in indices:
            dataset.store(i, dataset.cache_entry(i))
        return len(indices)
    from .loading import worker_init

    loader = torch.utils.data.DataLoader(
        _CacheFill(dataset, indices),
        batch_size=None,
        num_workers=num_workers,
        worker_init_fn=worker_init,
        multiprocessing_context="fork" if "fork" in torch.multiprocessing.get_all_start_methods() else None,
    )
    for index, entry in loader:
        # copy out of the worker's shared-memory segment: one file descriptor per tensor otherwise
        dataset.store(index, _own(entry))
    return len(indices)


def _own(entry: Any) -> Any:
    if isinstance(entry, (tuple, list)):  # the loader hands a tuple back as a list
        return tuple(_own(e) for e in entry)
    return {k: v.clone() if torch.is_tensor(v) else v for k, v in entry.items()}


def _color_jitter(image: Tensor, strength: float, g: torch.Generator) -> Tensor:
    """Brightness, contrast and saturation jitter in a random order (torchvision's ColorJitter
    kernels; factors uniform in ``[max(0, 1 - s), 1 + s]``)."""
    ops = [TF.adjust_brightness_image, TF.adjust_contrast_image, TF.adjust_saturation_image]
    order = torch.randperm(3, generator=g).tolist()
    factors = [_uniform(g, max(0.0, 1 - strength), 1 + strength) for _ in range(3)]
    for i in order:
        image = ops[i](image, factors[i])
    return image


def build_pipeline(
    dataset: Any,
    split: str,
    augment: Mapping[str, Any] | None,
    derived: list[Derived],
    kinds: Mapping[str, TargetKind],
    seed: int = 0,
) -> PipelineDataset:
    """Wrap ``dataset`` (one split of a dataset plugin) in the pipeline.

    Random augmentation runs on ``split == "train"`` only; every split gets ``resize`` and a
    (center) ``crop``. ``derived`` adds targets computed from the augmented sample; the
    wrapper's ``info`` describes them. ``kinds`` maps target-kind names to their
    :class:`TargetKind`."""
    if not isinstance(getattr(dataset, "info", None), DatasetInfo):
        raise ConfigError(f"build_pipeline: {type(dataset).__name__} has no `info: DatasetInfo` attribute")
    return PipelineDataset(dataset, split, augment or {}, derived, kinds, seed)


__all__ = ["PipelineDataset", "Derived", "build_pipeline", "derived_info", "fill_cache", "sample_generator"]
