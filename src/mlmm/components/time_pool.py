"""Sequence encoding under a time mask: masked pooling over observed steps only."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..data.batch import Batch
from ..data.spec import DatasetSpec
from ..data.timemask import observed_steps


def masked_time_mean_max(h: Tensor, steps: Tensor) -> Tensor:
    """Mean and max over observed time steps.

    h: (B, T, D) per-step features (values at unobserved steps are ignored, even NaN);
    steps: (B, T) bool, True = observed. Returns (B, 2D) = [mean, max] over the
    observed steps; a row with no observed step gets zeros.
    """
    w = steps.unsqueeze(-1)
    zero = torch.zeros((), dtype=h.dtype, device=h.device)
    mean = torch.where(w, h, zero).sum(dim=1) / steps.sum(dim=1, keepdim=True).clamp_min(1).to(h.dtype)
    best = torch.where(w, h, torch.full((), float("-inf"), dtype=h.dtype, device=h.device)).amax(dim=1)
    best = torch.where(steps.any(dim=1, keepdim=True), best, zero)
    return torch.cat([mean, best], dim=1)


class MaskedSequenceEncoder(nn.Module):
    """(B, T, C) + (B, T) observed steps -> (B, out_dim).

    Two temporal convolutions over [x with zeros at unobserved steps, observed
    indicator] (so the convolution knows a neighbour is a gap, not a zero
    reading), then ``masked_time_mean_max`` over observed steps only, then a
    linear map. With every step observed it is the default sequence encoder plus
    a constant indicator channel.
    """

    def __init__(self, channels: int, out_dim: int, hidden: int = 64, kernel: int = 5, dropout: float = 0.1) -> None:
        super().__init__()
        pad = kernel // 2
        self.conv = nn.Sequential(
            nn.Conv1d(channels + 1, hidden, kernel, padding=pad),
            nn.GELU(),
            nn.Conv1d(hidden, hidden, kernel, padding=pad),
            nn.GELU(),
        )
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden, out_dim))

    def forward(self, x: Tensor, steps: Tensor) -> Tensor:
        x = torch.where(steps.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))
        inp = torch.cat([x, steps.unsqueeze(-1).to(x.dtype)], dim=2)  # (B, T, C + 1)
        h = self.conv(inp.transpose(1, 2)).transpose(1, 2)  # (B, T, hidden)
        return self.out(masked_time_mean_max(h, steps))


def batch_observed_steps(batch: Batch, spec: DatasetSpec, j: int) -> Tensor:
    """(B, T) observed steps of sequence modality j of ``batch`` (its time mask AND its mask column)."""
    m = spec.modalities[j]
    return observed_steps(batch.mask, batch.time_mask, j, m.name, m.shape[0])
