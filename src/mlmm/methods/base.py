"""The contract every missing-modality method implements, and its metadata.

A method is an ``nn.Module`` built from a ``DatasetSpec`` and keyword
hyper-parameters (``__init__`` only builds; it never looks at data). It maps a
standardised ``Batch`` to an ``Output``; ``loss`` turns that into named loss
terms. The training loop (``mlmm.train.loop``) exists once and calls these.
"""

from __future__ import annotations

import copy
import enum
import functools
import inspect
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.batch import Batch
from ..data.passes import SplitPasses
from ..data.preprocess import Standardizer
from ..data.spec import MODALITY_KINDS, TASK_KINDS, DatasetSpec

if TYPE_CHECKING:  # components build on this module (mask_column): import them at call time
    from ..components.injection import EncoderChoice, HeadChoice

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


class Capability(str, enum.Enum):
    """An optional behaviour of a method, declared (never probed) and conformance-checked.

    A method declares its capabilities once, in ``MethodInfo.capabilities`` (wrappers
    such as ``deep-ensemble`` report their members' through the instance property
    ``MissingModalityModel.capabilities``). Declaring one is a promise in both
    directions, checked by ``mlmm.testing.run_conformance``: a method that declares it
    implements it, and a method that behaves so declares it.
    """

    #: ``prepare(train, standardizer)`` fits buffers on the standardised training set.
    PREPARES = "prepares"
    #: ``stages()`` lists more than one training stage; ``set_stage`` switches between them.
    MULTI_STAGE = "multi-stage"
    #: ``after_step()`` updates state after every optimiser step (e.g. an EMA teacher).
    AFTER_STEP = "after-step"
    #: ``calibrate(val)`` fits buffers on held-out data after training (e.g. a routing table).
    CALIBRATES = "calibrates"
    #: ``recover(batch)`` returns what the method puts in place of each modality, in
    #: ``recovery_space``; ``plain_fill = True`` swaps it for a plain fill.
    RECOVERS = "recovers"
    #: ``encode_modalities`` / ``fuse_embeddings`` / ``fuse_subsets`` (``FactorisedFusion``):
    #: encode once, fuse per modality subset.
    FACTORISED = "factorised"
    #: ``stream_init`` / ``stream_step``: predictions step by step with constant work per step.
    STREAMING = "streaming"
    #: Training data must be complete; the training loop refuses incomplete samples.
    NEEDS_COMPLETE_TRAIN = "needs-complete-train"
    #: ``prepare_split(split, standardizer)`` computes ``prepare``'s result in passes over
    #: batches (``SplitPasses``: running statistics, counts from the mask, bank rows read by
    #: index), so it runs on a split of any size with memory bounded by the batch.
    PREPARES_BY_BATCH = "prepares-by-batch"
    #: ``calibrate_split(split)`` computes ``calibrate``'s result in passes over batches (tallies).
    CALIBRATES_BY_BATCH = "calibrates-by-batch"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class MethodInfo:
    """Metadata every registered method carries (shown by ``mlmm methods``).

    deviations: conformance check name -> reason the method is exempt. The
    conformance suite skips exactly these checks and prints the reason.
    capabilities: the optional behaviours the method implements (``Capability``). The two
    that every method states, ``recovers_missing`` and ``needs_complete_train``, are
    declared by those fields and added here (listing them here as well must agree).
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
    #: Modality kinds ("vector", "sequence", "image", "text") and task kinds ("classification",
    #: "regression") the method does not take, kind -> why (shown by ``mlmm methods``).
    #: Building it on such a spec is a ``ValueError`` quoting the reason; the conformance
    #: suite builds data of every other kind and reports these as skipped with their reason.
    unsupported_kinds: Mapping[str, str] = field(default_factory=dict)
    capabilities: Set[Capability] = frozenset()
    #: Modality kind ("vector", "sequence", "image", "text", or "*" for every kind) -> why
    #: this method cannot take a user encoder for modalities of that kind (e.g. early
    #: fusion encodes all modalities together). Empty: every modality's encoder is injectable.
    fixed_encoders: Mapping[str, str] = field(default_factory=dict)
    #: Why this method cannot take a user head (None: ``head=`` replaces its fused head).
    fixed_head: str | None = None
    #: For a method with a whole-split step that needs the split in memory at once (a ``prepare``
    #: or ``calibrate`` not declared ``*_BY_BATCH``, a full-batch stage): the most rows of a
    #: streamed (e.g. memory-mapped) split it takes, and why (``split_limit_reason``). Streamed
    #: training refuses a longer split with an error naming the method and this limit.
    split_row_limit: int | None = None
    split_limit_reason: str | None = None

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"category {self.category!r} is not one of {CATEGORIES}")
        if self.fusion not in FUSION_STAGES:
            raise ValueError(f"fusion stage {self.fusion!r} is not one of {FUSION_STAGES}")
        if self.recovery_space not in (None, "input", "embedding"):
            raise ValueError(f"recovery_space {self.recovery_space!r} is not None, 'input' or 'embedding'")
        kinds = MODALITY_KINDS + TASK_KINDS
        unknown = sorted(set(self.unsupported_kinds) - set(kinds))
        if unknown:
            raise ValueError(f"unsupported_kinds names {unknown[0]!r}, not a modality or task kind {kinds}")
        unknown = sorted(set(self.fixed_encoders) - {"*", *MODALITY_KINDS})
        if unknown:
            raise ValueError(f"fixed_encoders names {unknown[0]!r}, not '*' or a modality kind {MODALITY_KINDS}")
        for what, mapping in (("unsupported_kinds", self.unsupported_kinds), ("fixed_encoders", self.fixed_encoders)):
            blank = sorted(k for k, v in mapping.items() if not isinstance(v, str) or not v.strip())
            if blank:
                raise ValueError(f"{what}: kind(s) {blank} give no reason")
        caps = frozenset(Capability(c) for c in self.capabilities)
        for flag, cap in ((self.recovers_missing, Capability.RECOVERS),
                          (self.needs_complete_train, Capability.NEEDS_COMPLETE_TRAIN)):
            if cap in caps and not flag:
                raise ValueError(f"capability {cap.value!r} is listed but its field says False")
            if flag:
                caps |= {cap}
        object.__setattr__(self, "capabilities", caps)
        if (self.split_row_limit is None) != (self.split_limit_reason is None) or (
                self.split_row_limit is not None and self.split_row_limit < 1):
            raise ValueError("split_row_limit (>= 1) and split_limit_reason are given together or not at all")
        for by_batch, cap in ((Capability.PREPARES_BY_BATCH, Capability.PREPARES),
                              (Capability.CALIBRATES_BY_BATCH, Capability.CALIBRATES)):
            if by_batch in caps and cap not in caps:
                raise ValueError(f"capability {by_batch.value!r} needs {cap.value!r}")
        if self.recovers_missing and self.recovery_space is None:
            raise ValueError("a method that recovers missing modalities must say where: recovery_space "
                             "'input' or 'embedding'")

    def check_kinds(self, spec: DatasetSpec, method: str) -> None:
        """Raise ``ValueError`` naming the first modality of ``spec`` whose kind ``method`` declares
        it does not take, with the declared reason."""
        for m in spec.modalities:
            if m.kind in self.unsupported_kinds:
                raise ValueError(f"{method} does not take {m.kind} modalities (modality {m.name!r}): "
                                 f"{self.unsupported_kinds[m.kind]} (declared in its MethodInfo.unsupported_kinds)")
        if spec.task.kind in self.unsupported_kinds:
            raise ValueError(f"{method} does not take a {spec.task.kind} task: "
                             f"{self.unsupported_kinds[spec.task.kind]} (declared in its MethodInfo.unsupported_kinds)")

    def has(self, capability: Capability) -> bool:
        return capability in self.capabilities

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
            "capabilities": sorted(c.value for c in self.capabilities),
            "fixed_encoders": dict(self.fixed_encoders),
            "fixed_head": self.fixed_head,
            "split_row_limit": self.split_row_limit,
            "split_limit_reason": self.split_limit_reason,
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
    parts:       parameter-name prefixes of independent sub-models, each selected on its own
                 (``mlmm.train.parts``): per part, early stopping and the best epoch on its
                 validation loss from ``part_losses``; a stopped part takes no more steps.
                 Every trainable parameter must fall in exactly one. Empty: one selection.
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
    parts: tuple[str, ...] = ()

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
        if self.parts and (self.epochs is not None or any(not p for p in self.parts)):
            raise ValueError("parts need non-empty prefixes and early stopping (not a fixed number of epochs), "
                             f"got parts={self.parts!r}, epochs={self.epochs}")


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
    Optional behaviours are ``Capability`` values declared in ``info.capabilities``
    (callers read ``method.capabilities``, never ``hasattr``); the hooks below are
    no-ops unless the method declares the capability:
    - ``prepare(train, standardizer)`` (PREPARES) sees the standardised training
      set once before training, for fill values or memory banks. A method that can
      compute it in passes over batches declares PREPARES_BY_BATCH and implements
      ``prepare_split`` instead (``prepare`` then calls it), so streamed training runs
      it on a split of any size; any other declares ``info.split_row_limit``.
    - ``stages()`` (MULTI_STAGE) lists training stages in order; the loop runs each
      with its own early stopping and calls ``set_stage`` before it.
    - ``calibrate(val)`` (CALIBRATES) sees the standardised validation split once,
      after the last stage (best state loaded), in eval mode without gradients:
      for choices that need held-out data (e.g. a per-pattern router); by batch:
      CALIBRATES_BY_BATCH and ``calibrate_split``, as for ``prepare``.
    - ``after_step()`` (AFTER_STEP) runs after every optimiser step, e.g. to
      move an EMA teacher towards the weights just updated.
    - ``recover(batch)`` (RECOVERS; used by the recover-or-not diagnostics) returns
      what the method puts in place of each modality, and setting ``plain_fill =
      True`` makes ``forward`` use a plain fill instead (zeros in embedding space,
      the training mean in input space), so the diagnostics can measure how much
      predictions rely on it.
    - ``training_control(stage)`` declares what the loop must do for a
      stage (``StageControl``: its own schedule, a minimum epoch before early
      stopping selects, whether and how modality dropout applies). Default: the
      loop's ``TrainConfig`` decides everything.

    Randomness: explicit draws inside a method (hiding modalities, sampling rows)
    take ``generator=self.generator``, the ``torch.Generator`` the training loop hands
    over with ``use_generator`` (None outside a loop: torch's default generator).
    ``nn.Dropout`` draws from torch's global RNG, which ``Trainer.fit`` forks and seeds
    (``seeded``), so a fit is deterministic for its seed without touching the caller's RNG.
    """

    info: ClassVar[MethodInfo]
    #: The registry name, set by ``register_method`` (None for an unregistered class).
    method_name: ClassVar[str | None] = None
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

    def __init__(self, spec: DatasetSpec, *, encoders: Mapping[str, EncoderChoice] | None = None,
                 head: HeadChoice = None, preprocess: Mapping[str, str] | None = None) -> None:
        """encoders / head / preprocess: the injected components (``mlmm.components.injection``);
        every method forwards them here (``**components``) and builds its parts with
        ``self.components``."""
        from ..components.injection import ComponentChoices

        super().__init__()
        label = self.method_name or type(self).__name__
        info = getattr(type(self), "info", None)  # abstract bases and test helpers may have none
        if info is not None:
            info.check_kinds(spec, label)
        self.spec = spec
        self.stage = "main"
        #: When True, a recovering method's forward uses a plain fill instead of its recovery.
        self.plain_fill = False
        self._generator: torch.Generator | None = None
        self.components = ComponentChoices(spec, encoders or {}, head, preprocess or {})
        for name in self.components.custom:
            kind = spec.modality(name).kind
            fixed = info.fixed_encoders if info is not None else {}
            reason = fixed.get(kind) or fixed.get("*")
            if reason:
                raise ValueError(f"method {label!r} cannot take a user encoder for {kind} modality {name!r}: {reason}")
        if head is not None and info is not None and info.fixed_head:
            raise ValueError(f"method {label!r} cannot take a user head: {info.fixed_head}")

    @property
    def preprocessing(self) -> dict[str, str]:
        """Modality name -> "standardise" | "none": what the training loop's ``Standardizer`` does to it."""
        return self.components.preprocessing()

    # ------------------------------------------------------------ declarations

    @property
    def capabilities(self) -> frozenset[Capability]:
        """This instance's capabilities: ``info.capabilities`` (wrappers report their members')."""
        return frozenset(self.info.capabilities)

    def has(self, capability: Capability) -> bool:
        return capability in self.capabilities

    @property
    def split_limit(self) -> tuple[int, str] | None:
        """(rows, why): the declared most rows of a streamed split this method's whole-split steps
        take (``info.split_row_limit``; wrappers report their members' smallest), or None."""
        if self.info.split_row_limit is None:
            return None
        return self.info.split_row_limit, self.info.split_limit_reason

    @property
    def recovery_space(self) -> str | None:
        """Where ``recover`` recovers: "input", "embedding", or None (``info.recovery_space``)."""
        return self.info.recovery_space

    @property
    def generator(self) -> torch.Generator | None:
        """The generator explicit random draws use (set by the training loop)."""
        return self._generator

    def use_generator(self, generator: torch.Generator | None) -> None:
        """Hand every method module in this one (itself, members) the generator of its random draws."""
        for module in self.modules():
            if isinstance(module, MissingModalityModel):
                module._generator = generator

    # ------------------------------------------------------------ optional hooks

    def recover(self, batch: Batch) -> dict[str, Tensor]:
        """Modality name -> what the method recovers for it, for every sample: (B, *shape)
        in input space or (B, D) in embedding space (``recovery_space``). Values at
        present slots are whatever the method would compute there (callers compare
        them with the truth on held-out slots). Only for methods that declare RECOVERS;
        on any other method it is a TypeError."""
        raise TypeError(f"{type(self).__name__} recovers nothing (it does not declare Capability.RECOVERS)")

    def plain_fill_value(self, name: str) -> Tensor | None:
        """What ``plain_fill = True`` puts in place of modality ``name``, shaped like the modality
        (input space), or None for zeros (embedding space, or the standardised training mean)."""
        return None

    def recovery_target(self, batch: Batch) -> dict[str, Tensor]:
        """Modality name -> the truth ``recover`` is compared with at really-present slots,
        in ``recovery_space``. Input space: the standardised input itself. Embedding space:
        by default ``recover`` of the complete batch (methods whose recovery returns their
        encoder's embedding at present slots); a method with a separate target overrides it."""
        if self.recovery_space == "input":
            return {name: x for name, x in batch.inputs.items()}
        return self.recover(batch)

    def prepare(self, train: Batch, standardizer: Standardizer) -> None:
        """Fit data-dependent buffers on the standardised training set (PREPARES). Default:
        ``prepare_split`` over ``train`` as one batch for a method that declares
        PREPARES_BY_BATCH (its one implementation), else nothing."""
        if self.has(Capability.PREPARES_BY_BATCH):
            self.prepare_split(SplitPasses.of_batch(train), standardizer)

    def prepare_split(self, split: SplitPasses, standardizer: Standardizer) -> None:
        """``prepare`` computed in passes over ``split`` (PREPARES_BY_BATCH): the same buffers,
        within float tolerance, whatever ``split.batch_rows`` is. Used by streamed training."""
        raise TypeError(f"{type(self).__name__} does not prepare by batch (it does not declare "
                        "Capability.PREPARES_BY_BATCH)")

    def calibrate(self, val: Batch) -> None:
        """Fit choices on the standardised validation split after training (CALIBRATES; called
        once by ``Trainer.fit``, in eval mode under ``torch.no_grad``). Must only write buffers,
        so the result travels in ``state_dict``. Default: ``calibrate_split`` over ``val`` as
        one batch for a method that declares CALIBRATES_BY_BATCH, else nothing."""
        if self.has(Capability.CALIBRATES_BY_BATCH):
            self.calibrate_split(SplitPasses.of_batch(val))

    def calibrate_split(self, split: SplitPasses) -> None:
        """``calibrate`` computed in passes over ``split`` (CALIBRATES_BY_BATCH), same conditions."""
        raise TypeError(f"{type(self).__name__} does not calibrate by batch (it does not declare "
                        "Capability.CALIBRATES_BY_BATCH)")

    def stages(self) -> tuple[str, ...]:
        """Training stages in order (more than one: MULTI_STAGE)."""
        return ("main",)

    def set_stage(self, stage: str) -> None:
        self.stage = stage

    def after_step(self) -> None:
        """Called by the training loop right after each ``optimiser.step()`` (AFTER_STEP). Default: nothing."""

    def training_control(self, stage: str) -> StageControl:
        """What the loop must do for ``stage`` (see ``StageControl``). Default: the loop decides."""
        return StageControl()

    def part_losses(self, val: Batch) -> Tensor:
        """(P,) validation loss of each part of ``StageControl.parts`` on the rows it serves (NaN for
        a part without any); called by the loop in eval mode without gradients, only for a stage
        that declares parts."""
        raise TypeError(f"{type(self).__name__} declares StageControl.parts but does not implement part_losses")

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
