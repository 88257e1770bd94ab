"""Per-modality encoders picked from ``ModalitySpec.kind``, and ``PerModalityEncoders``.

Every encoder maps one modality's (B, *shape) tensor to (B, out_dim) and
treats each sample on its own (GroupNorm, never statistics of the batch), so
eval outputs never depend on batch-mates (the batch-composition check). An
encoder you bring may use BatchNorm: its eval mode reads running statistics,
which do not depend on batch-mates either.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..data.batch import Batch
from ..data.spec import DatasetSpec, ModalitySpec
from ..methods.base import mask_column

if TYPE_CHECKING:
    from .injection import ComponentChoices


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


class ResidualBlock(nn.Module):
    """(B, C_in, H, W) -> (B, C_out, H/stride, W/stride): two 3x3 convolutions with GroupNorm + a skip."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), _norm(c_out), nn.GELU(),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), _norm(c_out),
        )
        self.skip = (nn.Identity() if stride == 1 and c_in == c_out
                     else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), _norm(c_out)))
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.skip(x))


def _norm(channels: int) -> nn.GroupNorm:
    # GroupNorm normalises each sample on its own: no running or batch statistics to manage.
    return nn.GroupNorm(math.gcd(8, channels), channels)


class ImageEncoder(nn.Module):
    """(B, C, H, W) -> (B, out_dim): a small ResNet.

    A 3x3 stem (stride 2 when the shorter side is >= 32, plus a 2x2 max-pool when it is >= 64,
    so large images cost about as much as 32x32 ones), three residual stages of widths
    hidden, 2 hidden, 4 hidden (the last two stride 2), global average pooling, dropout, linear.
    GroupNorm, not BatchNorm, so nothing depends on batch-mates in train or eval mode.
    """

    def __init__(self, channels: int, out_dim: int, hidden: int = 32, dropout: float = 0.1,
                 image_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        side = min(image_size) if image_size else 0
        stem = [nn.Conv2d(channels, hidden, 3, stride=2 if side >= 32 else 1, padding=1, bias=False),
                _norm(hidden), nn.GELU()]
        if side >= 64:
            stem.append(nn.MaxPool2d(2))
        self.conv = nn.Sequential(
            *stem,
            ResidualBlock(hidden, hidden),
            ResidualBlock(hidden, 2 * hidden, stride=2),
            ResidualBlock(2 * hidden, 4 * hidden, stride=2),
            nn.AdaptiveAvgPool2d(1),
        )
        self.out = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * hidden, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.conv(x))


class TextEncoder(nn.Module):
    """(B, L) int64 token ids in [0, vocab_size) -> (B, out_dim): mean of the embeddings of the
    non-padding tokens, then a linear map. A row of padding only gives the bias (such rows are
    missing by the data layer's rule, and methods ignore missing slots)."""

    def __init__(self, vocab_size: int, out_dim: int, hidden: int = 64, pad_id: int = 0) -> None:
        super().__init__()
        self.pad_id = int(pad_id)
        self.embed = nn.Embedding(vocab_size, hidden, padding_idx=self.pad_id)
        self.out = nn.Linear(hidden, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        tokens = (x != self.pad_id).unsqueeze(-1).float()
        pooled = (self.embed(x) * tokens).sum(1) / tokens.sum(1).clamp_min(1.0)
        return self.out(pooled)


def build_encoder(spec: ModalitySpec, out_dim: int, *, hidden: int | None = None, dropout: float = 0.1) -> nn.Module:
    """The default encoder for ``spec.kind``; ``hidden`` overrides the kind's default width.
    A text encoder's vocabulary and padding come from the spec (``vocab_size``, ``pad_id``)."""
    if spec.kind == "vector":
        return VectorEncoder(spec.shape[0], out_dim, hidden=hidden or 256, dropout=dropout)
    if spec.kind == "sequence":
        return SequenceEncoder(spec.shape[1], out_dim, hidden=hidden or 64, dropout=dropout)
    if spec.kind == "image":
        return ImageEncoder(spec.shape[0], out_dim, hidden=hidden or 32, dropout=dropout, image_size=spec.shape[1:])
    if spec.kind == "text":
        if spec.vocab_size is None:
            raise ValueError(f"text modality {spec.name!r} has no vocab_size: give ModalitySpec(..., vocab_size=...) "
                             "(the tokenizer's vocab_size), or load it with vocab_size={name: ...}")
        return TextEncoder(spec.vocab_size, out_dim, hidden=hidden or 64, pad_id=spec.pad_id)
    raise ValueError(f"modality {spec.name!r}: no encoder for kind {spec.kind!r}")


class PerModalityEncoders(nn.Module):
    """One encoder per modality: inputs dict + mask -> (B, M, D) embeddings.

    Missing rows are replaced by zeros *before* encoding (torch.where), so
    poisoned masked-out values can never reach an embedding or a gradient;
    callers must still ignore the embeddings at missing slots.
    """

    def __init__(self, spec: DatasetSpec, embed_dim: int, hidden: int | None = None, dropout: float = 0.1,
                 choices: ComponentChoices | None = None) -> None:
        """choices: the method's injected components (``self.components``); None: every
        modality gets its kind's default encoder."""
        super().__init__()
        from .injection import ComponentChoices  # injection builds on this module's encoders

        self.spec = spec
        choices = choices if choices is not None else ComponentChoices(spec)
        self.encoders = choices.encoders_for(spec, embed_dim, hidden=hidden, dropout=dropout)

    def forward(self, batch: Batch) -> torch.Tensor:
        zs = []
        for j, m in enumerate(self.spec.modalities):
            x = batch.inputs[m.name]
            x = torch.where(mask_column(batch.mask, j, x.dim()), x, torch.zeros((), dtype=x.dtype))
            zs.append(self.encoders[m.name](x))
        return torch.stack(zs, dim=1)
