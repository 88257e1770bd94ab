"""Running one cell, wherever it runs (this process, a pool worker, a Ray task).

``execute_cell`` takes and returns plain data only, so every backend can ship
it; it never touches the results store (the driver is the only writer).
"""

from __future__ import annotations

import os
import platform
import socket
import time
from typing import Any

import numpy as np
import torch

from ..data.registry import load_dataset
from ..data.splits import make_splits
from ..errors import EmptySplitError, TrainingDiverged
from ..experiment import run_seed
from .grid import Cell

__all__ = ["CELL_FAILURES", "execute_cell", "mask_checksums", "versions"]

#: Errors that make a cell a failure (recorded in the store's ``failures``, with the reason) rather
#: than stop the grid: the fit diverged, or the cell's data split is empty.
CELL_FAILURES = (TrainingDiverged, EmptySplitError)


def versions() -> dict[str, str]:
    """Versions of what produced a result."""
    import sklearn

    from .. import __version__

    return {"mlmm": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "scikit-learn": sklearn.__version__, "python": platform.python_version(), "platform": platform.platform()}


def execute_cell(payload: dict[str, Any], threads: int | None = None) -> dict[str, Any]:
    """Run the cell described by ``payload`` (``Cell.to_payload()``) with ``threads`` torch threads.

    Returns ``{"record": run_seed's record, "versions", "worker", "started_at", "finished_at",
    "wall_seconds", "cpu_seconds"}`` (CPU time of this process: the whole cell when it runs one torch thread),
    or, when the cell fails as ``CELL_FAILURES`` say, ``{"failed": "<Type>: reason", "worker", ...}``.
    """
    from .store import utc_now

    if threads is not None:
        torch.set_num_threads(threads)
    cell = Cell.from_payload(payload)
    started, start, cpu = utc_now(), time.perf_counter(), time.process_time()
    try:
        record = run_seed(cell.config(), cell.seed)
    except CELL_FAILURES as err:  # the cell's own failure, recorded as such: the grid goes on
        return {"failed": f"{type(err).__name__}: {err}".splitlines()[0],
                "worker": f"{socket.gethostname()}:{os.getpid()}",
                "started_at": started, "finished_at": utc_now(), "wall_seconds": time.perf_counter() - start}
    # CPU seconds beside wall seconds: on a shared machine the wall time says more about the
    # neighbours than about the cell, while CPU time (one torch thread) stays comparable.
    return {"record": record, "versions": versions(), "worker": f"{socket.gethostname()}:{os.getpid()}",
            "started_at": started, "finished_at": utc_now(), "wall_seconds": time.perf_counter() - start,
            "cpu_seconds": time.process_time() - cpu}


def mask_checksums(cell: Cell, data=None) -> dict[str, str]:
    """Regenerate the cell's train / val / test masks from its seed and return their sha256 per role,
    without training: what a stored record's ``realised.*.mask_sha256`` must equal.
    ``data``: the loaded dataset, to skip reloading it for every cell."""
    data = load_dataset(cell.dataset) if data is None else data
    splits = dict(zip(("train", "val", "test"), make_splits(data, cell.split, cell.seed)))
    scenario = cell.config().scenario()
    return {role: scenario.apply(part, role, cell.seed)[1]["mask_sha256"] for role, part in splits.items()}
