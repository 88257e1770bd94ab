"""The streamed path of ``FitSteps``: splits read batch by batch through a DataLoader.

Used when the training data is not held in memory (``mlmm.data.memmap.MemmapDataset``, or any
map-style dataset whose ``__getitem__`` / ``__getitems__`` + ``collate`` give a ``Batch``), or
when asked (``Trainer(streamed=True)``). Memory is bounded by the batch, not by N:

- the Standardizer is fitted in one pass over the training split (``Standardizer.fit_batches``);
- training batches come from a DataLoader in ``FitSteps.sampler()``'s order, so the in-memory and
  the streamed path see the same rows in the same order and draw the same modality dropout;
- validation is one forward per batch, its loss and accuracy weighted by batch size.

Whole-split steps stream where they can: a method that declares ``Capability.PREPARES_BY_BATCH``
(fill values, feature statistics, pattern counts, memory banks) or ``CALIBRATES_BY_BATCH`` (the
pattern router's and strongest-default's tallies) gets a ``SplitPasses`` over the standardised split
(``split_passes``): passes of ``STREAM_BATCH_ROWS`` rows, or chosen rows read by index. Any other
whole-split step (a ``prepare`` / ``calibrate`` without it, a full-batch stage) gets the whole split
in memory, refused beyond the method's declared ``MethodInfo.split_row_limit`` or beyond
``mlmm.data.memmap.MATERIALISE_LIMIT_BYTES`` (1 GiB) of values, with an error naming the method.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import torch
import torch.utils.data

from ..data.base import MultimodalDataset
from ..data.batch import Batch, collate
from ..data.passes import SplitPasses
from ..methods.base import Capability, MissingModalityModel
from .config import TrainConfig

#: Rows per batch of the statistics pass and of validation (memory: this many rows at a time).
STREAM_BATCH_ROWS = 1024


def is_streamed(data) -> bool:
    """True for a dataset that is not an in-memory ``MultimodalDataset`` (it is read batch by batch)."""
    return not isinstance(data, MultimodalDataset)


def _collate_any(items) -> Batch:
    return items if isinstance(items, Batch) else collate(items)


class BatchCollate:
    """A DataLoader ``collate_fn``: the rows read (a ``Batch`` from ``__getitems__``, or a list of samples)
    as one ``Batch``, then ``transform`` (e.g. a CPU copy of the fitted ``Standardizer``) without
    gradients. It runs where the rows are read: in a worker process when there are workers."""

    def __init__(self, transform: Callable[[Batch], Batch] | None = None) -> None:
        self.transform = transform

    def __call__(self, items) -> Batch:
        batch = _collate_any(items)
        if self.transform is None:
            return batch
        with torch.no_grad():
            return self.transform(batch)


def loader_options(config: TrainConfig, device: torch.device | str) -> dict:
    """DataLoader keyword arguments of ``TrainConfig``'s loader fields: ``num_workers``, ``prefetch_factor``
    (with workers only) and ``pin_memory`` (only when training on CUDA: pinning needs an accelerator)."""
    options = {"num_workers": config.num_workers,
               "pin_memory": bool(config.pin_memory) and torch.device(device).type == "cuda"}
    if config.num_workers:
        options["prefetch_factor"] = config.prefetch
    return options


def data_loader(data, batch_size: int, sampler=None, transform: Callable[[Batch], Batch] | None = None,
                **options) -> torch.utils.data.DataLoader:
    """A DataLoader yielding ``Batch`` objects (in order, or in ``sampler``'s order), raw or ``transform``-ed
    (``BatchCollate``); ``options``: further DataLoader arguments (``loader_options``).

    It gets its own generator: a DataLoader draws a base seed per iteration from the global RNG
    otherwise, which would shift the method's own randomness (dropout) against the in-memory path."""
    return torch.utils.data.DataLoader(data, batch_size=batch_size, sampler=sampler, shuffle=False,
                                       collate_fn=BatchCollate(transform), generator=torch.Generator(), **options)


def stream_batches(data, batch_size: int | None = None, **options) -> Iterator[Batch]:
    """The rows of ``data`` in order, ``batch_size`` (default ``STREAM_BATCH_ROWS``) at a time, as raw batches
    (``options``: DataLoader arguments, e.g. ``loader_options``)."""
    yield from data_loader(data, batch_size or STREAM_BATCH_ROWS, **options)


def training_loader(steps) -> torch.utils.data.DataLoader:
    """The training batches of the current stage of ``steps`` (a streamed ``FitSteps``), for
    ``steps.step(batch, standardised=True)``: rows in ``steps.sampler()``'s order (a new permutation
    each time the loader is iterated: once per epoch), ``steps.batch_size`` at a time, standardised
    by a CPU copy of the fitted standardiser where they are read. With ``TrainConfig.num_workers``
    the reads and the standardisation run in worker processes (kept for the whole stage) while the
    model trains; the sampler and modality dropout stay in this process, so the batches, their
    order and the fitted weights do not depend on the number of workers."""
    standardizer = copy.deepcopy(steps.model.standardizer).cpu()
    options = loader_options(steps.config, steps.device)
    if options["num_workers"]:
        options["persistent_workers"] = True
    return data_loader(steps.train_data, steps.batch_size, sampler=steps.sampler(), transform=standardizer,
                       **options)


def needs_whole_split(method: MissingModalityModel, step: str) -> bool:
    """Whether ``method`` runs ``<step>`` ("prepare" / "calibrate") on a whole split: it declares
    ``Capability.PREPARES`` / ``Capability.CALIBRATES`` (a wrapper declares its members')."""
    capability = {"prepare": Capability.PREPARES, "calibrate": Capability.CALIBRATES}[step]
    return method.has(capability)


def read_rows(data, index: torch.Tensor) -> Batch:
    """Rows at positions ``index`` (K,) of a map-style dataset as one raw ``Batch`` (``__getitems__``
    where the dataset has it, as a DataLoader reads, else one ``__getitem__`` per row)."""
    positions = index.tolist()
    getitems = getattr(data, "__getitems__", None)
    return _collate_any(getitems(positions) if getitems is not None else [data[i] for i in positions])


def split_passes(data, standardise: Callable[[Batch], Batch], device: torch.device,
                 mask: torch.Tensor | None = None) -> SplitPasses:
    """A ``SplitPasses`` over streamed ``data``: rows read on demand, ``standardise``d (raw ``Batch`` ->
    standardised, on ``device``), ``STREAM_BATCH_ROWS`` per batch of a pass. ``mask``: the (N, M)
    availability the method sees (default ``data.mask``; e.g. unseen modalities hidden)."""
    def read(index: torch.Tensor) -> Batch:
        return standardise(read_rows(data, index).to(device)).with_index(index.to(device))

    mask = data.mask if mask is None else mask
    target = None if data.target is None else data.target.to(device)
    return SplitPasses(read, mask.to(device), target, STREAM_BATCH_ROWS)


def whole_split(data, method: MissingModalityModel, what: str) -> Batch:
    """The whole split as one raw ``Batch`` for ``what`` (e.g. "prepare") of ``method``. Refused (MemoryError
    naming the method) beyond the method's declared ``split_limit`` rows, or beyond a dataset's own
    ``as_batch`` limit (``MemmapDataset``: ``MATERIALISE_LIMIT_BYTES``)."""
    name = getattr(method, "method_name", None) or type(method).__name__
    limit = method.split_limit
    if limit is not None and len(data) > limit[0]:
        raise MemoryError(f"method {name!r}: {what} needs the whole split in memory, and this split has {len(data)} "
                          f"rows, above the method's declared limit of {limit[0]} rows for streamed data "
                          f"(MethodInfo.split_row_limit: {limit[1]}); use a smaller training split, hold the data "
                          "in memory, or choose a method that prepares by batch (mlmm methods)")
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
    for raw in stream_batches(steps.val_data, **loader_options(steps.config, steps.device)):
        batch = steps._standardised_val(raw)
        logits = method(batch).logits
        total_loss += float(method.task_loss(logits, batch.target)) * batch.size
        if classification:
            correct += int((logits.argmax(dim=1) == batch.target).sum())
        n += batch.size
    return total_loss / max(n, 1), (correct / max(n, 1) if classification else None)
