"""Representation composition with time-masked pooling inside each sequence encoder."""

from __future__ import annotations

import torch
from torch import nn

from ...components.pooling import masked_mean
from ...components.time_pool import MaskedSequenceEncoder, batch_observed_steps
from ...data.batch import Batch
from ...data.spec import DatasetSpec
from ..base import MethodInfo, MissingModalityModel, Output, mask_column
from ..registry import register_method


@register_method("masked-temporal-pool")
class MaskedTemporalPool(MissingModalityModel):
    """Per-modality encoders whose pooling over time sees observed steps only, then a
    masked mean over modalities.

    Sequence modality m, (B, T, C) with observed steps o_m (B, T) (its time mask AND
    its mask column): h_m = conv([x_m ⊙ o_m, o_m]) (B, T, H); z_m = W [mean_t∈o h_m,
    max_t∈o h_m] (B, D). Vector/image/text modalities: the default encoders, z_m (B, D).
    h = Σ_m a_m z_m / Σ_m a_m (B, D); logits = head(h) (B, C).

    Without time masks every step of a present sequence is observed and this is
    ``masked-mean`` with a constant indicator channel.
    """

    info = MethodInfo(
        category="representation-composition",
        fusion="intermediate",
        recovers_missing=False,
        needs_complete_train=False,
        paper="Masked temporal pooling over observed steps (cf. GRU-D's masking, Che et al., Sci. Rep. 2018; "
              "survey Sec. 7.8 on temporal missingness)",
        summary="sequence encoders pool mean+max over observed time steps only, masked mean over modalities",
        fixed_encoders={"sequence": "a sequence is encoded frame by frame and pooled over its observed "
                                    "steps only; a whole-sequence encoder cannot skip unobserved steps"},
    )

    def __init__(self, spec: DatasetSpec, embed_dim: int = 128, hidden: int | None = None,
                 dropout: float = 0.5, **components) -> None:
        super().__init__(spec, **components)
        self.encoders = nn.ModuleDict({
            m.name: MaskedSequenceEncoder(m.shape[1], embed_dim, hidden=hidden or 64, dropout=dropout)
            if m.kind == "sequence" else self.components.encoder(m, embed_dim, hidden=hidden, dropout=dropout)
            for m in spec.modalities
        })
        self.head = self.components.make_head(embed_dim, spec.task.output_dim, hidden=embed_dim, dropout=dropout)

    def embed(self, batch: Batch) -> torch.Tensor:
        """(B, M, D) per-modality embeddings (values at missing slots are meaningless)."""
        zs = []
        for j, m in enumerate(self.spec.modalities):
            x = batch.inputs[m.name]
            if m.kind == "sequence":
                zs.append(self.encoders[m.name](x, batch_observed_steps(batch, self.spec, j)))
            else:
                x = torch.where(mask_column(batch.mask, j, x.dim()), x, torch.zeros((), dtype=x.dtype, device=x.device))
                zs.append(self.encoders[m.name](x))
        return torch.stack(zs, dim=1)

    def forward(self, batch: Batch) -> Output:
        return Output(self.head(masked_mean(self.embed(batch), batch.mask)))
