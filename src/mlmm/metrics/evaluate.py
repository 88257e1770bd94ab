"""Evaluate a fitted model on a dataset, overall and on every modality subset."""

from __future__ import annotations

from itertools import combinations

import torch

from ..data.base import MultimodalDataset
from ..train.loop import FittedModel
from .task import classification_metrics


def evaluate(model: FittedModel, data: MultimodalDataset) -> dict[str, float]:
    """Metrics of ``model`` on ``data`` under ``data``'s own mask."""
    logits = model.predict_logits(data)
    return classification_metrics(logits.numpy(), data.labels, model.spec.task.n_classes)


def modality_subsets(n_modalities: int) -> list[tuple[int, ...]]:
    """All 2^M - 1 non-empty subsets, by size then lexicographically."""
    return [s for k in range(1, n_modalities + 1) for s in combinations(range(n_modalities), k)]


def evaluate_subsets(model: FittedModel, data: MultimodalDataset) -> dict[str, dict[str, float]]:
    """Metrics with every sample restricted to each modality subset in turn.

    Returns subset name ("fou+kar") -> metrics, plus "n" (samples evaluated).
    Samples whose *natural* mask lacks part of the subset see only what they
    have (the subset mask is intersected with the natural one); a sample left
    with nothing is not evaluated for that subset.
    """
    names = model.spec.modality_names
    results = {}
    for subset in modality_subsets(len(names)):
        wanted = torch.zeros_like(data.mask)
        wanted[:, list(subset)] = True
        mask = wanted & data.mask
        rows = mask.any(dim=1)
        if not rows.any():
            continue
        part = data.with_mask(mask).subset(torch.nonzero(rows).flatten().numpy())
        metrics = evaluate(model, part)
        metrics["n"] = int(rows.sum())
        results["+".join(names[j] for j in subset)] = metrics
    return results
