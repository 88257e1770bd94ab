"""Shared last step of every loader: labels, spec inference and the MultimodalDataset.

Loaders turn their format into per-modality arrays with NaN marking absence
(or an explicit mask); this module encodes labels, turns each array into its
kind's storage (stated kinds; inferred only where unambiguous, with a warning)
and builds the dataset, so every format gets the same checks.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from ...errors import MlmmWarning
from ..base import MultimodalDataset
from ..spec import DatasetSpec, ModalitySpec, TaskSpec

#: Split names accepted as the validation split, normalised to "valid" (MMSA's name).
_VALID_ALIASES = {"val", "valid", "validation", "dev"}
_KIND_BY_RANK = {1: "vector", 2: "sequence", 3: "image"}


def encode_labels(raw: np.ndarray, task: str, source: str) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """Classification: raw labels -> (int codes 0..K-1 in sorted order of the raw values, class names);
    regression: (float values, None). Empty / NaN labels are an error naming ``source``."""
    raw = np.asarray(raw)
    if task == "regression":
        try:
            values = raw.astype(np.float32)
        except (TypeError, ValueError):
            raise ValueError(f"{source}: regression labels must be numbers") from None
        if np.isnan(values).any():
            bad = np.flatnonzero(np.isnan(values.reshape(len(values), -1)).any(1))
            raise ValueError(f"{source}: {bad.size} rows have no label (first row {bad[0]})")
        return values, None
    if task != "classification":
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
    if raw.ndim != 1:  # (a 2-D label was read as rows of one class each: "found 1 class")
        raise ValueError(f"{source}: classification labels must be one per row, shape (N,), got shape {raw.shape}")
    if raw.dtype.kind == "f" and np.isnan(raw).any() or raw.dtype == object and any(v is None or v != v for v in raw):
        bad = [i for i, v in enumerate(raw) if v is None or v != v]
        raise ValueError(f"{source}: {len(bad)} rows have no label (first row {bad[0]})")
    classes, codes = np.unique(raw.astype(str) if raw.dtype == object else raw, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"{source}: classification needs at least 2 classes, found {len(classes)}")
    return codes.astype(np.int64), tuple(str(c) for c in classes)


class KindInferredWarning(MlmmWarning):
    """A loader chose a modality's kind from its array because none was stated."""


def infer_kind(name: str, array: np.ndarray, source: str) -> str:
    """The kind of an (N, *shape) array whose kind was not stated, warning what was chosen.

    Only unambiguous cases are inferred: float (or bool) arrays by rank — 1 -> vector (D,),
    2 -> sequence (T, C), 3 -> image (C, H, W) — and uint8 arrays of rank 3 -> image. Other
    integer arrays are refused: token ids standardised as continuous features silently give a
    useless model, so their kind must be stated (``text`` for ids, or ``vector`` for counts).
    """
    shape = tuple(array.shape[1:])
    state = f"kinds={{{name!r}: ...}} (CLI: --kind {name}=KIND)"
    if array.dtype.kind in "iu" and not (array.dtype == np.uint8 and len(shape) == 3):
        raise ValueError(f"{source}: modality {name!r} holds integers of per-sample shape {shape} and no kind was "
                         f"stated; integers are never standardised as continuous features by guess. Pass "
                         f"{state}: 'text' for token ids, 'vector' (or 'sequence' / 'image') for numbers")
    if len(shape) not in _KIND_BY_RANK:
        raise ValueError(f"{source}: modality {name!r}: cannot infer a kind from per-sample shape {shape}; "
                         f"pass {state}")
    kind = _KIND_BY_RANK[len(shape)]
    hint = {"vector": "", "image": " (channels first: (C, H, W))",
            "sequence": f" (time steps, channels); if it is a one-channel image pass --kind {name}=image"}[kind]
    warnings.warn(f"{source}: modality {name!r} of per-sample shape {shape} read as {kind}{hint}; "
                  f"state it with {state} to silence this", KindInferredWarning, stacklevel=4)
    return kind


def modality_spec(name: str, array: np.ndarray, kind: str | None = None, vocab_size: int | None = None,
                  pad_id: int | None = None, source: str = "data") -> ModalitySpec:
    """Spec of one modality from its (N, *shape) array (kind inferred by ``infer_kind`` when not stated)."""
    kind = kind or infer_kind(name, array, source)
    if kind != "text" and (vocab_size is not None or pad_id is not None):
        raise ValueError(f"{source}: vocab_size / pad_id given for modality {name!r}, which is a {kind}, not text")
    if kind != "text":
        return ModalitySpec(name, kind, tuple(array.shape[1:]))
    return ModalitySpec(name, kind, tuple(array.shape[1:]), vocab_size=vocab_size,
                        pad_id=0 if pad_id is None else pad_id)


