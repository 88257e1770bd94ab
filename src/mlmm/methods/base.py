"""The contract every missing-modality method implements, and its metadata.

A method is an ``nn.Module`` built from a ``DatasetSpec`` and keyword
hyper-parameters (``__init__`` only builds; it never looks at data). It maps a
standardised ``Batch`` to an ``Output``; ``loss`` turns that into named loss
terms. The training loop (``mlmm.train.loop``) exists once and calls these.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.batch import Batch
from ..data.preprocess import Standardizer
from ..data.spec import MODALITY_KINDS, DatasetSpec

CATEGORIES = (
    "modality-composition",
    "modality-generation",
    "coordinated-representation",
    "representation-composition",
    "representation-generation",
    "attention",
    "distillation",
    "graph",
    "pretrained-transformer",
    "ensemble",
    "dedicated",
    "scheduler",
)
FUSION_STAGES = ("early", "intermediate", "late", "hybrid")


@dataclass(frozen=True)
class MethodInfo:
    """Metadata every registered method carries (shown by ``mlmm methods``).

    deviations: conformance check name -> reason the method is exempt. The
    conformance suite skips exactly these checks and prints the reason.
    """

    category: str
    fusion: str
    recovers_missing: bool
    needs_complete_train: bool
    paper: str
    summary: str
    deviations: Mapping[str, str] = field(default_factory=dict)
    #: Where a method with ``recovers_missing`` recovers: "input" (x̂_m, shaped like the
    #: modality) or "embedding" (ẑ_m, (B, D)); None for methods that recover nothing.
    recovery_space: str | None = None
    #: Modality kinds the method does not take, kind -> why (shown by ``mlmm methods``).
    #: Building it on a spec holding such a modality is a ``ValueError`` quoting the reason.
    unsupported_kinds: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"category {self.category!r} is not one of {CATEGORIES}")
        if self.fusion not in FUSION_STAGES:
            raise ValueError(f"fusion stage {self.fusion!r} is not one of {FUSION_STAGES}")
        if self.recovery_space not in (None, "input", "embedding"):
            raise ValueError(f"recovery_space {self.recovery_space!r} is not None, 'input' or 'embedding'")
        unknown = sorted(set(self.unsupported_kinds) - set(MODALITY_KINDS))
        if unknown:
            raise ValueError(f"unsupported_kinds names {unknown[0]!r}, not a modality kind {MODALITY_KINDS}")

    def check_kinds(self, spec: DatasetSpec, method: str) -> None:
        """Raise ``ValueError`` naming the first modality of ``spec`` whose kind ``method`` declares
        it does not take, with the declared reason."""
        for m in spec.modalities:
            if m.kind in self.unsupported_kinds:
                raise ValueError(f"{method} does not take {m.kind} modalities (modality {m.name!r}): "
                                 f"{self.unsupported_kinds[m.kind]} (declared in its MethodInfo.unsupported_kinds)")

    def as_dict(self) -> dict:
        return {
            "category": self.category,
            "fusion": self.fusion,
            "recovers_missing": self.recovers_missing,
            "needs_complete_train": self.needs_complete_train,
            "paper": self.paper,
            "summary": self.summary,
            "deviations": dict(self.deviations),
            "recovery_space": self.recovery_space,
            "unsupported_kinds": dict(self.unsupported_kinds),
        }


DROPOUT_MODES = ("inputs", "off", "offered")


@dataclass(frozen=True)
class StageControl:
    """What the one training loop must do for one stage of a method (``training_control``).

    Fields left at their defaults leave the decision to the loop's ``TrainConfig``.

    full_batch:  one optimisation step per group per epoch over the whole training split
                 (CPM-Nets' schedule) instead of mini-batches.
    groups:      ((parameter-name prefix, steps), ...): alternate optimisation. On every batch
                 the loop takes ``steps`` steps on the parameters whose name starts with the
                 prefix, then the next group's, each group with its own optimiser. Every
                 trainable parameter must fall in exactly one group. Empty: one optimiser over all.
    epochs:      a fixed number of epochs: no early stopping, the last epoch is kept (and is the
                 only one validated, as nothing is selected).
    min_epochs:  early stopping may select (and start counting patience) only from this epoch on,
                 for methods whose validation loss has a spurious early minimum.
    modality_dropout: "inputs" (the loop drops modalities from the batch the method sees),
                 "off" (never; the method draws its own patterns or the paper uses none), or
                 "offered" (the batch keeps its full mask and carries the draw in ``batch.kept``,
                 so the method applies it where its paper does, e.g. to a student but not its teacher).
    optimizer, lr, weight_decay: the stage's own optimiser ("adam" or "adamw") and settings.
    grad_clip:   whether the loop's gradient-norm clipping (``TrainConfig.grad_clip``) applies.
    """

    full_batch: bool = False
    groups: tuple[tuple[str, int], ...] = ()
    epochs: int | None = None
    min_epochs: int = 1
    modality_dropout: str = "inputs"
    optimizer: str | None = None
    lr: float | None = None
    weight_decay: float | None = None
    grad_clip: bool = True

    def __post_init__(self) -> None:
        if self.modality_dropout not in DROPOUT_MODES:
            raise ValueError(f"modality_dropout {self.modality_dropout!r} is not one of {DROPOUT_MODES}")
        if self.optimizer not in (None, "adam", "adamw"):
            raise ValueError(f"optimizer must be 'adam' or 'adamw', got {self.optimizer!r}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.min_epochs < 1:
            raise ValueError(f"min_epochs must be >= 1, got {self.min_epochs}")
        for prefix, steps in self.groups:
            if not prefix or steps < 1:
                raise ValueError(f"each group needs a non-empty prefix and steps >= 1, got ({prefix!r}, {steps})")
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


@dataclass
class Output:
    """What ``forward`` returns.

    logits: (B, C) class logits (or (B, K) regression values).
    aux:    extra named tensors a method's ``loss`` needs (reconstructions,
            per-modality logits, ...); never read by the loop.
    """

    logits: Tensor
    aux: dict[str, Tensor] = field(default_factory=dict)


class MissingModalityModel(nn.Module):
    """Base class of every method. Subclasses set ``info`` and implement ``forward``.

    Contract:
    - ``forward(batch) -> Output`` reads ``batch.inputs[m]`` only where
      ``batch.mask[:, j]`` is True (poisoned masked-out slots never change
      the output), and in eval mode a sample's output never depends on its
      batch-mates. What that forbids is statistics *of the current batch* in
      eval mode (BatchNorm in train mode, a mean or normalisation over the
      batch axis, attention across samples); what it allows is state learnt in
      training and frozen at eval — BatchNorm's running statistics in eval mode,
      so torchvision / timm CNNs work as encoders as they are. The conformance
      check that decides is the batch-composition check (same sample, other
      batch-mates, same output). Statistics of the batch *during training*
      (BatchNorm in train mode, in-batch contrastive or CCA losses) are fine.
    - A method builds on any modality kind (``vector``, ``sequence``, ``image``,
      ``text``) unless ``info.unsupported_kinds`` declares the kind with a reason;
      ``__init__`` then refuses such a spec with that reason.
    - ``loss(batch, output) -> dict`` of named scalar terms; the loop
      optimises their sum. The default is the task loss alone.
    - ``prepare(train, standardizer)`` (optional) sees the standardised
      training set once before training, for fill values or memory banks.
    - ``stages()`` lists training stages in order; the loop runs each with
      its own early stopping and calls ``set_stage`` before it.
    - ``calibrate(val)`` (optional) sees the standardised validation split once,
      after the last stage (best state loaded), in eval mode without gradients:
      for choices that need held-out data (e.g. a per-pattern router).
    - ``after_step()`` (optional) runs after every optimiser step, e.g. to
      move an EMA teacher towards the weights just updated. Default: nothing.
    - ``training_control(stage)`` (optional) declares what the loop must do for a
      stage (``StageControl``: its own schedule, a minimum epoch before early
      stopping selects, whether and how modality dropout applies). Default: the
      loop's ``TrainConfig`` decides everything.

    Recovery (methods with ``info.recovers_missing``; used by the recover-or-not
    diagnostics): ``recover(batch)`` returns what the method puts in place of
    each modality, and setting ``plain_fill = True`` makes ``forward`` use a
    plain fill instead (zeros in embedding space, the training mean in input
    space), so the diagnostics can measure how much predictions rely on it.
    """

    info: ClassVar[MethodInfo]
    #: State that holds training data, by ``state_dict`` name relative to this method (a
    #: name also covers the names under it, e.g. ``"bank"``), with what saving does with it:
    #: ``None`` — not saved (only training uses it); a string — saved, and the string says
    #: why prediction needs it (``FittedModel.save`` writes it into the manifest).
    training_state: ClassVar[Mapping[str, str | None]] = {}

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _recording_init(cls.__dict__["__init__"])

    def get_params(self) -> dict:
        """The keyword arguments this method was built with (defaults filled in), without the
        spec: ``type(m)(m.spec, **m.get_params())`` builds an unfitted copy (``mlmm.clone``).
        Recorded at construction from the outermost ``__init__``'s signature, so every
        subclass reports its parameters without storing them itself."""
        return dict(self.__dict__.get("_init_params", {}))

    def __init__(self, spec: DatasetSpec) -> None:
        super().__init__()
        info = getattr(type(self), "info", None)
        if info is not None:
            info.check_kinds(spec, getattr(type(self), "method_name", type(self).__name__))
        self.spec = spec
        self.stage = "main"
        #: When True, a recovering method's forward uses a plain fill instead of its recovery.
        self.plain_fill = False

    def recover(self, batch: Batch) -> dict[str, Tensor]:
        """Modality name -> what the method recovers for it, for every sample: (B, *shape)
        in input space or (B, D) in embedding space (``info.recovery_space``). Values at
        present slots are whatever the method would compute there (callers compare
        them with the truth on held-out slots). Only for methods that recover (they override
        it and set ``info.recovers_missing``); on any other method it is a TypeError."""
        raise TypeError(f"{type(self).__name__} recovers nothing (info.recovers_missing is False)")

    def prepare(self, train: Batch, standardizer: Standardizer) -> None:
        """Fit data-dependent buffers on the standardised training set. Default: nothing."""

    def calibrate(self, val: Batch) -> None:
        """Fit choices on the standardised validation split after training (called once by
        ``Trainer.fit``, in eval mode under ``torch.no_grad``). Must only write buffers, so
        the result travels in ``state_dict``. Default: nothing."""

    def stages(self) -> tuple[str, ...]:
        return ("main",)

    def set_stage(self, stage: str) -> None:
        self.stage = stage

    def after_step(self) -> None:
        """Called by the training loop right after each ``optimiser.step()``. Default: nothing."""

    def training_control(self, stage: str) -> StageControl:
        """What the loop must do for ``stage`` (see ``StageControl``). Default: the loop decides."""
        return StageControl()

    def task_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.spec.task.kind == "classification":
            return F.cross_entropy(logits, target)
        return F.mse_loss(logits.reshape(target.shape), target)

    def loss(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        return {"task": self.task_loss(output.logits, batch.target)}


def _recording_init(init):
    """Wrap a method's ``__init__`` so the outermost call records its bound arguments
    (``get_params``); calls of ``super().__init__`` from a subclass record nothing."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        outermost = "_init_depth" not in self.__dict__
        if outermost:
            object.__setattr__(self, "_init_depth", 0)
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            params = dict(bound.arguments)
            params.pop(next(iter(signature.parameters)))  # self
            params.pop("spec", None)
            for name, p in signature.parameters.items():
                if p.kind is inspect.Parameter.VAR_KEYWORD and name in params:
                    params.update(params.pop(name))
                elif p.kind is inspect.Parameter.VAR_POSITIONAL and name in params:
                    if params.pop(name):
                        raise TypeError(f"{type(self).__name__}: positional *{name} cannot be recorded by "
                                        "get_params; take keyword parameters")
        try:
            init(self, *args, **kwargs)
        finally:
            if outermost:
                del self.__dict__["_init_depth"]
        if outermost:
            object.__setattr__(self, "_init_params", params)

    return __init__


