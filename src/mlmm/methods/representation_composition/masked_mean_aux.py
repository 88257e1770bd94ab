"""Masked-mean fusion with per-modality auxiliary classifiers (unimodal deep supervision)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...components.encode_pool import EncodePoolFusion
from ...components.pooling import masked_mean
from ...data.batch import Batch
from ...data.spec import DatasetSpec
from ..base import Capability, MethodInfo, Output
from ..registry import register_method


@register_method("masked-mean-aux")
class MaskedMeanWithUnimodalHeads(EncodePoolFusion):
    """masked-mean plus one linear classifier per modality on its own embedding.

    z_m = E_m(x_m) (B, D); h = Σ_m a_m z_m / Σ_m a_m (B, D); logits = head(h) (B, C);
    u_m = W_m z_m (B, C) per modality, returned in ``aux["unimodal_logits"]`` (B, M, C).
    loss = CE(logits, y) + λ · Σ_{b,m} a_bm CE(u_bm, y_b) / Σ_{b,m} a_bm.

    Why: under missingness a test sample often holds one or two modalities, and
    the fused objective alone lets an encoder lean on its partners (modality
    competition; Wang et al., "What makes training multi-modal classification
    networks hard?", CVPR 2020, Gradient-Blending). The unimodal terms make each
    embedding predictive on its own, so the mean of any subset stays informative.
    The unimodal loss is masked by availability (a missing modality's embedding
    is never supervised). Prediction uses the fused head only. Works with
    incomplete training data.
    """

    info = MethodInfo(
        category="representation-composition",
        fusion="hybrid",
        recovers_missing=False,
        needs_complete_train=False,
        capabilities=frozenset({Capability.FACTORISED}),
        paper="Unimodal auxiliary losses (Wang et al., CVPR 2020, Gradient-Blending) on masked-mean fusion",
        summary="masked-mean with per-modality linear classifiers trained by masked auxiliary CE",
    )

    pool = staticmethod(masked_mean)

    def __init__(self, spec: DatasetSpec, embed_dim: int = 128, hidden: int | None = None, dropout: float = 0.5,
                 aux_weight: float = 0.5, **components) -> None:
        super().__init__(spec, **components, embed_dim=embed_dim, hidden=hidden, dropout=dropout)
        if aux_weight < 0:
            raise ValueError(f"aux_weight must be >= 0, got {aux_weight}")
        self.aux_weight = aux_weight
        self.unimodal_heads = nn.ModuleList(nn.Linear(embed_dim, spec.task.output_dim) for _ in spec.modalities)

    def fuse_embeddings(self, z: Tensor, mask: Tensor) -> Output:
        """z (B, M, D), mask (B, M) -> logits (B, C) and aux["unimodal_logits"] (B, M, C)."""
        output = super().fuse_embeddings(z, mask)
        unimodal = torch.stack([head(z[:, j]) for j, head in enumerate(self.unimodal_heads)], dim=1)
        return Output(output.logits, {"unimodal_logits": unimodal})

    def loss(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        terms = super().loss(batch, output)
        unimodal = output.aux["unimodal_logits"]
        present = batch.mask
        total = unimodal.new_zeros(())
        for j in range(unimodal.shape[1]):
            rows = present[:, j]
            if rows.any():  # the task loss is a mean over rows; weight it by the row count
                total = total + self.task_loss(unimodal[rows, j], batch.target[rows]) * rows.sum()
        terms["unimodal"] = self.aux_weight * total / present.sum().clamp_min(1)
        return terms
