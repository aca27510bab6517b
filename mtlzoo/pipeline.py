"""The data pipeline: joint augmentation, derived targets and normalisation, once for every dataset.

A dataset plugin yields raw samples (``"image"`` float32 ``[3,H,W]`` in [0, 1], targets as
in :mod:`mtlzoo.data`). :func:`build_pipeline` wraps it in a :class:`PipelineDataset` that,
per sample and in this order:

1. wraps every dense tensor in a ``torchvision.tv_tensors`` type chosen from its target
   kind, so one torchvision v2 transform moves the image and all its targets together:
   the image is resized bilinearly with antialiasing; masks, boundary maps, depth
   (:class:`Depth`) and normals (:class:`Normals`) are resized with nearest neighbour, so
   no value is ever interpolated across an object edge;
2. augments (train split only): ``resize`` -> random ``scale`` -> random ``crop`` ->
   ``hflip`` -> ``color_jitter``. Other splits get the deterministic ``resize`` -> center
   ``crop``. A horizontal flip negates the x component of normals; a random scale by ``s``
   divides depth by ``s`` (an object shown ``s`` times larger looks ``s`` times closer, as
   in LibMTL's RandomScaleCrop). Padding (a crop larger than the image) fills the image
   with 0, masks and boundaries with their ``ignore_index``, depth and normals with 0 (no
   measurement);
3. derives targets (:class:`DeriveSpec`: a boundary map or image-level labels from a
   segmentation mask) from the *augmented* mask, so they match what the model sees;
4. normalises the image with the backbone's mean/std (:func:`mean_std_for_backbone`).
"""

from __future__ import annotations

import dataclasses

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .data import DatasetInfo, TargetInfo
from .errors import ConfigError, DataError
from .targets import boundary_from_mask, labels_from_mask

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZE_CHOICES = ("auto", "imagenet", "none")
DENSE_KINDS = ("segmentation", "boundary", "depth", "normals")


# -- tv_tensor types of the targets ---------------------------------------------------------------
class Depth(tv_tensors.Mask):
    """A depth map ``[1,H,W]``. A :class:`~torchvision.tv_tensors.Mask` to torchvision (so it
    is resized with nearest neighbour and cropped like a mask); its own type lets the
    pipeline pad it with 0 and rescale its values under random scaling."""


class Normals(tv_tensors.Mask):
    """A surface-normal map ``[3,H,W]`` (x right, y down, z towards the camera).

    Resized with nearest neighbour like a mask (unit length is kept exactly); a horizontal
    flip also negates the x component (registered kernel below)."""


def _hflip_normals(normals: Normals) -> Normals:
    out = TF.horizontal_flip_mask(normals.as_subclass(Tensor))  # flip returns a copy
    out[..., 0, :, :] = -out[..., 0, :, :]
    return tv_tensors.wrap(out, like=normals)


try:  # registered once per process; a module reload must not fail on the second registration
    TF.register_kernel(TF.horizontal_flip, Normals)(_hflip_normals)
except (TypeError, ValueError):  # pragma: no cover - already registered
    pass


def wrap_target(value: Tensor, kind: str) -> Any:
    """Wrap a target tensor in the tv_tensor type its ``kind`` is transformed as (image-level
    targets stay plain tensors, which torchvision passes through untouched)."""
    if kind in ("segmentation", "boundary"):
        return tv_tensors.Mask(value)
    if kind == "depth":
        return Depth(value)
    if kind == "normals":
        return Normals(value)
    return value


def resize_dense(value: Tensor, kind: str, size: list[int] | tuple[int, int]) -> Tensor:
    """Resize one dense tensor to ``size`` (H, W): the image (``kind="image"``) bilinearly with
    antialiasing, every target kind with nearest neighbour. Returns a plain tensor."""
    size = [int(size[0]), int(size[1])]
    if tuple(value.shape[-2:]) == tuple(size):
        return value
    if kind == "image":
        return TF.resize(tv_tensors.Image(value), size, InterpolationMode.BILINEAR, antialias=True).as_subclass(Tensor)
    return TF.resize(wrap_target(value, kind), size, InterpolationMode.NEAREST).as_subclass(Tensor)


