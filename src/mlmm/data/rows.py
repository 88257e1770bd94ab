"""What every streamed dataset shares: rows of a backing store read on demand, with the availability
mask and the labels held in memory.

``RowDataset`` is the base of the table datasets (``mlmm.data.tables``: Parquet row groups, Arrow
files, a folder of files with a CSV / Parquet row table) and of the adapter for a user's
``torch.utils.data.Dataset`` (``mlmm.data.adapter``). A subclass says how to read rows
(``_read``); the base does the rest the way ``MemmapDataset`` does it, so the streamed training,
validation and prediction paths take any of them:

- map-style: ``len(data)``, ``data[i]``, and ``data.__getitems__(positions)`` -> one ``Batch``
  (what a ``DataLoader`` with ``collate_fn=data.collate`` calls);
- the mask is the only truth: a masked-out slot is returned as zeros whatever the store holds,
  and a NaN / inf in a present entry is a ``ValueError`` naming the modality and row;
- views are index arrays: ``subset``, ``split`` and ``with_mask`` (what ``Scenario.apply``
  calls) never read or copy the data, and ``labels`` / ``mask`` / ``groups`` are in memory,
  so missingness protocols draw masks without reading a row.
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.utils.data
from torch import Tensor

from .base import MultimodalDataset
from .batch import Batch, collate
from .spec import DatasetSpec

__all__ = ["RowDataset"]


def _collate_any(items) -> Batch:
    """``collate_fn`` for a dataset whose ``__getitems__`` already returns a ``Batch`` (or a list of samples)."""
    return items if isinstance(items, Batch) else collate(items)


class RowDataset(torch.utils.data.Dataset, abc.ABC):
    """Rows ``rows`` of a store of ``n_total`` rows, read on demand by ``_read``.

    spec:   the dataset's spec (mask column j is ``spec.modalities[j]``);
    target: (n,) labels of the selected rows (in memory), or None;
    mask:   (n, M) bool availability of the selected rows (in memory);
    rows:   (n,) int64 indices into the store (None: all ``n_total`` rows, in order);
    splits: split name -> positions in this view; groups: (n_total,) group of every store row, or None.

    Subclasses implement ``_read(rows, mask)`` and may override ``row_bytes``; everything they keep
    about the store is shared (not copied) by the views.
    """

    in_memory = False
    time_mask = None

    def __init__(self, spec: DatasetSpec, target, mask, n_total: int, rows: np.ndarray | None = None,
                 splits: Mapping[str, np.ndarray] | None = None, class_names: Sequence[str] | None = None,
                 groups: np.ndarray | None = None, source: str | None = None, _view: bool = False) -> None:
        self.spec = spec
        self.source = source or spec.name
        self.n_total = int(n_total)
        self.rows = np.arange(self.n_total, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        n = len(self.rows)
        if n and (self.rows.min() < 0 or self.rows.max() >= self.n_total):
            raise ValueError(f"dataset {self.source!r}: row indices outside [0, {self.n_total})")
        mask_t = torch.as_tensor(np.asarray(mask)) if not isinstance(mask, Tensor) else mask
        if mask_t.dtype != torch.bool or tuple(mask_t.shape) != (n, spec.n_modalities):
            raise ValueError(f"dataset {self.source!r}: mask must be bool of shape ({n}, {spec.n_modalities}), "
                             f"got {mask_t.dtype} {tuple(mask_t.shape)}")
        empty = ~mask_t.any(dim=1)
        if bool(empty.any()) and not _view:  # a view's mask may leave a row empty, as MultimodalDataset.with_mask
            first = int(self.rows[int(empty.nonzero()[0])])
            raise ValueError(f"dataset {self.source!r}: {int(empty.sum())} row(s) have no modality "
                             f"(first: row {first}); every row needs at least one modality: drop such rows")
        self.mask: Tensor = mask_t
        self.target: Tensor | None = None
        if target is not None:
            from .base import _as_target
            from .batch import validate_target

            self.target = _as_target(np.asarray(target), spec)
            validate_target(self.target, spec, n)
        self.class_names = None if class_names is None else tuple(str(c) for c in class_names)
        self.splits = {k: np.asarray(v, dtype=np.int64) for k, v in (splits or {}).items()}
        self._groups_all = None if groups is None else np.asarray(groups)
        self.reads = 0  # rows read from the store (tests and benchmarks use it)

    # ------------------------------------------------------------ what a subclass provides

    @abc.abstractmethod
    def _read(self, rows: np.ndarray, mask: Tensor) -> dict[str, Tensor]:
        """Store rows ``rows`` (B,) whose availability is ``mask`` (B, M) -> modality -> (B, *shape) tensor
        (float32; uint8 images; int64 token ids), freshly allocated (the base writes zeros into them).
        Slots where ``mask`` is False may hold anything and need not be read."""

    def row_bytes(self) -> int:
        """Bytes of one row's modality values once read (float32, uint8 images, int64 token ids)."""
        return sum(m.size * (8 if m.kind == "text" else 4) for m in self.spec.modalities)

    # ------------------------------------------------------------ Dataset

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def has_labels(self) -> bool:
        return self.target is not None

    @property
    def labels(self) -> np.ndarray:
        if self.target is None:
            raise ValueError(f"dataset {self.spec.name!r} has no labels")
        return self.target.numpy()

    @property
    def groups(self) -> np.ndarray | None:
        """(n,) group of each row of this view (subjects, patients), or None."""
        return None if self._groups_all is None else self._groups_all[self.rows]

    @property
    def inputs(self) -> dict[str, Tensor]:
        """Modality -> an (n, *shape) tensor on the ``meta`` device: shapes and dtypes only, no values
        (what a shape check needs; the values are read through ``loader()`` / ``__getitems__``)."""
        return {m.name: torch.empty((len(self), *m.shape), device="meta",
                                    dtype=torch.int64 if m.kind == "text" else torch.float32)
                for m in self.spec.modalities}

    def __getitem__(self, i: int) -> dict:
        batch = self.__getitems__([int(i)])
        item = {"inputs": {k: v[0] for k, v in batch.inputs.items()}, "mask": batch.mask[0], "index": int(i)}
        if batch.target is not None:
            item["target"] = batch.target[0]
        return item

    def __getitems__(self, positions: Sequence[int]) -> Batch:
        """Positions (B,) of this view -> one raw ``Batch`` (B rows read from the store)."""
        pos = np.asarray(positions, dtype=np.int64)
        if pos.size and (pos.min() < -len(self) or pos.max() >= len(self)):
            raise IndexError(f"sample {int(pos.max())} is out of range for {len(self)} samples")
        pos %= max(len(self), 1)
        rows = self.rows[pos]
        mask = self.mask[torch.from_numpy(pos)]
        values = self._read(rows, mask)
        inputs = {}
        for j, m in enumerate(self.spec.modalities):
            x = values[m.name]
            if tuple(x.shape) != (len(rows), *m.shape):
                raise ValueError(f"dataset {self.source!r}: modality {m.name!r} read as shape {tuple(x.shape)}, "
                                 f"expected ({len(rows)}, {', '.join(map(str, m.shape))})")
            keep = mask[:, j]
            if not bool(keep.all()):
                x[~keep] = 0
            if x.dtype.is_floating_point:
                bad = ~torch.isfinite(x.reshape(len(x), -1)).all(dim=1) & keep
                if bool(bad.any()):
                    row = int(rows[int(bad.nonzero()[0])])
                    raise ValueError(f"dataset {self.source!r}: modality {m.name!r} holds NaN or inf in a present "
                                     f"entry (row {row}); leave that cell empty to mark it missing")
            inputs[m.name] = x
        self.reads += len(rows)
        target = None if self.target is None else self.target[torch.from_numpy(pos)]
        return Batch(inputs, mask, target, index=torch.from_numpy(pos))

    collate = staticmethod(_collate_any)

    def loader(self, batch_size: int = 128, shuffle: bool = False, **kwargs) -> torch.utils.data.DataLoader:
        """``DataLoader`` yielding raw ``Batch`` objects of ``batch_size`` rows (``kwargs`` as for DataLoader)."""
        return torch.utils.data.DataLoader(self, batch_size=batch_size, shuffle=shuffle, collate_fn=_collate_any,
                                           **kwargs)

    # ------------------------------------------------------------ views

    def nbytes(self) -> int:
        """Bytes of modality values in this view once read into memory."""
        return self.row_bytes() * len(self)

    def as_batch(self) -> Batch:
        """Every row of this view in memory, as one ``Batch`` — refused above
        ``mlmm.data.memmap.MATERIALISE_LIMIT_BYTES`` (the limit whole-split steps share)."""
        from . import memmap

        if self.nbytes() > memmap.MATERIALISE_LIMIT_BYTES:
            raise MemoryError(
                f"dataset {self.source!r}: reading all {len(self)} rows at once needs "
                f"{self.nbytes() / 2**30:.2f} GiB, above the {memmap.MATERIALISE_LIMIT_BYTES / 2**30:.2f} GiB limit "
                "(mlmm.data.memmap.MATERIALISE_LIMIT_BYTES); iterate over data.loader() instead")
        return self.__getitems__(np.arange(len(self)))

    def _view(self, rows: np.ndarray, mask: Tensor, target, splits: Mapping[str, np.ndarray] | None):
        """A new view of the same store (the subclass's store attributes are shared, not copied)."""
        out = copy.copy(self)
        RowDataset.__init__(out, self.spec, target, mask, self.n_total, rows=rows, splits=splits,
                            class_names=self.class_names, groups=self._groups_all, source=self.source, _view=True)
        return out

    def subset(self, index) -> RowDataset:
        """Positions ``index`` of this view as a new view (an index array; nothing is read or copied)."""
        idx = np.asarray(index.numpy() if isinstance(index, Tensor) else index, dtype=np.int64)
        return self._view(self.rows[idx], self.mask[torch.from_numpy(idx)],
                          None if self.target is None else self.target[idx], None)

    def split(self, name: str) -> RowDataset:
        if name not in self.splits:
            known = ", ".join(self.splits) or "none"
            raise ValueError(f"dataset {self.spec.name!r} has no split {name!r}; known: {known}")
        return self.subset(self.splits[name])

    def with_mask(self, mask) -> RowDataset:
        """Same rows with availability ``mask & self.mask`` ((n, M) bool); the store is untouched
        (masked-out slots read as zeros)."""
        mask_t = torch.as_tensor(np.asarray(mask) if not isinstance(mask, Tensor) else mask)
        if tuple(mask_t.shape) != tuple(self.mask.shape) or mask_t.dtype != torch.bool:
            raise ValueError(f"mask must be bool of shape {tuple(self.mask.shape)}, got {mask_t.dtype} "
                             f"{tuple(mask_t.shape)}")
        return self._view(self.rows, mask_t & self.mask, self.target, self.splits)

    def to_memory(self) -> MultimodalDataset:
        """This view as an in-memory ``MultimodalDataset`` (validated), within the ``as_batch`` limit."""
        batch = self.as_batch()
        return MultimodalDataset(self.spec, batch.inputs, self.target, batch.mask, splits=self.splits,
                                 class_names=self.class_names, groups=self.groups)
