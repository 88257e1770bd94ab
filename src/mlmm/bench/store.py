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

- ``claims``: a lease per cell being computed (the claiming driver's id, a
  heartbeat). Several ``mlmm bench`` drivers on one database split the grid:
  each claims a cell before running it and skips cells another live driver
  holds; a lease whose heartbeat is older than its expiry, or whose owner is
  a dead process on this host, is taken over.
- ``failures``: one row per cell whose fit failed (training diverged, an empty split): its
  reason, never a result. A cell stored later (after a fix) hides its failure row.
- ``fits``: one row per finished fit that came back to a driver (stored, or
  discarded because the cell was already stored), so "every cell trained
  once" can be checked from the store.

Writers (bench drivers) open the database read-write in WAL mode; readers
(``load_cells``, ``load_specs``, ``mlmm report``) open it read-only and never
create a file beside it (see ``ReadOnlyStore``).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .grid import Cell
from .spec import BenchSpec, spec_hash

__all__ = ["NotAResultsDatabase", "ReadOnlyStore", "ResultStore", "load_cells", "load_specs", "open_store",
           "load_failures", "load_fits", "utc_now", "worker_id"]

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
CREATE TABLE IF NOT EXISTS claims (
    spec TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    seed INTEGER NOT NULL,
    worker TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    claimed_at TEXT NOT NULL,
    heartbeat REAL NOT NULL,
    PRIMARY KEY (spec, config_hash, seed)
);
CREATE TABLE IF NOT EXISTS failures (
    spec TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    seed INTEGER NOT NULL,
    dataset TEXT NOT NULL,
    method_label TEXT NOT NULL,
    scenario TEXT NOT NULL,
    label TEXT NOT NULL,
    reason TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    driver TEXT NOT NULL,
    failed_at TEXT NOT NULL,
    PRIMARY KEY (spec, config_hash, seed)
);
CREATE TABLE IF NOT EXISTS fits (
    fit_id INTEGER PRIMARY KEY AUTOINCREMENT,
    spec TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    seed INTEGER NOT NULL,
    run_id INTEGER NOT NULL,
    driver TEXT NOT NULL,
    worker TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    stored INTEGER NOT NULL
);
"""

#: Tables every mlmm results database has (the tables added later are created by the next writer).
_REQUIRED_TABLES = ("meta", "specs", "runs", "cells")
#: A lease not refreshed for this long is taken over by another driver (the owner refreshes every third of it).
LEASE_SECONDS = 60.0

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


class NotAResultsDatabase(OSError):
    """The file is not an mlmm results database (empty, not SQLite, corrupt, or without mlmm's tables)."""


def worker_id() -> str:
    """This driver's id in ``claims``: ``host:pid:random`` (host and pid let a driver on the same host
    see at once that the owner of a lease is dead; the random part tells apart two runs of one process)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _owner_alive(worker: str, heartbeat: float, now: float, lease_seconds: float) -> bool:
    """Whether the driver holding a lease may still be running its cell."""
    if now - heartbeat > lease_seconds:
        return False
    host, _, rest = worker.partition(":")
    pid = rest.split(":")[0]
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by someone else
            return True
    return True


class _Reads:
    """The queries shared by the writer (``ResultStore``) and the reader (``ReadOnlyStore``)."""

    _conn: sqlite3.Connection

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

    def fits(self, spec: str | None = None) -> list[dict]:
        """Every fit that came back to a driver (``stored`` False: discarded, the cell was already in).
        A database written before fits were logged has none."""
        if not self._has_table("fits"):
            return []
        query, args = "SELECT * FROM fits", ()
        if spec is not None:
            query, args = query + " WHERE spec=?", (spec,)
        cur = self._conn.execute(query + " ORDER BY fit_id", args)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur]

    def failures(self, spec: str | None = None) -> list[dict]:
        """Cells recorded as failed (and not stored since): spec, config_hash, seed, dataset,
        method_label, scenario, label, reason, run_id, driver, failed_at. None before failures existed."""
        if not self._has_table("failures"):
            return []
        query = ("SELECT * FROM failures f WHERE NOT EXISTS (SELECT 1 FROM cells c WHERE c.spec=f.spec "
                 "AND c.config_hash=f.config_hash AND c.seed=f.seed)")
        args: tuple = ()
        if spec is not None:
            query, args = query + " AND f.spec=?", (spec,)
        cur = self._conn.execute(query + " ORDER BY spec, dataset, scenario, method_label, seed", args)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur]

    def count(self, spec: str | None = None) -> int:
        if spec is None:
            return int(self._conn.execute("SELECT COUNT(*) FROM cells").fetchone()[0])
        return int(self._conn.execute("SELECT COUNT(*) FROM cells WHERE spec=?", (spec,)).fetchone()[0])

    def _has_table(self, name: str) -> bool:
        return self._conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                                  (name,)).fetchone() is not None

    def close(self) -> None:
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


class ResultStore(_Reads):
    """A benchmark results database at ``path``, opened for writing (created with its schema if new)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise OSError(f"results database {str(self.path)!r}: folder {str(self.path.parent)!r} does not exist")
        if self.path.exists():
            _check_header(self.path)  # never turn a foreign or corrupt file into a database
            if self.path.stat().st_size:
                with ReadOnlyStore(self.path, allow_blank=True):  # refuses an SQLite file without mlmm's tables
                    pass
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

    def _transaction(self) -> ResultStore._Tx:
        return ResultStore._Tx(self._conn)

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

    def claim(self, cell: Cell, worker: str, run_id: int, lease_seconds: float = LEASE_SECONDS) -> str:
        """Try to take ``cell`` for ``worker``: ``"claimed"`` (run it), ``"done"`` (already stored)
        or ``"held"`` (another live driver holds its lease). An expired lease, or one whose owner
        is a dead process on this host, is taken over."""
        key = (cell.spec, cell.config_hash, cell.seed)
        now = time.time()
        with self._transaction() as c:
            if c.execute("SELECT 1 FROM cells WHERE spec=? AND config_hash=? AND seed=?", key).fetchone():
                return "done"
            row = c.execute("SELECT worker, heartbeat FROM claims WHERE spec=? AND config_hash=? AND seed=?",
                            key).fetchone()
            if row is not None and row[0] != worker and _owner_alive(row[0], row[1], now, lease_seconds):
                return "held"
            c.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?, ?, ?, ?)",
                      (*key, worker, run_id, utc_now(), now))
        return "claimed"

    def release(self, worker: str, cell: Cell | None = None) -> None:
        """Drop ``worker``'s lease on ``cell`` (all its leases if None)."""
        with self._transaction() as c:
            if cell is None:
                c.execute("DELETE FROM claims WHERE worker=?", (worker,))
            else:
                c.execute("DELETE FROM claims WHERE spec=? AND config_hash=? AND seed=? AND worker=?",
                          (cell.spec, cell.config_hash, cell.seed, worker))

    def write_cell(self, cell: Cell, result: dict, spec_digest: str, run_id: int, driver: str = "") -> bool:
        """Store a finished cell in one transaction (with its ``fits`` row; its lease is dropped).
        ``result`` is what ``execute_cell`` returns (``record``, ``versions``, ``worker``, ``started_at``,
        ``finished_at``, ``wall_seconds``, ``cpu_seconds``). Returns False (and stores only the
        ``fits`` row, marked not stored) if the cell was already stored."""
        record = result["record"]
        row = (cell.spec, cell.config_hash, cell.seed, cell.dataset, cell.method, cell.method_label,
               json.dumps(cell.method_params, sort_keys=True), cell.protocol,
               json.dumps(cell.protocol_params, sort_keys=True), cell.train_rate, cell.test_rate, cell.scenario,
               cell.split, json.dumps(cell.identity()["train"], sort_keys=True), combined_mask_sha256(record),
               json.dumps(record), json.dumps(result["versions"]), spec_digest, run_id, result["worker"],
               result["started_at"], result["finished_at"], result["wall_seconds"], result.get("cpu_seconds"))
        key = (cell.spec, cell.config_hash, cell.seed)
        with self._transaction() as c:
            cur = c.execute(f"INSERT OR IGNORE INTO cells VALUES ({', '.join('?' * len(row))})", row)
            stored = cur.rowcount == 1
            c.execute("INSERT INTO fits (spec, config_hash, seed, run_id, driver, worker, finished_at, stored)"
                      " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (*key, run_id, driver, result["worker"],
                                                          result["finished_at"], int(stored)))
            c.execute("DELETE FROM claims WHERE spec=? AND config_hash=? AND seed=?", key)
            return stored


    def write_failure(self, cell: Cell, reason: str, run_id: int, driver: str = "") -> None:
        """Record that ``cell`` failed (``reason``: one line), dropping its lease; not a result."""
        key = (cell.spec, cell.config_hash, cell.seed)
        with self._transaction() as c:
            c.execute("INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (*key, cell.dataset, cell.method_label, cell.scenario, cell.label(), reason, run_id, driver,
                       utc_now()))
            c.execute("DELETE FROM claims WHERE spec=? AND config_hash=? AND seed=?", key)


