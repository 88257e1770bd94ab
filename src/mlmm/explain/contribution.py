"""Modality contribution of a trained model: Shapley values over modality subsets.

The game: players are the modalities; for sample i and coalition S,

    v_i(S) = p_model(c_i | x_i restricted to S ∩ A_i)

with A_i the sample's available modalities and the model's *own* missing-modality
handling (the modalities outside S are masked out exactly as a missing modality
would be). c_i is the class the model predicts with everything available
(``target="predicted"``, the default: it explains the decision, no label needed) or
the true label (``target="true"``). v_i(∅) is the model's output for the empty
sample (every method is total on it; the conformance suite checks it), so
Σ_j φ_ij = v_i(A_i) - v_i(∅). A modality a sample lacks is a null player (φ = 0).
Regression tasks use the first output as the value.

Exact for M <= ``max_exact`` (2^M forward passes over all samples, one per subset — or, for a
method declaring ``FactorisedFusion``, one encoding pass and 2^M - 1 fusions, as in
``evaluate_subsets``); above it, a sampled-permutation estimate with its standard error.

The data is read batch by batch (``mlmm.data.batches.iter_batches``: an in-memory dataset in
slices, a ``MemmapDataset`` or any map-style torch ``Dataset`` through a ``DataLoader``); only
per-sample results (the (N, 2^M) value table, φ) are kept across batches. The sampled estimate
draws each batch's permutations in turn from one generator, so it depends on ``batch_size``
(not on whether the data is in memory or streamed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..components.factorised import is_factorised
from ..data.batch import Batch
from ..data.batches import DEFAULT_BATCH_ROWS, iter_batches
from ..diagnostics.forward import forward_all, subset_batch
from ..metrics.evaluate import fused_subset_logits
from ..train.loop import FittedModel
from .shapley import harsanyi_dividends, interaction_index, permutation_shapley, shapley_values

TARGETS = ("predicted", "true")


@dataclass
class Contributions:
    """Per-sample contributions. phi (N, M); se (N, M) for the sampled estimate, else None;
    v_empty / v_full (N,); pairwise (N, M, M) Shapley interaction index and dividends
    (N, 2^M) Harsanyi dividends (exact only, else None); names in mask-column order."""

    names: tuple[str, ...]
    phi: np.ndarray
    v_empty: np.ndarray
    v_full: np.ndarray
    target: str
    exact: bool
    se: np.ndarray | None = None
    pairwise: np.ndarray | None = None
    dividends: np.ndarray | None = None
    n_permutations: int = 0
    values: np.ndarray | None = field(default=None, repr=False)

    def summary(self, top: int = 5) -> dict:
        """JSON-ready aggregate: per modality mean φ, mean |φ| (and their SE over samples; for
        the sampled estimate also the mean estimation SE), the mean efficiency gap, and the
        ``top`` pairwise interactions and higher-order dividends by |mean|."""
        n = max(len(self.phi), 1)
        per = {}
        for j, name in enumerate(self.names):
            col = self.phi[:, j]
            per[name] = {"mean_phi": float(col.mean()), "mean_abs_phi": float(np.abs(col).mean()),
                         "se_mean_phi": float(col.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0}
            if self.se is not None:
                per[name]["estimation_se"] = float(np.sqrt((self.se[:, j] ** 2).sum()) / n)
        out = {"target": self.target, "exact": self.exact, "n_samples": int(len(self.phi)),
               "value_empty": float(self.v_empty.mean()), "value_full": float(self.v_full.mean()),
               "modalities": per,
               "efficiency_max_abs_gap": float(np.abs(self.phi.sum(1) - (self.v_full - self.v_empty)).max())
               if len(self.phi) else 0.0}
        if self.exact:
            out["n_permutations"] = 0
        else:
            out["n_permutations"] = self.n_permutations
        if self.pairwise is not None:
            mean = self.pairwise.mean(axis=0)
            pairs = [(i, j) for i in range(len(self.names)) for j in range(i + 1, len(self.names))]
            pairs.sort(key=lambda p: -abs(mean[p]))
            out["top_pairwise"] = [{"pair": f"{self.names[i]}+{self.names[j]}", "interaction": float(mean[i, j])}
                                   for i, j in pairs[:top]]
        if self.dividends is not None:
            mean = self.dividends.mean(axis=0)
            subsets = [s for s in range(len(mean)) if bin(s).count("1") >= 2]
            subsets.sort(key=lambda s: -abs(mean[s]))
            out["top_dividends"] = [{"subset": subset_name(s, self.names), "dividend": float(mean[s])}
                                    for s in subsets[:top]]
        return out


def subset_name(subset: int, names: tuple[str, ...]) -> str:
    """Bitmask -> "fou+kar" ("∅" for the empty set)."""
    return "+".join(n for j, n in enumerate(names) if subset >> j & 1) or "∅"


def _values_from_logits(logits: torch.Tensor, target_class: np.ndarray | None) -> np.ndarray:
    if target_class is None:  # regression: the first output
        return logits[:, 0].double().numpy()
    probs = torch.softmax(logits.double(), dim=1).numpy()
    return probs[np.arange(len(probs)), target_class]


def value_table(model: FittedModel, data, target: str = "predicted",
                batch_size: int = DEFAULT_BATCH_ROWS, fast: bool | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """((N, 2^M) v_i(S) for every subset bitmask S, the class each value is the probability of
    (None for regression)). Per batch of ``data``, one forward pass per subset; ``fast`` (None:
    where the method declares ``FactorisedFusion`` and every modality was seen in training)
    encodes the batch once and fuses it under the 2^M - 1 non-empty subsets instead."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if fast and not is_factorised(model.method):
        raise ValueError(f"method {type(model.method).__name__} does not declare FactorisedFusion, so it has no "
                         "fast path")
    if fast is None:
        fast = is_factorised(model.method) and (model.use_unseen_modalities or bool(model.seen_modalities.all()))
    m = model.spec.n_modalities
    values, classes = [np.zeros((0, 2 ** m))], []
    for batch in iter_batches(data, batch_size):
        logits = _fused_logits(model, batch, batch_size) if fast else \
            [forward_all(model, subset_batch(batch, s), batch_size)[0] for s in range(2 ** m)]
        target_class = _target_class(model, batch, logits[-1], target)
        values.append(np.stack([_values_from_logits(lg, target_class) for lg in logits], axis=1))
        classes.append(target_class)
    if model.spec.task.kind != "classification":
        return np.concatenate(values), None
    return np.concatenate(values), np.concatenate(classes) if classes else np.zeros(0, dtype=np.int64)


