"""Random sub-patterns of a sample's present modalities, drawn inside a method's training forward."""

from __future__ import annotations

import torch
from torch import Tensor


def random_sub_mask(mask: Tensor, strict: bool) -> Tensor:
    """(B, M) bool -> kept (B, M) bool ⊆ mask, per sample from the global torch RNG (the
    loop seeds it). A sample with n present modalities keeps a uniform number of them,
    chosen uniformly: k ~ U{1..n-1} kept if ``strict`` (at least one dropped, the ActionMAE
    masking; samples with n < 2 are left alone), else k ~ U{1..n} (MMIN-style simulated
    missing patterns, the full pattern included). Never keeps nothing of a non-empty sample."""
    n_present = mask.sum(dim=1, keepdim=True)  # (B, 1)
    n_choices = (n_present - 1 if strict else n_present).clamp_min(1)
    u = torch.rand(mask.shape[0], 1, device=mask.device)
    n_keep = (u * n_choices).floor().long().clamp(max=n_choices - 1) + 1  # uniform in 1..n_choices
    n_keep = torch.where(n_present >= 2, n_keep, n_present) if strict else n_keep
    scores = torch.rand(mask.shape, device=mask.device).masked_fill(~mask, 2.0)  # absent slots rank last
    rank = scores.argsort(dim=1).argsort(dim=1)  # (B, M) rank of each slot's score within its sample
    return mask & (rank < n_keep)
