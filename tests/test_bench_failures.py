"""A failed fit is never a result: `mlmm bench` records a diverged cell as failed with its
reason (store table `failures`), runs the rest of the grid, exits 2 naming it, and
`mlmm report` lists failed cells apart. Found: such cells were stored at chance accuracy."""

from __future__ import annotations

import pytest

from mlmm.bench import execute as execute_module
from mlmm.bench import load_cells, parse_spec, run_bench
from mlmm.bench.store import load_failures
from mlmm.errors import TrainingDiverged
from mlmm.report import write_report

GRID = """
name: fail
datasets: [synthetic]
split: random
methods: [masked-mean, zero-fill]
scenarios: [{protocol: entry, rates: [0.0]}]
seeds: [0]
train: {max_epochs: 1, patience: 1}
subsets: false
"""


@pytest.fixture()
def one_diverges(monkeypatch):
    real = execute_module.run_seed

    def run_seed(config, seed):
        if config.method == "zero-fill":
            raise TrainingDiverged("training diverged: loss term 'task' is non-finite at epoch 1, step 3 of stage "
                                   "'main'", epoch=1, stage="main", term="task")
        return real(config, seed)

    monkeypatch.setattr(execute_module, "run_seed", run_seed)


def test_a_diverged_cell_is_recorded_as_failed_and_the_grid_goes_on(one_diverges, tmp_path):
    db = tmp_path / "r.sqlite"
    outcome = run_bench(parse_spec(GRID, "fail.yaml"), db, spec_text=GRID, workers=1)
    assert outcome.cells_run == 1 and len(outcome.failed) == 1
    assert "zero-fill" in outcome.failed[0] and "TrainingDiverged" in outcome.failed[0]
    assert [c["method"] for c in load_cells(db)] == ["masked-mean"]  # never stored as a result
    (failure,) = load_failures(db)
    assert failure["method_label"] == "zero-fill"
    assert failure["reason"].startswith("TrainingDiverged: training diverged")
    paths = write_report(load_cells(db), tmp_path / "rep", failures=load_failures(db))
    md = paths["markdown"].read_text()
    assert "## Failed cells (not results)" in md and "non-finite at epoch 1" in md


def test_a_failed_cell_is_retried_and_its_failure_hidden_once_stored(one_diverges, monkeypatch, tmp_path):
    db = tmp_path / "r.sqlite"
    run_bench(parse_spec(GRID, "fail.yaml"), db, spec_text=GRID, workers=1)
    monkeypatch.undo()  # the cause is fixed: the rerun trains the failed cell and stores it
    outcome = run_bench(parse_spec(GRID, "fail.yaml"), db, spec_text=GRID, workers=1)
    assert outcome.cells_run == 1 and outcome.failed == []
    assert load_failures(db) == [] and len(load_cells(db)) == 2


def test_bench_cli_exits_2_naming_the_failed_cell_after_the_table(one_diverges, tmp_path, capsys):
    from mlmm.cli import main

    spec = tmp_path / "fail.yaml"
    spec.write_text(GRID)
    code = main(["bench", str(spec), "--db", str(tmp_path / "r.sqlite"), "--no-progress", "--workers", "1"])
    out, err = capsys.readouterr()
    assert code == 2 and "1 failed (recorded as failed" in out
    assert err.count("\n") == 1 and "1 of 2 cells failed" in err and "zero-fill" in err
    assert main(["report", str(tmp_path / "r.sqlite"), "-o", str(tmp_path / "rep")]) == 0
    assert "(1 cells; 1 failed cells listed apart)" in capsys.readouterr().out
    assert "Failed cells (not results)" in (tmp_path / "rep" / "report.md").read_text()


def test_a_real_divergence_in_bench_is_a_failure(tmp_path):
    spec = GRID.replace("methods: [masked-mean, zero-fill]", "methods: [masked-mean]").replace(
        "train: {max_epochs: 1, patience: 1}", "train: {max_epochs: 2, patience: 2, lr: 10000, grad_clip: null}")
    outcome = run_bench(parse_spec(spec, "lr.yaml"), tmp_path / "r.sqlite", spec_text=spec, workers=1)
    assert outcome.cells_run == 0 and len(outcome.failed) == 1 and "non-finite" in outcome.failed[0]
