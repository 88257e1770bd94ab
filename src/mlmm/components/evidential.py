"""Subjective-logic opinions from Dirichlet evidence, and their reduced Dempster–Shafer combination.

Notation (Han et al., "Trusted Multi-View Classification", ICLR 2021): K classes,
evidence e >= 0 (..., K), Dirichlet α = e + 1, strength S = Σ_k α_k,
belief b = e / S (..., K), uncertainty u = K / S (...,), so Σ_k b_k + u = 1.
Zero evidence gives the vacuous opinion (b = 0, u = 1), the identity of the
combination rule: combining with it returns the other opinion exactly, which is
how a missing modality drops out of the fusion.
"""

from __future__ import annotations

import torch
from torch import Tensor


def opinion(evidence: Tensor) -> tuple[Tensor, Tensor]:
    """(belief (..., K), uncertainty (...,)) of non-negative ``evidence`` (..., K)."""
    n_classes = evidence.shape[-1]
    strength = evidence.sum(dim=-1) + n_classes
    return evidence / strength.unsqueeze(-1), n_classes / strength


def combine_two(b1: Tensor, u1: Tensor, b2: Tensor, u2: Tensor) -> tuple[Tensor, Tensor]:
    """Reduced Dempster–Shafer combination of two opinions (b (..., K), u (...,)).

    C = Σ_{i≠j} b1_i b2_j (conflict); b = (b1 b2 + b1 u2 + b2 u1) / (1 - C); u = u1 u2 / (1 - C).
    With (b2, u2) = (0, 1) this is exactly (b1, u1), bit for bit (C = 0, every extra term 0).
    """
    conflict = b1.sum(dim=-1) * b2.sum(dim=-1) - (b1 * b2).sum(dim=-1)
    scale = 1.0 - conflict
    belief = (b1 * b2 + b1 * u2.unsqueeze(-1) + b2 * u1.unsqueeze(-1)) / scale.unsqueeze(-1)
    return belief, u1 * u2 / scale


def combine_opinions(belief: Tensor, uncertainty: Tensor) -> tuple[Tensor, Tensor]:
    """Fold ``combine_two`` over axis 1: belief (B, M, K), uncertainty (B, M) -> (B, K), (B,).

    Missing modalities must already hold the vacuous opinion (b = 0, u = 1).
    """
    b, u = belief[:, 0], uncertainty[:, 0]
    for m in range(1, belief.shape[1]):
        b, u = combine_two(b, u, belief[:, m], uncertainty[:, m])
    return b, u


def opinion_to_alpha(belief: Tensor, uncertainty: Tensor) -> Tensor:
    """Dirichlet α (..., K) of an opinion: S = K / u, e = b S, α = e + 1."""
    n_classes = belief.shape[-1]
    strength = n_classes / uncertainty
    return belief * strength.unsqueeze(-1) + 1.0


def evidential_loss(alpha: Tensor, target: Tensor, kl_weight: float | Tensor) -> Tensor:
    """Per-sample TMC loss (B,) of Dirichlet ``alpha`` (B, K) against class indices (B,).

    Expected cross-entropy under Dir(α): ψ(S) - ψ(α_y), plus ``kl_weight`` ×
    KL(Dir(α̃) ‖ Dir(1)) with α̃ = y + (1 - y) ⊙ α (the evidence left on wrong classes).
    """
    n_classes = alpha.shape[-1]
    strength = alpha.sum(dim=-1)
    alpha_y = alpha.gather(1, target.view(-1, 1)).squeeze(1)
    ace = torch.digamma(strength) - torch.digamma(alpha_y)
    onehot = torch.nn.functional.one_hot(target, n_classes).to(alpha.dtype)
    tilde = onehot + (1.0 - onehot) * alpha
    return ace + kl_weight * dirichlet_kl_to_uniform(tilde)


def dirichlet_kl_to_uniform(alpha: Tensor) -> Tensor:
    """KL(Dir(α) ‖ Dir(1, ..., 1)) per row: alpha (B, K) -> (B,)."""
    n_classes = alpha.shape[-1]
    strength = alpha.sum(dim=-1)
    log_norm = (torch.lgamma(strength) - torch.lgamma(alpha).sum(dim=-1)
                - torch.lgamma(torch.tensor(float(n_classes), dtype=alpha.dtype, device=alpha.device)))
    digamma_term = ((alpha - 1.0) * (torch.digamma(alpha) - torch.digamma(strength).unsqueeze(-1))).sum(dim=-1)
    return log_norm + digamma_term
