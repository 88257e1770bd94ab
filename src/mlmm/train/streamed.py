"""The streamed path of ``FitSteps``: splits read batch by batch through a DataLoader.

Used when the training data is not held in memory (``mlmm.data.memmap.MemmapDataset``, or any
map-style dataset whose ``__getitem__`` / ``__getitems__`` + ``collate`` give a ``Batch``), or
when asked (``Trainer(streamed=True)``). Memory is bounded by the batch, not by N:

- the Standardizer is fitted in one pass over the training split (``Standardizer.fit_batches``);
- training batches come from a DataLoader in ``FitSteps.sampler()``'s order, so the in-memory and
  the streamed path see the same rows in the same order and draw the same modality dropout;
- validation is one forward per batch, its loss and accuracy weighted by batch size.

Whole-split steps have a declared limit: a method that overrides ``prepare`` (fill values, memory
banks) or ``calibrate`` (the pattern router), or a full-batch stage, gets the whole split in memory
only while it is at most ``mlmm.data.memmap.MATERIALISE_LIMIT_BYTES`` (1 GiB) of values; beyond it,
training refuses with an error naming the method. A streamed ``prepare`` is future work.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.utils.data

from ..data.base import MultimodalDataset
from ..data.batch import Batch, collate
from ..methods.base import Capability, MissingModalityModel

#: Rows per batch of the statistics pass and of validation (memory: this many rows at a time).
STREAM_BATCH_ROWS = 1024


def is_streamed(data) -> bool:
    """True for a dataset that is not an in-memory ``MultimodalDataset`` (it is read batch by batch)."""
    return not isinstance(data, MultimodalDataset)


def _collate_any(items) -> Batch:
    return items if isinstance(items, Batch) else collate(items)


def data_loader(data, batch_size: int, sampler=None) -> torch.utils.data.DataLoader:
    """A DataLoader yielding raw ``Batch`` objects (in order, or in ``sampler``'s order).

    It gets its own generator: a DataLoader draws a base seed per iteration from the global RNG
    otherwise, which would shift the method's own randomness (dropout) against the in-memory path."""
    return torch.utils.data.DataLoader(data, batch_size=batch_size, sampler=sampler, shuffle=False,
                                       collate_fn=_collate_any, generator=torch.Generator())


def stream_batches(data, batch_size: int | None = None) -> Iterator[Batch]:
    """The rows of ``data`` in order, ``batch_size`` (default ``STREAM_BATCH_ROWS``) at a time, as raw batches."""
    yield from data_loader(data, batch_size or STREAM_BATCH_ROWS)


def needs_whole_split(method: MissingModalityModel, step: str) -> bool:
    """Whether ``method`` runs ``<step>`` ("prepare" / "calibrate") on a whole split: it declares
    ``Capability.PREPARES`` / ``Capability.CALIBRATES`` (a wrapper declares its members')."""
    capability = {"prepare": Capability.PREPARES, "calibrate": Capability.CALIBRATES}[step]
    return method.has(capability)


def whole_split(data, method: MissingModalityModel, what: str) -> Batch:
    """The whole split as one raw ``Batch`` for ``what`` (e.g. "prepare") of ``method``; a dataset with an
    ``as_batch`` limit (``MemmapDataset``) refuses beyond it, and the error names the method."""
    name = getattr(method, "method_name", type(method).__name__)
    try:
        return data.as_batch()
    except MemoryError as exc:
        raise MemoryError(f"method {name!r}: {what} needs the whole split in memory, and {exc}. Streamed training "
                          f"supports {what} only up to mlmm.data.memmap.MATERIALISE_LIMIT_BYTES; choose a method "
                          "without a whole-split step (e.g. masked-mean) or a smaller training split") from None


@torch.no_grad()
def streamed_validation(steps) -> tuple[float, float | None]:
    """(mean task loss, accuracy or None) of ``steps.method`` (in eval mode) over ``steps.val_data``,
    one batch of ``STREAM_BATCH_ROWS`` at a time; equal to one forward over the whole split for a
    method whose task loss is a mean over samples."""
    method = steps.method
    total_loss, correct, n = 0.0, 0, 0
    classification = method.spec.task.kind == "classification"
    for raw in stream_batches(steps.val_data):
        batch = steps._standardised_val(raw)
        logits = method(batch).logits
        total_loss += float(method.task_loss(logits, batch.target)) * batch.size
        if classification:
            correct += int((logits.argmax(dim=1) == batch.target).sum())
        n += batch.size
    return total_loss / max(n, 1), (correct / max(n, 1) if classification else None)
