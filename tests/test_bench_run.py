"""Running grids: skip finished cells, verify mask checksums, a 2-worker pool, kill -9 and resume, reproduce."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlmm.bench import MaskMismatch, load_cells, load_specs, parse_spec, run_bench
from mlmm.cli import main

TINY = """
name: tiny
datasets: [synthetic]
split: random
methods: [masked-mean, zero-fill]
scenarios:
  - protocol: entry
    rates: [0.0, 0.3]
seeds: [0, 1]
train: {max_epochs: 2, patience: 2}
subsets: false
reference: zero-fill
published:
  - method: SomePaper
    source: Someone et al. 2020
    protocol: entry
    values: [{rate: 0.3, mean: 50.0, std: 1.0}]
    ours: masked-mean
    note: their features were scaled differently
"""


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    """The tiny grid run once in this process (workers=1)."""
    db = tmp_path_factory.mktemp("serial") / "r.sqlite"
    outcome = run_bench(parse_spec(TINY, "tiny.yaml"), db, spec_text=TINY, workers=1)
    return db, outcome


def _metrics(cells: list[dict]) -> dict:
    return {(c["method"], c["scenario"], c["seed"]): c["metrics"] for c in cells}


def test_serial_run_stores_every_cell_and_rerun_skips_them(serial) -> None:
    db, outcome = serial
    assert outcome.cells_total == outcome.cells_run == 8 and outcome.cells_skipped == 0
    cells = load_cells(db)
    assert len(cells) == 8 and {c["scenario"] for c in cells} == {"entry 0", "entry 0.3"}
    for c in cells:
        assert 0 <= c["metrics"]["accuracy"] <= 1
        assert c["realised"]["test"]["missing_entry_fraction"] == pytest.approx(c["test_rate"], abs=0.02)
        assert c["versions"]["torch"] and c["train_seconds"] > 0
    again = run_bench(parse_spec(TINY, "tiny.yaml"), db, spec_text=TINY, workers=1)
    assert again.cells_run == 0 and again.cells_skipped == 8
    assert _metrics(again.cells) == _metrics(cells)
    # More seeds: only the new seed's cells run.
    more = run_bench(parse_spec(TINY, "tiny.yaml", ["seeds=0-2", "methods=[zero-fill]"]), db, workers=1)
    assert more.cells_total == 6 and more.cells_run == 2 and more.cells_skipped == 4
    assert len(load_specs(db)) == 2


def test_a_changed_mask_is_caught_on_rerun(serial, tmp_path) -> None:
    db = tmp_path / "copy.sqlite"
    src = sqlite3.connect(serial[0])
    src.backup(dst := sqlite3.connect(db))
    src.close()
    record = json.loads(dst.execute("SELECT record FROM cells WHERE seed=1 LIMIT 1").fetchone()[0])
    record["realised"]["test"]["mask_sha256"] = "0" * 64
    dst.execute("UPDATE cells SET record=? WHERE seed=1 AND rowid=(SELECT MIN(rowid) FROM cells WHERE seed=1)",
                (json.dumps(record),))
    dst.commit()
    dst.close()
    with pytest.raises(MaskMismatch, match="test mask checksum 000000000000"):
        run_bench(parse_spec(TINY, "tiny.yaml"), db, workers=1)


def test_pool_of_two_workers_gives_the_serial_results(serial, tmp_path) -> None:
    db = tmp_path / "pool.sqlite"
    outcome = run_bench(parse_spec(TINY, "tiny.yaml"), db, workers=2)
    assert outcome.cells_run == 8
    pooled, alone = _metrics(load_cells(db)), _metrics(load_cells(serial[0]))
    assert pooled == {k: alone[k] for k in pooled}  # bit-identical to the in-process run
    workers = {c["worker"] for c in load_cells(db)}
    # Ran in worker processes (which of the two took which cell is the pool's business).
    assert 1 <= len(workers) <= 2 and str(os.getpid()) not in {w.split(":")[1] for w in workers}


def _count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM cells").fetchone()[0])
    except sqlite3.OperationalError:  # schema not created yet
        return 0


@pytest.mark.slow  # two real CLI processes and a spawned pool: ~20-30 s on an idle 2-core machine (estimate)
def test_killed_with_sigkill_resumes_without_loss_or_duplicates(tmp_path) -> None:
    spec = tmp_path / "grid.yaml"
    spec.write_text(TINY.replace("rates: [0.0, 0.3]", "rates: [0.0, 0.1, 0.2, 0.3]"))  # 16 cells
    db = tmp_path / "r.sqlite"
    argv = [sys.executable, "-m", "mlmm.cli", "bench", str(spec), "--db", str(db), "--workers", "2", "--no-progress"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and _count(db) < 3 and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()  # reaps it and closes its stderr pipe (an open pipe is a ResourceWarning)
    before = {(c["config_hash"], c["seed"]): c["finished_at"] for c in load_cells(db)}
    assert 3 <= len(before) < 16, f"kill came too late to test a resume ({len(before)} cells done)"
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    cells = load_cells(db)
    keys = [(c["config_hash"], c["seed"]) for c in cells]
    assert len(keys) == len(set(keys)) == 16
    # What was finished before the kill was kept, not recomputed.
    after = {(c["config_hash"], c["seed"]): c["finished_at"] for c in cells}
    assert all(after[k] == v for k, v in before.items())
    with sqlite3.connect(db) as conn:
        runs = conn.execute("SELECT cells_skipped, cells_run, finished_at FROM runs ORDER BY run_id").fetchall()
    assert runs[0][2] is None and runs[1][0] == len(before) and runs[1][1] == 16 - len(before)


def test_reproduce_prints_ours_beside_the_published_figures(capsys, tmp_path) -> None:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    db = tmp_path / "r.sqlite"
    code = main(["reproduce", str(spec), "--db", str(db), "--workers", "1", "--set", "seeds=[0]",
                 "--set", "scenarios.0.rates=[0.3]", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "SomePaper" in out and "50.00 ± 1.00" in out and "entry 0.3" in out
    assert "best mlmm" in out and "points" in out
    # The paper's own method (as mlmm implements it) is marked and compared on its own line.
    assert "masked-mean (= SomePaper)" in out
    assert "paper's own method SomePaper: mlmm masked-mean" in out
    assert "note (SomePaper): their features were scaled differently" in out
    code = main(["reproduce", str(spec), "--db", str(db), "--workers", "1", "--set", "seeds=[0]",
                 "--set", "scenarios.0.rates=[0.3]", "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert code == 0 and payload["cells_run"] == 0 and payload["cells_skipped"] == 2
    assert {s["method"] for s in payload["summary"]} == {"masked-mean", "zero-fill"}
    assert payload["published"]["synthetic"][0]["values"] == {"entry 0.3": "50.00 ± 1.00"}


def test_reproduce_lists_and_finds_shipped_specs(capsys) -> None:
    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ("handwritten_cpm", "handwritten_tmc", "handwritten_sample_rate", "basicmotions_subsets"):
        assert name in out


@pytest.mark.parametrize("argv, message", [
    (["bench", "missing.yaml"], "missing.yaml: cannot read the spec"),
    (["reproduce", "no_such_experiment"], "unknown experiment 'no_such_experiment'"),
    (["reproduce", "handwritten_cpm", "--set", "train.max_epoch=1"], "train.max_epoch: unknown key"),
    (["reproduce", "handwritten_cpm", "--set", "seeds=[a]"], "seeds.0"),
    (["reproduce", "handwritten_cpm", "--workers", "0"], "workers must be >= 1"),
    (["reproduce", "handwritten_cpm", "--db", "/no/such/folder/r.sqlite"], "does not exist"),
    (["reproduce"], "give an experiment name"),
    (["reproduce", "handwritten_cpm", "--set", "published.0.ours=no-such"], "published.0.ours"),
])
def test_bad_input_exits_2_with_one_line(capsys, monkeypatch, tmp_path, argv: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(argv)
    _, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "mlmm-bench.sqlite").exists()  # nothing written for bad input


def test_a_failing_cell_is_named_and_the_cells_before_it_are_kept(monkeypatch, tmp_path) -> None:
    from mlmm.bench import CellFailed, backends

    real = backends.execute_cell
    calls = []

    def flaky(payload, threads=None):
        calls.append(payload)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return real(payload, threads)

    monkeypatch.setattr(backends, "execute_cell", flaky)
    spec = parse_spec(TINY, "tiny.yaml", ["seeds=[0]", "methods=[zero-fill]"])
    with pytest.raises(CellFailed, match=r"cell synthetic zero-fill entry 0.3 seed 0 failed: RuntimeError: boom"):
        run_bench(spec, tmp_path / "r.sqlite", workers=1)
    assert [c["scenario"] for c in load_cells(tmp_path / "r.sqlite")] == ["entry 0"]
