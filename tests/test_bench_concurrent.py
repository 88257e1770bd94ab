"""Several bench drivers on one database: cells are claimed through leases, so the drivers split the grid, every
cell is trained once (the store's ``fits`` log says so), and a driver killed with SIGKILL loses nothing."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlmm.bench import expand, load_cells, open_store, parse_spec
from mlmm.bench.store import load_fits, worker_id

SPEC = """
name: lease-test
datasets: [synthetic]
methods: [masked-mean, zero-fill]
scenarios: [{protocol: entry, rates: [0.2]}]
seeds: [0, 1]
"""

GRID24 = """
name: two-drivers
datasets: [synthetic]
split: random
methods: [masked-mean, zero-fill]
scenarios:
  - protocol: entry
    rates: [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
seeds: [0, 1]
train: {max_epochs: 2, patience: 2}
subsets: false
"""


def _result(seed: int) -> dict:
    realised = {role: {"mask_sha256": f"{role}-{seed}"} for role in ("train", "val", "test")}
    return {"record": {"seed": seed, "metrics": {"accuracy": 0.5}, "realised": realised}, "versions": {},
            "worker": "h:1", "started_at": "t0", "finished_at": "t1", "wall_seconds": 1.0, "cpu_seconds": 1.0}


@pytest.fixture
def store(tmp_path):
    spec = parse_spec(SPEC, "s.yaml")
    with open_store(tmp_path / "r.sqlite") as s:
        digest = s.add_spec(spec, SPEC)
        yield s, expand(spec), s.start_run(spec, digest, "local", 1, 4, 0, {}), digest


def test_a_live_lease_is_respected_and_a_stored_cell_is_done(store) -> None:
    s, cells, run, digest = store
    a, b = worker_id(), worker_id()
    assert a != b
    assert s.claim(cells[0], a, run) == "claimed"
    assert s.claim(cells[0], b, run) == "held"  # a is this very process: alive
    assert s.claim(cells[0], a, run) == "claimed"  # its own lease
    assert s.write_cell(cells[0], _result(cells[0].seed), digest, run, driver=a)
    assert s.claim(cells[0], b, run) == "done"
    assert not s._conn.execute("SELECT * FROM claims").fetchall()  # storing the cell dropped its lease
    assert not s.write_cell(cells[0], _result(cells[0].seed), digest, run, driver=b)  # a late duplicate
    fits = load_fits(s.path)
    assert [(f["driver"], f["stored"]) for f in fits] == [(a, 1), (b, 0)]


def test_an_expired_or_dead_owners_lease_is_taken_over(store) -> None:
    s, cells, run, _ = store
    me = worker_id()
    s.claim(cells[0], me, run)
    s._conn.execute("UPDATE claims SET heartbeat = heartbeat - 120")  # no beat for two minutes
    other = worker_id()
    assert s.claim(cells[0], other, run, lease_seconds=60) == "claimed"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ghost = f"{me.split(':')[0]}:{dead.pid}:deadbeef"  # a driver on this host whose process is gone
    assert s.claim(cells[1], ghost, run) == "claimed"
    assert s.claim(cells[1], me, run) == "claimed"  # fresh heartbeat, but its owner is dead
    s.release(me)  # all of its leases
    assert [r[0] for r in s._conn.execute("SELECT worker FROM claims")] == [other]


def _argv(spec: Path, db: Path) -> list[str]:
    return [sys.executable, "-m", "mlmm.cli", "bench", str(spec), "--db", str(db), "--workers", "1", "--no-progress"]


def _footer(stdout: str) -> dict[str, int]:
    m = re.search(r"(\d+) cells: (\d+) run, (\d+) already in .*?(?:, (\d+) run by another process)?"
                  r"(?:, \d+ found held.*)? \(\d+ s\)", stdout)
    assert m, stdout
    return {"total": int(m[1]), "run": int(m[2]), "skipped": int(m[3]), "elsewhere": int(m[4] or 0)}


def _stored(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM cells").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def _assert_each_cell_trained_once(db: Path) -> None:
    cells, fits = load_cells(db), load_fits(db)
    keys = [(c["config_hash"], c["seed"]) for c in cells]
    assert len(keys) == len(set(keys)) == 24
    assert len(fits) == 24 and all(f["stored"] for f in fits)  # 24 fits came back, none was thrown away
    assert sorted((f["config_hash"], f["seed"]) for f in fits) == sorted(keys)


@pytest.mark.slow  # two CLI processes train 24 tiny cells: ~40 s on the loaded 2-core machine
def test_two_bench_processes_split_a_grid_and_train_each_cell_once(tmp_path) -> None:
    spec, db = tmp_path / "grid.yaml", tmp_path / "r.sqlite"
    spec.write_text(GRID24)
    open_store(db).close()  # the schema exists before both start (they would also create it safely)
    procs = [subprocess.Popen(_argv(spec, db), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    _assert_each_cell_trained_once(db)
    a, b = (_footer(o[0]) for o in outs)
    assert a["run"] + b["run"] == 24 and a["run"] > 0 and b["run"] > 0  # they split the work
    assert a["elsewhere"] == b["run"] and b["elsewhere"] == a["run"]  # each footer counts the other's cells


@pytest.mark.slow  # as above, plus a resume: ~60 s
@pytest.mark.parametrize("victim", [0, 1])
def test_killing_either_of_two_bench_processes_loses_and_duplicates_nothing(tmp_path, victim) -> None:
    spec, db = tmp_path / "grid.yaml", tmp_path / "r.sqlite"
    spec.write_text(GRID24)
    open_store(db).close()
    procs = [subprocess.Popen(_argv(spec, db), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    deadline = time.time() + 300
    while time.time() < deadline and _stored(db) < 4 + 4 * victim and procs[victim].poll() is None:
        time.sleep(0.05)
    os.kill(procs[victim].pid, signal.SIGKILL)  # it dies holding a lease on the cell it was training
    procs[victim].communicate()
    survivor = procs[1 - victim].communicate(timeout=600)
    assert procs[1 - victim].returncode == 0, survivor[1][-2000:]
    _assert_each_cell_trained_once(db)  # the survivor took over the dead driver's lease at once
    again = subprocess.run(_argv(spec, db), capture_output=True, text=True)
    assert again.returncode == 0 and _footer(again.stdout)["run"] == 0 and _footer(again.stdout)["skipped"] == 24
    _assert_each_cell_trained_once(db)
