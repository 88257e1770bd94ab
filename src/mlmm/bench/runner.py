"""Run a spec's grid into a results store, skipping what is done.

The driver (this module) expands the grid, verifies that every finished
cell's masks still regenerate to the stored checksums, hands the pending
cells to a backend and writes each result to the store the moment it comes
back — one transaction per cell — so a driver killed at any moment loses at
most the cells in flight, and a rerun finishes the grid with no cell lost
and none duplicated.

Several drivers may run one spec on one database at once (two ``mlmm bench``
processes, or one per machine on a shared file system that supports SQLite
locking): each claims a cell (a lease in the store) just before handing it to
its backend and skips the cells another live driver holds, so they split the
grid. At the end a driver waits for the cells others still hold: they are
either stored by their owner, or their lease expires (or its owner is seen
dead on this host) and this driver runs them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..data.registry import load_dataset
from .backends import make_backend
from .execute import mask_checksums, versions
from .grid import Cell, expand
from .spec import BenchSpec
from .store import LEASE_SECONDS, Heartbeat, ResultStore, combined_mask_sha256, worker_id

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
    cells_elsewhere: int = 0  # pending at the start, then stored by another driver on the same database
    cells_waited: int = 0  # of those, cells this driver found held by another's lease and waited for
    worker: str = ""  # this driver's id in the store's claims and fits
    failed: list[str] = field(default_factory=list)  # "cell label: reason" of each cell that failed in this run


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
              verify: bool = True, progress: Callable[..., object] | None = None, source: str = "spec",
              lease_seconds: float = LEASE_SECONDS, poll_seconds: float = 1.0) -> BenchOutcome:
    """Run every pending cell of ``spec`` into the store at ``db``.

    ``progress(total=, initial=)`` returns a tqdm-like bar (``update``, ``set_description``, ``close``);
    None shows nothing. ``verify`` regenerates the masks of finished cells and checks their sha256.
    Raises ``CellFailed`` after storing everything that finished if a cell raises.
    ``lease_seconds``: a cell claimed by a driver whose heartbeat is older than this is taken over
    (the heartbeat beats every third of it); ``poll_seconds``: how often to look at cells held by others.
    """
    start = time.perf_counter()
    for name, value in (("workers", workers), ("threads", threads)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")  # before the database is created
    if lease_seconds <= 0:
        raise ValueError(f"lease_seconds must be > 0, got {lease_seconds}")
    cells = expand(spec, source=source)
    me = worker_id()
    with ResultStore(db) as store, Heartbeat(db, me, lease_seconds / 3):
        digest = store.add_spec(spec, spec_text, overrides)
        done = store.finished(spec.name)
        finished = [c for c in cells if (c.config_hash, c.seed) in done]
        pending = [c for c in cells if (c.config_hash, c.seed) not in done]
        if verify:
            verify_masks(finished, store)
        runner = make_backend(backend, workers, max(1, len(pending)), threads=threads, ray_address=ray_address)
        run_id = store.start_run(spec, digest, runner.name, runner.workers, len(cells), len(finished), versions())
        bar = progress(total=len(cells), initial=len(finished)) if progress else None
        ran, elsewhere, waited, error = 0, 0, set(), None
        failed: list[str] = []
        try:
            todo = pending
            while todo and error is None:
                claimed: list[Cell] = []  # the backend's event index i is the position in this list
                held: list[Cell] = []

                def claim_as_we_go(todo=todo, claimed=claimed, held=held):
                    # Claimed one at a time, when the backend has a free slot: another driver can take the rest.
                    for cell in todo:
                        state = store.claim(cell, me, run_id, lease_seconds)
                        if state == "claimed":
                            claimed.append(cell)
                            yield cell.to_payload()
                        elif state == "held":
                            held.append(cell)
                        else:
                            nonlocal elsewhere
                            elsewhere += 1
                            if bar is not None:
                                bar.update(1)

                ran_now, error = _run_claimed(runner, claim_as_we_go(), claimed, store, digest, run_id, me, bar,
                                              failed)
                ran += ran_now
                waited.update((c.config_hash, c.seed) for c in held)
                if held and error is None:  # wait until their owner stores them or its lease lapses
                    time.sleep(poll_seconds)
                todo = held
        finally:
            if bar is not None:
                bar.close()
            store.release(me)  # leases of cells not finished (an error, Ctrl-C) go back at once
        store.finish_run(run_id, ran)
        if error:
            raise CellFailed(error)
        stored = {(c["config_hash"], c["seed"]): c for c in store.cells(spec.name)}
        # tables then follow the spec's order; failed cells are not results
        in_grid_order = [stored[(c.config_hash, c.seed)] for c in cells if (c.config_hash, c.seed) in stored]
        return BenchOutcome(spec, Path(db), run_id, len(cells), len(finished), ran, time.perf_counter() - start,
                            in_grid_order, elsewhere, len(waited), me, failed)


def _run_claimed(runner, payloads, claimed: list[Cell], store: ResultStore, digest: str, run_id: int, me: str,
                 bar, failed: list[str]) -> tuple[int, str | None]:
    """Hand the lazily claimed ``payloads`` to ``runner``; store each result as it comes back
    (a failed cell in ``failures``, appended to ``failed`` as "label: reason").
    Returns (cells stored, the first error's message or None)."""
    ran, running, error = 0, set(), None
    for event in runner.run(payloads):
        kind, i = event[0], event[1]
        if kind == "start":
            running.add(i)
        elif kind == "done":
            running.discard(i)
            result = event[2]
            if "failed" in result:  # a failed fit: recorded with its reason, never as a result
                store.write_failure(claimed[i], result["failed"], run_id, driver=me)
                failed.append(f"{claimed[i].label()}: {result['failed']}")
            else:
                _check_record(claimed[i], result["record"])
                if store.write_cell(claimed[i], result, digest, run_id, driver=me):
                    ran += 1
            if bar is not None:
                bar.update(1)
        else:
            running.discard(i)
            store.release(me, claimed[i])
            error = error or f"cell {claimed[i].label()} failed: {event[2]}"
        if bar is not None and running:
            bar.set_description(claimed[min(running)].label())
    return ran, error


def _check_record(cell: Cell, record: dict) -> None:
    # A record whose masks do not carry checksums could not be verified later: refuse it now.
    combined_mask_sha256(record)
    if record.get("seed") != cell.seed:
        raise RuntimeError(f"cell {cell.label()}: the record came back for seed {record.get('seed')}")
