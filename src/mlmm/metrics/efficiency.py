"""Efficiency figures of a fitted model: parameters, inference latency, peak memory.

Definitions (also in the HTML report):
- parameters: ``total`` = every parameter element, ``trainable`` = those with ``requires_grad``;
- inference latency per sample: wall time of one batched evaluation
  (``FittedModel.predict_logits``, batches of 1024, eval mode, no grad) divided by the
  number of samples, best of ``repeats`` runs (the minimum is the least disturbed by
  other processes); on CUDA the device is synchronised before the clock is read;
- latency per subset size k: the same, with every sample restricted to a subset of
  exactly k modalities (the subsets of size k assigned to rows in turn) — the cost of
  a missing pattern, for methods whose work depends on what is present;
- peak memory: see ``PeakMemory``.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from itertools import combinations

import torch
from torch import nn

from ..data.batches import DEFAULT_BATCH_ROWS, iter_batches
from .evaluate import Predictions, predict_all

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """{"total", "trainable"} parameter element counts of ``model``."""
    params = list(model.parameters())
    return {"total": sum(p.numel() for p in params), "trainable": sum(p.numel() for p in params if p.requires_grad)}


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_predictions(model, data, repeats: int = 3, batch_size: int = DEFAULT_BATCH_ROWS) -> tuple[Predictions, float]:
    """``predict_all(model, data)`` (logits, targets, masks of one pass over any dataset, batch
    by batch) and the latency in seconds per sample (best of ``repeats`` passes; a streamed
    dataset's passes include reading its batches)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    device = next(model.parameters(), torch.empty(0)).device
    best, pred = float("inf"), None
    for _ in range(repeats):
        _synchronise(device)
        start = time.perf_counter()
        pred = predict_all(model, data, batch_size)
        _synchronise(device)
        best = min(best, time.perf_counter() - start)
    return pred, best / max(len(pred.logits), 1)


def timed_predict(model, data, repeats: int = 3) -> tuple[torch.Tensor, float]:
    """(N, C) logits of ``model`` on ``data`` and the latency in seconds per sample (best of ``repeats``)."""
    pred, latency = timed_predictions(model, data, repeats)
    return pred.logits, latency


def latency_per_subset_size(model, data, repeats: int = 1, batch_size: int = DEFAULT_BATCH_ROWS) -> dict[str, float]:
    """Subset size k ("1".."M") -> seconds per sample with every sample restricted to k modalities.

    Row i gets the (i mod n_k)-th subset of size k, intersected with its natural mask;
    rows left with nothing are dropped. Keys are strings so the record is JSON as is.
    ``data``: any dataset ``iter_batches`` reads; the masks are drawn batch by batch (row i
    counted from the start of ``data``), and a streamed dataset's time includes its reads.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    m = model.spec.n_modalities
    device = next(model.parameters(), torch.empty(0)).device
    out = {}
    for k in range(1, m + 1):
        subsets = torch.tensor(list(combinations(range(m), k)))  # (n_k, k)
        best, n = float("inf"), 0
        for _ in range(repeats):
            _synchronise(device)
            start, n, first = time.perf_counter(), 0, 0
            for raw in iter_batches(data, batch_size):
                wanted = torch.zeros_like(raw.mask)
                rows = torch.arange(raw.size)
                wanted[rows.unsqueeze(1), subsets[(rows + first) % len(subsets)]] = True
                first += raw.size
                mask = wanted & raw.mask
                keep = torch.nonzero(mask.any(dim=1)).flatten()
                if len(keep):
                    model.predict_logits(raw.with_mask(mask).select(keep), batch_size=batch_size, validate=False)
                    n += len(keep)
            _synchronise(device)
            best = min(best, time.perf_counter() - start)
        if n:
            out[str(k)] = best / n
    return out


def _status_kib(field: str) -> int | None:
    """A ``VmHWM`` / ``VmRSS`` line of /proc/self/status in KiB (Linux), else None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _ru_maxrss_bytes() -> int:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _release_free_heap() -> None:
    """Return freed heap pages to the OS (glibc ``malloc_trim``), so that memory an earlier
    block freed but the allocator kept resident does not hide this block's growth."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Context manager: peak memory of the block it wraps.

    CPU: the process's peak resident set size (RSS) during the block. On Linux the
    kernel's high-water mark ``VmHWM`` is reset on entry (writing 5 to
    /proc/self/clear_refs) and read on exit, so each block gets its own peak even in a
    long-lived worker process. Elsewhere (or where clear_refs is not writable) it falls
    back to the growth of ``getrusage().ru_maxrss``, which never decreases: a block that
    stays under an earlier peak then reports 0 growth. Why not ``tracemalloc``: it sees
    only allocations through Python's allocator (and numpy's), not torch's tensor memory,
    which is what training spends. ``cpu_method`` in the figures says which was used.
    RSS counts the whole process (interpreter, libraries, data), so ``cpu_peak_growth_bytes``
    (peak minus RSS on entry, after glibc's ``malloc_trim`` hands freed heap back) is the
    block's own share. It still understates in a long-lived process where memory freed
    earlier stays mapped (torch's and numpy's large buffers are mmap-ed and returned on
    free, small ones may be kept): a fresh process per cell gives the cleanest figure.

    Side effect (Linux): the reset also lowers what ``ru_maxrss`` reports afterwards for
    this process; an outer measurement spanning the block sees the peak since the reset.

    GPU (device type cuda): ``torch.cuda.max_memory_allocated`` after
    ``reset_peak_memory_stats`` — tensor memory only, not the CUDA context.
    """

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.figures: dict[str, object] = {}

    def __enter__(self) -> PeakMemory:
        _release_free_heap()
        self._method = "ru_maxrss-delta"
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            if _status_kib("VmHWM") is not None:
                self._method = "vmhwm-reset"
        except OSError:
            pass
        rss = _status_kib("VmRSS")
        self._rss_start = rss * 1024 if rss is not None else None
        self._maxrss_start = _ru_maxrss_bytes()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._cuda_start = torch.cuda.memory_allocated(self.device)
        return self

    def __exit__(self, *exc) -> None:
        if self._method == "vmhwm-reset":
            peak = _status_kib("VmHWM") * 1024
            growth = peak - self._rss_start if self._rss_start is not None else None
        else:
            peak = _ru_maxrss_bytes()
            growth = peak - self._maxrss_start
        self.figures = {"cpu_peak_rss_bytes": int(peak),
                        "cpu_peak_growth_bytes": None if growth is None else max(0, int(growth)),
                        "cpu_method": self._method}
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.figures["gpu_peak_allocated_bytes"] = int(torch.cuda.max_memory_allocated(self.device))
            self.figures["gpu_peak_growth_bytes"] = int(torch.cuda.max_memory_allocated(self.device) - self._cuda_start)
