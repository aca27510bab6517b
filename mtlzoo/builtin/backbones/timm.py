"""The ``timm`` backbone: any timm model as a feature extractor.

Options in :mod:`mtlzoo.builtin.backbones`, pretrained and packaged weights in
:mod:`.pretrained`; :func:`pretrained_stats` is shared with ``smp``'s ``tu-`` encoders.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import timm
import torch
from torch import Tensor, nn

from ...contract.backbone import Backbone
from ...contract.errors import CheckpointError, ConfigError, UnknownNameError, close_matches, one_line
from ...contract.features import FeatureInfo
from ...contract.weights import check_fit, fit_prefix, load_strict, mismatch, read_state_dict
from . import GIVE_FILE, TimmOptions, packaged
from .pretrained import packaged_state_dict, timm_overlay
from .vit import InputSize, SimplePyramid, patch_embed, tracing

Stats = tuple[float, float, float] | None


def pretrained_stats(model: nn.Module) -> tuple[Stats, Stats]:
    """``(mean, std)`` of the input a timm model's pretrained weights expect (its
    ``pretrained_cfg``), ``(None, None)`` when the config states none."""
    cfg: dict[str, Any] = getattr(model, "pretrained_cfg", None) or {}
    mean, std = cfg.get("mean"), cfg.get("std")
    if mean is None or std is None or len(mean) != 3 or len(std) != 3:
        return None, None
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)  # type: ignore[return-value]


@contextlib.contextmanager
def _quiet_timm_loading() -> Iterator[None]:
    """Mute timm's "Unexpected keys (conv_head.weight, ...)" warning while it loads a classifier
    model's weights into a features model: those keys are expected to go unused (and a file's
    keys were checked before)."""
    logger = logging.getLogger("timm.models._builder")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _body(sd: dict[str, Tensor], classifier: tuple[str, ...]) -> dict[str, Tensor]:
    """``sd`` without the classifier layer's keys (those starting with ``classifier``)."""
    return {k: v for k, v in sd.items() if not k.startswith(classifier)}


def _model_kwargs(options: TimmOptions) -> dict[str, Any]:
    """The keyword arguments of ``timm.create_model`` the options give (beyond ``arch``)."""
    kwargs: dict[str, Any] = dict(options.model_args)
    if options.out_indices is not None:
        kwargs["out_indices"] = tuple(options.out_indices)
    if options.drop_path_rate:
        kwargs["drop_path_rate"] = options.drop_path_rate
    if options.img_size is not None:
        kwargs["img_size"] = tuple(options.img_size) if len(options.img_size) == 2 else options.img_size[0]
    for key in ("dynamic_img_size", "dynamic_img_pad", "patch_size"):
        if getattr(options, key) is not None:
            kwargs[key] = getattr(options, key)
    return kwargs


def _fixed_input_size(arch: str) -> bool:
    """True when timm's configuration of ``arch`` says it takes one input size (transformers)."""
    try:
        cfg = timm.get_pretrained_cfg(arch)
    except Exception:  # noqa: BLE001 - a model without a registered configuration
        return False
    return bool(getattr(cfg, "fixed_input_size", False))


def feature_list_stages(model: nn.Module) -> list[nn.Module] | None:
    """Split a timm features model at the modules whose outputs are feature maps: stage ``i``
    is an ``nn.Sequential`` of the modules from just after map ``i - 1`` up to map ``i``.
    Handles ``FeatureListNet`` (models that run their children in turn) and
    ``EfficientNetFeatures`` (EfficientNet / MobileNet families: stem, then blocks);
    ``None`` for the other feature wrappers (hooks, ``forward_intermediates``)."""
    kind = type(model).__name__
    stages: list[nn.Module] = []
    current: list[nn.Module] = []
    if kind == "FeatureListNet" and getattr(model, "return_layers", None):
        for name, child in model.items():
            current.append(child)
            if name in model.return_layers:
                stages.append(nn.Sequential(*current))
                current = []
    elif kind == "EfficientNetFeatures" and getattr(model, "feature_hooks", None) is None:
        outputs = set(model._stage_out_idx)
        current = [model.conv_stem, model.bn1]
        if 0 in outputs:
            stages.append(nn.Sequential(*current))
            current = []
        for i, block in enumerate(model.blocks):
            current.append(block)
            if i + 1 in outputs:
                stages.append(nn.Sequential(*current))
                current = []
    return stages or None


