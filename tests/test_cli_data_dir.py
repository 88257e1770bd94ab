"""`mlmm run --data-dir` and `mlmm bench --data-dir`: a memory-mapped folder or a table folder, read batch by
batch."""

import json

import numpy as np
import pytest

from mlmm.cli import main
from mlmm.data import MemmapDataset, write_synthetic_memmap
from mlmm.data.registry import load_dataset

SPEC = """name: t
datasets: [synthetic]
methods: [masked-mean]
scenarios: [{protocol: entry, rates: [0.3]}]
seeds: [0]
train: {max_epochs: 1}
subsets: false
"""


@pytest.fixture(scope="module")
def memmap_dir(tmp_path_factory):
    return write_synthetic_memmap(tmp_path_factory.mktemp("mm") / "mm", n=300, n_modalities=2, features=4)


def test_run_data_dir_memory_mapped(memmap_dir, capsys):
    assert main(["run", "--data-dir", str(memmap_dir), "--method", "masked-mean", "--max-epochs", "1",
                 "--rate", "0.3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["dataset"] == f"dir:{memmap_dir}" and 0 <= result["metrics"]["accuracy"]["mean"] <= 1
    assert "m0+m1" in result["subsets"]  # the all-subsets evaluation ran on the streamed test split
    assert isinstance(load_dataset(result["dataset"]), MemmapDataset)


def test_run_data_dir_table_folder(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    rows = [f"{y[i] + rng.normal():.3f},{'' if i % 3 == 0 else f'{y[i] - rng.normal():.3f}'},{y[i]}"
            for i in range(120)]
    (tmp_path / "rows.csv").write_text("a,b,label\n" + "\n".join(rows) + "\n")
    (tmp_path / "dataset.yaml").write_text("table: rows.csv\nmodalities: {a: [a], b: [b]}\nlabel: label\n")
    assert main(["run", "--data-dir", str(tmp_path), "--split", "random", "--method", "masked-mean",
                 "--max-epochs", "1", "--no-subsets", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["realised"]["test"]["missing_entry_fraction"] > 0.05  # b's empty cells are missing


def test_bench_data_dir_replaces_the_spec_datasets(memmap_dir, tmp_path, capsys):
    (tmp_path / "spec.yaml").write_text(SPEC)
    argv = ["bench", str(tmp_path / "spec.yaml"), "--data-dir", str(memmap_dir), "--db", str(tmp_path / "r.sqlite"),
            "--workers", "1", "--no-progress", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cells_run"] == 1 and out["summary"][0]["dataset"] == f"dir:{memmap_dir}"
    assert main(argv) == 0  # resumable: the stored cell is found again
    assert json.loads(capsys.readouterr().out)["cells_skipped"] == 1


@pytest.mark.parametrize("extra, culprit", [
    (["--data-dir", "{d}/nosuch"], "--data-dir: '{d}/nosuch' does not exist"),
    (["--data-dir", "{d}"], "neither a memory-mapped dataset"),
    (["--data-dir", "{d}", "--dataset", "synthetic"], "give one of --dataset, --data-file and --data-dir"),
])
def test_run_data_dir_bad_input_is_one_line(extra, culprit, tmp_path, capsys):
    argv = ["run", "--method", "masked-mean"] + [a.replace("{d}", str(tmp_path)) for a in extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and culprit.replace("{d}", str(tmp_path)) in err, err
