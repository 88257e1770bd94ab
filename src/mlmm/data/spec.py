"""Static descriptions of a multimodal dataset: modalities, their shapes, the task.

A spec is all a method needs to build itself (conformance check 1), so it
carries shapes without the batch dimension and nothing data-dependent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

MODALITY_KINDS = ("vector", "sequence", "image", "text")
TASK_KINDS = ("classification", "regression")


def _json_value(value: Any) -> Any:
    """Tuples -> lists, recursively: JSON has no tuple (``from_dict`` turns them back)."""
    if isinstance(value, (tuple, list)):
        return [_json_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    return value


def _fields_from(cls: type, data: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Keyword arguments of dataclass ``cls`` from a ``to_dict`` mapping; unknown keys are an error."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{what}: expected a mapping, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{what}: unknown field {unknown[0]!r} (known: {', '.join(sorted(names))})")
    return dict(data)


@dataclass(frozen=True)
class ModalitySpec:
    """One modality.

    name:  key of the modality in ``Batch.inputs``.
    kind:  ``vector`` (shape (D,)), ``sequence`` (shape (T, C)), ``image``
           (shape (C, H, W), channels first; stored as float or uint8, see
           ``mlmm.data.batch``) or ``text`` (shape (L,) integer token ids).
    shape: per-sample shape, without the batch dimension.
    vocab_size: text only: token ids lie in [0, vocab_size) (the tokenizer's
           ``vocab_size``); ``None`` leaves the upper bound unchecked and encoders
           that need it ask for it.
    pad_id: text only: the padding id (BERT-style tokenizers: 0). Padding is not
           read as a token, and a row of padding only counts as missing.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    vocab_size: int | None = None
    pad_id: int = 0

    def __post_init__(self) -> None:
        if self.kind not in MODALITY_KINDS:
            raise ValueError(
                f"modality {self.name!r}: kind {self.kind!r} is not one of {MODALITY_KINDS}"
            )
        expected_rank = {"vector": 1, "sequence": 2, "image": 3, "text": 1}[self.kind]
        if len(self.shape) != expected_rank or any(int(s) <= 0 for s in self.shape):
            raise ValueError(
                f"modality {self.name!r}: a {self.kind} needs a shape of {expected_rank} "
                f"positive sizes, got {self.shape}"
            )
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if self.kind != "text":
            if self.vocab_size is not None or self.pad_id != 0:
                raise ValueError(f"modality {self.name!r}: vocab_size and pad_id apply to text modalities only, "
                                 f"not to a {self.kind}")
            return
        if self.vocab_size is not None and int(self.vocab_size) < 2:
            raise ValueError(f"modality {self.name!r}: vocab_size must be at least 2, got {self.vocab_size}")
        if int(self.pad_id) < 0 or (self.vocab_size is not None and int(self.pad_id) >= int(self.vocab_size)):
            raise ValueError(f"modality {self.name!r}: pad_id {self.pad_id} is outside [0, vocab_size="
                             f"{self.vocab_size})")
        object.__setattr__(self, "vocab_size", None if self.vocab_size is None else int(self.vocab_size))
        object.__setattr__(self, "pad_id", int(self.pad_id))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields (``ModalitySpec.from_dict`` inverts it)."""
        return {f.name: _json_value(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModalitySpec:
        where = f"modality {data.get('name', '?')!r}" if isinstance(data, Mapping) else "modality"
        kwargs = _fields_from(cls, data, where)
        if "shape" in kwargs:
            kwargs["shape"] = tuple(kwargs["shape"])
        return cls(**kwargs)

    @property
    def size(self) -> int:
        """Number of scalars in one sample of this modality."""
        n = 1
        for s in self.shape:
            n *= s
        return n


@dataclass(frozen=True)
class TaskSpec:
    """The prediction target. Classification needs ``n_classes``; regression
    (``n_outputs`` values per sample) is accepted by the data layer so that
    loaders of regression datasets fit the same contract."""

    kind: str = "classification"
    n_classes: int | None = None
    n_outputs: int = 1

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"task kind {self.kind!r} is not one of {TASK_KINDS}")
        if self.kind == "classification" and (self.n_classes is None or self.n_classes < 2):
            raise ValueError("a classification task needs n_classes >= 2")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields (``TaskSpec.from_dict`` inverts it)."""
        return {f.name: _json_value(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskSpec:
        return cls(**_fields_from(cls, data, "task"))

    @property
    def output_dim(self) -> int:
        """Width of the model's output: logits per class or regression values."""
        return int(self.n_classes) if self.kind == "classification" else int(self.n_outputs)


@dataclass(frozen=True)
class DatasetSpec:
    """Name, ordered modalities (mask column j is ``modalities[j]``) and task."""

    name: str
    modalities: tuple[ModalitySpec, ...]
    task: TaskSpec = field(default_factory=TaskSpec)

    def __post_init__(self) -> None:
        object.__setattr__(self, "modalities", tuple(self.modalities))
        if not self.modalities:
            raise ValueError(f"dataset {self.name!r} has no modality")
        names = [m.name for m in self.modalities]
        if len(set(names)) != len(names):
            raise ValueError(f"dataset {self.name!r}: duplicate modality names in {names}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe description: ``{"name", "modalities": [ModalitySpec.to_dict()...], "task"}``;
        ``DatasetSpec.from_dict(spec.to_dict()) == spec``.

        >>> spec = DatasetSpec("memes", (ModalitySpec("image", "image", (3, 32, 32)),
        ...                              ModalitySpec("caption", "text", (16,), vocab_size=30522)),
        ...                    TaskSpec("classification", n_classes=2))
        >>> [m["kind"] for m in spec.to_dict()["modalities"]]
        ['image', 'text']
        >>> DatasetSpec.from_dict(spec.to_dict()) == spec
        True
        """
        return {"name": self.name, "modalities": [m.to_dict() for m in self.modalities],
                "task": self.task.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetSpec:
        """Inverse of ``to_dict``; a missing or unknown field is a ``ValueError`` naming it."""
        kwargs = _fields_from(cls, data, "dataset spec")
        for key in ("name", "modalities"):
            if key not in kwargs:
                raise ValueError(f"dataset spec: field {key!r} is missing")
        if not isinstance(kwargs["modalities"], (list, tuple)):
            raise ValueError("dataset spec: 'modalities' must be a list")
        kwargs["modalities"] = tuple(ModalitySpec.from_dict(m) for m in kwargs["modalities"])
        if "task" in kwargs:
            kwargs["task"] = TaskSpec.from_dict(kwargs["task"])
        return cls(**kwargs)

    @property
    def modality_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modalities)

    @property
    def n_modalities(self) -> int:
        return len(self.modalities)

    def index(self, name: str) -> int:
        """Mask column of modality ``name``; a clear error for unknown names."""
        try:
            return self.modality_names.index(name)
        except ValueError:
            raise ValueError(
                f"unknown modality {name!r} for dataset {self.name!r}; "
                f"known: {', '.join(self.modality_names)}"
            ) from None

    def modality(self, name: str) -> ModalitySpec:
        return self.modalities[self.index(name)]
