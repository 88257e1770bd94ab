"""Evaluate a fitted model on a dataset, overall and on every modality subset."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from itertools import combinations
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..components.factorised import is_factorised
from ..data.base import MultimodalDataset
from ..errors import UnseenModalityWarning
from .task import confusion_metrics, task_metrics

if TYPE_CHECKING:  # annotations only: metrics never imports the training package at run time
    from ..train.loop import FittedModel


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
    ``FactorisedFusion`` capability (``mlmm.components.factorised``): every
    present modality is encoded once, and only the fusion is re-run per subset,
    on the embeddings of the subset's modalities — the same computation as the
    slow path, at the cost of one encoding pass plus 2^M - 1 fusions. False
    forces the slow path (2^M - 1 full passes, any method); True demands the
    fast one and is an error for a method without the capability.
    """
    model.check_data(data)  # another dataset's data: one clear error, not a KeyError
    method = model.method
    if fast and not is_factorised(method):
        raise ValueError(f"method {type(method).__name__} does not declare FactorisedFusion "
                         "(encode_modalities / fuse_embeddings), so it has no fast all-subsets path")
    use_fast = is_factorised(method) if fast is None else fast
    names = model.spec.modality_names
    all_subsets = modality_subsets(len(names))
    chosen = torch.zeros(len(all_subsets), len(names), dtype=torch.bool)  # (S, M)
    for i, subset in enumerate(all_subsets):
        chosen[i, list(subset)] = True
    masks = chosen.unsqueeze(1) & data.mask.unsqueeze(0)  # (S, N, M): subset ∩ natural mask
    rows = masks.any(dim=2)  # (S, N): samples left with something to evaluate
    evaluated = rows.any(dim=1).nonzero().flatten().tolist()
    masks, rows = masks[evaluated], rows[evaluated]
    masks = _hide_unseen(model, masks)  # rows left with only unseen modalities are predicted from nothing
    subsets = [all_subsets[i] for i in evaluated]
    indices = [r.nonzero().flatten().numpy() for r in rows]
    with _eval_mode(model):
        if use_fast:
            all_logits = _factorised_subset_logits(model, data, masks, indices, batch_size)
        else:
            all_logits = [model.predict_logits(data.with_mask(mask).subset(index), batch_size=batch_size).numpy()
                          for mask, index in zip(masks, indices)]
    results = {}
    for subset, index, logits in zip(subsets, indices, all_logits):
        target = data.labels[index]
        metrics = (confusion_metrics(logits, target, model.spec.task.n_classes)
                   if model.spec.task.kind == "classification" else task_metrics(logits, target, model.spec.task))
        metrics["n"] = len(index)
        results["+".join(names[j] for j in subset)] = metrics
    return results


def _hide_unseen(model: FittedModel, masks: torch.Tensor) -> torch.Tensor:
    """(S, N, M) subset masks without the modalities the model never saw in training (as
    ``FittedModel.forward`` does, with its warning), unless the model opts in to them."""
    seen = getattr(model, "seen_modalities", None)
    if seen is None or model.use_unseen_modalities or bool(seen.all()):
        return masks
    seen = seen.cpu()
    if bool((masks & ~seen).any()):
        names = [m for m, s in zip(model.spec.modality_names, seen.tolist()) if not s]
        warnings.warn(UnseenModalityWarning(
            f"modalit{'y' if len(names) == 1 else 'ies'} {', '.join(map(repr, names))} never present in the "
            "training split: treated as missing in every subset (pass use_unseen_modalities=True to use it)"),
            stacklevel=3)
    return masks & seen


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
    chunks = (batch.select(slice(i, i + batch_size)).to(device) for i in range(0, batch.size, batch_size))
    return torch.cat([model.method.encode_modalities(model.standardizer(chunk)) for chunk in chunks])


#: Bytes of (mask, row) embedding pairs one ``fuse_subsets`` call covers (rows are split; every
#: mask stays in each call). Small enough that a call's intermediates stay in cache: on
#: handwritten (63 masks x 400 rows) masked-mean's all-subsets evaluation took ~36-49 ms with
#: 4 MiB per call against ~65-70 ms with all rows in one call.
_FUSE_BYTES = 2 ** 22


@torch.no_grad()
def _factorised_subset_logits(model: FittedModel, data: MultimodalDataset, masks: torch.Tensor,
                              indices: list[np.ndarray], batch_size: int) -> list[np.ndarray]:
    """masks (S, N, M) -> per subset s, (len(indices[s]), C) logits as numpy: one encoding pass, then the method's
    ``fuse_subsets`` on z under all the subsets' masks (``FactorisedFusion``), rows indices[s]
    kept. A row left with no modality is fused too (every method is total on an empty mask)
    and dropped here; each row's fusion reads only its own z and mask rows in eval mode, so
    the kept rows are what the slow path computes (up to float rounding where a method
    reorders the arithmetic, as masked-mean does).
    """
    device = next(model.parameters(), torch.empty(0)).device
    z = _encode_once(model, data, batch_size)
    stacked = masks.to(device)
    row_bytes = max(z[:1].numel() * z.element_size(), 1)
    rows = max(1, _FUSE_BYTES // (len(masks) * row_bytes))
    logits = torch.cat([model.method.fuse_subsets(z[i:i + rows], stacked[:, i:i + rows])
                        for i in range(0, len(z), rows)], dim=1).cpu().numpy()  # (S, N, C)
    return [logits[s][index] for s, index in enumerate(indices)]
