"""Any ``torch.utils.data.Dataset`` of the user's as an mlmm dataset (streamed, like ``MemmapDataset``).

The user's dataset yields, for sample ``i``, either a dict ``{modality: tensor or None, ...,
"target": label}`` or a pair ``({modality: tensor or None}, label)``. A modality that is ``None``
(or absent from the dict) is missing for that sample. ``adapt_dataset(dataset, spec)`` turns it into
a ``RowDataset``: batches are mlmm ``Batch`` objects with the availability mask, values are checked
against the spec (a wrong shape or an unknown modality is an error naming the sample and the
modality), and the mask and labels are held in memory so that missingness protocols draw masks
without reading a sample.

The mask and labels come from ``mask=`` / ``targets=`` when given (or a ``targets`` attribute of the
dataset, as torchvision's datasets have); otherwise ``adapt_dataset`` reads every sample once at
construction to learn them (one pass, memory of one sample at a time).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.utils.data
from torch import Tensor

from .batch import float_values
from .rows import RowDataset
from .spec import DatasetSpec

__all__ = ["TorchDatasetAdapter", "adapt_dataset"]


def _dtype(kind: str) -> torch.dtype:
    return torch.int64 if kind == "text" else torch.float32


class TorchDatasetAdapter(RowDataset):
    """A user's map-style dataset seen through ``spec`` (build it with ``adapt_dataset``)."""

    def __init__(self, dataset: torch.utils.data.Dataset, spec: DatasetSpec, target, mask, **view) -> None:
        super().__init__(spec, target, mask, len(dataset), **view)
        self.dataset = dataset

    def _read(self, rows: np.ndarray, mask: Tensor) -> dict[str, Tensor]:
        parsed = [parse_item(self.dataset[row], row, self.spec, self.source)[0] for row in rows.tolist()]
        out = {}
        for j, m in enumerate(self.spec.modalities):
            present = {}
            for b, (row, values) in enumerate(zip(rows.tolist(), parsed)):
                if not bool(mask[b, j]):
                    continue  # masked out (naturally or by a protocol): never used
                if values.get(m.name) is None:
                    raise ValueError(f"dataset {self.source!r}: sample {row} yields no value for modality "
                                     f"{m.name!r}, but its mask says present (the dataset changed since it was "
                                     "adapted, or mask= claims more than it yields)")
                present[b] = values[m.name]
            # uint8 images stay uint8 (0..255), as the in-memory and memory-mapped datasets keep them, so
            # the same float_values scaling to [0, 1] applies downstream; a batch mixing uint8 and float
            # images gets the uint8 ones scaled here.
            all_uint8 = m.kind == "image" and present and all(x.dtype == torch.uint8 for x in present.values())
            dtype = torch.uint8 if all_uint8 else _dtype(m.kind)
            buf = torch.zeros((len(rows), *m.shape), dtype=dtype)
            for b, x in present.items():
                buf[b] = x if dtype == torch.uint8 or m.kind != "image" else float_values(x)
            out[m.name] = buf
        return out

    def row_bytes(self) -> int:
        return sum(m.size * (8 if m.kind == "text" else 4) for m in self.spec.modalities)


def parse_item(item, row: int, spec: DatasetSpec, source: str) -> tuple[dict[str, Tensor | None], object]:
    """A user's sample -> ({modality: (*shape) tensor or None}, label or None), checked against ``spec``."""
    where = f"dataset {source!r}: sample {row}"
    if isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], Mapping):
        values, target = dict(item[0]), item[1]
    elif isinstance(item, Mapping):
        values = dict(item)
        target = values.pop("target", None)
    else:
        raise ValueError(f"{where} is a {type(item).__name__}; expected a dict {{modality: tensor or None, "
                         "'target': label}} or a pair (dict, label)")
    unknown = sorted(set(values) - set(spec.modality_names))
    if unknown:
        raise ValueError(f"{where} yields unknown modality {unknown[0]!r}; the spec has "
                         f"{', '.join(spec.modality_names)}")
    out: dict[str, Tensor | None] = {}
    for m in spec.modalities:
        value = values.get(m.name)
        if value is None:
            out[m.name] = None
            continue
        x = torch.as_tensor(np.asarray(value) if not isinstance(value, Tensor) else value)
        if tuple(x.shape) != tuple(m.shape):
            raise ValueError(f"{where}: modality {m.name!r} has shape {tuple(x.shape)}, expected {tuple(m.shape)} "
                             f"(a {m.kind} of the spec)")
        if m.kind == "text" and x.is_floating_point():
            raise ValueError(f"{where}: text modality {m.name!r} holds {x.dtype}; token ids are integers")
        out[m.name] = x if m.kind == "image" and x.dtype == torch.uint8 else x.to(_dtype(m.kind))
    return out, target


def _label(target) -> object:
    return target.item() if isinstance(target, Tensor) and target.numel() == 1 else \
        (target.numpy() if isinstance(target, Tensor) else target)


def adapt_dataset(dataset: torch.utils.data.Dataset, spec: DatasetSpec, targets: Sequence | np.ndarray | None = None,
                  mask: np.ndarray | Tensor | None = None, splits: Mapping[str, np.ndarray] | None = None,
                  class_names: Sequence[str] | None = None, groups: Sequence | None = None,
                  name: str | None = None) -> TorchDatasetAdapter:
    """``dataset`` (map-style: ``len`` and ``dataset[i]``, see the module docstring) as an mlmm dataset.

    spec:    modalities (names, kinds, per-sample shapes) and task; every yielded tensor must match;
    targets: (N,) labels (class ids 0..K-1, or floats for regression); default: ``dataset.targets``
             if it has them, else read from the samples;
    mask:    (N, M) bool availability; default: read from the samples (a ``None`` value is missing);
    splits:  split name -> row indices (e.g. {"train": ..., "val": ..., "test": ...}).

    Without ``targets`` or ``mask`` every sample is read once here (bounded memory, but a full pass)."""
    if not isinstance(dataset, torch.utils.data.Dataset) and not hasattr(dataset, "__getitem__"):
        raise TypeError(f"adapt_dataset takes a map-style dataset (len and [i]), got {type(dataset).__name__}")
    source = name or type(dataset).__name__
    n = len(dataset)
    if targets is None and getattr(dataset, "targets", None) is not None:
        targets = dataset.targets
    if targets is None or mask is None:
        seen_mask = np.zeros((n, spec.n_modalities), dtype=bool)
        seen_targets = []
        for i in range(n):
            values, target = parse_item(dataset[i], i, spec, source)
            seen_mask[i] = [values[m] is not None for m in spec.modality_names]
            if targets is None:
                if target is None:
                    raise ValueError(f"dataset {source!r}: sample {i} yields no 'target' and no targets= was given")
                seen_targets.append(_label(target))
        mask = seen_mask if mask is None else mask
        targets = np.asarray(seen_targets) if targets is None else targets
    targets = np.asarray(targets.numpy() if isinstance(targets, Tensor) else targets)
    if len(targets) != n:
        raise ValueError(f"dataset {source!r}: {len(targets)} targets for {n} samples")
    mask = mask.numpy() if isinstance(mask, Tensor) else np.asarray(mask)
    if mask.dtype != bool or mask.shape != (n, spec.n_modalities):
        raise ValueError(f"dataset {source!r}: mask must be bool of shape ({n}, {spec.n_modalities}) (columns "
                         f"{', '.join(spec.modality_names)}), got {mask.dtype} {mask.shape}")
    return TorchDatasetAdapter(dataset, spec, targets, mask, splits=splits, class_names=class_names,
                               groups=None if groups is None else np.asarray(groups), source=source)
