"""Availability-masked contrastive losses between modality embeddings."""

from __future__ import annotations

import torch
from torch import Tensor

#: Logit given to excluded pairs: exp(-1e4 - max) is exactly 0 in float32/16, and unlike -inf
#: it keeps logsumexp finite (and its gradient NaN-free) on rows that are entirely excluded.
_EXCLUDED = -1e4


def masked_infonce(u_a: Tensor, u_b: Tensor, both: Tensor, temperature: float | Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric InfoNCE between two modalities over the samples that hold both.

    u_a, u_b: (B, P) L2-normalised embeddings of modalities a and b (rows where
    ``both`` is False are never read, even NaN); both: (B,) bool, a_i^a & a_i^b.
    With S = {i : both[i]} and s_ij = <u_a[i], u_b[j]> / τ::

        L = 1/|S| Σ_{i∈S} ½ [ -log softmax_{j∈S}(s_i·)_i  -  log softmax_{j∈S}(s_·i)_i ]

    Returns (L, |S|): a scalar, 0 (still a tensor) when |S| < 2, where no
    negative exists; never NaN.
    """
    zero = torch.zeros((), dtype=u_a.dtype, device=u_a.device)
    keep = both.unsqueeze(1)
    u_a = torch.where(keep, u_a, zero)
    u_b = torch.where(keep, u_b, zero)
    logits = u_a @ u_b.t() / temperature  # (B, B)
    pair = both.unsqueeze(1) & both.unsqueeze(0)
    logits = torch.where(pair, logits, torch.full((), _EXCLUDED, dtype=logits.dtype, device=logits.device))
    diag = logits.diagonal()
    a_to_b = torch.logsumexp(logits, dim=1) - diag
    b_to_a = torch.logsumexp(logits, dim=0) - diag
    per_sample = torch.where(both, 0.5 * (a_to_b + b_to_a), zero)
    count = both.sum()
    loss = per_sample.sum() / count.clamp_min(1).to(per_sample.dtype)
    return torch.where(count >= 2, loss, zero), count


def pairwise_masked_infonce(u: Tensor, mask: Tensor, temperature: float | Tensor) -> Tensor:
    """Mean over modality pairs (i < j) of ``masked_infonce`` on the samples holding both.

    u: (B, M, P) L2-normalised embeddings (missing slots never read); mask: (B, M) bool.
    Pairs held by fewer than 2 samples are skipped (left out of the mean); with no usable
    pair the result is 0. Returns a scalar, never NaN.
    """
    n_modalities = u.shape[1]
    total = torch.zeros((), dtype=u.dtype, device=u.device)
    n_pairs = torch.zeros((), dtype=u.dtype, device=u.device)
    for i in range(n_modalities):
        for j in range(i + 1, n_modalities):
            both = mask[:, i] & mask[:, j]
            loss, count = masked_infonce(u[:, i], u[:, j], both, temperature)
            used = (count >= 2).to(u.dtype)
            total = total + used * loss
            n_pairs = n_pairs + used
    return total / n_pairs.clamp_min(1)
