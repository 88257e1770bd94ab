"""mlmm.data.loaders.table and user_data: CSV / Parquet / .npz / mapping files, and `mlmm run --data-file`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from mlmm.cli import main
from mlmm.data.loaders import KindInferredWarning, load_arrays, load_data_file, load_table
from mlmm.data.registry import DATASETS


def _frame(n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    df = pd.DataFrame({
        "a1": y + rng.normal(0, 0.2, n), "a2": rng.normal(size=n),
        "b_x": -y + rng.normal(0, 0.2, n), "b_y": rng.normal(size=n), "c": rng.normal(size=n),
        "c_ok": 1, "y": np.array(["cat", "dog", "eel"])[y],
        "split": np.where(np.arange(n) < 30, "train", np.where(np.arange(n) < 35, "val", "test")),
    })
    df.loc[[1, 5], ["b_x", "b_y"]] = np.nan  # whole group empty -> b missing
    df.loc[[2], "c_ok"] = 0  # availability column -> c missing though filled
    return df


@pytest.fixture
def csv(tmp_path):
    path = tmp_path / "toy.csv"
    _frame().to_csv(path, index=False)
    return path


def test_csv_groups_mask_labels_splits(csv):
    data = load_table(csv, {"a": ["a1", "a2"], "b": "prefix:b_", "c": "c"}, label="y", split="split",
                      availability={"c": "c_ok"})
    assert data.spec.modality_names == ("a", "b", "c")
    assert [m.shape for m in data.spec.modalities] == [(2,), (2,), (1,)]
    assert data.class_names == ("cat", "dog", "eel") and data.spec.task.n_classes == 3
    assert data.target[:4].tolist() == [0, 1, 2, 0]
    assert not data.mask[1, 1] and not data.mask[5, 1] and not data.mask[2, 2]
    assert int((~data.mask).sum()) == 3
    assert torch.all(data.inputs["b"][1] == 0)  # masked-out slots are zeros, never NaN
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 30, "valid": 5, "test": 5}


def test_csv_errors_name_the_problem(csv, tmp_path):
    with pytest.raises(ValueError, match="unknown column 'zz'"):
        load_table(csv, {"a": "a1,zz"}, label="y")
    with pytest.raises(ValueError, match="no column starts with 'q_'"):
        load_table(csv, {"a": "prefix:q_"}, label="y")
    with pytest.raises(ValueError, match="no label column 'label'"):
        load_table(csv, {"a": "a1"}, label="label")
    with pytest.raises(ValueError, match="column 'y' of modality 'a' is not numeric"):
        load_table(csv, {"a": "a1,y"}, label="y")
    df = _frame()
    df.loc[3, "b_x"] = np.nan  # part of a group empty
    df.to_csv(tmp_path / "partial.csv", index=False)
    with pytest.raises(ValueError, match="modality 'b' is partly empty in 1 rows"):
        load_table(tmp_path / "partial.csv", {"a": "a1", "b": "prefix:b_"}, label="y")
    data = load_table(tmp_path / "partial.csv", {"a": "a1", "b": "prefix:b_"}, label="y", partial="missing")
    assert not data.mask[3, 1]
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_table(tmp_path / "nope.csv", {"a": "a1"}, label="y")
    (tmp_path / "nolabel.csv").write_text("a1,y\n1,cat\n2,\n3,dog\n")
    with pytest.raises(ValueError, match="nolabel.csv column 'y': 1 rows have no label"):
        load_table(tmp_path / "nolabel.csv", {"a": "a1"}, label="y")
    (tmp_path / "bad.csv").write_bytes(b'a1,y\n1,"unterminated\n')
    with pytest.raises(ValueError, match="bad.csv"):
        load_table(tmp_path / "bad.csv", {"a": "a1"}, label="y")


def test_parquet_matches_csv(csv, tmp_path):
    pytest.importorskip("pyarrow")
    _frame().to_parquet(tmp_path / "toy.parquet")
    groups = {"a": ["a1", "a2"], "b": "prefix:b_"}
    a, b = load_table(csv, groups, label="y"), load_table(tmp_path / "toy.parquet", groups, label="y")
    assert torch.equal(a.mask, b.mask) and torch.allclose(a.inputs["a"], b.inputs["a"])
    (tmp_path / "cut.parquet").write_bytes((tmp_path / "toy.parquet").read_bytes()[:200])
    with pytest.raises(ValueError, match="cut.parquet"):
        load_table(tmp_path / "cut.parquet", groups, label="y")


def test_npz_arrays_mask_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.normal(size=(10, 1, 4, 4)).astype(np.float32)
    seq = rng.normal(size=(10, 5, 2)).astype(np.float32)
    seq[3] = np.nan  # all NaN -> missing
    mask = np.ones((10, 2), bool)
    mask[4, 0] = False
    np.savez(tmp_path / "arr.npz", img=img, seq=seq, y=np.arange(10) % 2, mask=mask,
             split=np.array(["train"] * 8 + ["test"] * 2))
    with pytest.warns(KindInferredWarning) as inferred:  # kinds inferred from the shapes, and said so
        data = load_arrays(tmp_path / "arr.npz")
    assert sorted(str(w.message).split("modality ")[1][:5] for w in inferred) == ["'img'", "'seq'"]
    assert [(m.name, m.kind) for m in data.spec.modalities] == [("img", "image"), ("seq", "sequence")]
    assert data.mask.tolist()[3] == [True, False] and data.mask.tolist()[4] == [False, True]
    assert len(data.splits["test"]) == 2
    same = load_arrays({"img": img, "seq": seq, "y": np.arange(10) % 2, "avail_img": mask[:, 0]}, name="x",
                       kinds={"img": "image", "seq": "sequence"})
    assert not same.mask[4, 0] and not same.mask[3, 1]
    (tmp_path / "cut.npz").write_bytes((tmp_path / "arr.npz").read_bytes()[:300])
    with pytest.raises(ValueError, match="cut.npz"):
        load_arrays(tmp_path / "cut.npz")
    with pytest.raises(ValueError, match="no label key 'label'"):
        load_arrays(tmp_path / "arr.npz", label="label")


def test_mapping_file(csv, tmp_path):
    (tmp_path / "data.yaml").write_text(
        "path: toy.csv\nmodalities: {a: [a1, a2], b: 'prefix:b_'}\nlabel: y\nsplit: split\n")
    (tmp_path / "data.json").write_text(json.dumps({"path": str(csv), "modalities": {"a": "a1"}, "label": "y"}))
    assert load_data_file(tmp_path / "data.yaml").spec.modality_names == ("a", "b")
    assert load_data_file(tmp_path / "data.json").spec.modality_names == ("a",)
    csv.with_suffix(".xlsx").write_bytes(b"PK")
    with pytest.raises(ValueError, match="unknown data format .xlsx"):
        load_data_file(csv.with_suffix(".xlsx"))


def test_cli_run_on_a_csv(csv, capsys):
    """End to end: a CSV -> `mlmm run` trains and prints a result table."""
    try:
        code = main(["run", "--data-file", str(csv), "--modality", "a=a1,a2", "--modality", "b=prefix:b_",
                     "--label", "y", "--split-column", "split", "--method", "zero-fill", "--epochs", "2",
                     "--min-steps-per-epoch", "1",
                     "--no-subsets", "--json"])
        assert code == 0
        result = json.loads(capsys.readouterr().out)
        assert result["dataset"] == "file:toy" and 0.0 <= result["metrics"]["accuracy"]["mean"] <= 1.0
    finally:
        if "file:toy" in DATASETS:
            DATASETS.unregister("file:toy")
    assert main(["run", "--data-file", str(csv), "--dataset", "handwritten"]) == 2
    assert "either --dataset or --data-file" in capsys.readouterr().err
