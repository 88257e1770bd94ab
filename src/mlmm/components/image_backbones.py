"""Image backbones by name from torchvision and timm, with weights from a local file only.

``ImageBackbone(arch, weights, library="torchvision")``: (B, C, H, W) images -> (B, F) the
architecture's pooled features (its classification head removed). Nothing is ever downloaded:
the architecture is built with random weights (torchvision ``get_model(arch, weights=None)``,
timm ``create_model(arch, pretrained=False)``), then ``weights`` — a local ``.pth`` / ``.pt``
(``torch.load(weights_only=True)``, no code runs) or ``.safetensors`` file holding the full
model's state dict (a ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper is unwrapped) — is
loaded strictly. A missing file is a ``FileNotFoundError`` naming the path; a file that does not
fit the architecture is a ``ValueError`` naming the path and the first mismatched keys.
``weights=None`` keeps the random initialisation and says so (``pretrained`` is False,
``feature_config["weights"]`` is ``"random-init"``).

``arch`` may also be an ``nn.Module`` (any architecture of your own, e.g. built from a library
mlmm does not know): its weights come from ``weights`` the same way.

The head: timm's ``reset_classifier(0)``; for torchvision (and a module of your own) the first of
the top-level attributes ``fc``, ``classifier``, ``heads``, ``head`` is replaced by ``nn.Identity``
(ResNet / RegNet: ``fc``; VGG, DenseNet, MobileNet, EfficientNet, ConvNeXt: ``classifier``;
ViT: ``heads``; Swin: ``head``), after the weights are loaded. A module without one is used as it is.

Input preprocessing, inside the module (so it travels with it, and is part of the feature cache
key through ``feature_config``): values as the encoder receives them under ``preprocess="none"``
(uint8 images arrive scaled to [0, 1]); a 1-channel image is repeated to ``channels``; resized to
``image_size`` (bilinear) when given; normalised by ``mean`` / ``std`` per channel (ImageNet's by
default, what torchvision's and most timm weights expect).

Frozen by default (``frozen=True``: no parameter requires grad, always in eval mode, so BatchNorm
statistics never move); ``frozen=False`` fine-tunes it as any encoder. Usable as an encoder of any
method (``encoders={"image": ImageBackbone(...)}``, or the names ``"torchvision:<arch>[:<weights>]"``
/ ``"timm:<arch>[:<weights>]"``) and as the backbone of ``mlmm.data.frozen_features``.

torchvision and timm are optional (``pip install 'mlmm[vision]'``), and torchvision must match the
installed torch build (a CUDA torchvision wheel next to a CPU torch fails at import).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .pretrained_backbone import MissingExtraError

__all__ = ["HEAD_ATTRIBUTES", "IMAGENET_MEAN", "IMAGENET_STD", "ImageBackbone", "image_backbone_by_name",
           "load_weights"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Top-level attributes holding a torchvision model's classification head, tried in this order.
HEAD_ATTRIBUTES = ("fc", "classifier", "heads", "head")
LIBRARIES = ("torchvision", "timm")
_HINT = "install the optional extra: pip install 'mlmm[vision]' (a torchvision build matching your torch)"


def _import(library: str):
    try:
        if library == "torchvision":
            import torchvision.models as module
        else:
            import timm as module
    except ImportError as err:
        raise MissingExtraError(f"image backbones from {library} need the package {library}, which is not "
                                f"installed (or does not import: {err}); {_HINT}") from err
    return module


def _build(library: str, arch: str) -> nn.Module:
    """The architecture ``arch`` of ``library`` with random weights (never downloaded)."""
    if library not in LIBRARIES:
        raise ValueError(f"image backbone library must be one of {LIBRARIES}, got {library!r}")
    module = _import(library)
    try:
        if library == "torchvision":
            return module.get_model(arch, weights=None)
        return module.create_model(arch, pretrained=False)
    except (ValueError, KeyError, RuntimeError) as err:  # unknown name: each library says it its own way
        raise ValueError(f"{library} has no architecture {arch!r}: {err}") from err


def load_weights(path: str | os.PathLike, what: str) -> dict[str, Tensor]:
    """The state dict in the local file ``path`` (.safetensors, or a torch file read with
    ``weights_only=True``); ``what`` names the model in errors. Never downloads."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file for {what} not found: {str(path)!r} (mlmm never downloads weights: "
                                "give the path of a local .pth / .pt / .safetensors file, or weights=None for a "
                                "randomly initialised backbone)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch and safetensors raise many kinds for a bad file
        raise ValueError(f"weights file {str(path)!r} for {what} could not be read: {type(err).__name__}: {err}") \
            from err
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"weights file {str(path)!r} for {what} holds no state dict (name -> tensor)")
    return state


