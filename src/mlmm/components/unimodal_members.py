"""Unimodal members: one classifier per modality, and their masked cross-entropy.

Shared by the late-fusion methods (``late-ensemble``, ``product-of-experts``): member m's
logits depend on x_m alone, so they are also what ``FactorisedFusion`` re-fuses per subset.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.batch import Batch


def member_logits(encoders: nn.Module, heads: nn.ModuleList, batch: Batch) -> Tensor:
    """(B, M, C) member logits f_m(E_m(x_m)); ``encoders`` maps a batch to (B, M, D) (e.g.
    ``PerModalityEncoders``), ``heads[m]`` maps (B, D) to (B, C). Missing slots hold values
    that callers ignore."""
    z = encoders(batch)  # (B, M, D)
    return torch.stack([head(z[:, j]) for j, head in enumerate(heads)], dim=1)


def member_cross_entropy(logits: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean cross-entropy of the members over the present (sample, modality) entries:
    logits (B, M, C), target (B,), mask (B, M) -> scalar. A missing modality's member
    neither votes nor learns."""
    b, m, c = logits.shape
    per_entry = F.cross_entropy(logits.reshape(b * m, c), target.repeat_interleave(m), reduction="none").reshape(b, m)
    present = mask.to(per_entry.dtype)
    return (per_entry * present).sum() / present.sum().clamp_min(1.0)
