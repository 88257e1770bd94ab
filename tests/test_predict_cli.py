"""``mlmm run --save-model`` then ``mlmm predict`` on new samples with missing modalities, in
subprocesses (a fresh process loads the model); bad model directories and mismatched data
exit with code 2 and one line."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mlmm

# Each case starts Python + torch in a subprocess (~5-10 s each on an idle core; the module
# took 235 s on this 2-core machine under a load of ~10): slow.
pytestmark = pytest.mark.slow
SRC = str(Path(mlmm.__file__).resolve().parents[1])


def _mlmm(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "mlmm.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def _table(path: Path, n: int, seed: int, labels: bool = True) -> None:
    g = np.random.default_rng(seed)
    y = g.integers(0, 3, n)
    names = np.array(["low", "mid", "high"])
    a = g.normal(size=(n, 4)) + y[:, None]
    b = g.normal(size=(n, 3)) - y[:, None]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*(f"a_{i}" for i in range(4)), *(f"b_{i}" for i in range(3)), *(["y"] if labels else [])])
        for i in range(n):
            row_a = [f"{v:.4f}" for v in a[i]] if i % 4 != 1 else [""] * 4  # a missing
            row_b = [f"{v:.4f}" for v in b[i]] if i % 4 != 2 else [""] * 3  # b missing
            w.writerow([*row_a, *row_b, *([names[y[i]]] if labels else [])])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    _table(root / "train.csv", 120, 0)
    run = _mlmm("run", "--data-file", "train.csv", "--modality", "a=prefix:a_", "--modality", "b=prefix:b_",
                "--label", "y", "--method", "masked-mean", "--split", "random", "--epochs", "3", "--no-subsets",
                "--save-model", "model", "--json", cwd=root)
    assert run.returncode == 0, run.stderr
    return root


def test_predict_on_new_samples_with_missing_modalities(saved):
    _table(saved / "new.csv", 20, 1, labels=False)
    out = _mlmm("predict", "--model", "model", "--data-file", "new.csv", "--out", "preds.csv", cwd=saved)
    assert out.returncode == 0, out.stderr
    with open(saved / "preds.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 20 and set(rows[0]) == {"row", "prediction", "p_high", "p_low", "p_mid", "modalities"}
    assert {r["prediction"] for r in rows} <= {"low", "mid", "high"}
    assert rows[1]["modalities"] == "b" and rows[2]["modalities"] == "a" and rows[0]["modalities"] == "a+b"
    for r in rows:
        assert abs(sum(float(r[f"p_{c}"]) for c in ("low", "mid", "high")) - 1) < 1e-4
    # The same predictions in this process, from the same directory.
    from mlmm.data.loaders.new_data import load_new_data

    model = mlmm.load(saved / "model")
    data = load_new_data(saved / "new.csv", model.spec, model.metadata["data_file"])
    assert [r["prediction"] for r in rows] == list(model.predict(data))


@pytest.mark.parametrize("args, message", [
    (("--model", "nowhere"), r"nowhere: no such model directory"),
    (("--model", "train.csv"), r"train.csv: no such model directory"),
])
def test_bad_model_directory_exits_2_in_one_line(saved, args, message):
    _table(saved / "new.csv", 5, 1, labels=False)
    out = _mlmm("predict", *args, "--data-file", "new.csv", cwd=saved)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and out.stderr.startswith("mlmm: error: ")
    assert __import__("re").search(message, out.stderr)


def test_mismatched_data_exits_2_naming_the_problem(saved):
    with open(saved / "narrow.csv", "w") as f:
        f.write("a_0,a_1,a_2,b_0,b_1,b_2\n1,2,3,4,5,6\n")
    out = _mlmm("predict", "--model", "model", "--data-file", "narrow.csv", cwd=saved)
    assert out.returncode == 2 and "narrow.csv" in out.stderr and "a_3" in out.stderr, out.stderr
    with open(saved / "partial.csv", "w") as f:
        f.write("a_0,a_1,a_2,a_3,b_0,b_1,b_2\n1,2,,4,5,6,7\n")
    out = _mlmm("predict", "--model", "model", "--data-file", "partial.csv", cwd=saved)
    assert out.returncode == 2 and "modality 'a'" in out.stderr and "sample 0" in out.stderr, out.stderr
    out = _mlmm("predict", "--model", "model", "--data-file", "partial.csv", "--nan-as-missing", cwd=saved)
    assert out.returncode == 0 and out.stdout.splitlines()[1].endswith(",b"), out.stdout + out.stderr


def test_save_model_needs_one_method_and_a_new_directory(saved):
    out = _mlmm("run", "--data-file", "train.csv", "--modality", "a=prefix:a_", "--modality", "b=prefix:b_",
                "--label", "y", "--method", "masked-mean", "--split", "random", "--epochs", "1",
                "--save-model", "model", cwd=saved)
    assert out.returncode == 2 and "not an empty directory" in out.stderr