def _remove_head(model: nn.Module, library: str) -> str | None:
    """Replace the classification head by the identity; returns the attribute removed (None: none)."""
    if library == "timm":
        model.reset_classifier(0)
        return "reset_classifier(0)"
    for attribute in HEAD_ATTRIBUTES:
        if isinstance(getattr(model, attribute, None), nn.Module):
            setattr(model, attribute, nn.Identity())
            return attribute
    return None


class ImageBackbone(nn.Module):
    """(B, C, H, W) images (floats in [0, 1] when stored as uint8) -> (B, F) pooled backbone features.

    arch: an architecture name of ``library`` ("resnet18", "efficientnet_b0", ...) or an nn.Module.
    weights: local weights file of the whole model, or None (random initialisation, declared).
    library: "torchvision" or "timm" (ignored when ``arch`` is a module).
    image_size: resize inputs to (image_size, image_size) first (None: keep the data's size).
    channels: channels the architecture reads; 1-channel inputs are repeated to it.
    mean, std: per-channel normalisation after resizing (length ``channels``).
    frozen: no parameter trains and the module stays in eval mode.
    """

    preprocess = "none"  # raw [0, 1] values reach it; it normalises them itself

    def __init__(self, arch: str | nn.Module, weights: str | os.PathLike | None = None, *,
                 library: str = "torchvision", image_size: int | None = None, channels: int = 3,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 frozen: bool = True) -> None:
        super().__init__()
        if isinstance(arch, nn.Module):
            library, name, model = "module", type(arch).__name__, arch
        else:
            name, model = str(arch), _build(library, str(arch))
        what = f"{library} {name!r}"
        if weights is not None:
            state = load_weights(weights, what)
            try:
                model.load_state_dict(state, strict=True)
            except RuntimeError as err:
                first = str(err).splitlines()
                raise ValueError(f"weights file {str(Path(weights).expanduser())!r} does not fit {what}: "
                                 f"{' '.join(first[:3])[:400]}") from err
        self.head_removed = _remove_head(model, library)
        self.model = model
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"{what}: mean and std need {channels} values (one per channel), "
                             f"got {len(mean)} and {len(std)}")
        self.register_buffer("mean", torch.tensor([float(v) for v in mean]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([float(v) for v in std]).view(1, -1, 1, 1), persistent=False)
        self.channels, self.image_size, self.frozen = int(channels), image_size, bool(frozen)
        self.pretrained = weights is not None
        #: What this module does to its input besides its weights: part of the feature cache key.
        self.feature_config = {
            "library": library, "arch": name, "weights": Path(weights).name if weights is not None else "random-init",
            "head_removed": self.head_removed, "image_size": image_size, "channels": self.channels,
            "mean": [float(v) for v in mean], "std": [float(v) for v in std], "resize": "bilinear",
        }
        if self.frozen:
            self.requires_grad_(False)
            super().train(False)

    def train(self, mode: bool = True) -> ImageBackbone:
        return super().train(False if self.frozen else mode)

    def forward(self, images: Tensor) -> Tensor:
        if images.dim() != 4:
            raise ValueError(f"{self.feature_config['arch']}: expected (B, C, H, W) images, got {tuple(images.shape)}")
        x = images.float() if images.dtype != torch.uint8 else images.float().div(255.0)
        if x.shape[1] == 1 and self.channels != 1:
            x = x.expand(-1, self.channels, -1, -1)
        elif x.shape[1] != self.channels:
            raise ValueError(f"{self.feature_config['arch']} reads {self.channels} channels, got {x.shape[1]}")
        if self.image_size is not None and tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        out = self.model((x - self.mean) / self.std)
        return out.flatten(1)


def image_backbone_by_name(name: str, **options) -> ImageBackbone:
    """``"torchvision:<arch>"`` / ``"timm:<arch>"`` (random initialisation) or ``"<library>:<arch>:<weights
    file>"`` -> ``ImageBackbone``; ``options`` go to it (``image_size``, ``frozen``, ...)."""
    parts = name.split(":", 2)
    if len(parts) < 2 or parts[0] not in LIBRARIES or not parts[1]:
        raise ValueError(f"image backbone name {name!r} must be 'torchvision:<arch>[:<weights file>]' or "
                         "'timm:<arch>[:<weights file>]'")
    weights = parts[2] if len(parts) == 3 and parts[2] else None
    return ImageBackbone(parts[1], weights, library=parts[0], **options)
