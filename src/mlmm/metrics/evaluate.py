"""Evaluate a fitted model on a dataset, overall and on every modality subset.

Both read the data batch by batch (``mlmm.data.batches.iter_batches``): an in-memory
``MultimodalDataset`` in slices, any other map-style dataset (``MemmapDataset``, a user's
torch ``Dataset``) through a ``DataLoader``. What is kept across batches is the (N, C)
logits of one pass (``predict_all``) or, per subset, a (C, C) confusion matrix
(classification) / the (n, K) outputs (regression) — never N x features.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from ..components.factorised import is_factorised
from ..data.batch import Batch
from ..data.batches import DEFAULT_BATCH_ROWS, is_in_memory, iter_batches
from ..errors import UnseenModalityWarning
from .task import confusion_figures, confusion_matrix, task_metrics

if TYPE_CHECKING:  # annotations only: metrics never imports the training package at run time
    from ..train.loop import FittedModel


@dataclass(frozen=True)
class Predictions:
    """One pass of a model over a dataset: logits (N, C) (or (N, K) values) on CPU, target (N,)
    or (N, K) numpy (None for unlabelled data), mask (N, M) bool the rows were predicted under."""

    logits: Tensor
    target: np.ndarray | None
    mask: Tensor

    def labels(self) -> np.ndarray:
        """The targets; ``ValueError`` when the data had none."""
        if self.target is None:
            raise ValueError("the data has no labels (target is None): metrics need them")
        return self.target


def predict_all(model: FittedModel, data, batch_size: int = DEFAULT_BATCH_ROWS) -> Predictions:
    """``model``'s logits for every row of ``data`` with their targets and masks, in one pass.

    data: an in-memory ``MultimodalDataset`` / ``Batch`` (``model.predict_logits`` over it, as
    always), or any other map-style dataset, read ``batch_size`` rows at a time: each batch is
    predicted (``predict_logits``, which checks it is this model's data and the outputs are
    finite) and only its logits, labels and mask are kept.
    """
    if is_in_memory(data):
        logits = model.predict_logits(data, batch_size=batch_size)
        return Predictions(logits, None if data.target is None else data.target.numpy(), data.mask)
    logits, targets, masks = [], [], []
    for raw in iter_batches(data, batch_size):
        logits.append(model.predict_logits(raw, batch_size=batch_size, validate=False))
        targets.append(None if raw.target is None else raw.target)
        masks.append(raw.mask)
    if not logits:
        empty = torch.zeros(0, model.spec.n_modalities, dtype=torch.bool)
        return Predictions(torch.empty(0, model.spec.task.output_dim), None, empty)
    target = None if any(t is None for t in targets) else torch.cat(targets).numpy()
    return Predictions(torch.cat(logits), target, torch.cat(masks))


def evaluate(model: FittedModel, data, batch_size: int = DEFAULT_BATCH_ROWS) -> dict[str, float]:
    """Metrics of ``model`` on ``data`` under ``data``'s own mask (``data``: any dataset ``predict_all`` takes)."""
    pred = predict_all(model, data, batch_size)
    return task_metrics(pred.logits.numpy(), pred.labels(), model.spec.task)


def modality_subsets(n_modalities: int) -> list[tuple[int, ...]]:
    """All 2^M - 1 non-empty subsets, by size then lexicographically."""
    return [s for k in range(1, n_modalities + 1) for s in combinations(range(n_modalities), k)]


class _SubsetScores:
    """Per subset, what its metrics need, added batch by batch: classification a (C, C) confusion
    matrix per subset (S x C x C counts, whatever N), regression the kept rows' outputs and targets."""

    def __init__(self, task, n_subsets: int) -> None:
        self.task = task
        self.n = np.zeros(n_subsets, dtype=np.int64)
        self.classification = task.kind == "classification"
        if self.classification:
            self.cm = np.zeros((n_subsets, task.n_classes, task.n_classes), dtype=np.int64)
        else:
            self.outputs: list[list[np.ndarray]] = [[] for _ in range(n_subsets)]
            self.targets: list[list[np.ndarray]] = [[] for _ in range(n_subsets)]

    def add(self, s: int, logits: Tensor, target: Tensor) -> None:
        """logits (b, C) of subset ``s`` on b kept rows, target (b,) / (b, K)."""
        self.n[s] += len(logits)
        if self.classification:
            self.cm[s] += confusion_matrix(logits.argmax(dim=1).numpy(), target.numpy(), self.task.n_classes)
        else:
            self.outputs[s].append(logits.numpy())
            self.targets[s].append(target.numpy())

    def metrics(self, s: int) -> dict[str, float]:
        if self.classification:
            return confusion_figures(self.cm[s])
        return task_metrics(np.concatenate(self.outputs[s]), np.concatenate(self.targets[s]), self.task)


