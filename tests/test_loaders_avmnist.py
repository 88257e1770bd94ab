"""mlmm.data.loaders.avmnist: MultiBench's AV-MNIST folder layout written small by the tests."""

from __future__ import annotations

import numpy as np
import pytest

from mlmm.data.loaders import load_avmnist, load_data_file


def make_avmnist(root, n_train=8, n_test=4, seed=0):
    rng = np.random.default_rng(seed)
    (root / "image").mkdir(parents=True)
    (root / "audio").mkdir()
    for split, n in (("train", n_train), ("test", n_test)):
        np.save(root / "image" / f"{split}_data.npy", rng.integers(0, 256, (n, 784)).astype(np.float32))
        np.save(root / "audio" / f"{split}_data.npy", rng.integers(0, 256, (n, 112, 112)).astype(np.float32))
        np.save(root / f"{split}_labels.npy", np.arange(n) % 10)
    return root


def test_layout_shapes_scale_splits(tmp_path):
    root = make_avmnist(tmp_path / "avmnist")
    data = load_avmnist(root, n_valid=2)
    assert [(m.name, m.kind, m.shape) for m in data.spec.modalities] == [
        ("image", "image", (1, 28, 28)), ("audio", "image", (1, 112, 112))]
    assert {k: v.tolist() for k, v in data.splits.items()} == {
        "train": list(range(6)), "valid": [6, 7], "test": [8, 9, 10, 11]}
    assert float(data.inputs["audio"].max()) <= 1.0 and data.mask.all()
    raw = np.load(root / "image" / "train_data.npy")
    assert np.allclose(data.inputs["image"][3].numpy().reshape(-1), raw[3] / 255.0)
    assert len(load_data_file(root, n_valid=2)) == 12  # a folder is AV-MNIST


def test_missing_and_truncated_files_are_named(tmp_path):
    root = make_avmnist(tmp_path / "avmnist")
    path = root / "audio" / "test_data.npy"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="audio/test_data.npy: cannot read as a .npy array"):
        load_avmnist(root, n_valid=2)
    other = make_avmnist(tmp_path / "other")
    (other / "test_labels.npy").unlink()
    with pytest.raises(FileNotFoundError, match="AV-MNIST test labels .*test_labels.npy"):
        load_avmnist(other, n_valid=2)
