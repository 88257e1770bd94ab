"""Task metrics as fractions in [0, 1], computed by scikit-learn."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import accuracy_score, f1_score


def classification_metrics(logits: np.ndarray, target: np.ndarray, n_classes: int) -> dict[str, float]:
    """logits (N, C), target (N,) -> {"accuracy", "macro_f1"}.

    Macro-F1 averages over all ``n_classes`` labels, so a class the model
    never predicts counts as F1 0 rather than being skipped.
    """
    pred = np.asarray(logits).argmax(axis=1)
    return {
        "accuracy": float(accuracy_score(target, pred)),
        "macro_f1": float(f1_score(target, pred, labels=list(range(n_classes)), average="macro", zero_division=0)),
    }


def confusion_metrics(logits: np.ndarray, target: np.ndarray, n_classes: int) -> dict[str, float]:
    """The figures of ``classification_metrics`` (accuracy, macro-F1 over all ``n_classes``
    labels, 0 for a class never predicted nor present) from one confusion matrix in numpy.

    Why a second implementation: scikit-learn validates its inputs on every call
    (~30-50 ms each, measured on handwritten's 400 test rows), which made scoring
    the 63 subsets of handwritten cost ~40 forward passes. tests/test_figures.py
    checks this against ``classification_metrics`` on random cases; per-subset
    scoring (``evaluate_subsets``) uses it on every path, so fast and slow agree.
    """
    pred = np.asarray(logits).argmax(axis=1)
    return confusion_figures(confusion_matrix(pred, target, n_classes))


def confusion_matrix(pred: np.ndarray, target: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) int64 counts, row = true class, column = predicted class, from (N,) labels each.
    Counts of batches add up: the streamed evaluations sum them batch by batch."""
    target = np.asarray(target).astype(np.int64)
    pred = np.asarray(pred).astype(np.int64)
    return np.bincount(target * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def confusion_figures(cm: np.ndarray) -> dict[str, float]:
    """{"accuracy", "macro_f1"} from a (C, C) confusion matrix (macro-F1 over all C classes, 0 for a
    class never predicted nor present), as ``confusion_metrics`` gives them."""
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(axis=0) + cm.sum(axis=1)  # predicted + true per class: 2 tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"accuracy": float(tp.sum() / max(int(cm.sum()), 1)), "macro_f1": float(f1.mean())}


def task_metrics(logits: np.ndarray, target: np.ndarray, task) -> dict[str, float]:
    """Metrics by ``TaskSpec`` kind: classification -> ``classification_metrics``; regression
    -> ``mlmm.metrics.sentiment.regression_metrics`` (MAE, correlation, Acc-2/F1/Acc-7; its
    ``accuracy`` / ``macro_f1`` are the non0 Acc-2 / F1)."""
    if task.kind == "classification":
        return classification_metrics(logits, target, task.n_classes)
    from .sentiment import regression_metrics

    return regression_metrics(logits, target)


def summarise_seeds(values: list[float]) -> dict:
    """{"mean", "std", "ci95", "per_seed"} over seeds; std is the sample std (ddof=1),
    ci95 the half-width of a t interval (0 for a single seed)."""
    arr = np.asarray(values, dtype=float)
    n = arr.size
    std = float(arr.std(ddof=1)) if n > 1 else 0.0
    if n > 1:
        from scipy.stats import t  # scipy ships with scikit-learn

        half = float(t.ppf(0.975, n - 1) * std / math.sqrt(n))
    else:
        half = 0.0
    return {"mean": float(arr.mean()), "std": std, "ci95": half, "per_seed": [float(v) for v in arr]}