# -- options ------------------------------------------------------------------------------------
@dataclass
class AugmentOptions:
    """``augment`` section of a spec: what the pipeline does to every sample.

    Attributes:
        hflip: probability of a horizontal flip (train only).
        scale: ``[lo, hi]``: resize by a factor drawn uniformly from this range (train only).
        crop: ``[H, W]``: random crop on the train split, center crop on the others (padded
            with the ignore value where the image is smaller).
        resize: ``[H, W]``: resize every sample first (all splits).
        color_jitter: strength of brightness/contrast/saturation jitter (train only, image only).
        normalize: ``auto`` (the backbone's pretrained mean/std from timm where it has one,
            else ImageNet's), ``imagenet`` or ``none``.
    """

    hflip: float = 0.0
    scale: Optional[list[float]] = None
    crop: Optional[list[int]] = None
    resize: Optional[list[int]] = None
    color_jitter: float = 0.0
    normalize: str = "auto"

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.hflip) <= 1.0:
            raise ConfigError(f"augment.hflip: a probability in [0, 1], got {self.hflip}")
        if self.scale is not None:
            if len(self.scale) != 2 or not 0 < float(self.scale[0]) <= float(self.scale[1]):
                raise ConfigError(f"augment.scale: give [lo, hi] with 0 < lo <= hi, got {list(self.scale)}")
        for name in ("crop", "resize"):
            value = getattr(self, name)
            if value is not None and (len(value) != 2 or min(int(v) for v in value) < 1):
                raise ConfigError(f"augment.{name}: give [H, W] in pixels (both >= 1), got {list(value)}")
        if float(self.color_jitter) < 0:
            raise ConfigError(f"augment.color_jitter: must be >= 0, got {self.color_jitter}")
        if self.normalize not in NORMALIZE_CHOICES:
            raise ConfigError(f"augment.normalize: {self.normalize!r} is not one of {', '.join(NORMALIZE_CHOICES)}")


@dataclass
class DeriveSpec:
    """A target computed by the pipeline from a segmentation target of the dataset.

    Attributes:
        kind: ``boundary`` (a boundary map, ``width`` pixels either side of each label
            change) or ``labels`` (multi-hot image-level labels of the classes present).
        source: key of the segmentation target it is computed from.
        target: key the derived target gets in the sample (and in ``info.targets``).
        width: boundary half-width in pixels (``boundary`` only).

    A derived target replaces a target of the same key that the dataset yields itself
    (asking for ``from`` means: compute it from the mask, here, after augmentation).
    """

    kind: str
    source: str
    target: str
    width: int = 1


# -- normalisation --------------------------------------------------------------------------------
def mean_std_for_backbone(backbone_options: dict[str, Any]) -> tuple[list[float], list[float]]:
    """Mean and std the backbone's pretrained weights expect, from timm's pretrained config
    (no network access) for ``timm`` backbones and ``smp`` ``tu-<timm name>`` encoders;
    ImageNet's for every other backbone (smp's own encoders use ImageNet statistics)."""
    name = str(backbone_options.get("name", ""))
    arch = backbone_options.get("arch") or backbone_options.get("model") or backbone_options.get("encoder")
    timm_arch = None
    if isinstance(arch, str):
        if name == "timm":
            timm_arch = arch
        elif arch.startswith("tu-"):
            timm_arch = arch[3:]
    if timm_arch:
        try:
            from timm.models import get_pretrained_cfg

            cfg = get_pretrained_cfg(timm_arch)
        except Exception:  # noqa: BLE001 - an unknown arch is the backbone's error to report
            cfg = None
        if cfg is not None and getattr(cfg, "mean", None) and getattr(cfg, "std", None):
            return [float(m) for m in cfg.mean], [float(s) for s in cfg.std]
    return list(IMAGENET_MEAN), list(IMAGENET_STD)


# -- transforms ------------------------------------------------------------------------------------
class PadTo(torch.nn.Module):
    """Pad every dense tensor at the bottom/right to at least ``size`` (H, W), each with its
    own fill (``fills[key]``), so that a following crop never pads a mask with a class."""

    def __init__(self, size: list[int], fills: dict[str, float]):
        super().__init__()
        self.size = [int(s) for s in size]
        self.fills = fills

    def forward(self, sample: dict[str, Any]) -> dict[str, Any]:
        """Pad the sample (a dict of tv_tensors and plain tensors)."""
        h, w = sample["image"].shape[-2:]
        ph, pw = max(self.size[0] - h, 0), max(self.size[1] - w, 0)
        if not ph and not pw:
            return sample
        out = {}
        for key, value in sample.items():
            if isinstance(value, tv_tensors.TVTensor):
                value = TF.pad(value, [0, 0, pw, ph], fill=self.fills.get(key, 0))
            out[key] = value
        return out


