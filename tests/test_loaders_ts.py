"""mlmm.data.loaders.ts: UEA .ts files written by the tests in the archive's format."""

from __future__ import annotations

import warnings

import pytest
import torch

from mlmm.data.loaders import UnknownFileVersionWarning, load_data_file, load_ts, read_ts

HEADER = """# a comment line
@problemName Toy
@timeStamps false
@missing {missing}
@univariate false
@dimensions 4
@equalLength {equal}
@seriesLength {length}
@classLabel true up down
@data
"""


def _line(dims: list[list[str]], label: str) -> str:
    return ":".join(",".join(d) for d in dims) + ":" + label


def _write(path, rows: list[str], missing="false", equal="true", length=3):
    path.write_text(HEADER.format(missing=missing, equal=equal, length=length) + "\n".join(rows) + "\n")
    return path


def _dims(i: int, n: int = 3) -> list[list[str]]:
    return [[f"{i + 0.1 * d + 0.01 * t:.2f}" for t in range(n)] for d in range(4)]


def test_groups_labels_and_splits(tmp_path):
    train = _write(tmp_path / "Toy_TRAIN.ts", [_line(_dims(i), "up" if i % 2 else "down") for i in range(4)])
    test = _write(tmp_path / "Toy_TEST.ts", [_line(_dims(9), "up")])
    data = load_ts(train, test, channels={"acc": [0, 1], "gyro": [2, 3]})
    assert data.spec.name == "Toy" and data.class_names == ("up", "down")
    assert [m.shape for m in data.spec.modalities] == [(3, 2), (3, 2)]
    assert data.target.tolist() == [1, 0, 1, 0, 0]
    assert {k: v.tolist() for k, v in data.splits.items()} == {"train": [0, 1, 2, 3], "test": [4]}
    assert torch.allclose(data.inputs["gyro"][4, :, 0], torch.tensor([9.2, 9.21, 9.22]))  # (T, C) layout
    assert data.mask.all() and data.time_mask is None
    assert load_data_file(train, channels={"all": [0, 1, 2, 3]}).splits["test"].tolist() == [4]  # finds _TEST


def test_missing_groups_steps_and_unequal_lengths(tmp_path):
    whole = _dims(0)
    whole[2] = whole[3] = ["?"] * 3  # gyro entirely '?' -> missing modality
    steps = _dims(1)
    steps[0][1] = steps[1][1] = "?"  # acc step 1 '?' in both channels -> unobserved step
    short = _dims(2, n=2)  # shorter series -> padded, padded step unobserved
    path = _write(tmp_path / "gaps.ts", [_line(whole, "up"), _line(steps, "down"), _line(short, "up")],
                  missing="true", equal="false", length="false")
    data = load_ts(path, channels={"acc": [0, 1], "gyro": [2, 3]})
    assert data.mask.tolist() == [[True, False], [True, True], [True, True]]
    assert data.time_mask["acc"].tolist() == [[True] * 3, [True, False, True], [True, True, False]]
    assert torch.all(data.inputs["acc"][1, 1] == 0) and torch.all(data.inputs["gyro"][0] == 0)
    scattered = _dims(3)
    scattered[0][2] = "?"
    bad = _write(tmp_path / "scattered.ts", [_line(scattered, "up"), _line(_dims(4), "down")], missing="true")
    with pytest.raises(ValueError, match=r"scattered.ts: series 0, modality 'acc': some channels are '\?' at step 2"):
        load_ts(bad, channels={"acc": [0, 1], "gyro": [2, 3]})
    assert not load_ts(bad, channels={"acc": [0, 1]}, scattered="step").time_mask["acc"][0, 2]


def test_corrupt_and_truncated_files_name_the_file(tmp_path):
    good = [_line(_dims(i), "up") for i in range(2)]
    cut = _write(tmp_path / "cut.ts", good + [good[0][:20]])  # last line cut mid-way
    with pytest.raises(ValueError, match=r"cut.ts:13: 1 dimensions, header says 4"):
        read_ts(cut)
    (tmp_path / "nodata.ts").write_text("@problemName X\n@dimensions 4\n")
    with pytest.raises(ValueError, match="nodata.ts: no @data section"):
        read_ts(tmp_path / "nodata.ts")
    word = _write(tmp_path / "word.ts", [good[0].replace("0.01", "abc", 1)])
    with pytest.raises(ValueError, match="word.ts:11: dimension 0 has a value that is not a number"):
        read_ts(word)
    label = _write(tmp_path / "label.ts", [good[0][:-2] + "sideways"])
    with pytest.raises(ValueError, match="label 'sideways' is not in @classLabel"):
        read_ts(label)
    with pytest.raises(ValueError, match="modality 'x' names dimension 7"):
        load_ts(_write(tmp_path / "ok.ts", good), channels={"x": [7]})


def test_known_file_name_with_other_bytes_warns_and_own_files_do_not(tmp_path):
    rows = [_line(_dims(i), "up" if i % 2 else "down") for i in range(2)]
    known = _write(tmp_path / "BasicMotions_TRAIN.ts", rows)  # a published name, different bytes
    with pytest.warns(UnknownFileVersionWarning, match="BasicMotions_TRAIN.ts: sha256"):
        load_ts(known)
    own = _write(tmp_path / "Mine_TRAIN.ts", rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_ts(own)) == 2


def test_regression_target_and_wrong_options(tmp_path):
    head = ("@problemName R\n@univariate false\n@dimensions 2\n@equalLength true\n@seriesLength 2\n"
            "@targetLabel true\n@data\n")
    (tmp_path / "r.ts").write_text(head + "1,2:3,4:0.5\n5,6:7,8:-1.25\n")
    data = load_ts(tmp_path / "r.ts", channels={"a": [0], "b": [1]})
    assert data.spec.task.kind == "regression" and data.target.tolist() == [0.5, -1.25]
    with pytest.raises(ValueError, match="option 'modalities' does not apply to load_ts"):
        load_data_file(tmp_path / "r.ts", modalities={"a": "x"})
