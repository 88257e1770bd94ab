"""Shared last step of every loader: labels, spec inference and the MultimodalDataset.

Loaders turn their format into per-modality float arrays with NaN marking absence
(or an explicit mask); this module encodes labels, infers ``ModalitySpec`` kinds
from array ranks and builds the dataset, so every format gets the same checks.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

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
    if raw.dtype.kind == "f" and np.isnan(raw).any() or raw.dtype == object and any(v is None or v != v for v in raw):
        bad = [i for i, v in enumerate(raw) if v is None or v != v]
        raise ValueError(f"{source}: {len(bad)} rows have no label (first row {bad[0]})")
    classes, codes = np.unique(raw.astype(str) if raw.dtype == object else raw, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"{source}: classification needs at least 2 classes, found {len(classes)}")
    return codes.astype(np.int64), tuple(str(c) for c in classes)


def modality_spec(name: str, array: np.ndarray, kind: str | None = None) -> ModalitySpec:
    """Spec of one modality from its (N, *shape) array: rank 1 -> vector, 2 -> sequence (T, C), 3 -> image."""
    shape = tuple(array.shape[1:])
    if kind is None:
        if len(shape) not in _KIND_BY_RANK:
            raise ValueError(f"modality {name!r}: cannot infer a kind from per-sample shape {shape}; pass kinds={{...}}")
        kind = _KIND_BY_RANK[len(shape)]
    return ModalitySpec(name, kind, shape)


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
            raise ValueError(f"{source}: modality {name!r} is partly empty in {int(some.sum())} rows (first row {row}); "
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
                  time_mask: Mapping[str, np.ndarray] | None = None) -> MultimodalDataset:
    """The dataset; ``class_names`` (label i is ``class_names[i]``) is attached as an attribute.
    ``time_mask``: optional sequence modality -> (N, T) bool observed steps."""
    kinds = dict(kinds or {})
    unknown = sorted(set(kinds) - set(arrays))
    if unknown:
        raise ValueError(f"kinds names unknown modality {unknown[0]!r}; modalities: {', '.join(arrays)}")
    mods = tuple(modality_spec(m, a, kinds.get(m)) for m, a in arrays.items())
    if task == "classification":
        task_spec = TaskSpec("classification", n_classes=len(class_names))
    else:
        task_spec = TaskSpec("regression", n_outputs=1 if target.ndim == 1 else int(target.shape[1]))
    data = MultimodalDataset(DatasetSpec(name, mods, task_spec), arrays, target, mask, splits=splits,
                             time_mask=time_mask or None)
    data.class_names = tuple(class_names) if class_names is not None else None
    return data