def evaluate_subsets(model: FittedModel, data, fast: bool | None = None,
                     batch_size: int = DEFAULT_BATCH_ROWS) -> dict[str, dict[str, float]]:
    """Metrics with every sample restricted to each modality subset in turn.

    Returns subset name ("fou+kar") -> metrics, plus "n" (samples evaluated).
    Samples whose *natural* mask lacks part of the subset see only what they
    have (the subset mask is intersected with the natural one); a sample left
    with nothing is not evaluated for that subset.

    ``data``: an in-memory ``MultimodalDataset`` or any map-style dataset (``MemmapDataset``,
    a user's torch ``Dataset`` giving ``Batch`` es), read ``batch_size`` rows at a time; per
    subset only a confusion matrix (classification) or the outputs (regression) is kept.

    ``fast``: None (default) takes the fast path when the method declares the
    ``FactorisedFusion`` capability (``mlmm.components.factorised``): every
    present modality of a batch is encoded once, and only the fusion is re-run per
    subset, on the embeddings of the subset's modalities — the same computation as the
    slow path, at the cost of one encoding pass plus 2^M - 1 fusions. False
    forces the slow path (2^M - 1 full passes per batch, any method); True demands the
    fast one and is an error for a method without the capability.
    """
    if is_in_memory(data):
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
    scores = _SubsetScores(model.spec.task, len(all_subsets))
    warned = False
    with _eval_mode(model):
        for raw in iter_batches(data, batch_size):
            if not is_in_memory(data):
                model.check_data(raw)
            if raw.target is None:
                raise ValueError("evaluate_subsets needs labelled data (the batch's target is None)")
            masks = chosen.unsqueeze(1) & raw.mask.unsqueeze(0)  # (S, B, M): subset ∩ natural mask
            rows = masks.any(dim=2)  # (S, B): samples left with something to evaluate
            # rows left with only unseen modalities are predicted from nothing
            masks, hidden = _hide_unseen(model, masks, warn=not warned)
            warned = warned or hidden
            fused = fused_subset_logits(model, raw, masks) if use_fast else None  # (S, B, C)
            for s in range(len(all_subsets)):
                index = rows[s].nonzero().flatten()
                if not len(index):
                    continue
                if fused is not None:
                    logits = fused[s][index]
                else:
                    logits = model.predict_logits(raw.with_mask(masks[s]).select(index), batch_size=batch_size,
                                                  validate=False)
                scores.add(s, logits, raw.target[index])
    results = {}
    for s, subset in enumerate(all_subsets):
        if scores.n[s]:
            metrics = scores.metrics(s)
            metrics["n"] = int(scores.n[s])
            results["+".join(names[j] for j in subset)] = metrics
    return results


def _hide_unseen(model: FittedModel, masks: torch.Tensor, warn: bool = True) -> tuple[torch.Tensor, bool]:
    """(S, B, M) subset masks without the modalities the model never saw in training (as
    ``FittedModel.forward`` does, with its warning when ``warn``), unless the model opts in to
    them; and whether anything was hidden."""
    seen = getattr(model, "seen_modalities", None)
    if seen is None or model.use_unseen_modalities or bool(seen.all()):
        return masks, False
    seen = seen.cpu()
    hidden = bool((masks & ~seen).any())
    if hidden and warn:
        names = [m for m, s in zip(model.spec.modality_names, seen.tolist()) if not s]
        warnings.warn(UnseenModalityWarning(
            f"modalit{'y' if len(names) == 1 else 'ies'} {', '.join(map(repr, names))} never present in the "
            "training split: treated as missing in every subset (pass use_unseen_modalities=True to use it)"),
            stacklevel=3)
    return masks & seen, hidden


@contextlib.contextmanager
def _eval_mode(model: FittedModel) -> Iterator[None]:
    """Eval mode for a block (switched once: ``Module.train`` walks every submodule), then restored."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


#: Bytes of (mask, row) embedding pairs one ``fuse_subsets`` call covers (rows are split; every
#: mask stays in each call). Small enough that a call's intermediates stay in cache: on
#: handwritten (63 masks x 400 rows) masked-mean's all-subsets evaluation took ~36-49 ms with
#: 4 MiB per call against ~65-70 ms with all rows in one call.
_FUSE_BYTES = 2 ** 22


@torch.no_grad()
def fused_subset_logits(model: FittedModel, raw: Batch, masks: torch.Tensor) -> torch.Tensor:
    """raw batch (B rows), masks (S, B, M) -> (S, B, C) logits on CPU: the batch encoded once under
    its natural mask, then the method's ``fuse_subsets`` on z under all the subsets' masks
    (``FactorisedFusion``). A row left with no modality is fused too (every method is total on
    an empty mask; the caller drops it); each row's fusion reads only its own z and mask rows in
    eval mode, so the kept rows are what the slow path computes (up to float rounding where a
    method reorders the arithmetic, as masked-mean does). Runs in eval mode (restored after).
    The method must declare ``FactorisedFusion`` (``is_factorised``).
    """
    device = next(model.parameters(), torch.empty(0)).device
    with _eval_mode(model):
        z = model.method.encode_modalities(model.standardizer(raw.to(device)))  # (B, M, D)
        stacked = masks.to(device)
        row_bytes = max(z[:1].numel() * z.element_size(), 1)
        rows = max(1, _FUSE_BYTES // (len(masks) * row_bytes))
        return torch.cat([model.method.fuse_subsets(z[i:i + rows], stacked[:, i:i + rows])
                          for i in range(0, len(z), rows)], dim=1).float().cpu()
