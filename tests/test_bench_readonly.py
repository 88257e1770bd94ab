"""Readers never write: ``load_cells`` / ``load_specs`` / ``mlmm report`` open the results database read-only,
create no file beside it, and refuse (untouched) a file that is not an mlmm results database."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mlmm.bench import expand, load_cells, load_specs, open_store, parse_spec
from mlmm.bench.store import NotAResultsDatabase
from mlmm.cli import main

SPEC = """
name: ro-test
datasets: [synthetic]
methods: [masked-mean, zero-fill]
scenarios: [{protocol: entry, rates: [0.2]}]
seeds: [0, 1]
reference: zero-fill
"""
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _result(seed: int) -> dict:
    realised = {role: {"mask_sha256": f"{role}-{seed}", "missing_entry_fraction": 0.2,
                       "complete_sample_fraction": 0.5, "incomplete_sample_fraction": 0.5}
                for role in ("train", "val", "test")}
    return {"record": {"seed": seed, "metrics": {"accuracy": 0.5 + seed / 10, "macro_f1": 0.4}, "realised": realised,
                       "subsets": {}, "best_epoch": 1, "train_seconds": 1.0, "epochs_run": 2, "n_parameters": 10},
            "versions": {"mlmm": "0"}, "worker": "h:1", "started_at": "2026-01-01T00:00:00+00:00",
            "finished_at": "2026-01-01T00:00:01+00:00", "wall_seconds": 1.0, "cpu_seconds": 1.0}


def _write_db(db: Path, close: bool = True):
    spec = parse_spec(SPEC, "s.yaml")
    store = open_store(db)
    digest = store.add_spec(spec, SPEC)
    run = store.start_run(spec, digest, "local", 1, 4, 0, {})
    for cell in expand(spec):
        store.write_cell(cell, _result(cell.seed), digest, run)
    if close:
        store.close()
    return store


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def db(tmp_path) -> Path:
    path = tmp_path / "r.sqlite"
    _write_db(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.sqlite"]  # a closed writer leaves no side file
    return path


def test_readers_leave_the_folder_byte_identical(db) -> None:
    before = _snapshot(db.parent)
    assert len(load_cells(db)) == 4 and load_specs(db)[0]["name"] == "ro-test"
    assert main(["report", str(db), "-o", str(db.parent.parent / (db.parent.name + "-out"))]) == 0
    assert _snapshot(db.parent) == before  # no -wal / -shm, no schema, no journal-mode change


def _read_only_runner(folder: Path) -> list[str] | None:
    """A command prefix that runs a program with ``folder`` truly read-only: as a normal user, chmod 555
    is enough; root writes anyway, so for root a read-only bind mount in a private mount namespace
    (``unshare -m``). None where neither is possible."""
    if os.geteuid() != 0:
        return []
    if shutil.which("unshare") is None:
        return None
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind -o ro {folder} {folder} && "
                            f"! touch {folder}/probe 2>/dev/null"], capture_output=True)
    if probe.returncode != 0:
        return None
    return ["unshare", "-m", "sh", "-c", f'mount --bind -o ro {folder} {folder} && exec "$0" "$@"']


@pytest.mark.slow  # a fresh interpreter importing torch and matplotlib: ~20 s on the loaded 2-core machine
def test_report_on_a_database_in_a_read_only_folder(db, tmp_path) -> None:
    folder, out = tmp_path / "ro", tmp_path / "out"
    folder.mkdir()
    shutil.copy(db, folder / "r.sqlite")
    prefix = _read_only_runner(folder)
    if prefix is None:
        pytest.skip("cannot make a folder read-only for root here (no unshare / mount namespace)")
    os.chmod(folder, 0o555)
    before = _snapshot(folder)
    code = ("import sys; from mlmm.cli import main; from mlmm.bench import load_cells;"
            f"assert len(load_cells({str(folder / 'r.sqlite')!r})) == 4;"
            f"sys.exit(main(['report', {str(folder / 'r.sqlite')!r}, '-o', {str(out)!r}]))")
    try:
        done = subprocess.run(prefix + [sys.executable, "-c", code], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": SRC})
    finally:
        os.chmod(folder, 0o755)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "index.html").exists()
    assert _snapshot(folder) == before


def test_a_reader_is_not_blocked_by_a_writer_holding_the_lock(db) -> None:
    """A reader takes no write lock: it reads while a writer is inside a transaction."""
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("DELETE FROM cells WHERE seed=1")  # not committed: readers still see 4 cells
    got: list = []
    thread = threading.Thread(target=lambda: got.append(len(load_cells(db))), daemon=True)
    thread.start()
    thread.join(timeout=15)
    writer.execute("ROLLBACK")
    writer.close()
    assert got == [4], "the reader waited on the writer's lock"


def test_a_killed_writers_wal_is_read_and_no_file_is_added(tmp_path) -> None:
    live = tmp_path / "live"
    live.mkdir()
    store = _write_db(live / "r.sqlite", close=False)  # a writer still running: its rows are in the -wal
    left = tmp_path / "left"
    left.mkdir()
    for name in ("r.sqlite", "r.sqlite-wal", "r.sqlite-shm"):  # what a writer killed now leaves behind
        shutil.copy(live / name, left / name)
    store.close()
    names = sorted(p.name for p in left.iterdir())
    assert len(load_cells(left / "r.sqlite")) == 4
    assert sorted(p.name for p in left.iterdir()) == names


def _foreign(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE patients (id INTEGER, name TEXT)")
        conn.execute("INSERT INTO patients VALUES (1, 'x')")
    conn.close()


@pytest.mark.parametrize("kind", ["foreign", "corrupt", "truncated", "empty", "garbage"])
def test_a_file_that_is_not_an_mlmm_database_is_refused_untouched(db, tmp_path, kind, capsys) -> None:
    bad = tmp_path / "bad" / "x.sqlite"
    bad.parent.mkdir()
    if kind == "foreign":
        _foreign(bad)
    elif kind == "corrupt":
        raw = bytearray(db.read_bytes())
        raw[100:] = bytes(len(raw) - 100)  # header kept, every page zeroed
        bad.write_bytes(bytes(raw))
    elif kind == "truncated":
        bad.write_bytes(db.read_bytes()[:len(db.read_bytes()) // 3])
    elif kind == "empty":
        bad.write_bytes(b"")
    else:
        bad.write_bytes(b"SQLite format 3\x00" + b"\xff" * 50)
    before = _snapshot(bad.parent)
    with pytest.raises(OSError, match="x.sqlite"):
        load_cells(bad)
    with pytest.raises(OSError, match="x.sqlite"):
        load_specs(bad)
    capsys.readouterr()
    assert main(["report", str(bad), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlmm: error:") and len(err.strip().splitlines()) == 1 and "x.sqlite" in err
    if kind != "empty":  # an empty file is a valid new SQLite database for a writer
        with pytest.raises(NotAResultsDatabase, match="x.sqlite"):
            open_store(bad)
    assert _snapshot(bad.parent) == before  # byte-identical, no -wal / -shm / journal beside it


def test_reader_is_refused_for_a_folder_or_missing_file(tmp_path) -> None:
    with pytest.raises(OSError, match="does not exist"):
        load_cells(tmp_path / "none.sqlite")
    with pytest.raises(OSError, match="not a file"):
        load_cells(tmp_path)
    assert stat.S_ISDIR(tmp_path.stat().st_mode)
