"""Run a spec's grid into a results store, skipping what is done.

The driver (this module) expands the grid, verifies that every finished
cell's masks still regenerate to the stored checksums, hands the pending
cells to a backend and writes each result to the store the moment it comes
back — one transaction per cell — so a driver killed at any moment loses at
most the cells in flight, and a rerun finishes the grid with no cell lost
and none duplicated.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..data.registry import load_dataset
from .backends import make_backend
from .execute import mask_checksums, versions
from .grid import Cell, expand
from .spec import BenchSpec
from .store import ResultStore, combined_mask_sha256

__all__ = ["BenchOutcome", "CellFailed", "MaskMismatch", "run_bench"]


class CellFailed(ValueError):
    """A cell raised; the message names it (the CLI prints it as one line, exit 2).
    Cells finished before it, and those in flight beside it, are stored."""


class MaskMismatch(ValueError):
    """A stored cell's masks no longer regenerate from its seed (data or mask code changed)."""


@dataclass
class BenchOutcome:
    spec: BenchSpec
    db: Path
    run_id: int
    cells_total: int
    cells_skipped: int
    cells_run: int
    seconds: float
    cells: list[dict] = field(default_factory=list)  # every stored cell of this grid (load_cells form)


def verify_masks(cells: list[Cell], store: ResultStore) -> None:
    """Regenerate the masks of every finished cell and compare with the stored checksums.

    Masks depend on (dataset, split, scenario, seed), not on the method, so each
    distinct draw is regenerated once however many methods share it."""
    datasets: dict = {}
    fresh_by_draw: dict[str, dict[str, str]] = {}
    for cell in cells:
        record = store.stored_record(cell.spec, cell.config_hash, cell.seed)
        if record is None:
            continue
        draw = json.dumps([cell.dataset, cell.split, cell.seed, cell.protocol, cell.protocol_params,
                           cell.train_rate, cell.test_rate], sort_keys=True, default=str)
        if draw not in fresh_by_draw:
            data = datasets.setdefault(cell.dataset, load_dataset(cell.dataset))
            fresh_by_draw[draw] = mask_checksums(cell, data)
        for role, digest in fresh_by_draw[draw].items():
            stored = record["realised"][role]["mask_sha256"]
            if stored != digest:
                raise MaskMismatch(
                    f"stored cell {cell.label()}: {role} mask checksum {stored[:12]}… but its seed now gives "
                    f"{digest[:12]}… (the dataset or the mask code changed); use a new results database")


def run_bench(spec: BenchSpec, db: str | Path, *, spec_text: str = "", overrides: list[str] | tuple[str, ...] = (),
              backend: str = "local", workers: int | None = None, threads: int = 1, ray_address: str | None = None,
              verify: bool = True, progress: Callable[..., object] | None = None, source: str = "spec") -> BenchOutcome:
    """Run every pending cell of ``spec`` into the store at ``db``.

    ``progress(total=, initial=)`` returns a tqdm-like bar (``update``, ``set_description``, ``close``);
    None shows nothing. ``verify`` regenerates the masks of finished cells and checks their sha256.
    Raises ``CellFailed`` after storing everything that finished if a cell raises.
    """
    start = time.perf_counter()
    for name, value in (("workers", workers), ("threads", threads)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")  # before the database is created
    cells = expand(spec, source=source)
    with ResultStore(db) as store:
        digest = store.add_spec(spec, spec_text, overrides)
        done = store.finished(spec.name)
        finished = [c for c in cells if (c.config_hash, c.seed) in done]
        pending = [c for c in cells if (c.config_hash, c.seed) not in done]
        if verify:
            verify_masks(finished, store)
        runner = make_backend(backend, workers, max(1, len(pending)), threads=threads, ray_address=ray_address)
        run_id = store.start_run(spec, digest, runner.name, runner.workers, len(cells), len(finished), versions())
        bar = progress(total=len(cells), initial=len(finished)) if progress else None
        ran, running, error = 0, set(), None
        try:
            for event in runner.run([c.to_payload() for c in pending]) if pending else ():
                kind, i = event[0], event[1]
                if kind == "start":
                    running.add(i)
                elif kind == "done":
                    running.discard(i)
                    result = event[2]
                    _check_record(pending[i], result["record"])
                    if store.write_cell(pending[i], result, digest, run_id):
                        ran += 1
                    if bar is not None:
                        bar.update(1)
                else:
                    running.discard(i)
                    error = error or f"cell {pending[i].label()} failed: {event[2]}"
                if bar is not None and running:
                    bar.set_description(pending[min(running)].label())
        finally:
            if bar is not None:
                bar.close()
        store.finish_run(run_id, ran)
        if error:
            raise CellFailed(error)
        stored = {(c["config_hash"], c["seed"]): c for c in store.cells(spec.name)}
        in_grid_order = [stored[(c.config_hash, c.seed)] for c in cells]  # tables then follow the spec's order
        return BenchOutcome(spec, Path(db), run_id, len(cells), len(finished), ran, time.perf_counter() - start,
                            in_grid_order)


def _check_record(cell: Cell, record: dict) -> None:
    # A record whose masks do not carry checksums could not be verified later: refuse it now.
    combined_mask_sha256(record)
    if record.get("seed") != cell.seed:
        raise RuntimeError(f"cell {cell.label()}: the record came back for seed {record.get('seed')}")
