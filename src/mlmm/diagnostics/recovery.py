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
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..data.base import MultimodalDataset
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


def recovery_fidelity(model: FittedModel, test: MultimodalDataset, test_masked: MultimodalDataset,
                      batch_size: int = 1024) -> dict:
    """Fidelity on held-out slots present in ``test`` but masked in ``test_masked`` (same rows).

    Returns {"space", "truth", "n_slots", "mse", "cosine", "mse_plain", "per_modality": {m: {...}}};
    figures are NaN where no slot was held out."""
    _check_recovering(model.method)
    if len(test) != len(test_masked):
        raise ValueError(f"test ({len(test)} rows) and test_masked ({len(test_masked)} rows) must be the same rows")
    complete, masked = test.as_batch(), test_masked.as_batch()
    held = complete.mask & ~masked.mask  # (N, M)
    recovered = _recover(model, masked, batch_size)
    truth, source = _truth(model, complete, batch_size)
    per, mse_all, cos_all, plain_all = {}, [], [], []
    for j, name in enumerate(complete.inputs):
        rows = held[:, j]
        if name not in recovered or not bool(rows.any()):
            per[name] = {"n_slots": 0, "mse": float("nan"), "cosine": float("nan"), "mse_plain": float("nan")}
            continue
        r, t = recovered[name][rows].flatten(1), truth[name][rows].flatten(1)
        p = _plain_values(model, name, recovered[name][rows]).flatten(1)
        mse = (r - t).pow(2).mean(dim=1)
        cos = F.cosine_similarity(r, t, dim=1, eps=1e-12)
        plain = (p - t).pow(2).mean(dim=1)
        mse_all.append(mse), cos_all.append(cos), plain_all.append(plain)
        per[name] = {"n_slots": int(rows.sum()), "mse": float(mse.mean()), "cosine": float(cos.mean()),
                     "mse_plain": float(plain.mean())}
    if mse_all:
        mse, cos, plain = torch.cat(mse_all), torch.cat(cos_all), torch.cat(plain_all)
        total = {"n_slots": len(mse), "mse": float(mse.mean()), "cosine": float(cos.mean()),
                 "mse_plain": float(plain.mean())}
    else:
        total = {"n_slots": 0, "mse": float("nan"), "cosine": float("nan"), "mse_plain": float("nan")}
    return {"space": model.method.recovery_space, "truth": source, **total, "per_modality": per}


def recovery_reliance(model: FittedModel, test_masked: MultimodalDataset, batch_size: int = 1024) -> dict:
    """Predictions with the recovery vs with ``plain_fill`` on the same masked test split.

    Returns {"n_incomplete", "changed_fraction" (of incomplete samples), "accuracy_recovered",
    "accuracy_plain", "accuracy_gain"} (accuracies over all test samples)."""
    method = model.method
    _check_recovering(method)
    batch = test_masked.as_batch()
    previous = method.plain_fill
    try:
        method.plain_fill = False
        rec = forward_all(model, batch, batch_size)[0]
        method.plain_fill = True
        plain = forward_all(model, batch, batch_size)[0]
    finally:
        method.plain_fill = previous
    target = batch.target.cpu()
    incomplete = ~batch.mask.all(dim=1).cpu()
    if model.spec.task.kind == "classification":
        pr, pp = rec.argmax(1), plain.argmax(1)
        changed = (pr != pp)[incomplete].float()
        acc_r, acc_p = float((pr == target).float().mean()), float((pp == target).float().mean())
    else:  # regression: "changed" = moved by more than 1e-6; accuracy = minus MSE
        changed = ((rec - plain).abs().amax(dim=1) > 1e-6)[incomplete].float()
        acc_r = -float(F.mse_loss(rec.reshape(target.shape), target))
        acc_p = -float(F.mse_loss(plain.reshape(target.shape), target))
    return {"n_incomplete": int(incomplete.sum()),
            "changed_fraction": float(changed.mean()) if len(changed) else float("nan"),
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
