"""Evaluate a fitted model on a dataset, overall and on every modality subset."""

from __future__ import annotations

import contextlib
from itertools import combinations
from typing import Iterator

import torch

from ..data.base import MultimodalDataset
from ..methods._parts.factorised import is_factorised
from ..train.loop import FittedModel
from .task import confusion_metrics, task_metrics


def evaluate(model: FittedModel, data: MultimodalDataset) -> dict[str, float]:
    """Metrics of ``model`` on ``data`` under ``data``'s own mask."""
    logits = model.predict_logits(data)
    return task_metrics(logits.numpy(), data.labels, model.spec.task)


def modality_subsets(n_modalities: int) -> list[tuple[int, ...]]:
    """All 2^M - 1 non-empty subsets, by size then lexicographically."""
    return [s for k in range(1, n_modalities + 1) for s in combinations(range(n_modalities), k)]


def evaluate_subsets(model: FittedModel, data: MultimodalDataset, fast: bool | None = None,
                     batch_size: int = 1024) -> dict[str, dict[str, float]]:
    """Metrics with every sample restricted to each modality subset in turn.

    Returns subset name ("fou+kar") -> metrics, plus "n" (samples evaluated).
    Samples whose *natural* mask lacks part of the subset see only what they
    have (the subset mask is intersected with the natural one); a sample left
    with nothing is not evaluated for that subset.

    ``fast``: None (default) takes the fast path when the method declares the
    ``FactorisedFusion`` capability (``methods/_parts/factorised.py``): every
    present modality is encoded once, and only the fusion is re-run per subset,
    on the embeddings of the subset's modalities — the same computation as the
    slow path, at the cost of one encoding pass plus 2^M - 1 fusions. False
    forces the slow path (2^M - 1 full passes, any method); True demands the
    fast one and is an error for a method without the capability.
    """
    method = model.method
    if fast and not is_factorised(method):
        raise ValueError(f"method {type(method).__name__} does not declare FactorisedFusion "
                         "(encode_modalities / fuse_embeddings), so it has no fast all-subsets path")
    use_fast = is_factorised(method) if fast is None else fast
    names = model.spec.modality_names
    subsets, masks, indices = [], [], []
    for subset in modality_subsets(len(names)):
        wanted = torch.zeros_like(data.mask)
        wanted[:, list(subset)] = True
        mask = wanted & data.mask
        rows = mask.any(dim=1)
        if rows.any():
            subsets.append(subset)
            masks.append(mask)
            indices.append(torch.nonzero(rows).flatten())
    with _eval_mode(model):
        if use_fast:
            all_logits = _factorised_subset_logits(model, data, masks, indices, batch_size)
        else:
            all_logits = [model.predict_logits(data.with_mask(mask).subset(index.numpy()), batch_size=batch_size)
                          for mask, index in zip(masks, indices)]
    results = {}
    for subset, index, logits in zip(subsets, indices, all_logits):
        target = data.labels[index.numpy()]
        metrics = (confusion_metrics(logits.numpy(), target, model.spec.task.n_classes)
                   if model.spec.task.kind == "classification" else task_metrics(logits.numpy(), target, model.spec.task))
        metrics["n"] = len(index)
        results["+".join(names[j] for j in subset)] = metrics
    return results


@contextlib.contextmanager
def _eval_mode(model: FittedModel) -> Iterator[None]:
    """Eval mode for a block (switched once: ``Module.train`` walks every submodule), then restored."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@torch.no_grad()
def _encode_once(model: FittedModel, data: MultimodalDataset, batch_size: int) -> torch.Tensor:
    """(N, M, D) embeddings of every sample under its natural mask, on the model's device (eval mode set by caller)."""
    device = next(model.parameters(), torch.empty(0)).device
    batch = data.as_batch()
    return torch.cat([model.method.encode_modalities(model.standardizer(batch.select(slice(i, i + batch_size)).to(device)))
                      for i in range(0, batch.size, batch_size)])


#: Bytes of stacked embeddings one fusion call may take (about a CPU's L2/L3 share): small
#: per-modality outputs (late-ensemble's (N, M, C) member logits) fuse many subsets per call.
_STACK_BYTES = 2 ** 20


@torch.no_grad()
def _factorised_subset_logits(model: FittedModel, data: MultimodalDataset, masks: list[torch.Tensor],
                              indices: list[torch.Tensor], batch_size: int) -> list[torch.Tensor]:
    """Per subset s, (len(indices[s]), C) logits: one encoding pass, then the fusion alone
    on z under masks[s], rows indices[s] kept.

    Where one subset's z (N, M, D) is large, the fusion runs on contiguous row slices of
    z (views, no copy) under the subset's mask: gathering rows first copied (rows, M, D)
    per subset for nothing, and measured ~2x slower. Where it is small (under
    ``_STACK_BYTES``), k subsets are fused in one call on z repeated k times, since
    per-call overhead then dominates. Either way a row left with no modality is fused
    too (every method is total on an empty mask) and dropped afterwards; each row's
    fusion reads only its own z and mask rows in eval mode, so the kept rows are what
    the slow path computes.
    """
    device = next(model.parameters(), torch.empty(0)).device
    z = _encode_once(model, data, batch_size)
    n, row_bytes = len(z), max(z[:1].numel() * z.element_size(), 1)
    k = max(1, min(len(masks), _STACK_BYTES // (row_bytes * n)))  # subsets per fusion call
    step = max(batch_size, _STACK_BYTES // row_bytes)  # rows per call
    out = []
    for first in range(0, len(masks), k):
        group = masks[first:first + k]
        mask = torch.cat(group).to(device)  # (len(group) * N, M)
        zs = z if len(group) == 1 else z.repeat(len(group), *([1] * (z.dim() - 1)))
        logits = torch.cat([model.method.fuse_embeddings(zs[i:i + step], mask[i:i + step]).logits
                            for i in range(0, len(zs), step)])
        for j, index in enumerate(indices[first:first + k]):
            out.append(logits[j * n:(j + 1) * n][index.to(device)].cpu())
    return out
