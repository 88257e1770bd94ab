"""Per-modality encoders picked from ``ModalitySpec.kind``, and ``PerModalityEncoders``.

Every encoder maps one modality's (B, *shape) tensor to (B, out_dim) and
treats each sample on its own: no BatchNorm or any other batch statistic,
so eval outputs never depend on batch-mates (conformance check 5).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..data.batch import Batch
from ..data.spec import DatasetSpec, ModalitySpec
from ..methods.base import mask_column


class VectorEncoder(nn.Module):
    """(B, D) -> (B, out_dim): a two-layer MLP."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class SequenceEncoder(nn.Module):
    """(B, T, C) -> (B, out_dim): two temporal convolutions, then mean and max pooling over time."""

    def __init__(self, channels: int, out_dim: int, hidden: int = 64, kernel: int = 5, dropout: float = 0.1) -> None:
        super().__init__()
        pad = kernel // 2
        self.conv = nn.Sequential(
            nn.Conv1d(channels, hidden, kernel, padding=pad),
            nn.GELU(),
            nn.Conv1d(hidden, hidden, kernel, padding=pad),
            nn.GELU(),
        )
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x.transpose(1, 2))  # (B, hidden, T)
        return self.out(torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1))


class ImageEncoder(nn.Module):
    """(B, C, H, W) -> (B, out_dim): two strided convolutions and global average pooling."""

    def __init__(self, channels: int, out_dim: int, hidden: int = 32, dropout: float = 0.1) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(hidden, 2 * hidden, 3, stride=2, padding=1),
            nn.GELU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.out = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * hidden, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.conv(x))


class TextEncoder(nn.Module):
    """(B, L) int64 token ids (0 = padding) -> (B, out_dim): mean of token embeddings."""

    def __init__(self, vocab_size: int, out_dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, hidden, padding_idx=0)
        self.out = nn.Linear(hidden, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        tokens = (x != 0).unsqueeze(-1).float()
        pooled = (self.embed(x) * tokens).sum(1) / tokens.sum(1).clamp_min(1.0)
        return self.out(pooled)


def build_encoder(spec: ModalitySpec, out_dim: int, *, hidden: int | None = None, dropout: float = 0.1,
                  vocab_size: int = 30522) -> nn.Module:
    """The default encoder for ``spec.kind``; ``hidden`` overrides the kind's default width."""
    if spec.kind == "vector":
        return VectorEncoder(spec.shape[0], out_dim, hidden=hidden or 256, dropout=dropout)
    if spec.kind == "sequence":
        return SequenceEncoder(spec.shape[1], out_dim, hidden=hidden or 64, dropout=dropout)
    if spec.kind == "image":
        return ImageEncoder(spec.shape[0], out_dim, hidden=hidden or 32, dropout=dropout)
    if spec.kind == "text":
        return TextEncoder(vocab_size, out_dim, hidden=hidden or 64)
    raise ValueError(f"modality {spec.name!r}: no encoder for kind {spec.kind!r}")


class PerModalityEncoders(nn.Module):
    """One encoder per modality: inputs dict + mask -> (B, M, D) embeddings.

    Missing rows are replaced by zeros *before* encoding (torch.where), so
    poisoned masked-out values can never reach an embedding or a gradient;
    callers must still ignore the embeddings at missing slots.
    """

    def __init__(self, spec: DatasetSpec, embed_dim: int, hidden: int | None = None, dropout: float = 0.1) -> None:
        super().__init__()
        self.spec = spec
        self.encoders = nn.ModuleDict(
            {m.name: build_encoder(m, embed_dim, hidden=hidden, dropout=dropout) for m in spec.modalities}
        )

    def forward(self, batch: Batch) -> torch.Tensor:
        zs = []
        for j, m in enumerate(self.spec.modalities):
            x = batch.inputs[m.name]
            x = torch.where(mask_column(batch.mask, j, x.dim()), x, torch.zeros((), dtype=x.dtype))
            zs.append(self.encoders[m.name](x))
        return torch.stack(zs, dim=1)
