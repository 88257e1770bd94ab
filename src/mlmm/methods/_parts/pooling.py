"""Availability-masked pooling of per-modality embeddings."""

from __future__ import annotations

import torch
from torch import Tensor


def masked_mean(z: Tensor, mask: Tensor) -> Tensor:
    """Mean over present modalities.

    z: (B, M, D) embeddings (values at missing slots are ignored, even NaN);
    mask: (B, M) bool. Returns (B, D). A sample with no modality gets zeros
    (the data layer rejects such samples; this keeps the op total).
    """
    w = mask.unsqueeze(-1)
    total = torch.where(w, z, torch.zeros((), dtype=z.dtype, device=z.device)).sum(dim=1)
    return total / mask.sum(dim=1, keepdim=True).clamp_min(1).to(z.dtype)
