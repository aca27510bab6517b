"""Built-in backbones: ``timm`` (any timm model), ``smp`` (any smp encoder) and ``cnn``.

Every backbone is an ``nn.Module`` whose ``forward(images)`` returns a list of feature maps
ordered fine to coarse, and whose ``feature_info`` lists the channels and stride of each
map (see :func:`mtlzoo.hookspecs.register_backbones`).

mtlzoo never downloads weights. ``pretrained: true`` only states that pretrained weights
are wanted; they come from a local file named by ``weights`` (``.safetensors``, or
``.pth``/``.pt``/``.bin`` read with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

from ..errors import CheckpointError, ConfigError, UnknownNameError, close_matches
from ..hookspecs import hookimpl
from ..layers import NORMS, check_norm, make_norm  # noqa: F401 - re-exported
from ..model import FeatureInfo

NO_DOWNLOAD = ("mtlzoo never downloads weights: download them yourself and set "
               "model.backbone.weights: /path")

# keys a classifier checkpoint carries that a feature extractor has no use for
_CLASSIFIER_PREFIXES = ("fc.", "classifier.", "last_linear.", "head.", "heads.")


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _sample(keys: list[str], n: int = 3) -> str:
    return ", ".join(repr(k) for k in keys[:n]) + (", ..." if len(keys) > n else "")


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from a local ``.safetensors`` or ``.pth``/``.pt``/``.bin`` file.

    A training checkpoint that wraps the weights (``{"state_dict": ...}``, ``{"model":
    ...}``) is unwrapped and a DataParallel ``module.`` prefix is stripped. Any problem
    (missing file, unreadable file, no tensors inside) raises :class:`CheckpointError`
    naming the file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(f"weights file {p} does not exist; point model.backbone.weights at a local "
                              f".safetensors or .pth file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(p), device="cpu")
        elif suffix in (".pth", ".pt", ".bin", ".ckpt"):
            obj = torch.load(p, map_location="cpu", weights_only=True)
        else:
            raise CheckpointError(f"weights file {p}: unknown format {suffix or '(no suffix)'!r}; "
                                  f"use .safetensors, .pth or .pt")
    except CheckpointError:
        raise
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"cannot read weights file {p}: not a PyTorch state dict file, or it holds "
                              f"objects that torch.load(weights_only=True) refuses; save a plain state_dict"
                              ) from exc
    except Exception as exc:  # noqa: BLE001 - corrupt files raise anything
        raise CheckpointError(f"cannot read weights file {p}: {_one_line(exc)}") from exc
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "state_dict_ema", "model_ema"):
            inner = obj.get(key)
            if isinstance(inner, dict) and not all(isinstance(v, Tensor) for v in obj.values()):
                obj = inner
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"weights file {p} holds no state dict (a mapping of names to tensors)")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _mismatch(own: dict[str, Tensor], sd: dict[str, Tensor]) -> tuple[list[str], list[str]]:
    """Keys of ``own`` absent from ``sd`` (BatchNorm counters excepted) and keys of ``sd``
    absent from ``own``."""
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    return missing, unexpected


def _mismatch_message(path: str, target: str, missing: list[str], unexpected: list[str]) -> str:
    parts = [f"{_count(len(missing), 'key')} missing" + (f" ({_sample(missing)})" if missing else ""),
             f"{len(unexpected)} unexpected" + (f" ({_sample(unexpected)})" if unexpected else "")]
    return (f"weights file {path} does not fit {target}: {', '.join(parts)}; "
            f"check that the file was saved from the same architecture")


def load_strict(module: nn.Module, sd: dict[str, Tensor], path: str, target: str) -> None:
    """Load ``sd`` into ``module``, allowing only missing BatchNorm counters; raise
    :class:`CheckpointError` (naming ``path`` and how many keys are missing/unexpected,
    or which shapes differ) on any mismatch."""
    own = module.state_dict()
    check_fit(own, sd, path, target)
    module.load_state_dict(sd, strict=False)


def check_fit(own: dict[str, Tensor], sd: dict[str, Tensor], path: str, target: str) -> None:
    """Raise :class:`CheckpointError` unless ``sd`` has exactly the keys of ``own`` (BatchNorm
    counters may be missing) with the same shapes."""
    missing, unexpected = _mismatch(own, sd)
    if missing or unexpected:
        raise CheckpointError(_mismatch_message(path, target, missing, unexpected))
    bad = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in sd if sd[k].shape != own[k].shape]
    if bad:
        raise CheckpointError(f"weights file {path} does not fit {target}: {_count(len(bad), 'tensor')} of "
                              f"the wrong shape ({'; '.join(bad[:3])}); check that it was saved from the "
                              f"same architecture")


def _fit_prefix(own: dict[str, Tensor], sd: dict[str, Tensor],
                prefixes: tuple[str, ...]) -> dict[str, Tensor]:
    """Strip (or add) one of ``prefixes`` when that turns ``sd``'s keys into ``own``'s.

    A state dict of the mtlzoo wrapper module (``model.conv1.weight``) then loads into the
    wrapped extractor (``conv1.weight``) and vice versa."""
    if set(sd) == set(own):
        return sd
    for pre in prefixes:
        if all(k.startswith(pre) for k in sd):
            stripped = {k[len(pre):]: v for k, v in sd.items()}
            if set(stripped) == set(own):
                return stripped
        added = {pre + k: v for k, v in sd.items()}
        if set(added) == set(own):
            return added
    return sd


def _check_pretrained(pretrained: bool, weights: Optional[str]) -> None:
    if pretrained and not weights:
        raise ConfigError(NO_DOWNLOAD)


def _channels_first(x: Tensor, nhwc: bool) -> Tensor:
    return x.permute(0, 3, 1, 2).contiguous() if nhwc else x


# -- timm -----------------------------------------------------------------------------------

def timm_names() -> list[str]:
    """Every architecture name timm can build (``timm.list_models()``)."""
    import timm

    return timm.list_models()


@dataclass
class TimmOptions:
    """Options of the ``timm`` backbone.

    Attributes:
        arch: any name of ``timm.list_models()`` (``mtlzoo list backbone 'timm:*convnext*'``).
        pretrained: pretrained weights are wanted; they must come from ``weights`` (mtlzoo
            never downloads), so ``pretrained: true`` alone is an error.
        weights: local weights file: either timm's own checkpoint of the classifier model
            (as published, ``model.safetensors``) or a state dict of the features model.
        out_indices: which feature levels to return (timm's default: all, usually 0..4).
        drop_path_rate: stochastic depth rate, for architectures that support it.
    """

    arch: str = "resnet18"
    pretrained: bool = False
    weights: Optional[str] = None
    out_indices: Optional[list[int]] = None
    drop_path_rate: float = 0.0


class TimmBackbone(nn.Module):
    """Any timm model as a feature extractor (``timm.create_model(arch, features_only=True)``).

    ``forward(images)`` returns timm's feature maps (NCHW), fine to coarse; ``feature_info``
    comes from timm's ``feature_info.channels()`` and ``.reduction()``. The wrapped timm
    module is ``self.model``.
    """

    def __init__(self, arch: str = "resnet18", pretrained: bool = False, weights: Optional[str] = None,
                 out_indices: Optional[list[int]] = None, drop_path_rate: float = 0.0):
        super().__init__()
        import timm

        _check_pretrained(pretrained, weights)
        if not timm.is_model(arch):
            hits = close_matches(arch, timm.list_models())
            hint = f"; closest timm names: {', '.join(repr(h) for h in hits)}" if hits else ""
            raise UnknownNameError(
                f"unknown timm architecture {arch!r}{hint} "
                f"(search them with `mtlzoo list backbone 'timm:*pattern*'`)"
            )
        self.arch = arch
        kwargs: dict = {}
        if out_indices is not None:
            kwargs["out_indices"] = tuple(int(i) for i in out_indices)
        if drop_path_rate:
            kwargs["drop_path_rate"] = float(drop_path_rate)
        self.model = self._create(arch, kwargs, weights)
        info = self.model.feature_info
        self.feature_info = [FeatureInfo(int(c), int(s)) for c, s in zip(info.channels(), info.reduction())]
        # a few timm families (swin, ...) return channels-last maps
        self._nhwc = str(getattr(self.model, "output_fmt", "NCHW")) in ("NHWC", "Format.NHWC")

    @staticmethod
    def _create(arch: str, kwargs: dict, weights: Optional[str]) -> nn.Module:
        import timm

        try:
            model = timm.create_model(arch, pretrained=False, features_only=True, **kwargs)
        except Exception as exc:  # noqa: BLE001 - timm raises many kinds for bad options
            raise ConfigError(f"timm cannot build {arch!r} as a feature extractor with "
                              f"{kwargs or 'defaults'}: {_one_line(exc)}") from exc
        if not weights:
            return model
        sd = read_state_dict(weights)
        own = model.state_dict()
        fitted = _fit_prefix(own, sd, ("model.",))
        if _mismatch(own, fitted) == ([], []):
            # a state dict of the features model itself
            load_strict(model, fitted, weights, f"timm {arch!r} features")
            return model
        # else: a checkpoint of timm's classifier model; timm maps it onto the features model
        # (whose module names may differ, e.g. convnext's stages_0), after we check its keys
        full, classifier = TimmBackbone._classifier_keys(arch, kwargs)
        body = {k: v for k, v in sd.items() if not k.startswith(classifier)}
        missing, unexpected = _mismatch(full, body)
        m2, u2 = _mismatch(own, fitted)
        if (missing or unexpected) and len(m2) + len(u2) < len(missing) + len(unexpected):
            # closer to a features state dict: report against that
            raise CheckpointError(_mismatch_message(weights, f"timm {arch!r} features", m2, u2))
        check_fit(full, body, weights, f"timm {arch!r}")
        try:
            return timm.create_model(arch, pretrained=True, features_only=True,
                                     pretrained_cfg_overlay={"state_dict": sd}, **kwargs)
        except Exception as exc:  # noqa: BLE001 - shape mismatch and the like
            raise CheckpointError(f"weights file {weights} does not fit timm {arch!r}: "
                                  f"{_one_line(exc)}") from exc

    @staticmethod
    def _classifier_keys(arch: str, kwargs: dict) -> tuple[dict[str, Tensor], tuple[str, ...]]:
        """State dict (on the meta device) of timm's classifier model without its classifier
        layer, and the key prefixes of that layer."""
        import timm

        kw = {k: v for k, v in kwargs.items() if k != "out_indices"}
        try:
            with torch.device("meta"):  # keys only: no memory, no init time
                full = timm.create_model(arch, pretrained=False, **kw)
        except Exception:  # noqa: BLE001 - a few models cannot be built on meta
            full = timm.create_model(arch, pretrained=False, **kw)
        classifier = full.pretrained_cfg.get("classifier") or ()
        if isinstance(classifier, str):
            classifier = (classifier,)
        prefixes = tuple(c + "." for c in classifier)
        return {k: v for k, v in full.state_dict().items() if not k.startswith(prefixes)}, prefixes

    def forward(self, images: Tensor) -> list[Tensor]:
        """Feature maps of ``images [B,3,H,W]``, fine to coarse, as ``feature_info`` says."""
        return [_channels_first(f, self._nhwc) for f in self.model(images)]


# -- smp ------------------------------------------------------------------------------------

def smp_names() -> list[str]:
    """Encoder names smp builds (``smp.encoders.get_encoder_names()``); any timm model also
    works as ``tu-<timm name>``."""
    from segmentation_models_pytorch.encoders import get_encoder_names

    return list(get_encoder_names())


@dataclass
class SmpOptions:
    """Options of the ``smp`` backbone.

    Attributes:
        arch: an smp encoder name (``mtlzoo list backbone 'smp:*'``), or ``tu-<timm name>``.
        depth: number of downsampling stages, 1..5 (maps at strides 2 .. 2**depth).
        weights: local weights file holding a state dict of the smp encoder.
        pretrained: pretrained weights are wanted; they must come from ``weights``.
    """

    arch: str = "resnet18"
    depth: int = 5
    weights: Optional[str] = None
    pretrained: bool = False


class SmpBackbone(nn.Module):
    """Any segmentation-models-pytorch encoder (``get_encoder(arch, depth=depth, weights=None)``).

    smp encoders return ``depth + 1`` maps where map ``i`` has stride ``2**i``. Map 0, at
    stride 1, is the input image itself for most encoders and smp's own decoders never use
    it; transformer-style encoders put an empty 0-channel placeholder at stride 2. Both are
    dropped here, so ``forward`` returns only learned maps (strides 2 or 4 .. ``2**depth``)
    and ``feature_info`` matches it. The encoder is ``self.encoder``.
    """

    def __init__(self, arch: str = "resnet18", depth: int = 5, weights: Optional[str] = None,
                 pretrained: bool = False):
        super().__init__()
        import warnings

        from segmentation_models_pytorch.encoders import get_encoder

        _check_pretrained(pretrained, weights)
        if not 1 <= depth <= 5:
            raise ConfigError(f"smp backbone depth must be between 1 and 5, got {depth}")
        self._check_name(arch)
        self.arch = arch
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # smp's timm- names
                self.encoder = get_encoder(arch, in_channels=3, depth=depth, weights=None)
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"smp cannot build encoder {arch!r} with depth {depth}: "
                              f"{_one_line(exc)}") from exc
        channels = list(self.encoder.out_channels)
        self._keep = [i for i in range(1, len(channels)) if channels[i] > 0]
        self.feature_info = [FeatureInfo(int(channels[i]), 2 ** i) for i in self._keep]
        if weights:
            own = self.encoder.state_dict()
            sd = read_state_dict(weights)
            sd = {k: v for k, v in sd.items() if k in own or not k.startswith(_CLASSIFIER_PREFIXES)}
            load_strict(self.encoder, _fit_prefix(own, sd, ("encoder.",)), weights, f"smp encoder {arch!r}")

    @staticmethod
    def _check_name(arch: str) -> None:
        if arch.startswith("tu-"):
            import timm

            if timm.is_model(arch[3:]):
                return
            choices = ["tu-" + n for n in timm.list_models()]
        else:
            choices = smp_names()
            if arch in choices:
                return
        hits = close_matches(arch, choices)
        hint = f"; closest: {', '.join(repr(h) for h in hits)}" if hits else ""
        raise UnknownNameError(f"unknown smp encoder {arch!r}{hint} "
                               f"(search them with `mtlzoo list backbone 'smp:*pattern*'`)")

    def forward(self, images: Tensor) -> list[Tensor]:
        """Learned feature maps of ``images [B,3,H,W]``, fine to coarse."""
        features = self.encoder(images)
        return [features[i] for i in self._keep]


# -- cnn ------------------------------------------------------------------------------------

@dataclass
class CNNOptions:
    """Options of the ``cnn`` backbone.

    Attributes:
        channels: width of each stage; stage ``i`` halves the resolution (stride ``2**(i+1)``).
        norm: ``batch``, ``group`` or ``none`` (the last two keep no batch statistics).
    """

    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    norm: str = "batch"


class CNNBackbone(nn.Module):
    """A small plain CNN for tests, demos and the "small shared CNN" setup.

    Each stage is ``conv3x3 stride 2 -> norm -> ReLU -> conv3x3 -> norm -> ReLU``; stage ``i``
    outputs ``channels[i]`` maps at stride ``2**(i+1)``.
    """

    def __init__(self, channels: list[int] | None = None, norm: str = "batch"):
        super().__init__()
        channels = list(channels) if channels is not None else [16, 32, 64, 128]
        if not channels or any(int(c) < 1 for c in channels):
            raise ConfigError(f"cnn backbone channels must be a non-empty list of positive ints, "
                              f"got {channels}")
        check_norm(norm, "cnn backbone")
        bias = norm == "none"  # a norm layer right after a conv makes its bias redundant
        stages = []
        cin = 3
        for c in channels:
            stages.append(nn.Sequential(
                nn.Conv2d(cin, c, 3, stride=2, padding=1, bias=bias), make_norm(norm, c),
                nn.ReLU(inplace=True),
                nn.Conv2d(c, c, 3, padding=1, bias=bias), make_norm(norm, c),
                nn.ReLU(inplace=True),
            ))
            cin = c
        self.stages = nn.ModuleList(stages)
        self.feature_info = [FeatureInfo(int(c), 2 ** (i + 1)) for i, c in enumerate(channels)]

    def forward(self, images: Tensor) -> list[Tensor]:
        """One feature map per stage, fine to coarse."""
        out = []
        x = images
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


@hookimpl
def register_backbones(register):
    """Register ``timm``, ``smp`` and ``cnn``."""
    register("timm", TimmBackbone, TimmOptions,
             "Any timm model as a feature extractor (features_only); arch: resnet18, convnext_atto ...",
             variants=timm_names)
    register("smp", SmpBackbone, SmpOptions,
             "Any segmentation-models-pytorch encoder (or tu-<timm name>); arch: resnet18 ...",
             variants=smp_names)
    register("cnn", CNNBackbone, CNNOptions,
             "Small plain CNN (conv3x3 s2 + conv3x3 per stage) for tests and quick demos")
