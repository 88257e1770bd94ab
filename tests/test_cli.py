"""The command line: listings, `run --json` contract, bad input, and the demo's kill-safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlmm.cli import main
from mlmm.methods import CATEGORIES, METHODS

FAST = ["--epochs", "2", "--patience", "2"]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", ["datasets", "methods", "protocols"])
def test_listings_as_json(capsys, command: str) -> None:
    code, out, _ = run_cli(capsys, command, "--json")
    assert code == 0
    items = json.loads(out)
    names = {item["name"] for item in items}
    expected = {"datasets": {"handwritten", "basicmotions", "synthetic"}, "methods": set(METHODS.names()),
                "protocols": {"entry", "sample", "per-modality", "fixed-subset", "mnar", "none"}}[command]
    assert expected <= names
    if command == "methods":
        for item in items:
            assert item["category"] in CATEGORIES
            assert {"fusion", "recovers_missing", "needs_complete_train", "paper"} <= set(item)


def test_run_json_contract(capsys) -> None:
    code, out, err = run_cli(capsys, "run", "--dataset", "synthetic", "--method", "masked-mean", "--protocol",
                             "entry", "--rate", "0.3", "--split", "random", "--seeds", "0,1", "--json", *FAST)
    assert code == 0, err
    result = json.loads(out)
    assert result["dataset"] == "synthetic" and result["method"] == "masked-mean"
    assert result["protocol"] == "entry" and result["rate"] == 0.3 and result["seeds"] == [0, 1]
    for metric in ("accuracy", "macro_f1"):
        summary = result["metrics"][metric]
        assert len(summary["per_seed"]) == 2
        assert all(0.0 <= v <= 1.0 for v in summary["per_seed"])
        assert summary["mean"] == pytest.approx(sum(summary["per_seed"]) / 2)
    # entry rate is realised exactly on every split
    for role in ("train", "val", "test"):
        assert result["realised"][role]["missing_entry_fraction"] == pytest.approx(0.3, abs=0.01)
        assert len(result["realised"][role]["mask_sha256"]) == 2
    assert len(result["subsets"]) == 2 ** 3 - 1
    assert result["worst_subset"]["subset"] in result["subsets"]


def test_run_prints_a_table_and_subsets(capsys) -> None:
    code, out, _ = run_cli(capsys, "run", "--dataset", "synthetic", "--method", "zero-fill", "--seeds", "0", *FAST)
    assert code == 0
    assert "accuracy %" in out and "m0+m1+m2" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--dataset", "nope"], "unknown dataset 'nope'"),
        (["run", "--dataset", "synthetic", "--method", "nope"], "unknown method 'nope'"),
        (["run", "--dataset", "synthetic", "--rate", "0.9"], "impossible"),
        (["run", "--dataset", "synthetic", "--rate", "-0.1"], "rate"),
        (["run", "--dataset", "synthetic", "--seeds", "a,b"], "--seeds"),
        (["run", "--dataset", "synthetic", "--protocol", "nope"], "unknown protocol 'nope'"),
        (["run", "--dataset", "synthetic", "--protocol", "fixed-subset", "--subset", "zz"], "unknown modality 'zz'"),
        (["run", "--dataset", "synthetic", "--protocol", "none", "--rate", "0.2"], "takes no rate"),
        (["run", "--dataset", "synthetic", "--split", "weird"], "unknown split 'weird'"),
        (["run", "--dataset", "synthetic", "--param", "novalue"], "KEY=VALUE"),
        (["run"], "--dataset"),
        (["demo", "--all-methods", "--method", "masked-mean"], "either --method or --all-methods"),
        (["run", "--dataset", "synthetic", "--threads", "0"], "--threads"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, argv: list[str], message: str) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert message in lines[0] and "Traceback" not in err


def test_unwritable_output_path_exits_2(capsys, tmp_path: Path) -> None:
    target = tmp_path / "missing-folder" / "out.json"
    code, _, err = run_cli(capsys, "run", "--dataset", "synthetic", "--method", "zero-fill", "--seeds", "0",
                           "--no-subsets", "--out", str(target), *FAST)
    assert code == 2 and "out.json" in err and len(err.strip().splitlines()) == 1


def test_demo_writes_results_and_report(capsys, tmp_path: Path) -> None:
    out_dir = tmp_path / "demo"
    argv = ["demo", "--dataset", "synthetic", "--method", "masked-mean", "--method", "late-ensemble",
            "--rates", "0,0.3", "--seeds", "0,1", "--out", str(out_dir), "--no-progress", *FAST]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert "rate 0.3" in out and "masked-mean" in out
    for name in ("results.json", "results.csv", "report.md", "results.jsonl"):
        assert (out_dir / name).exists()
    results = json.loads((out_dir / "results.json").read_text())
    assert len(results) == 4  # 2 methods x 2 rates
    assert len((out_dir / "results.csv").read_text().strip().splitlines()) == 1 + 8  # header + one row per fit
    assert "Accuracy" in (out_dir / "report.md").read_text()
    # A rerun finds every fit done: nothing is appended.
    lines = (out_dir / "results.jsonl").read_text().splitlines()
    assert run_cli(capsys, *argv)[0] == 0
    assert (out_dir / "results.jsonl").read_text().splitlines() == lines


def test_demo_killed_with_sigkill_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    out_dir = tmp_path / "demo"
    argv = [sys.executable, "-m", "mlmm.cli", "demo", "--dataset", "synthetic", "--method", "masked-mean",
            "--rates", "0,0.2,0.4", "--seeds", "0,1,2", "--out", str(out_dir), "--no-progress", *FAST]
    log = out_dir / "results.jsonl"
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600  # generous: on a loaded 2-core machine the first fits take minutes
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 2):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = [json.loads(line) for line in log.read_text().splitlines() if line.strip().endswith("}")]
    assert 2 <= len(done_before) < 9, "kill came too late to test a resume"
    assert subprocess.run(argv, capture_output=True).returncode == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    cells = [(r["method"], r["rate"], r["seed"]) for r in records]
    assert len(cells) == len(set(cells)) == 9
    # What was finished before the kill was kept, not recomputed.
    for rec in done_before:
        assert rec in records


@pytest.mark.slow  # two demos of 8 tiny fits, one through a spawned pool: ~50 s on the loaded machine
def test_demo_pool_gives_the_in_process_results(tmp_path: Path) -> None:
    """The demo's fits run in a process pool (one per core); the figures are those of one process."""
    from mlmm.demo import run_demo
    from mlmm.train.loop import TrainConfig

    kwargs = dict(dataset="synthetic", rates=(0.0, 0.3), seeds=(0, 1), split="random",
                  methods=("masked-mean", "zero-fill"), train=TrainConfig(max_epochs=2, patience=2))
    alone = run_demo(tmp_path / "one", workers=1, **kwargs)
    pooled = run_demo(tmp_path / "two", workers=2, **kwargs)
    assert [r["metrics"] for r in pooled.results] == [r["metrics"] for r in alone.results]
    assert len((tmp_path / "two" / "results.jsonl").read_text().splitlines()) == 8
    with pytest.raises(ValueError, match="workers must be >= 1"):
        run_demo(tmp_path / "three", workers=0, **kwargs)
