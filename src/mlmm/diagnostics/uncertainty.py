"""Uncertainty under missingness: calibration per rate and per modality subset, error
detection by uncertainty (AUROC), and how uncertainty grows as modalities go missing.

Uncertainty scores (higher = less sure), per sample:
* ``entropy``: predictive entropy of softmax(logits) divided by log C, in [0, 1]; every method.
* ``method``: ``Output.aux["uncertainty"]`` (B,) for methods that output one (e.g. TMC's
  Dirichlet vacuity); absent otherwise.
Error-detection AUROC: sklearn's ``roc_auc_score`` with "the prediction is wrong" as the
positive class and the uncertainty as the score (0.5 = no better than chance; NaN when
the test set has only right or only wrong predictions).

The data is read batch by batch (``mlmm.data.batches.iter_batches``: in-memory slices, or a
``MemmapDataset`` / map-style torch ``Dataset`` through a ``DataLoader``); what is kept across
batches is per sample a few scalars (right or wrong, the uncertainty scores) and the
reliability bins' counts, per subset for ``subset_uncertainty``.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data.batch import Batch
from ..data.batches import DEFAULT_BATCH_ROWS, iter_batches
from ..metrics.calibration import ReliabilityBins
from ..train.loop import FittedModel
from .forward import forward_all, subset_batch

UNCERTAINTY_KEY = "uncertainty"


def normalised_entropy(logits: torch.Tensor) -> np.ndarray:
    """(N, C) logits -> (N,) entropy of the softmax / log C (0 sure, 1 uniform)."""
    logp = torch.log_softmax(logits.double(), dim=1)
    ent = -(logp.exp() * logp).sum(dim=1)
    return (ent / np.log(max(logits.shape[1], 2))).numpy()


def error_auroc(uncertainty: np.ndarray, wrong: np.ndarray) -> float:
    """AUROC of ``uncertainty`` for detecting ``wrong`` predictions; NaN if one class is absent."""
    from sklearn.metrics import roc_auc_score

    wrong = np.asarray(wrong, dtype=bool)
    if wrong.all() or not wrong.any():
        return float("nan")
    return float(roc_auc_score(wrong, np.asarray(uncertainty, dtype=float)))


def _scores(model: FittedModel, batch: Batch, batch_size: int) -> dict:
    logits, aux = forward_all(model, batch, batch_size, aux_keys=(UNCERTAINTY_KEY,))
    out = {"logits": logits, "entropy": normalised_entropy(logits)}
    u = aux.get(UNCERTAINTY_KEY)
    if u is not None and u.shape == (len(logits),):
        out["method"] = u.double().numpy()
    return out


def _check_classification(model: FittedModel) -> None:
    if model.spec.task.kind != "classification":
        raise ValueError(f"uncertainty diagnostics need a classification task; dataset "
                         f"{model.spec.name!r} is {model.spec.task.kind}")


class _Scored:
    """Scores of the samples seen so far, batch by batch: (n,) right/wrong, (n,) per uncertainty
    score, (n,) number of present modalities, and the reliability bins."""

    def __init__(self, n_bins: int) -> None:
        self.bins = ReliabilityBins(n_bins)
        self.wrong: list[np.ndarray] = []
        self.n_present: list[np.ndarray] = []
        self.scores: dict[str, list[np.ndarray]] = {}
        self.batches = 0

    def add(self, model: FittedModel, batch: Batch, batch_size: int) -> None:
        if batch.target is None:
            raise ValueError("uncertainty diagnostics need labelled data (the batch's target is None)")
        s = _scores(model, batch, batch_size)
        target = batch.target.cpu().numpy()
        probs = torch.softmax(s["logits"].double(), dim=1).numpy()
        self.bins.update(probs, target)
        self.wrong.append(probs.argmax(1) != target)
        self.n_present.append(batch.mask.sum(dim=1).cpu().numpy())
        for key in ("entropy", "method"):
            if key in s and (self.batches == 0 or key in self.scores):
                self.scores.setdefault(key, []).append(s[key])
            else:  # a score every batch does not give is dropped
                self.scores.pop(key, None)
        self.batches += 1

    def arrays(self) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """(wrong (n,), n_present (n,), score -> (n,))."""
        return (np.concatenate(self.wrong), np.concatenate(self.n_present),
                {k: np.concatenate(v) for k, v in self.scores.items()})


def uncertainty_report(model: FittedModel, data, n_bins: int = 15,
                       batch_size: int = DEFAULT_BATCH_ROWS) -> dict:
    """Calibration and error detection on ``data`` under its own mask: {"n", "accuracy", "ece",
    "reliability": {confidence, accuracy, count}, "auroc": {score: AUROC}, "mean_uncertainty":
    {score: mean}, "by_n_present": {k: {"n", "accuracy", "mean_uncertainty": {score: mean}}}}.
    ``data``: in memory or streamed, read ``batch_size`` rows at a time."""
    _check_classification(model)
    scored = _Scored(n_bins)
    for batch in iter_batches(data, batch_size):
        scored.add(model, batch, batch_size)
    if not scored.batches:
        raise ValueError("uncertainty_report: the data has no rows")
    wrong, n_present, scores = scored.arrays()
    curve = scored.bins.curve()
    by_k = {}
    for k in sorted(set(n_present.tolist())):
        rows = n_present == k
        by_k[int(k)] = {"n": int(rows.sum()), "accuracy": float((~wrong[rows]).mean()),
                        "mean_uncertainty": {key: float(v[rows].mean()) for key, v in scores.items()}}
    return {
        "n": int(len(wrong)), "accuracy": float((~wrong).mean()),
        "ece": scored.bins.ece(),
        "reliability": {k: [None if np.isnan(x) else float(x) for x in curve[k]] for k in ("confidence", "accuracy")}
        | {"count": [int(c) for c in curve["count"]]},
        "auroc": {key: error_auroc(v, wrong) for key, v in scores.items()},
        "mean_uncertainty": {key: float(v.mean()) for key, v in scores.items()},
        "by_n_present": by_k,
    }


def subset_uncertainty(model: FittedModel, data, n_bins: int = 15,
                       batch_size: int = DEFAULT_BATCH_ROWS) -> dict:
    """Every non-empty modality subset S of ``data`` (each sample restricted to S ∩ its own
    modalities; samples left with nothing skipped): {"subsets": {name: {"size", "n", "accuracy",
    "ece", "auroc", "mean_uncertainty"}}, "by_size": {|S|: mean over subsets of accuracy, ece and
    mean uncertainty}}. ``data``: in memory or streamed, read ``batch_size`` rows at a time
    (every subset scored on each batch before the next is read)."""
    _check_classification(model)
    names = model.spec.modality_names
    m = len(names)
    scored = {s: _Scored(n_bins) for s in range(1, 2 ** m)}
    for batch in iter_batches(data, batch_size):
        for s in range(1, 2 ** m):
            sub = subset_batch(batch, s)
            rows = sub.mask.any(dim=1).cpu()
            if bool(rows.any()):
                scored[s].add(model, sub.select(rows.nonzero().flatten()), batch_size)
    subsets = {}
    for s, acc in scored.items():
        if not acc.batches:
            continue
        wrong, _, scores = acc.arrays()
        subsets["+".join(n for j, n in enumerate(names) if s >> j & 1)] = {
            "size": bin(s).count("1"), "n": int(len(wrong)), "accuracy": float((~wrong).mean()),
            "ece": acc.bins.ece(),
            "auroc": {k: error_auroc(v, wrong) for k, v in scores.items()},
            "mean_uncertainty": {k: float(v.mean()) for k, v in scores.items()},
        }
    by_size = {}
    for size in sorted({v["size"] for v in subsets.values()}):
        group = [v for v in subsets.values() if v["size"] == size]
        keys = group[0]["mean_uncertainty"].keys()
        by_size[size] = {"n_subsets": len(group), "accuracy": float(np.mean([g["accuracy"] for g in group])),
                         "ece": float(np.mean([g["ece"] for g in group])),
                         "mean_uncertainty": {k: float(np.mean([g["mean_uncertainty"][k] for g in group]))
                                              for k in keys}}
    return {"subsets": subsets, "by_size": by_size}
