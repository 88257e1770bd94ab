"""The results store: one embedded SQLite database (WAL journal) per benchmark.

Tables:

- ``specs``: every spec ever run (name, its YAML text, the ``--set`` overrides,
  the validated spec as JSON, its ``reference`` method), keyed by the
  validated spec's sha256.
- ``runs``: one row per ``mlmm bench`` invocation (spec, backend, workers,
  start / end, how many cells ran and were skipped, versions).
- ``cells``: one row per finished (spec, config_hash, seed) cell, written in a
  single transaction when the cell finishes, so a killed run leaves either
  the whole row or nothing. The ``run_seed`` record is stored as JSON, so
  keys added to it later flow through to ``load_cells`` untouched.

One process writes (the bench driver); readers may open the database at any
time (WAL lets them read while it writes). A second writer waits on SQLite's
lock (``busy_timeout``) rather than failing.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from .grid import Cell
from .spec import BenchSpec, spec_hash

__all__ = ["ResultStore", "load_cells", "load_specs", "open_store", "utc_now"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS specs (
    spec_hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    yaml TEXT NOT NULL,
    overrides TEXT NOT NULL,
    resolved TEXT NOT NULL,
    reference TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT,
    spec TEXT NOT NULL,
    spec_hash TEXT NOT NULL REFERENCES specs(spec_hash),
    backend TEXT NOT NULL,
    workers INTEGER,
    cells_total INTEGER NOT NULL,
    cells_skipped INTEGER NOT NULL,
    cells_run INTEGER,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    versions TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cells (
    spec TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    seed INTEGER NOT NULL,
    dataset TEXT NOT NULL,
    method TEXT NOT NULL,
    method_label TEXT NOT NULL,
    method_params TEXT NOT NULL,
    protocol TEXT NOT NULL,
    protocol_params TEXT NOT NULL,
    train_rate REAL,
    test_rate REAL,
    scenario TEXT NOT NULL,
    split TEXT NOT NULL,
    train_config TEXT NOT NULL,
    mask_sha256 TEXT NOT NULL,
    record TEXT NOT NULL,
    versions TEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    worker TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    wall_seconds REAL NOT NULL,
    cpu_seconds REAL,
    PRIMARY KEY (spec, config_hash, seed)
);
CREATE INDEX IF NOT EXISTS cells_by_method ON cells (spec, dataset, method_label, scenario);
"""

#: The cell columns ``load_cells`` returns besides the record (JSON columns decoded).
_KEY_COLUMNS = ("spec", "config_hash", "seed", "dataset", "method", "method_label", "method_params", "protocol",
                "protocol_params", "train_rate", "test_rate", "scenario", "split", "train_config", "mask_sha256",
                "versions", "spec_hash", "run_id", "worker", "started_at", "finished_at", "wall_seconds",
                "cpu_seconds")
_JSON_COLUMNS = {"method_params", "protocol_params", "train_config", "versions"}


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def combined_mask_sha256(record: dict) -> str:
    """One checksum over the train / val / test mask checksums of a run_seed record."""
    joined = ";".join(f"{role}:{record['realised'][role]['mask_sha256']}" for role in ("train", "val", "test"))
    return hashlib.sha256(joined.encode()).hexdigest()