def _fused_logits(model: FittedModel, batch: Batch, batch_size: int) -> list[torch.Tensor]:
    """[(B, C) logits of subset bitmask S for S in 0 .. 2^M - 1]: the empty subset by a forward pass,
    the others by one encoding and ``fuse_subsets``; a row whose S ∩ A_i is empty gets the empty
    subset's output (the slow path's value: the model on a row with nothing present)."""
    m = model.spec.n_modalities
    bits = torch.arange(2 ** m)
    chosen = ((bits.unsqueeze(1) >> torch.arange(m)) & 1).bool()  # (2^M, M), row S = bitmask S
    masks = chosen[1:].unsqueeze(1) & batch.mask.unsqueeze(0)  # (2^M - 1, B, M)
    fused = fused_subset_logits(model, batch, masks)  # (2^M - 1, B, C)
    empty = forward_all(model, subset_batch(batch, 0), batch_size)[0]
    out = [empty]
    for s in range(1, 2 ** m):
        logits, nothing = fused[s - 1], ~masks[s - 1].any(dim=1)
        out.append(torch.where(nothing.unsqueeze(1), empty, logits) if bool(nothing.any()) else logits)
    return out


def _target_class(model: FittedModel, batch: Batch, full_logits: torch.Tensor, target: str) -> np.ndarray | None:
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if model.spec.task.kind != "classification":
        return None
    if target == "true":
        if batch.target is None:
            raise ValueError("target='true' needs labels, but the batch has no target")
        return batch.target.cpu().numpy().astype(np.int64)
    return full_logits.argmax(dim=1).numpy()


def modality_contributions(model: FittedModel, data, target: str = "predicted",
                           max_exact: int = 10, n_permutations: int = 64, seed: int = 0,
                           batch_size: int = DEFAULT_BATCH_ROWS, fast: bool | None = None) -> Contributions:
    """Shapley contributions of each modality for every sample of ``data`` (under its own mask).

    data: a ``MultimodalDataset``, a ``Batch`` or any map-style dataset (read ``batch_size``
    rows at a time). M <= ``max_exact``: exact values, pairwise interaction index and Harsanyi
    dividends (``fast``: as for ``value_table``). Otherwise: ``n_permutations`` sampled
    permutations per sample (numpy RNG from ``seed``, drawn batch after batch), with the
    standard error of each φ.
    """
    names = model.spec.modality_names
    m = len(names)
    if m <= max_exact:
        v, _ = value_table(model, data, target, batch_size, fast=fast)
        return Contributions(names, shapley_values(v), v[:, 0], v[:, -1], target, True,
                             pairwise=interaction_index(v) if m >= 2 else None, dividends=harsanyi_dividends(v),
                             values=v)
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    rng = np.random.default_rng(seed)
    phis, ses, ends = [np.zeros((0, m))], [np.zeros((0, m))], [np.zeros((2, 0))]
    for batch in iter_batches(data, batch_size):
        full_logits = forward_all(model, batch, batch_size)[0]
        target_class = _target_class(model, batch, full_logits, target)

        def value_of_masks(masks: np.ndarray, batch: Batch = batch, target_class=target_class) -> np.ndarray:
            wanted = torch.as_tensor(masks, device=batch.mask.device)
            return _values_from_logits(forward_all(model, batch.with_mask(batch.mask & wanted), batch_size)[0],
                                       target_class)

        phi, se, end = permutation_shapley(value_of_masks, batch.size, m, n_permutations, rng)
        phis.append(phi), ses.append(se), ends.append(end)
    end = np.concatenate(ends, axis=1)
    return Contributions(names, np.concatenate(phis), end[0], end[1], target, False, se=np.concatenate(ses),
                         n_permutations=n_permutations)
