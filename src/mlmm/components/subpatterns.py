"""Random sub-patterns of the availability mask, drawn inside a method's forward.

Dedicated and distillation methods train on modality subsets of what each
sample holds. Every draw takes ``generator``: the method passes its own
``self.generator``, the ``torch.Generator`` the training loop hands it, so the
draws are reproducible and never touch torch's global RNG (None: torch's
default generator, e.g. in a user's own loop that hands none).
"""

from __future__ import annotations

import torch
from torch import Tensor


def uniform_subpattern(mask: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """A uniformly random non-empty subset of each row's present modalities.

    mask: (B, M) bool. Returns (B, M) bool ⊆ ``mask``: each of the 2^|a| - 1
    non-empty subsets of row a is equally likely (fair coin per present
    modality, rejection of the empty draw). A row with no modality stays empty.
    """
    out = mask & (torch.rand(mask.shape, device=mask.device, generator=generator) < 0.5)
    redraw = mask.any(dim=1) & ~out.any(dim=1)
    while bool(redraw.any()):  # P(redraw) <= 1/2 per round: a few rounds at most
        fresh = mask & (torch.rand(mask.shape, device=mask.device, generator=generator) < 0.5)
        out = torch.where(redraw.unsqueeze(1), fresh, out)
        redraw = mask.any(dim=1) & ~out.any(dim=1)
    return out


def drop_present(mask: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """Drop each present entry of the (B, M) mask with probability ``p``, keeping at
    least one: a row left empty keeps one uniformly chosen present modality.
    Returns (B, M) bool ⊆ ``mask`` (a row with no modality stays empty)."""
    if p <= 0:
        return mask
    kept = mask & (torch.rand(mask.shape, device=mask.device, generator=generator) >= p)
    empty = mask.any(dim=1) & ~kept.any(dim=1)
    scores = torch.rand(mask.shape, device=mask.device, generator=generator).masked_fill(~mask, -1.0)
    rescue = torch.zeros_like(mask).scatter_(1, scores.argmax(dim=1, keepdim=True), True)
    return kept | (rescue & empty.unsqueeze(1))


def resample_rows(mask: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """With probability ``p`` per row, replace the row by ``uniform_subpattern`` of it.
    mask: (B, M) bool -> (B, M) bool ⊆ ``mask``."""
    if p <= 0:
        return mask
    chosen = (torch.rand(mask.shape[0], device=mask.device, generator=generator) < p).unsqueeze(1)
    return torch.where(chosen, uniform_subpattern(mask, generator), mask)


def pattern_ids(mask: Tensor) -> Tensor:
    """(B, M) bool -> (B,) int64 pattern id c = Σ_m a_m 2^m (0 = no modality)."""
    weights = 2 ** torch.arange(mask.shape[1], device=mask.device, dtype=torch.long)
    return (mask.to(torch.long) * weights).sum(dim=1)


def random_sub_mask(mask: Tensor, strict: bool, generator: torch.Generator | None = None) -> Tensor:
    """(B, M) bool -> kept (B, M) bool ⊆ mask, per sample from ``generator``. A sample with n present modalities
    keeps a uniform number of them, chosen uniformly: k ~ U{1..n-1} kept if ``strict`` (at least one dropped,
    the ActionMAE masking; samples with n < 2 are left alone), else k ~ U{1..n} (MMIN-style simulated missing
    patterns, the full pattern included). Never keeps nothing of a non-empty sample."""
    n_present = mask.sum(dim=1, keepdim=True)  # (B, 1)
    n_choices = (n_present - 1 if strict else n_present).clamp_min(1)
    u = torch.rand(mask.shape[0], 1, device=mask.device, generator=generator)
    n_keep = (u * n_choices).floor().long().clamp(max=n_choices - 1) + 1  # uniform in 1..n_choices
    n_keep = torch.where(n_present >= 2, n_keep, n_present) if strict else n_keep
    scores = torch.rand(mask.shape, device=mask.device, generator=generator).masked_fill(~mask, 2.0)  # absent: last
    rank = scores.argsort(dim=1).argsort(dim=1)  # (B, M) rank of each slot's score within its sample
    return mask & (rank < n_keep)
