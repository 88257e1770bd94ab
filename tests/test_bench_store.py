"""The SQLite results store: round trip, no duplicates, specs retrievable, WAL, clear errors."""

from __future__ import annotations

import sqlite3

import pytest

from mlmm.bench import expand, load_cells, load_specs, open_store, parse_spec

SPEC = """
name: store-test
datasets: [synthetic]
methods: [masked-mean, zero-fill]
scenarios: [{protocol: entry, rates: [0.2]}]
seeds: [0, 1]
reference: zero-fill
"""


def fake_result(seed: int) -> dict:
    realised = {role: {"mask_sha256": f"{role}-{seed}", "missing_entry_fraction": 0.2}
                for role in ("train", "val", "test")}
    return {
        "record": {"seed": seed, "metrics": {"accuracy": 0.5 + seed / 10, "macro_f1": 0.4}, "realised": realised,
                   "subsets": {"m0": {"accuracy": 0.3, "macro_f1": 0.2, "n": 10}}, "best_epoch": 3,
                   "train_seconds": 1.5, "epochs_run": 4, "n_parameters": 123,
                   "calibration": {"ece": 0.05}},  # a key added to run_seed's record later flows through
        "versions": {"mlmm": "0.1.0"}, "worker": "host:1", "started_at": "2026-01-01T00:00:00+00:00",
        "finished_at": "2026-01-01T00:00:01+00:00", "wall_seconds": 1.0, "cpu_seconds": 0.9,
    }


def test_round_trip_merges_key_fields_with_the_record(tmp_path) -> None:
    spec = parse_spec(SPEC, "s.yaml")
    cells = expand(spec)
    db = tmp_path / "r.sqlite"
    with open_store(db) as store:
        digest = store.add_spec(spec, SPEC, ["seeds=[0,1]"])
        run = store.start_run(spec, digest, "local", 1, len(cells), 0, {"mlmm": "0.1.0"})
        for cell in cells:
            assert store.write_cell(cell, fake_result(cell.seed), digest, run)
        assert not store.write_cell(cells[0], fake_result(0), digest, run)  # a second write is a no-op
        store.finish_run(run, len(cells))
        assert store.count("store-test") == len(cells) == 4
        assert store.runs()[0]["cells_run"] == 4
    rows = load_cells(db)
    assert len(rows) == 4
    row = next(r for r in rows if r["method"] == "zero-fill" and r["seed"] == 1)
    assert row["spec"] == "store-test" and row["dataset"] == "synthetic" and row["protocol"] == "entry"
    assert row["train_rate"] == row["test_rate"] == 0.2 and row["split"] == "fixed"
    assert row["method_params"] == {} and row["protocol_params"] == {}
    assert row["metrics"]["accuracy"] == pytest.approx(0.6) and row["calibration"] == {"ece": 0.05}
    assert row["subsets"]["m0"]["n"] == 10 and row["n_parameters"] == 123 and row["epochs_run"] == 4
    assert row["config_hash"] == cells[-1].config_hash and len(row["mask_sha256"]) == 64
    assert row["versions"] == {"mlmm": "0.1.0"} and row["finished_at"].startswith("2026")
    assert row["wall_seconds"] == 1.0 and row["cpu_seconds"] == 0.9
    specs = load_specs(db)
    assert len(specs) == 1 and specs[0]["name"] == "store-test" and specs[0]["yaml"] == SPEC
    assert specs[0]["reference"] == "zero-fill" and specs[0]["overrides"] == ["seeds=[0,1]"]
    assert specs[0]["resolved"]["seeds"] == [0, 1]


def test_database_is_wal_and_readable_while_open(tmp_path) -> None:
    db = tmp_path / "r.sqlite"
    with open_store(db):
        mode = sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
        assert load_cells(db) == []


def test_clear_errors_for_bad_paths(tmp_path) -> None:
    with pytest.raises(OSError, match="does not exist"):
        load_cells(tmp_path / "none.sqlite")
    with pytest.raises(OSError, match="folder"):
        open_store(tmp_path / "no" / "r.sqlite")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OSError, match="junk.sqlite"):
        open_store(junk)
