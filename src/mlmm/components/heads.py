"""Prediction heads."""

from __future__ import annotations

from torch import nn


def mlp_head(in_dim: int, out_dim: int, hidden: int = 128, dropout: float = 0.1) -> nn.Module:
    """(B, in_dim) -> (B, out_dim) logits."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))