def clone(method: MissingModalityModel) -> MissingModalityModel:
    """An unfitted copy of ``method``: same class, spec and parameters, fresh weights from the
    caller's RNG (wrap in ``mlmm.train.seeded(seed)`` for fixed weights). Parameters that are
    modules (user encoders passed by instance) are deep-copied as they are now — trained, if
    ``method`` was — so the copy never shares weights with the original."""
    params = {k: copy.deepcopy(v) if isinstance(v, nn.Module) or _holds_module(v) else v
              for k, v in method.get_params().items()}
    return type(method)(method.spec, **params)


def _holds_module(value) -> bool:
    if isinstance(value, Mapping):
        return any(isinstance(v, nn.Module) or _holds_module(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(isinstance(v, nn.Module) or _holds_module(v) for v in value)
    return False


def mask_column(mask: Tensor, j: int, ndim: int) -> Tensor:
    """Column j of a (B, M) mask reshaped to broadcast against a (B, ...) tensor of ``ndim`` dims."""
    return mask[:, j].reshape(-1, *([1] * (ndim - 1)))


def masked_fill_rows(x: Tensor, keep: Tensor, value: Tensor | float) -> Tensor:
    """Rows of ``x`` where ``keep`` is False replaced by ``value`` (with torch.where, so NaN
    in a replaced row never reaches the output or its gradient)."""
    keep = keep.reshape(-1, *([1] * (x.dim() - 1)))
    value = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    return torch.where(keep, x, value)
