"""The figures every cell (one method, dataset, scenario, seed) gets on its test split.

``cell_figures`` is what ``mlmm.experiment.run_seed`` adds to its record:
task metrics, calibration (ECE and the reliability curve's bins) and efficiency
(parameters, training time, latency per sample and per subset size, peak memory).
Everything is JSON-ready (NaN of an empty reliability bin becomes null).
"""

from __future__ import annotations

import math

import numpy as np

from .calibration import reliability_curve, softmax
from .efficiency import latency_per_subset_size, parameter_counts, timed_predictions
from .task import task_metrics

#: Bins of the reliability curve (equal width on [0, 1]); 15 as in Guo et al. (2017).
N_BINS = 15


def calibration_figures(logits: np.ndarray, target: np.ndarray, n_bins: int = N_BINS) -> dict:
    """logits (N, C), target (N,) -> {"ece", "n_bins", "reliability": {"confidence", "accuracy",
    "count", "edges"}} with the top-label ECE = Σ_b (n_b / N) |acc_b - conf_b| (see calibration.py)."""
    curve = reliability_curve(softmax(logits), target, n_bins)
    filled = curve["count"] > 0
    weights = curve["count"][filled] / max(int(curve["count"].sum()), 1)
    ece = float(np.sum(weights * np.abs(curve["accuracy"][filled] - curve["confidence"][filled])))

    def listed(values: np.ndarray) -> list:
        return [None if isinstance(v, float) and math.isnan(v) else v for v in values.tolist()]

    return {"ece": ece, "n_bins": n_bins, "reliability": {k: listed(v) for k, v in curve.items()}}


def cell_figures(model, test, natural_test, train_seconds: float,
                 memory: dict | None = None, latency_repeats: int = 3, train_precision: str = "fp32") -> dict:
    """{"metrics", "calibration", "efficiency"} of a fitted model on its masked test split ``test``.

    The test logits come from the timed evaluation, so the metrics, the ECE and the
    latency are of one and the same pass. The latency per subset size is measured on
    ``natural_test`` (the test split before the scenario's mask), so that every size
    1..M is reachable. ``memory``: ``PeakMemory.figures`` of the fit. Both splits may be
    in-memory or streamed datasets (read batch by batch; the labels come with the batches).
    ``train_precision``: the fit's ``TrainConfig.precision`` (``train_seconds`` and the peak memory were
    measured at it); the latency is measured in fp32, as prediction always runs.
    """
    pred, latency = timed_predictions(model, test, latency_repeats)
    logits, target = pred.logits.numpy(), pred.labels()
    efficiency = {
        "parameters": parameter_counts(model),
        "train_seconds": float(train_seconds),
        "train_precision": train_precision,
        "latency_per_sample_s": latency,
        "latency_precision": "fp32",
        "latency_per_subset_size_s": latency_per_subset_size(model, natural_test),
        "peak_memory": dict(memory or {}),
    }
    out = {"metrics": task_metrics(logits, target, model.spec.task), "efficiency": efficiency}
    if model.spec.task.kind == "classification":
        out["calibration"] = calibration_figures(logits, target)
    return out