class RandomScale(torch.nn.Module):
    """Resize the whole sample by a factor drawn uniformly from ``[lo, hi]``; depth values
    are divided by the factor (zooming in by ``s`` is moving ``s`` times closer)."""

    def __init__(self, lo: float, hi: float):
        super().__init__()
        self.lo, self.hi = float(lo), float(hi)

    def forward(self, sample: dict[str, Any]) -> dict[str, Any]:
        """Rescale the sample (a dict of tv_tensors and plain tensors)."""
        s = self.lo + (self.hi - self.lo) * float(torch.rand(()))
        h, w = sample["image"].shape[-2:]
        size = [max(1, round(h * s)), max(1, round(w * s))]
        out = {}
        for key, value in sample.items():
            if isinstance(value, tv_tensors.TVTensor):
                value = TF.resize(value, size, InterpolationMode.BILINEAR, antialias=True)
                if isinstance(value, Depth):
                    value = tv_tensors.wrap(value.as_subclass(Tensor) / s, like=value)
            out[key] = value
        return out


def build_transforms(augment: AugmentOptions, train: bool, fills: dict[str, float]) -> list[Any]:
    """The transforms of one split (each maps a sample dict of tv_tensors to another)."""
    ops: list[Any] = []
    if augment.resize:
        ops.append(v2.Resize(list(augment.resize), antialias=True))
    if train and augment.scale:
        ops.append(RandomScale(*augment.scale))
    if augment.crop:
        ops.append(PadTo(list(augment.crop), fills))
        ops.append(v2.RandomCrop(list(augment.crop)) if train else v2.CenterCrop(list(augment.crop)))
    if train and augment.hflip > 0:
        ops.append(v2.RandomHorizontalFlip(p=float(augment.hflip)))
    if train and augment.color_jitter > 0:
        c = float(augment.color_jitter)
        ops.append(v2.ColorJitter(brightness=c, contrast=c, saturation=c))
    return ops


# -- the wrapper --------------------------------------------------------------------------------------
def derived_info(info: DatasetInfo, derive: list[DeriveSpec]) -> DatasetInfo:
    """``info`` extended by the derived targets (a boundary keeps the source's ignore index,
    labels get the source's classes). Raises :class:`ConfigError` for a bad spec."""
    targets = dict(info.targets)
    seen: dict[str, DeriveSpec] = {}
    for d in derive:
        if d.kind not in ("boundary", "labels"):
            raise ConfigError(f"derive {d.target!r}: kind {d.kind!r} is not boundary or labels")
        src = info.targets.get(d.source)
        if src is None:
            have = ", ".join(sorted(info.targets)) or "none"
            raise ConfigError(f"`from: {d.source}` (deriving {d.target!r}): dataset {info.name!r} has no target "
                              f"{d.source!r}; its targets are: {have}")
        if src.kind != "segmentation":
            raise ConfigError(f"`from: {d.source}` (deriving {d.target!r}): {d.source!r} is a {src.kind} target; "
                              f"boundaries and labels are derived from a segmentation target")
        if d.kind == "boundary" and int(d.width) < 1:
            raise ConfigError(f"deriving {d.target!r}: boundary width must be >= 1, got {d.width}")
        if d.target in seen and seen[d.target] != d:
            raise ConfigError(f"two tasks derive target {d.target!r} differently ({seen[d.target]} vs {d}); "
                              f"give one of them another `target` key")
        if d.target == d.source or any(x.source == d.target for x in derive):
            raise ConfigError(f"deriving {d.target!r} would overwrite the segmentation target it is computed "
                              f"from; give the task another `target` key")
        seen[d.target] = d
        if d.kind == "boundary":
            targets[d.target] = TargetInfo("boundary", ignore_index=src.ignore_index)
        else:
            targets[d.target] = TargetInfo("labels", src.num_classes, src.class_names)
    return dataclasses.replace(info, targets=targets)


