"""mlmm.data.loaders.mmsa and mlmm.metrics.sentiment: MMSA-format pickles written by the tests,
the field's metrics, and a regression task end to end through run_experiment."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from mlmm.data.loaders import load_mmsa, register_data_file
from mlmm.data.registry import DATASETS
from mlmm.metrics.sentiment import sentiment_metrics


def make_mmsa(path, n=(12, 6, 6), seed=0, bert=False):
    """An MMSA feature pickle (train/valid/test dicts as thuiar/MMSA's data_loader reads them)."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, k in zip(("train", "valid", "test"), n):
        y = np.round(rng.uniform(-3, 3, k), 1).astype(np.float32)
        y[0] = 0.0
        audio = rng.normal(size=(k, 7, 3)).astype(np.float32)
        audio[:, -1] = -np.inf  # MMSA audio carries -inf; the loader sets it to 0 as MMSA does
        audio[1] = 0.0
        vision = rng.normal(size=(k, 6, 2)).astype(np.float32)
        vision[2] = 0.0  # all-zero features -> vision missing
        d = {"text": rng.normal(size=(k, 5, 4)).astype(np.float32) + y[:, None, None],
             "audio": audio, "vision": vision, "regression_labels": y,
             "classification_labels": (y > 0).astype(np.int64) + (y >= 0),
             "audio_lengths": np.r_[6, 0, np.full(k - 2, 6)],
             "vision_lengths": np.full(k, 6), "id": [f"{split}{i}" for i in range(k)], "raw_text": ["a b"] * k}
        if bert:
            ids = rng.integers(1, 99, (k, 5))
            d["text_bert"] = np.stack([ids, np.ones((k, 5)), np.zeros((k, 5))], 1).astype(np.float32)
        out[split] = d
    with open(path, "wb") as f:
        pickle.dump(out, f)
    return path


def test_shapes_mask_labels_splits(tmp_path):
    data = load_mmsa(make_mmsa(tmp_path / "mosi.pkl"))
    assert data.spec.modality_names == ("text", "audio", "vision")
    assert [m.shape for m in data.spec.modalities] == [(5, 4), (7, 3), (6, 2)]
    assert data.spec.task.kind == "regression" and data.target.dtype == torch.float32
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 12, "valid": 6, "test": 6}
    # audio missing where its length is 0 (row 1 of each split), vision where its features are all 0 (row 2)
    for start in (0, 12, 18):
        assert data.mask[start + 1].tolist() == [True, False, True]
        assert data.mask[start + 2].tolist() == [True, True, False]
    assert int((~data.mask).sum()) == 6 and torch.isfinite(data.inputs["audio"]).all()
    bert = load_mmsa(make_mmsa(tmp_path / "b.pkl", bert=True), text="text_bert", label="classification")
    assert bert.spec.modality("text").kind == "text" and bert.spec.modality("text").shape == (5,)
    assert bert.spec.task.n_classes == 3


def test_bad_pickles_name_the_file(tmp_path):
    good = make_mmsa(tmp_path / "mosi.pkl").read_bytes()
    (tmp_path / "cut.pkl").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="cut.pkl: cannot unpickle"):
        load_mmsa(tmp_path / "cut.pkl")
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"train": os.system}, f)  # would resolve a callable: refused, never called
    with pytest.raises(ValueError, match="evil.pkl: cannot unpickle .*refusing to load"):
        load_mmsa(tmp_path / "evil.pkl")
    with open(tmp_path / "keys.pkl", "wb") as f:
        pickle.dump({"train": {}, "valid": {}, "test": {}}, f)
    with pytest.raises(ValueError, match="keys.pkl: split 'train' has no key 'text'"):
        load_mmsa(tmp_path / "keys.pkl")


def test_sentiment_metrics_conventions():
    truth = np.array([2.0, -1.0, 0.0, 0.0, 3.0, -2.6])
    pred = np.array([1.6, 0.4, -0.2, 0.3, 2.2, -2.4])
    m = sentiment_metrics(pred, truth)
    assert m["acc2_has0"] == pytest.approx(4 / 6)  # >= 0 vs < 0 over all: misses rows 1, 2
    assert m["acc2_non0"] == pytest.approx(3 / 4)  # > 0 vs < 0 without true zeros: misses row 1
    assert m["acc7"] == pytest.approx(3 / 6)  # rounded 2,0,0,0,2,-2 vs 2,-1,0,0,3,-3: rows 0, 2, 3 agree
    assert m["mae"] == pytest.approx(np.mean(np.abs(pred - truth)))
    assert m["corr"] == pytest.approx(np.corrcoef(pred, truth)[0, 1])
    assert m["accuracy"] == m["acc2_non0"] and m["macro_f1"] == m["f1_non0"]


def test_regression_end_to_end(tmp_path):
    """An MMSA pickle -> run_experiment: trains a regression task and reports the field's metrics."""
    from mlmm.experiment import ExperimentConfig, run_experiment
    from mlmm.train.loop import TrainConfig

    name = register_data_file(make_mmsa(tmp_path / "mosi.pkl", n=(30, 10, 10)))
    try:
        config = ExperimentConfig(dataset=name, method="zero-fill", protocol="entry", rate=0.3,
                                  train=TrainConfig(max_epochs=2, min_steps_per_epoch=1))
        result = run_experiment(config)
    finally:
        DATASETS.unregister(name)
    for key in ("mae", "corr", "acc2_has0", "acc2_non0", "f1_non0", "acc7"):
        assert np.isfinite(result["metrics"][key]["mean"]), key
    assert set(result["subsets"]) >= {"text", "audio+vision", "text+audio+vision"}