class TimmBackbone(Backbone):
    """Any timm model as a feature extractor (``timm.create_model(arch, features_only=True)``).

    ``forward(images)`` returns timm's feature maps (NCHW, also for the families that
    compute channels-last, such as swin), fine to coarse; ``feature_info`` comes from
    timm's ``feature_info.channels()`` and ``.reduction()``. Weights: random, a ``weights``
    file, timm's published ones (``pretrained: true``, :func:`.pretrained.timm_overlay`) or
    packaged ones (``weights: package:<name>``). ``input_mean``/``input_std`` are what those
    weights expect (the model's ``pretrained_cfg`` statistics, the package's for packaged
    weights), ``None`` for random init; ``size_divisor`` is the largest stride. The wrapped
    timm module is ``self.model``.

    Transformers: models timm builds for one input size get ``dynamic_img_size`` (any multiple
    of the patch) unless the spec says otherwise; a plain ViT (every block at its patch stride)
    gets a ViTDet-style pyramid at strides 4 to 32 (``self.pyramid``,
    :class:`.vit.SimplePyramid`) and ``size_divisor`` its patch; a size the transformer cannot
    take is refused in one line (:class:`.vit.InputSize`).
    """

    def __init__(self, options: TimmOptions):
        super().__init__()
        arch = options.arch
        if not timm.is_model(arch):
            hits = close_matches(arch, timm.list_models())
            hint = f"; closest timm names: {', '.join(repr(h) for h in hits)}" if hits else ""
            raise UnknownNameError(
                f"unknown timm architecture {arch!r}{hint} "
                f"(search them with `mtlzoo list backbone 'timm:*pattern*'`)"
            )
        self.arch = arch
        kwargs = _model_kwargs(options)
        # timm builds transformers for one input size unless told otherwise: ask for any size
        auto = options.dynamic_img_size is None and _fixed_input_size(arch)
        if auto:
            kwargs["dynamic_img_size"] = True
        spec = packaged(options.weights)
        try:
            self.model = self._build(arch, kwargs, options)
        except (ConfigError, CheckpointError) as exc:
            if not (auto and "dynamic_img_size" in str(exc)):
                raise
            del kwargs["dynamic_img_size"]  # a fixed-size model that does not take the option
            self.model = self._build(arch, kwargs, options)
        info = self.model.feature_info
        self.feature_info = [FeatureInfo(int(c), int(s)) for c, s in zip(info.channels(), info.reduction())]
        self.size_divisor = max(fi.stride for fi in self.feature_info)
        pe = patch_embed(self.model)
        self._input = InputSize(arch, pe) if pe is not None else None
        self.pyramid: SimplePyramid | None = None
        self._take: int | None = None
        strides = {fi.stride for fi in self.feature_info}
        if self._input is not None and len(strides) == 1:
            # a plain ViT: every block at its patch stride; it takes multiples of the patch
            self.size_divisor = self._input.divisor
            if options.pyramid:  # the pyramid reads the last block or the chosen ones
                self._take = None if options.out_indices is None else len(self.feature_info)
                chosen = self.feature_info[-1:] if self._take is None else self.feature_info
                self.pyramid = SimplePyramid(
                    [fi.channels for fi in chosen], strides.pop(), options.pyramid_channels
                )
                self.feature_info = list(self.pyramid.feature_info)
        if spec is not None:
            self.input_mean, self.input_std = spec.mean, spec.std
        elif options.weights or options.pretrained:
            self.input_mean, self.input_std = pretrained_stats(self.model)
        # a few timm families (swin, ...) return channels-last maps
        self._nhwc = str(getattr(self.model, "output_fmt", "NCHW")) in ("NHWC", "Format.NHWC")

    def _build(self, arch: str, kwargs: dict[str, Any], options: TimmOptions) -> nn.Module:
        """The features model: timm's published weights, a weights file, or random init."""
        if options.weights is None and options.pretrained:
            return self._pretrained(arch, kwargs)
        return self._create(arch, kwargs, options.weights)

    @staticmethod
    def _pretrained(arch: str, kwargs: dict[str, Any]) -> nn.Module:
        """The features model with timm's published weights, loaded by timm (from the local
        cache when it holds them)."""
        overlay = timm_overlay(arch)
        try:
            with _quiet_timm_loading():
                return timm.create_model(
                    arch,
                    pretrained=True,
                    features_only=True,
                    pretrained_cfg_overlay=overlay or None,
                    **kwargs,
                )
        except Exception as exc:  # noqa: BLE001 - downloads and loading raise anything
            source = f" from {overlay['file']}" if overlay else ""
            raise CheckpointError(
                f"timm cannot build {arch!r} with its pretrained weights{source} "
                f"({kwargs or 'default options'}): {one_line(exc)}; {GIVE_FILE}"
            ) from exc

    @staticmethod
    def _create(arch: str, kwargs: dict[str, Any], weights: str | None) -> nn.Module:
        try:
            model = timm.create_model(arch, pretrained=False, features_only=True, **kwargs)
        except Exception as exc:  # noqa: BLE001 - timm raises many kinds for bad options
            raise ConfigError(
                f"timm cannot build {arch!r} as a feature extractor with "
                f"{kwargs or 'defaults'}: {one_line(exc)}"
            ) from exc
        if not weights:
            return model
        full, classifier = TimmBackbone._classifier_keys(arch, kwargs)
        spec = packaged(weights)
        if spec is not None:
            sd, path = packaged_state_dict(spec, weights, full)
            return TimmBackbone._from_classifier(arch, kwargs, sd, full, classifier, path)
        sd = read_state_dict(weights)
        own = model.state_dict()
        fitted = fit_prefix(own, sd, ("model.",))
        m2, u2, _ = mismatch(own, fitted)
        if not m2 and not u2:
            # a state dict of the features model itself
            load_strict(model, fitted, weights, f"timm {arch!r} features")
            return model
        # else: a checkpoint of timm's classifier model, unless it is closer to a features one
        missing, unexpected, _ = mismatch(_body(full, classifier), _body(sd, classifier))
        if (missing or unexpected) and len(m2) + len(u2) < len(missing) + len(unexpected):
            check_fit(own, fitted, weights, f"timm {arch!r} features")
        return TimmBackbone._from_classifier(arch, kwargs, sd, full, classifier, weights)

    @staticmethod
    def _from_classifier(
        arch: str,
        kwargs: dict[str, Any],
        sd: dict[str, Tensor],
        full: dict[str, Tensor],
        classifier: tuple[str, ...],
        path: str,
    ) -> nn.Module:
        """The features model loaded from ``sd``, a state dict of timm's classifier model
        (``full``'s keys; the classifier layer ``classifier`` may differ or be absent): timm
        maps it onto the features model, whose module names may differ (convnext's
        ``stages_0``), after its keys are checked here."""
        check_fit(_body(full, classifier), _body(sd, classifier), path, f"timm {arch!r}")
        try:
            with _quiet_timm_loading():
                return timm.create_model(
                    arch,
                    pretrained=True,
                    features_only=True,
                    pretrained_cfg_overlay={"state_dict": sd},
                    **kwargs,
                )
        except Exception as exc:  # noqa: BLE001 - shape mismatch and the like
            raise CheckpointError(f"weights file {path} does not fit timm {arch!r}: {one_line(exc)}") from exc

    @staticmethod
    def _classifier_keys(arch: str, kwargs: dict[str, Any]) -> tuple[dict[str, Tensor], tuple[str, ...]]:
        """State dict (on the meta device, in timm's order) of timm's classifier model, and
        the key prefixes of its classifier layer."""
        kw = {k: v for k, v in kwargs.items() if k != "out_indices"}
        try:
            with torch.device("meta"):  # keys only: no memory, no init time
                full = timm.create_model(arch, pretrained=False, **kw)
        except Exception:  # noqa: BLE001 - a few models cannot be built on meta
            full = timm.create_model(arch, pretrained=False, **kw)
        classifier = full.pretrained_cfg.get("classifier") or ()
        if isinstance(classifier, str):
            classifier = (classifier,)
        return full.state_dict(), tuple(c + "." for c in classifier)

    def staged(self) -> list[nn.Module] | None:
        """timm's feature modules as stages (``FeatureListNet`` models with NCHW maps; not a
        ViT with its pyramid, whose levels all come from the last blocks)."""
        return None if self._nhwc or self.pyramid is not None else feature_list_stages(self.model)

    def forward(self, images: Tensor) -> list[Tensor]:
        """Feature maps of ``images [B,3,H,W]``, fine to coarse, as ``feature_info`` says (a
        transformer refuses a size it cannot take in one line, see :class:`.vit.InputSize`)."""
        if self._input is not None and not tracing():
            self._input.check(int(images.shape[-2]), int(images.shape[-1]))
        maps = self.model(images)
        maps = [m.permute(0, 3, 1, 2).contiguous() for m in maps] if self._nhwc else list(maps)
        if self.pyramid is not None:
            return self.pyramid(maps if self._take else maps[-1:], images.shape[-2:])
        return maps
