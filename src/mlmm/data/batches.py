"""Raw batches of any dataset, in row order: the one way evaluation-side code reads data.

Evaluation, the all-subsets table, ``explain``, ``recover``, ``uncertainty`` and ``stream``
go through ``iter_batches`` and accumulate per batch (predictions, confusion counts,
reliability bins), so their memory is bounded by the batch (plus per-sample outputs such
as (N, C) logits), never by N x features:

- an in-memory ``MultimodalDataset`` (or a ``Batch``) gives slices of its tensors (views);
- any other map-style ``torch.utils.data.Dataset`` — ``mlmm.data.MemmapDataset``, or a
  user's dataset whose ``__getitems__`` returns a ``Batch`` or whose ``__getitem__`` returns
  ``MultimodalDataset[i]``-style dicts (``collate``) — is read through a ``DataLoader``,
  ``batch_size`` rows at a time, and is never materialised.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.utils.data

from .base import MultimodalDataset
from .batch import Batch, collate

__all__ = ["DEFAULT_BATCH_ROWS", "is_in_memory", "iter_batches", "paired_batches"]

#: Rows per batch when the caller gives none (the evaluation functions' default ``batch_size``).
DEFAULT_BATCH_ROWS = 1024


def is_in_memory(data) -> bool:
    """True for data held in memory as tensors (a ``MultimodalDataset`` or a ``Batch``)."""
    return isinstance(data, (MultimodalDataset, Batch))


def _collate_any(items) -> Batch:
    return items if isinstance(items, Batch) else collate(items)


def iter_batches(data, batch_size: int = DEFAULT_BATCH_ROWS) -> Iterator[Batch]:
    """The rows of ``data`` in order as raw ``Batch`` objects of at most ``batch_size`` rows.

    data: a ``MultimodalDataset`` or ``Batch`` (sliced, no copy) or a map-style torch
    ``Dataset`` read through a ``DataLoader`` in the main process (one batch in memory at a time).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if is_in_memory(data):
        batch = data.as_batch() if isinstance(data, MultimodalDataset) else data
        for start in range(0, batch.size, batch_size):
            yield batch.select(slice(start, start + batch_size))
        return
    if not isinstance(data, torch.utils.data.Dataset):
        raise TypeError(f"cannot read batches from a {type(data).__name__}; give a MultimodalDataset, a Batch or a "
                        "map-style torch.utils.data.Dataset (e.g. mlmm.data.MemmapDataset)")
    # Its own generator: a DataLoader otherwise draws a seed from the global RNG per iteration.
    yield from torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=_collate_any,
                                           generator=torch.Generator())


def paired_batches(first, second, batch_size: int = DEFAULT_BATCH_ROWS) -> Iterator[tuple[Batch, Batch]]:
    """Batches of two datasets holding the same rows (e.g. a test split under its natural mask and
    under a protocol's mask), side by side; ``ValueError`` when they differ in length."""
    if len(first) != len(second):
        raise ValueError(f"the two datasets must hold the same rows; they have {len(first)} and {len(second)} rows")
    for a, b in zip(iter_batches(first, batch_size), iter_batches(second, batch_size), strict=True):
        if a.size != b.size:
            raise ValueError(f"the two datasets gave batches of {a.size} and {b.size} rows")
        yield a, b
