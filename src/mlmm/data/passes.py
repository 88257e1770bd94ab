"""A split read in passes: what a method's whole-split step (``prepare`` / ``calibrate``) sees
when it computes its result batch by batch, and the running statistics such steps accumulate.

``SplitPasses`` is the same object whether the split is one in-memory ``Batch`` (the fast path:
one batch covers everything) or a memory-mapped dataset read ``batch_rows`` rows at a time
(``mlmm.train.streamed``), so a method implements its step once. What is in memory in both cases
is the availability ``mask`` (N, M) and the labels ``target`` (N,): a step that needs only these
(per-pattern counts, which rows a memory bank samples) reads no modality value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from .batch import Batch


class SplitPasses:
    """A standardised split of N rows for a whole-split step, read in passes.

    mask: (N, M) bool availability (as the method will see it); target: (N,) labels or None;
    size: N. ``batches()`` is one pass over the rows in order, ``batch_rows`` at a time (each
    call a new pass); ``rows(index)`` reads the rows at positions ``index`` (K,) long. Every
    ``Batch`` given is standardised, on the method's device, and carries its positions as
    ``Batch.index``.

    ``read(index)`` (how the rows are read) is given by the caller: ``of_batch`` for an
    in-memory batch, ``mlmm.train.streamed.split_passes`` for a streamed dataset.
    """

    def __init__(self, read: Callable[[Tensor], Batch], mask: Tensor, target: Tensor | None,
                 batch_rows: int) -> None:
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
        self._read, self.mask, self.target, self.batch_rows = read, mask, target, int(batch_rows)
        #: Rows read so far (all passes and ``rows`` calls together).
        self.reads = 0

    @classmethod
    def of_batch(cls, batch: Batch, batch_rows: int | None = None) -> SplitPasses:
        """The rows of an in-memory standardised ``batch`` (one batch per pass unless ``batch_rows``)."""
        def read(index: Tensor) -> Batch:
            return batch.select(index.to(batch.mask.device)).with_index(index.to(batch.mask.device))

        return cls(read, batch.mask, batch.target, batch_rows or max(batch.size, 1))

    @property
    def size(self) -> int:
        return int(self.mask.shape[0])

    def rows(self, index: Tensor) -> Batch:
        """The standardised rows at positions ``index`` ((K,) long, any order) as one ``Batch``."""
        index = torch.as_tensor(index, dtype=torch.long).cpu()
        self.reads += int(index.numel())
        return self._read(index)

    def batches(self) -> Iterator[Batch]:
        """One pass over every row in order, ``batch_rows`` at a time."""
        for start in range(0, self.size, self.batch_rows):
            yield self.rows(torch.arange(start, min(self.size, start + self.batch_rows)))


class RunningMoments:
    """Per-feature mean and (population) standard deviation of rows seen in any number of chunks.

    ``update(x)`` with x (n, *shape); chunk statistics are merged in float64 (Chan et al.'s
    pairwise update), so the result equals the statistics of the concatenated rows within
    float tolerance whatever the chunking."""

    def __init__(self) -> None:
        self.count = 0
        self._mean: Tensor | None = None
        self._m2: Tensor | None = None

    def update(self, x: Tensor) -> None:
        if x.shape[0] == 0:
            return
        x = x.detach().double()
        n = x.shape[0]
        mean = x.mean(dim=0)
        m2 = ((x - mean) ** 2).sum(dim=0)
        if self._mean is None:
            self.count, self._mean, self._m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self._mean
        self._m2 = self._m2 + m2 + delta ** 2 * (self.count * n / total)
        self._mean = self._mean + delta * (n / total)
        self.count = total

    def mean(self, dtype: torch.dtype = torch.float32) -> Tensor | None:
        """(*shape) mean, or None when no row was seen."""
        return None if self._mean is None else self._mean.to(dtype)

    def std(self, dtype: torch.dtype = torch.float32) -> Tensor | None:
        """(*shape) population standard deviation (``unbiased=False``), or None when no row was seen."""
        return None if self._m2 is None else (self._m2 / self.count).sqrt().to(dtype)


def present_means(split: SplitPasses, names: list[str]) -> dict[str, Tensor | None]:
    """Modality j's name -> mean (*shape_j) of its standardised values over the rows holding it,
    in one pass (None for a modality no row holds). ``names``: the modality names in spec order."""
    moments = [RunningMoments() for _ in names]
    for batch in split.batches():
        for j, name in enumerate(names):
            moments[j].update(batch.inputs[name][batch.mask[:, j]])
    return {name: m.mean() for name, m in zip(names, moments)}
