"""Recover or not (survey Sec. 7.2): does a method's recovery of missing modalities matter?

For a method with ``info.recovers_missing`` trained under a scenario, on the test split:

* fidelity — on held-out (sample, modality) slots that are really there (natural mask)
  but masked by the protocol, the recovered value r = ``recover(masked)[m]`` against the
  truth t: MSE (mean over features) and cosine(r, t) (flattened), averaged over slots.
  Input space: t is the standardised input. Embedding space: t is the method's own
  embedding of the really-present modality, ``recovery_target(complete batch)[m]`` (by
  default ``recover`` of the complete batch: methods whose recover returns their encoder's
  embedding at present slots; mmin overrides it with its teacher's embedding). The
  plain fill's MSE is reported next to it (the training mean / zeros) as the bar to beat.
* reliance — the same masked test split with ``plain_fill = True``: the fraction of
  incomplete samples whose prediction changes, and accuracy with recovery minus accuracy
  with the plain fill.

Verdict per (method, rate), over seeds (``verdict``): with Δ = mean accuracy gain of
recovery over the plain fill and f = mean fraction of incomplete samples whose prediction
changes, and margin = max(0.005, 2 · SE of Δ over seeds) (0.005 alone for one seed):
  "ignored"   if f < 0.02 (the prediction barely depends on what fills the slot);
  "helps"     else if Δ > margin;
  "hurts"     else if Δ < -margin;
  "dominated" otherwise (predictions move, accuracy does not: the present modalities decide).

Both read the test split batch by batch (``mlmm.data.batches``: in-memory slices, or a
``MemmapDataset`` / map-style torch ``Dataset`` through a ``DataLoader``) and keep sums and
counts per modality, so memory is bounded by the batch, not by N.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..data.batches import DEFAULT_BATCH_ROWS, iter_batches, paired_batches
from ..methods.base import Capability, MissingModalityModel
from ..train.loop import FittedModel
from .forward import forward_all

IGNORED_FLIP_FRACTION = 0.02
MIN_MARGIN = 0.005


def _check_recovering(method: MissingModalityModel) -> None:
    if not method.has(Capability.RECOVERS):
        raise ValueError(f"method {type(method).__name__} does not recover missing modalities "
                         "(it does not declare Capability.RECOVERS)")
    if method.recovery_space not in ("input", "embedding"):
        raise ValueError(f"method {type(method).__name__} declares no recovery_space ('input' or 'embedding'), "
                         "so recovered values cannot be compared with a truth")


@torch.no_grad()
def _recover(model: FittedModel, batch, batch_size: int = 1024) -> dict[str, torch.Tensor]:
    """method.recover on the standardised batch, in eval mode, chunked; CPU tensors."""
    method = model.method
    device = next(model.parameters(), torch.empty(0)).device
    was_training = model.training
    model.eval()
    out: dict[str, list] = {}
    try:
        for i in range(0, batch.size, batch_size):
            part = model.standardizer(batch.select(slice(i, i + batch_size)).to(device))
            for name, value in method.recover(part).items():
                out.setdefault(name, []).append(value.float().cpu())
    finally:
        model.train(was_training)
    return {name: torch.cat(v) for name, v in out.items()}


@torch.no_grad()
def _truth(model: FittedModel, complete, batch_size: int = 1024) -> tuple[dict[str, torch.Tensor], str]:
    method = model.method
    if method.recovery_space == "input":
        std = model.standardizer(complete)
        return {k: v.float() for k, v in std.inputs.items()}, "standardised input"
    device = next(model.parameters(), torch.empty(0)).device
    was_training = model.training
    model.eval()
    try:
        parts = [method.recovery_target(model.standardizer(complete.select(slice(i, i + batch_size)).to(device)))
                 for i in range(0, complete.size, batch_size)]
    finally:
        model.train(was_training)
    return {k: torch.cat([p[k].float().cpu() for p in parts]) for k in parts[0]}, "recovery_target"


def _plain_values(model: FittedModel, name: str, like: torch.Tensor) -> torch.Tensor:
    """The plain fill in the recovery space — the value ``plain_fill`` substitutes: the method's
    ``plain_fill_value(name)`` (input space: its training-mean fill), else 0 (embedding space;
    also the standardised training mean up to the method's own estimate)."""
    value = model.method.plain_fill_value(name)
    if value is None:
        return torch.zeros_like(like)
    return value.float().cpu().expand_as(like)


class _SlotSums:
    """Sums over held-out slots of one modality (float64), so that means over batches equal means
    over all slots at once."""

    def __init__(self) -> None:
        self.n, self.mse, self.cosine, self.plain = 0, 0.0, 0.0, 0.0

    def add(self, mse: torch.Tensor, cos: torch.Tensor, plain: torch.Tensor) -> None:
        self.n += len(mse)
        self.mse += float(mse.double().sum())
        self.cosine += float(cos.double().sum())
        self.plain += float(plain.double().sum())

    def figures(self) -> dict:
        if not self.n:
            return {"n_slots": 0, "mse": float("nan"), "cosine": float("nan"), "mse_plain": float("nan")}
        return {"n_slots": self.n, "mse": self.mse / self.n, "cosine": self.cosine / self.n,
                "mse_plain": self.plain / self.n}


def recovery_fidelity(model: FittedModel, test, test_masked, batch_size: int = DEFAULT_BATCH_ROWS) -> dict:
    """Fidelity on held-out slots present in ``test`` but masked in ``test_masked`` (same rows;
    in-memory or streamed datasets, read side by side ``batch_size`` rows at a time).

    Returns {"space", "truth", "n_slots", "mse", "cosine", "mse_plain", "per_modality": {m: {...}}};
    figures are NaN where no slot was held out."""
    _check_recovering(model.method)
    if len(test) != len(test_masked):
        raise ValueError(f"test ({len(test)} rows) and test_masked ({len(test_masked)} rows) must be the same rows")
    names = model.spec.modality_names
    per = {name: _SlotSums() for name in names}
    source = "standardised input" if model.method.recovery_space == "input" else "recovery_target"
    for complete, masked in paired_batches(test, test_masked, batch_size):
        held = complete.mask & ~masked.mask  # (B, M)
        if not bool(held.any()):
            continue
        recovered = _recover(model, masked, batch_size)
        truth, source = _truth(model, complete, batch_size)
        for j, name in enumerate(names):
            rows = held[:, j]
            if name not in recovered or not bool(rows.any()):
                continue
            r, t = recovered[name][rows].flatten(1), truth[name][rows].flatten(1)
            p = _plain_values(model, name, recovered[name][rows]).flatten(1)
            per[name].add((r - t).pow(2).mean(dim=1), F.cosine_similarity(r, t, dim=1, eps=1e-12),
                          (p - t).pow(2).mean(dim=1))
    total = _SlotSums()
    for sums in per.values():
        total.n, total.mse, total.cosine, total.plain = (total.n + sums.n, total.mse + sums.mse,
                                                          total.cosine + sums.cosine, total.plain + sums.plain)
    return {"space": model.method.recovery_space, "truth": source, **total.figures(),
            "per_modality": {name: sums.figures() for name, sums in per.items()}}


def recovery_reliance(model: FittedModel, test_masked, batch_size: int = DEFAULT_BATCH_ROWS) -> dict:
    """Predictions with the recovery vs with ``plain_fill`` on the same masked test split
    (in memory or streamed, ``batch_size`` rows at a time).

    Returns {"n_incomplete", "changed_fraction" (of incomplete samples), "accuracy_recovered",
    "accuracy_plain", "accuracy_gain"} (accuracies over all test samples)."""
    method = model.method
    _check_recovering(method)
    classification = model.spec.task.kind == "classification"
    n = n_incomplete = changed = elements = 0
    score_r = score_p = 0.0  # correct predictions (classification) or summed squared errors (regression)
    previous = method.plain_fill
    try:
        for batch in iter_batches(test_masked, batch_size):
            method.plain_fill = False
            rec = forward_all(model, batch, batch_size)[0]
            method.plain_fill = True
            plain = forward_all(model, batch, batch_size)[0]
            target = batch.target.cpu()
            incomplete = ~batch.mask.all(dim=1).cpu()
            if classification:
                pr, pp = rec.argmax(1), plain.argmax(1)
                moved = pr != pp
                score_r += int((pr == target).sum())
                score_p += int((pp == target).sum())
            else:  # regression: "changed" = moved by more than 1e-6; accuracy = minus MSE
                moved = (rec - plain).abs().amax(dim=1) > 1e-6
                score_r += float((rec.reshape(target.shape).double() - target.double()).pow(2).sum())
                score_p += float((plain.reshape(target.shape).double() - target.double()).pow(2).sum())
            changed += int(moved[incomplete].sum())
            n_incomplete += int(incomplete.sum())
            n += batch.size
            elements += target.numel()
    finally:
        method.plain_fill = previous
    if classification:
        acc_r, acc_p = score_r / max(n, 1), score_p / max(n, 1)
    else:  # minus the mean squared error over every target element
        acc_r, acc_p = -score_r / max(elements, 1), -score_p / max(elements, 1)
    return {"n_incomplete": n_incomplete,
            "changed_fraction": changed / n_incomplete if n_incomplete else float("nan"),
            "accuracy_recovered": acc_r, "accuracy_plain": acc_p, "accuracy_gain": acc_r - acc_p}


def verdict(gains: list[float], changed: list[float]) -> dict:
    """The rule in the module docstring, over seeds: {"verdict", "gain", "gain_se", "changed", "margin"}."""
    gains_a, changed_a = np.asarray(gains, dtype=float), np.asarray(changed, dtype=float)
    gain = float(gains_a.mean())
    se = float(gains_a.std(ddof=1) / np.sqrt(len(gains_a))) if len(gains_a) > 1 else 0.0
    flips = float(np.nanmean(changed_a)) if np.isfinite(changed_a).any() else 0.0
    margin = max(MIN_MARGIN, 2 * se)
    if flips < IGNORED_FLIP_FRACTION:
        word = "ignored"
    elif gain > margin:
        word = "helps"
    elif gain < -margin:
        word = "hurts"
    else:
        word = "dominated"
    return {"verdict": word, "gain": gain, "gain_se": se, "changed": flips, "margin": margin}


def recovering_methods() -> list[str]:
    """Registered methods that declare ``Capability.RECOVERS`` (the conformance suite checks
    that each of them implements ``recover`` in its ``recovery_space``)."""
    from ..methods import METHODS

    return [name for name in METHODS.names() if METHODS.get(name).info.has(Capability.RECOVERS)]