def as_kind(name: str, array: np.ndarray, kind: str, mask_column: np.ndarray, source: str,
            pad_id: int | None = None) -> np.ndarray:
    """``array`` in the storage its kind takes: token ids int64 (NaN rows, already missing in
    ``mask_column``, become padding), a one-channel (N, H, W) image gets its channel axis
    (N, 1, H, W), uint8 images stay uint8, everything else float32."""
    if kind == "text":
        if array.ndim != 2:
            raise ValueError(f"{source}: text modality {name!r} must be (N, L) token ids, got shape {array.shape}")
        if array.dtype.kind == "f":
            present = array[mask_column]
            if not np.isfinite(present).all() or not np.array_equal(present, np.round(present)):
                raise ValueError(f"{source}: text modality {name!r} holds non-integer values; token ids are integers")
            array = np.where(np.isnan(array), 0 if pad_id is None else pad_id, array)
        elif array.dtype.kind not in "iu":
            raise ValueError(f"{source}: text modality {name!r} must hold integer token ids, got {array.dtype}")
        return array.astype(np.int64)
    if kind == "image" and array.ndim == 3:
        array = array[:, None]
    if kind == "image" and array.dtype == np.uint8:
        return array
    return array.astype(np.float32)


def nan_mask(arrays: Mapping[str, np.ndarray], source: str, partial: str = "error") -> np.ndarray:
    """(N, M) availability from NaN: a modality is missing for a row when all its values are NaN.

    partial: what a row with *some* NaN in a present modality does — ``"error"`` (default,
    names the modality and row) or ``"missing"`` (the whole modality counts as missing).
    """
    if partial not in ("error", "missing"):
        raise ValueError(f"partial must be 'error' or 'missing', got {partial!r}")
    cols = []
    for name, x in arrays.items():
        flat = np.isnan(x.reshape(len(x), -1)) if x.dtype.kind == "f" else np.zeros((len(x), 1), bool)
        allnan, anynan = flat.all(1), flat.any(1)
        some = anynan & ~allnan
        if some.any() and partial == "error":
            row = int(np.flatnonzero(some)[0])
            raise ValueError(f"{source}: modality {name!r} is partly empty in {int(some.sum())} rows "
                             f"(first row {row}); "
                             "fill those values, leave the whole group empty to mark the modality missing, "
                             "or pass partial='missing'")
        cols.append(~anynan if partial == "missing" else ~allnan)
    return np.stack(cols, axis=1)


def normalise_split_names(split: np.ndarray) -> dict[str, np.ndarray]:
    """Per-row split labels -> {name: row indices}; val/validation/dev become "valid"."""
    names = np.asarray([str(s).strip().lower() for s in split])
    names = np.where(np.isin(names, list(_VALID_ALIASES)), "valid", names)
    return {str(s): np.flatnonzero(names == s) for s in np.unique(names)}


def build_dataset(name: str, arrays: Mapping[str, np.ndarray], target: np.ndarray, mask: np.ndarray,
                  task: str, class_names: Sequence[str] | None, splits: Mapping[str, np.ndarray] | None,
                  kinds: Mapping[str, str] | None = None,
                  time_mask: Mapping[str, np.ndarray] | None = None,
                  vocab_size: Mapping[str, int] | None = None,
                  pad_id: Mapping[str, int] | None = None, source: str | None = None,
                  groups: np.ndarray | None = None) -> MultimodalDataset:
    """The dataset; ``class_names`` (label i is ``class_names[i]``) is attached as an attribute.

    kinds:      modality -> ``vector`` / ``sequence`` / ``image`` / ``text``; an unstated kind is
                inferred only where unambiguous, with a ``KindInferredWarning`` (``infer_kind``).
    vocab_size: text modality -> vocabulary size (the tokenizer's); unstated, it is the largest
                id + 1, with a warning. pad_id: text modality -> padding id (default 0).
    time_mask:  optional sequence modality -> (N, T) bool observed steps.
    groups:     optional (N,) group id per row (``MultimodalDataset.groups``).
    """
    source = source or f"dataset {name!r}"
    kinds, vocab_size, pad_id = dict(kinds or {}), dict(vocab_size or {}), dict(pad_id or {})
    for option, given in (("kinds", kinds), ("vocab_size", vocab_size), ("pad_id", pad_id)):
        unknown = sorted(set(given) - set(arrays))
        if unknown:
            raise ValueError(f"{source}: {option} names unknown modality {unknown[0]!r}; "
                             f"modalities: {', '.join(arrays)}")
    mask = np.asarray(mask, dtype=bool)
    stored, mods = {}, []
    for j, (m, a) in enumerate(arrays.items()):
        kind = kinds.get(m) or infer_kind(m, a, source)
        stored[m] = as_kind(m, np.asarray(a), kind, mask[:, j], source, pad_id.get(m))
        vocab = vocab_size.get(m)
        if kind == "text" and vocab is None:
            vocab = int(max(stored[m][mask[:, j]].max(initial=0), pad_id.get(m, 0))) + 1
            warnings.warn(f"{source}: text modality {m!r}: vocab_size not given, set to the largest id + 1 = {vocab}; "
                          "pass the tokenizer's vocab_size so that new data with other words fits",
                          KindInferredWarning, stacklevel=2)
        mods.append(modality_spec(m, stored[m], kind, vocab if kind == "text" else None, pad_id.get(m), source))
    if task == "classification":
        task_spec = TaskSpec("classification", n_classes=len(class_names))
    else:
        task_spec = TaskSpec("regression", n_outputs=1 if target.ndim == 1 else int(target.shape[1]))
    data = MultimodalDataset(DatasetSpec(name, tuple(mods), task_spec), stored, target, mask, splits=splits,
                             time_mask=time_mask or None, groups=groups)
    data.class_names = tuple(class_names) if class_names is not None else None
    return data