class ResultStore:
    """A benchmark results database at ``path`` (created with its schema if new)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise OSError(f"results database {str(self.path)!r}: folder {str(self.path.parent)!r} does not exist")
        try:
            self._conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable against a killed process in WAL mode (only power loss can drop the last commit).
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            with self._transaction():
                for statement in _statements():  # executescript would COMMIT our transaction
                    self._conn.execute(statement)
                row = self._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                if row is None:
                    self._conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                elif int(row[0]) != SCHEMA_VERSION:
                    raise OSError(f"results database {str(self.path)!r} has schema version {row[0]}; "
                                  f"this mlmm reads version {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as err:
            raise OSError(f"results database {str(self.path)!r}: {err}") from None

    # ----------------------------------------------------------------- plumbing

    class _Tx:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self.conn = conn

        def __enter__(self) -> sqlite3.Connection:
            # IMMEDIATE takes the write lock up front, so two writers queue instead of deadlocking.
            self.conn.execute("BEGIN IMMEDIATE")
            return self.conn

        def __exit__(self, exc_type, *_: Any) -> None:
            self.conn.execute("ROLLBACK" if exc_type else "COMMIT")

    def _transaction(self) -> "ResultStore._Tx":
        return ResultStore._Tx(self._conn)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ writing

    def add_spec(self, spec: BenchSpec, text: str, overrides: list[str] | tuple[str, ...] = ()) -> str:
        """Record ``spec`` (its YAML text and overrides); returns its hash. Idempotent."""
        digest = spec_hash(spec)
        with self._transaction() as c:
            c.execute("INSERT OR IGNORE INTO specs VALUES (?, ?, ?, ?, ?, ?, ?)",
                      (digest, spec.name, text, json.dumps(list(overrides)),
                       json.dumps(spec.model_dump(mode="json")), spec.reference, utc_now()))
        return digest

    def start_run(self, spec: BenchSpec, digest: str, backend: str, workers: int | None, cells_total: int,
                  cells_skipped: int, versions: dict) -> int:
        with self._transaction() as c:
            cur = c.execute(
                "INSERT INTO runs (spec, spec_hash, backend, workers, cells_total, cells_skipped, started_at, versions)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (spec.name, digest, backend, workers, cells_total, cells_skipped, utc_now(), json.dumps(versions)))
            return int(cur.lastrowid)

    def finish_run(self, run_id: int, cells_run: int) -> None:
        with self._transaction() as c:
            c.execute("UPDATE runs SET finished_at=?, cells_run=? WHERE run_id=?", (utc_now(), cells_run, run_id))

    def write_cell(self, cell: Cell, result: dict, spec_digest: str, run_id: int) -> bool:
        """Store a finished cell in one transaction. ``result`` is what ``execute_cell`` returns
        (``record``, ``versions``, ``worker``, ``started_at``, ``finished_at``, ``wall_seconds``, ``cpu_seconds``).
        Returns False (and changes nothing) if the cell was already stored."""
        record = result["record"]
        row = (cell.spec, cell.config_hash, cell.seed, cell.dataset, cell.method, cell.method_label,
               json.dumps(cell.method_params, sort_keys=True), cell.protocol,
               json.dumps(cell.protocol_params, sort_keys=True), cell.train_rate, cell.test_rate, cell.scenario,
               cell.split, json.dumps(cell.identity()["train"], sort_keys=True), combined_mask_sha256(record),
               json.dumps(record), json.dumps(result["versions"]), spec_digest, run_id, result["worker"],
               result["started_at"], result["finished_at"], result["wall_seconds"], result.get("cpu_seconds"))
        with self._transaction() as c:
            cur = c.execute(f"INSERT OR IGNORE INTO cells VALUES ({', '.join('?' * len(row))})", row)
            return cur.rowcount == 1

    # ------------------------------------------------------------------ reading

    def finished(self, spec: str) -> dict[tuple[str, int], str]:
        """(config_hash, seed) -> combined mask checksum of every stored cell of ``spec``."""
        rows = self._conn.execute("SELECT config_hash, seed, mask_sha256 FROM cells WHERE spec=?", (spec,))
        return {(h, int(s)): m for h, s, m in rows}

    def stored_record(self, spec: str, config_hash: str, seed: int) -> dict | None:
        row = self._conn.execute("SELECT record FROM cells WHERE spec=? AND config_hash=? AND seed=?",
                                 (spec, config_hash, seed)).fetchone()
        return None if row is None else json.loads(row[0])

    def cells(self, spec: str | None = None) -> list[dict]:
        """Every stored cell (of ``spec`` if given): key fields merged with the run_seed record."""
        query = f"SELECT {', '.join(_KEY_COLUMNS)}, record FROM cells"
        args: tuple = ()
        if spec is not None:
            query += " WHERE spec=?"
            args = (spec,)
        query += " ORDER BY spec, dataset, scenario, method_label, seed"
        return [_row_to_cell(row) for row in self._conn.execute(query, args)]

    def specs(self) -> list[dict]:
        """Every spec run into this store: name, yaml text, overrides, resolved spec, reference, hash."""
        rows = self._conn.execute(
            "SELECT spec_hash, name, yaml, overrides, resolved, reference, created_at FROM specs ORDER BY created_at")
        return [{"spec_hash": h, "name": n, "yaml": y, "overrides": json.loads(o), "resolved": json.loads(r),
                 "reference": ref, "created_at": t} for h, n, y, o, r, ref, t in rows]

    def runs(self) -> list[dict]:
        cur = self._conn.execute("SELECT * FROM runs ORDER BY run_id")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur]

    def count(self, spec: str | None = None) -> int:
        if spec is None:
            return int(self._conn.execute("SELECT COUNT(*) FROM cells").fetchone()[0])
        return int(self._conn.execute("SELECT COUNT(*) FROM cells WHERE spec=?", (spec,)).fetchone()[0])


def _statements() -> Iterator[str]:
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            yield statement


def _row_to_cell(row: tuple) -> dict:
    out: dict[str, Any] = {}
    for name, value in zip(_KEY_COLUMNS, row[:-1]):
        out[name] = json.loads(value) if name in _JSON_COLUMNS else value
    record = json.loads(row[-1])
    # Key fields first, then the whole record (metrics, subsets, realised, timings and any newer keys).
    return {**out, **record, "seed": out["seed"]}


def open_store(path: str | Path) -> ResultStore:
    """Open (or create) the results database at ``path``."""
    return ResultStore(path)


def load_cells(path: str | Path, spec: str | None = None) -> list[dict]:
    """Every finished cell of the database at ``path`` (of one ``spec`` if given), as plain dicts:
    key fields (spec, dataset, method, method_label, method_params, protocol, protocol_params,
    train_rate, test_rate, scenario, split, seed, config_hash, mask_sha256, versions, timestamps)
    merged with the full ``run_seed`` record (metrics, subsets, realised, train_seconds, ...)."""
    if not Path(path).exists():
        raise OSError(f"results database {str(path)!r} does not exist")
    with ResultStore(path) as store:
        return store.cells(spec)


def load_specs(path: str | Path) -> list[dict]:
    """Every spec run into the database at ``path`` (name, yaml, overrides, resolved, reference)."""
    if not Path(path).exists():
        raise OSError(f"results database {str(path)!r} does not exist")
    with ResultStore(path) as store:
        return store.specs()