class PipelineDataset(torch.utils.data.Dataset):
    """A dataset wrapped in the pipeline (see the module docstring for what it does).

    Attributes:
        base: the wrapped dataset. ``info``: its info extended by the derived targets.
        split, augment, derive, mean, std (``None`` when not normalising), train (whether
        random augmentation is on).
    """

    def __init__(self, base: Any, split: str, augment: AugmentOptions, derive: list[DeriveSpec],
                 mean_std: Optional[tuple[list[float], list[float]]]):
        self.base = base
        self.split = split
        self.augment = augment
        self.derive = list({(d.kind, d.source, d.target, int(d.width)): d for d in derive}.values())
        self.info = derived_info(base.info, self.derive)
        self.train = split == "train"
        base_targets = base.info.targets
        self.kinds = {k: t.kind for k, t in base_targets.items()}
        fills = {"image": 0.0}
        for key, t in base_targets.items():
            if t.kind in ("segmentation", "boundary") and t.ignore_index is not None:
                fills[key] = float(t.ignore_index)
        ops = build_transforms(augment, self.train, fills)
        self.transforms = v2.Compose(ops) if ops else None  # Compose refuses an empty list
        if augment.normalize == "none":
            self.mean = self.std = None
        else:
            mean, std = mean_std if (mean_std is not None and augment.normalize == "auto") else (
                IMAGENET_MEAN, IMAGENET_STD)
            self.mean = torch.tensor([float(m) for m in mean], dtype=torch.float32)[:, None, None]
            self.std = torch.tensor([float(s) for s in std], dtype=torch.float32)[:, None, None]

    def __len__(self) -> int:
        return len(self.base)

    def __repr__(self) -> str:
        return f"PipelineDataset({self.base!r}, split={self.split!r}, augment={self.augment}, derive={self.derive})"

    def check(self) -> list[str]:
        """The wrapped dataset's own file check (see :mod:`mtlzoo.datacheck`), if it has one."""
        check = getattr(self.base, "check", None)
        return list(check()) if callable(check) else []

    def _split(self, sample: dict[str, Tensor], index: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """Dense tensors wrapped as tv_tensors (transformed together) and the rest (passed on)."""
        if "image" not in sample:
            raise DataError(f"{self.info.name} {self.split}[{index}]: sample has no 'image' key")
        image = sample["image"]
        hw = tuple(image.shape[-2:])
        dense: dict[str, Any] = {"image": tv_tensors.Image(image)}
        rest: dict[str, Any] = {}
        for key, value in sample.items():
            if key == "image":
                continue
            kind = self.kinds.get(key)
            if kind in DENSE_KINDS:
                if tuple(value.shape[-2:]) != hw:
                    raise DataError(f"{self.info.name} {self.split}[{index}]: target {key!r} is "
                                    f"{tuple(value.shape[-2:])} but the image is {hw} (H, W)")
                dense[key] = wrap_target(value, kind)
            else:  # image-level targets: torchvision would mistake them for images
                rest[key] = value
        return dense, rest

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        threads = torch.get_num_threads()
        if threads == 1:  # DataLoader workers run single-threaded already
            return self._getitem(index)
        # per-sample ops are tiny: intra-op threads only contend (measured 50x slower on a
        # busy 2-core machine); the main process (num_workers=0) loads then steps, never both
        torch.set_num_threads(1)
        try:
            return self._getitem(index)
        finally:
            torch.set_num_threads(threads)

    def _getitem(self, index: int) -> dict[str, Tensor]:
        dense, rest = self._split(self.base[index], index)
        if self.transforms is not None:
            dense = self.transforms(dense)
        out = {k: v.as_subclass(Tensor) for k, v in dense.items()}
        out.update(rest)
        for d in self.derive:
            src = self.info.targets[d.source]
            mask = out[d.source]
            if d.kind == "boundary":
                out[d.target] = boundary_from_mask(mask, int(d.width), src.ignore_index)
            else:
                out[d.target] = labels_from_mask(mask, src.num_classes, src.ignore_index)
        if self.mean is not None:
            out["image"] = (out["image"] - self.mean) / self.std
        return out


def build_pipeline(dataset: Any, split: str, augment: AugmentOptions | None = None,
                   derive: list[DeriveSpec] | None = None,
                   mean_std: Optional[tuple[list[float], list[float]]] = None) -> PipelineDataset:
    """Wrap ``dataset`` (one split of a dataset plugin) in the pipeline.

    Random augmentation runs on ``split == "train"`` only; every split gets ``resize`` and
    a (center) ``crop``. ``derive`` adds targets computed from the augmented masks, and the
    wrapper's ``info`` describes them. ``mean_std`` is used when ``augment.normalize`` is
    ``auto`` (from :func:`mean_std_for_backbone`; ``None`` falls back to ImageNet's).
    """
    if not hasattr(dataset, "info") or not isinstance(dataset.info, DatasetInfo):
        raise ConfigError(f"build_pipeline: {type(dataset).__name__} has no `info: DatasetInfo` attribute")
    return PipelineDataset(dataset, split, augment or AugmentOptions(), list(derive or []), mean_std)


__all__ = ["AugmentOptions", "DeriveSpec", "PipelineDataset", "build_pipeline", "mean_std_for_backbone",
           "Depth", "Normals", "wrap_target", "resize_dense", "derived_info", "IMAGENET_MEAN", "IMAGENET_STD"]