class Heartbeat:
    """Refreshes ``worker``'s leases in the database at ``path`` every ``interval`` seconds, from a thread
    with its own connection (the driver's thread may wait minutes on a cell). A context manager."""

    def __init__(self, path: str | Path, worker: str, interval: float) -> None:
        self.path, self.worker, self.interval = Path(path), worker, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="mlmm-lease-heartbeat")

    def _beat(self) -> None:
        conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        try:
            while not self._stop.wait(self.interval):
                try:
                    conn.execute("UPDATE claims SET heartbeat=? WHERE worker=?", (time.time(), self.worker))
                except sqlite3.OperationalError:  # busy for a minute: the next beat tries again
                    pass
        finally:
            conn.close()

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()


_SQLITE_HEADER = b"SQLite format 3\x00"


def _check_header(path: Path) -> None:
    """Refuse, without opening it with SQLite, a file that cannot be an SQLite database (an empty file may be
    one just created: the writer checks it; the reader refuses it)."""
    with open(path, "rb") as f:
        head = f.read(100)
    if head and (len(head) < 100 or not head.startswith(_SQLITE_HEADER)):
        raise NotAResultsDatabase(f"{str(path)!r} is not an mlmm results database (not an SQLite file)")


class ReadOnlyStore(_Reads):
    """A results database opened read-only: no schema, no write lock, no journal change, and no file
    created beside it.

    With no ``-wal`` file beside it (no writer active, none killed mid-run) it is opened ``immutable``:
    SQLite then needs no ``-shm`` either, so it reads from a folder it cannot write. With a ``-wal`` file
    (a writer running, or killed) it is opened ``mode=ro`` and reads the committed transactions of the WAL
    through the ``-shm`` file the writer made. A file that is not an mlmm database raises
    ``NotAResultsDatabase`` and is left as it was.
    """

    def __init__(self, path: str | Path, *, allow_blank: bool = False) -> None:
        """``allow_blank``: accept an SQLite file with no table at all (a writer killed before its
        first transaction leaves one); the writer then creates the schema."""
        self.path = Path(path)
        if not self.path.exists():
            raise OSError(f"results database {str(self.path)!r} does not exist")
        if not self.path.is_file():
            raise OSError(f"results database {str(self.path)!r} is not a file")
        _check_header(self.path)
        if self.path.stat().st_size == 0:
            raise NotAResultsDatabase(f"{str(self.path)!r} is empty, not an mlmm results database")
        self.immutable = not _side_file(self.path, "-wal").exists()
        uri = self.path.resolve().as_uri() + ("?mode=ro&immutable=1" if self.immutable else "?mode=ro")
        try:
            self._conn = sqlite3.connect(uri, uri=True, timeout=60.0, isolation_level=None)
        except sqlite3.Error as err:
            raise OSError(f"results database {str(self.path)!r}: {err}") from None
        try:
            tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            missing = [t for t in _REQUIRED_TABLES if t not in tables]
            if allow_blank and not tables:
                return
            if missing:
                raise NotAResultsDatabase(f"{str(self.path)!r} is an SQLite database but not an mlmm results "
                                          f"database (no table {', '.join(missing)})")
            row = self._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None or int(row[0]) != SCHEMA_VERSION:
                raise NotAResultsDatabase(f"results database {str(self.path)!r} has schema version "
                                          f"{None if row is None else row[0]}; this mlmm reads {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as err:
            self._conn.close()
            raise NotAResultsDatabase(f"{str(self.path)!r} is not a readable mlmm results database "
                                      f"(corrupt or truncated: {err})") from None
        except NotAResultsDatabase:
            self._conn.close()
            raise


def _side_file(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _fingerprint(path: Path) -> tuple:
    st = path.stat()
    return st.st_size, st.st_mtime_ns, _side_file(path, "-wal").exists()


def _read(path: str | Path, query: Callable[[_Reads], Any]) -> Any:
    """Run ``query`` on a read-only open of ``path``. An immutable open is only right while nobody writes:
    if the file changed during the read (a writer started and checkpointed), read again."""
    p = Path(path)
    for _ in range(5):
        before = _fingerprint(p) if p.exists() else None
        with ReadOnlyStore(p) as store:
            try:
                out = query(store)
            except sqlite3.DatabaseError as err:
                raise NotAResultsDatabase(f"{str(p)!r} is not a readable mlmm results database "
                                          f"(corrupt or truncated: {err})") from None
        if not store.immutable or _fingerprint(p) == before:
            return out
    return out


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
    """Open (or create) the results database at ``path`` for writing."""
    return ResultStore(path)


def load_cells(path: str | Path, spec: str | None = None) -> list[dict]:
    """Every finished cell of the database at ``path`` (of one ``spec`` if given), as plain dicts:
    key fields (spec, dataset, method, method_label, method_params, protocol, protocol_params,
    train_rate, test_rate, scenario, split, seed, config_hash, mask_sha256, versions, timestamps)
    merged with the full ``run_seed`` record (metrics, subsets, realised, train_seconds, ...).
    Read-only: the file and its folder are left as they were."""
    return _read(path, lambda store: store.cells(spec))


def load_specs(path: str | Path) -> list[dict]:
    """Every spec run into the database at ``path`` (name, yaml, overrides, resolved, reference). Read-only."""
    return _read(path, lambda store: store.specs())


def load_fits(path: str | Path, spec: str | None = None) -> list[dict]:
    """Every fit logged in the database at ``path`` (one per fit that came back to a driver). Read-only."""
    return _read(path, lambda store: store.fits(spec))


def load_failures(path: str | Path, spec: str | None = None) -> list[dict]:
    """Cells recorded as failed in the database at ``path`` and not stored since (see ``failures``). Read-only."""
    return _read(path, lambda store: store.failures(spec))
