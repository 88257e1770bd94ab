"""The metrics multimodal sentiment analysis reports on CMU-MOSI / CMU-MOSEI (MMSA's conventions).

Predictions and labels are sentiment scores in [-3, 3]. Two Acc-2 conventions
exist and papers mix them, so both are reported:

- ``acc2_has0`` / ``f1_has0``: negative (< 0) vs non-negative (>= 0) over *all*
  samples (MMSA's "Has0_acc_2"; zero counts as positive);
- ``acc2_non0`` / ``f1_non0``: negative (< 0) vs positive (> 0) over samples whose
  *true* label is not 0 (MMSA's "Non0_acc_2"; most papers' headline Acc-2).

F1 is the support-weighted F1 of the two classes (as MMSA computes it). ``acc7``:
both rounded to the integers -3..3 after clipping; ``acc5``: the same on [-2, 2].
``mae`` is the mean absolute error, ``corr`` Pearson's r (NaN when either side
is constant). ``accuracy`` and ``macro_f1`` repeat ``acc2_non0`` and ``f1_non0`` so
that tables built for classification show the field's headline figures.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr
from sklearn.metrics import accuracy_score, f1_score


def _acc_f1(truth: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    if truth.size == 0:
        return float("nan"), float("nan")
    return float(accuracy_score(truth, pred)), float(f1_score(truth, pred, average="weighted", zero_division=0))


def sentiment_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """pred, truth: (N,) or (N, 1) sentiment scores -> the figures named in the module docstring."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    truth = np.asarray(truth, dtype=np.float64).reshape(-1)
    if pred.shape != truth.shape:
        raise ValueError(f"predictions {pred.shape} and labels {truth.shape} differ in length")
    acc2_has0, f1_has0 = _acc_f1(truth >= 0, pred >= 0)
    non0 = truth != 0
    acc2_non0, f1_non0 = _acc_f1(truth[non0] > 0, pred[non0] > 0)
    constant = truth.size < 2 or np.ptp(truth) == 0 or np.ptp(pred) == 0
    out = {
        "mae": float(np.mean(np.abs(pred - truth))),
        "corr": float("nan") if constant else float(pearsonr(pred, truth)[0]),
        "acc2_has0": acc2_has0, "f1_has0": f1_has0,
        "acc2_non0": acc2_non0, "f1_non0": f1_non0,
        "acc7": float(np.mean(np.round(np.clip(pred, -3, 3)) == np.round(np.clip(truth, -3, 3)))),
        "acc5": float(np.mean(np.round(np.clip(pred, -2, 2)) == np.round(np.clip(truth, -2, 2)))),
    }
    out["accuracy"], out["macro_f1"] = out["acc2_non0"], out["f1_non0"]
    return out


def regression_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Task metrics of a regression model: one output -> ``sentiment_metrics`` (whose MAE and
    correlation hold for any scale); several outputs -> mean MAE and mean per-output correlation
    (with ``accuracy`` / ``macro_f1`` NaN, as no class exists)."""
    pred = np.asarray(pred, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if truth.ndim == 1 or truth.shape[1] == 1:
        return sentiment_metrics(pred.reshape(len(pred), -1)[:, 0], truth.reshape(-1))
    pred = pred.reshape(truth.shape)
    corrs = [pearsonr(pred[:, k], truth[:, k])[0] if np.ptp(truth[:, k]) and np.ptp(pred[:, k]) else np.nan
             for k in range(truth.shape[1])]
    corr = float(np.nanmean(corrs)) if not np.all(np.isnan(corrs)) else float("nan")
    return {"mae": float(np.mean(np.abs(pred - truth))), "corr": corr,
            "accuracy": float("nan"), "macro_f1": float("nan")}
