"""Uncertainty under missingness: calibration per rate and per modality subset, error
detection by uncertainty (AUROC), and how uncertainty grows as modalities go missing.

Uncertainty scores (higher = less sure), per sample:
* ``entropy``: predictive entropy of softmax(logits) divided by log C, in [0, 1]; every method.
* ``method``: ``Output.aux["uncertainty"]`` (B,) for methods that output one (e.g. TMC's
  Dirichlet vacuity); absent otherwise.
Error-detection AUROC: sklearn's ``roc_auc_score`` with "the prediction is wrong" as the
positive class and the uncertainty as the score (0.5 = no better than chance; NaN when
the test set has only right or only wrong predictions).
"""

from __future__ import annotations

import numpy as np
import torch

from ..data.base import MultimodalDataset
from ..data.batch import Batch
from ..metrics.calibration import expected_calibration_error, reliability_curve
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


def uncertainty_report(model: FittedModel, data: MultimodalDataset, n_bins: int = 15,
                       batch_size: int = 1024) -> dict:
    """Calibration and error detection on ``data`` under its own mask: {"n", "accuracy", "ece",
    "reliability": {confidence, accuracy, count}, "auroc": {score: AUROC}, "mean_uncertainty":
    {score: mean}, "by_n_present": {k: {"n", "accuracy", "mean_uncertainty": {score: mean}}}}."""
    _check_classification(model)
    batch = data.as_batch()
    s = _scores(model, batch, batch_size)
    target = batch.target.cpu().numpy()
    probs = torch.softmax(s["logits"].double(), dim=1).numpy()
    wrong = probs.argmax(1) != target
    curve = reliability_curve(probs, target, n_bins)
    keys = [k for k in ("entropy", "method") if k in s]
    n_present = batch.mask.sum(dim=1).cpu().numpy()
    by_k = {}
    for k in sorted(set(n_present.tolist())):
        rows = n_present == k
        by_k[int(k)] = {"n": int(rows.sum()), "accuracy": float((~wrong[rows]).mean()),
                        "mean_uncertainty": {key: float(s[key][rows].mean()) for key in keys}}
    return {
        "n": int(len(target)), "accuracy": float((~wrong).mean()),
        "ece": expected_calibration_error(probs, target, n_bins),
        "reliability": {k: [None if np.isnan(x) else float(x) for x in curve[k]] for k in ("confidence", "accuracy")}
        | {"count": [int(c) for c in curve["count"]]},
        "auroc": {key: error_auroc(s[key], wrong) for key in keys},
        "mean_uncertainty": {key: float(s[key].mean()) for key in keys},
        "by_n_present": by_k,
    }


def subset_uncertainty(model: FittedModel, data: MultimodalDataset, n_bins: int = 15,
                       batch_size: int = 1024) -> dict:
    """Every non-empty modality subset S of ``data`` (each sample restricted to S ∩ its own
    modalities; samples left with nothing skipped): {"subsets": {name: {"size", "n", "accuracy",
    "ece", "auroc", "mean_uncertainty"}}, "by_size": {|S|: mean over subsets of accuracy, ece and
    mean uncertainty}}."""
    _check_classification(model)
    batch = data.as_batch()
    names = tuple(batch.inputs)
    m = len(names)
    target = batch.target.cpu().numpy()
    subsets = {}
    for s in range(1, 2 ** m):
        sub = subset_batch(batch, s)
        rows = sub.mask.any(dim=1).cpu().numpy()
        if not rows.any():
            continue
        sc = _scores(model, sub.select(torch.as_tensor(np.flatnonzero(rows))), batch_size)
        probs = torch.softmax(sc["logits"].double(), dim=1).numpy()
        t = target[rows]
        wrong = probs.argmax(1) != t
        keys = [k for k in ("entropy", "method") if k in sc]
        subsets["+".join(n for j, n in enumerate(names) if s >> j & 1)] = {
            "size": bin(s).count("1"), "n": int(rows.sum()), "accuracy": float((~wrong).mean()),
            "ece": expected_calibration_error(probs, t, n_bins),
            "auroc": {k: error_auroc(sc[k], wrong) for k in keys},
            "mean_uncertainty": {k: float(sc[k].mean()) for k in keys},
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
