"""Calibration of predicted class probabilities: expected calibration error and reliability curve.

Written here rather than taken from a library: scikit-learn's
``calibration_curve`` is binary-only and returns no bin counts, and
torchmetrics would be a dependency for ten lines. The definition is the usual
top-label one (Guo et al., ICML 2017): bin the confidence max_c p_c into
``n_bins`` equal-width bins on [0, 1] and average |accuracy - confidence| per
bin, weighted by the bin's share of samples.
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """(N, C) logits -> (N, C) probabilities, numerically stable."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class ReliabilityBins:
    """Reliability counts accumulated over batches: ``update(probs, target)`` per batch, then
    ``curve()`` / ``ece()`` equal ``reliability_curve`` / ``expected_calibration_error`` of all
    batches at once (up to float summation order). Memory: 3 x ``n_bins`` numbers."""

    def __init__(self, n_bins: int = 15) -> None:
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        self.n_bins = n_bins
        self.edges = np.linspace(0.0, 1.0, n_bins + 1)
        self.count = np.zeros(n_bins, dtype=np.int64)
        self.confidence_sum = np.zeros(n_bins)
        self.correct_sum = np.zeros(n_bins)

    def update(self, probs: np.ndarray, target: np.ndarray) -> None:
        """probs (B, C) class probabilities, target (B,) labels."""
        probs = np.asarray(probs, dtype=np.float64)
        target = np.asarray(target)
        if probs.ndim != 2 or probs.shape[0] != target.shape[0]:
            raise ValueError(f"probs must be (N, C) and target (N,); got {probs.shape} and {target.shape}")
        confidence = probs.max(axis=1)
        correct = (probs.argmax(axis=1) == target).astype(np.float64)
        # Right-closed bins, the first also holding 0: confidence 1.0 falls in the last bin.
        which = np.clip(np.searchsorted(self.edges, confidence, side="left") - 1, 0, self.n_bins - 1)
        self.count += np.bincount(which, minlength=self.n_bins).astype(np.int64)
        self.confidence_sum += np.bincount(which, weights=confidence, minlength=self.n_bins)
        self.correct_sum += np.bincount(which, weights=correct, minlength=self.n_bins)

    def curve(self) -> dict[str, np.ndarray]:
        """As ``reliability_curve``: confidence, accuracy (NaN for an empty bin), count, edges."""
        with np.errstate(invalid="ignore", divide="ignore"):
            conf = self.confidence_sum / self.count
            acc = self.correct_sum / self.count
        return {"confidence": conf, "accuracy": acc, "count": self.count.copy(), "edges": self.edges.copy()}

    def ece(self) -> float:
        """Σ_b (n_b / N) |acc_b - conf_b| over non-empty bins (0 when nothing was added)."""
        curve = self.curve()
        filled = curve["count"] > 0
        weights = curve["count"][filled] / max(int(curve["count"].sum()), 1)
        return float(np.sum(weights * np.abs(curve["accuracy"][filled] - curve["confidence"][filled])))


def reliability_curve(probs: np.ndarray, target: np.ndarray, n_bins: int = 15) -> dict[str, np.ndarray]:
    """probs (N, C), target (N,) -> per-bin arrays of length ``n_bins``:
    ``confidence`` (mean top probability, NaN for an empty bin), ``accuracy``
    (NaN for an empty bin), ``count`` (samples) and ``edges`` (n_bins + 1)."""
    bins = ReliabilityBins(n_bins)
    bins.update(probs, target)
    return bins.curve()


def expected_calibration_error(probs: np.ndarray, target: np.ndarray, n_bins: int = 15) -> float:
    """ECE in [0, 1]: Σ_b (n_b / N) |acc_b - conf_b| over non-empty bins. probs (N, C), target (N,)."""
    bins = ReliabilityBins(n_bins)
    bins.update(probs, target)
    return bins.ece()
