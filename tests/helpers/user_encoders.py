"""User-defined encoders for tests/test_user_encoders_saved.py: what a user writes in their own
module. Constructor arguments are stored under their own names, so a saved model's manifest
records them and ``mlmm.load`` can rebuild the encoder (once this module is imported)."""

from __future__ import annotations

import torch
from torch import nn


class TinyCNN(nn.Module):
    """(B, C, H, W) image -> (B, out_dim)."""

    def __init__(self, channels: int = 1, out_dim: int = 24) -> None:
        super().__init__()
        self.channels, self.out_dim = channels, out_dim
        self.net = nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                                 nn.Flatten(), nn.Linear(32, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.float())


class MeanTokens(nn.Module):
    """(B, L) token ids -> (B, out_dim): mean embedding of the non-padding tokens."""

    def __init__(self, vocab_size: int = 64, out_dim: int = 16, pad_id: int = 0) -> None:
        super().__init__()
        self.vocab_size, self.out_dim, self.pad_id = vocab_size, out_dim, pad_id
        self.embed = nn.Embedding(vocab_size, out_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        keep = (ids != self.pad_id).unsqueeze(-1).float()
        return (self.embed(ids.long()) * keep).sum(1) / keep.sum(1).clamp_min(1.0)
