"""A masked-mean fusion network that also returns its fused embedding.

Shared by methods that need a plain backbone next to something else (a
teacher, an EMA copy, per-pattern adapters): per-modality encoders, the mean
of present embeddings, an MLP head.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..data.batch import Batch
from ..data.spec import DatasetSpec
from .encoders import PerModalityEncoders
from .injection import ComponentChoices
from .pooling import masked_mean


class MaskedMeanNet(nn.Module):
    """batch -> (logits (B, C), fused embedding h (B, D)); h = Σ_m a_m E_m(x_m) / Σ_m a_m.

    Reads only present slots (``PerModalityEncoders`` zeroes the others before
    encoding); a sample with no modality gets h = 0.
    """

    def __init__(self, spec: DatasetSpec, embed_dim: int = 128, hidden: int | None = None,
                 dropout: float = 0.5, choices: ComponentChoices | None = None) -> None:
        super().__init__()
        choices = choices if choices is not None else ComponentChoices(spec)
        self.encoders = PerModalityEncoders(spec, embed_dim, hidden=hidden, dropout=dropout, choices=choices)
        self.head = choices.make_head(embed_dim, spec.task.output_dim, hidden=embed_dim, dropout=dropout)

    def embed(self, batch: Batch) -> Tensor:
        """(B, D) fused embedding over the present modalities of ``batch``."""
        return masked_mean(self.encoders(batch), batch.mask)

    def forward(self, batch: Batch) -> tuple[Tensor, Tensor]:
        h = self.embed(batch)
        return self.head(h), h
