"""Representation composition: pool the embeddings of the modalities that are present."""

from __future__ import annotations

import torch
from torch import nn

from ...data.batch import Batch
from ...data.spec import DatasetSpec
from ...encoders import build_encoder
from ..base import MethodInfo, MissingModalityModel, Output, mask_column
from .._parts.factorised import FactorisedFusion
from .._parts.heads import mlp_head
from .._parts.pooling import masked_mean
from ..registry import register_method


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


@register_method("masked-mean")
class MaskedMeanFusion(FactorisedFusion, MissingModalityModel):
    """Intermediate fusion by the mean of present embeddings.

    z_m = E_m(x_m) (B, D); h = Σ_m a_m z_m / Σ_m a_m (B, D); logits = head(h) (B, C).
    Parameter-free composition: a missing modality simply leaves the mean.
    """

    info = MethodInfo(
        category="representation-composition",
        fusion="intermediate",
        recovers_missing=False,
        needs_complete_train=False,
        paper="Masked average of modality embeddings (survey Sec. 2.2.2, e.g. HeMIS, Havaei et al., MICCAI 2016)",
        summary="per-modality encoders, mean of present embeddings, MLP head",
    )

    #: (B, M, D) embeddings, (B, M) mask -> (B, D); subclasses swap the pooling (see pooling.py).
    pool = staticmethod(masked_mean)

    def __init__(self, spec: DatasetSpec, embed_dim: int = 128, hidden: int | None = None, dropout: float = 0.5) -> None:
        super().__init__(spec)
        self.encoders = PerModalityEncoders(spec, embed_dim, hidden=hidden, dropout=dropout)
        self.head = mlp_head(embed_dim, spec.task.output_dim, hidden=embed_dim, dropout=dropout)

    # forward = fuse_embeddings(encode_modalities(batch), mask) (FactorisedFusion), so
    # all-subsets evaluation encodes each modality once and re-runs only pool + head.
    def encode_modalities(self, batch: Batch) -> torch.Tensor:
        """(B, M, D) per-modality embeddings."""
        return self.encoders(batch)

    def fuse_embeddings(self, z: torch.Tensor, mask: torch.Tensor) -> Output:
        """z (B, M, D), mask (B, M) -> logits (B, C) of the pooled present embeddings."""
        return Output(self.head(self.pool(z, mask)))

    def fuse_subsets(self, z: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """z (N, M, D), masks (S, N, M) -> logits (S, N, C) (see ``FactorisedFusion``).

        The mean of present embeddings and the head's first layer (affine) commute for a
        row with at least one modality: W (Σ a_m z_m / Σ a_m) + b = Σ a_m (W z_m + b) / Σ a_m.
        So each modality is projected once (N, M, H), and per mask only the weighted sum (one
        batched matrix product over all masks) and the rest of the head run; the head's
        first layer was ~half the per-subset cost. Other pools or fusions: the default.
        """
        mean_pool = self.pool is masked_mean and type(self).fuse_embeddings is MaskedMeanFusion.fuse_embeddings
        if not (mean_pool and isinstance(self.head, nn.Sequential) and isinstance(self.head[0], nn.Linear)):
            return super().fuse_subsets(z, masks)
        projected = self.head[0](z)  # (N, M, H)
        weights = masks.to(projected.dtype)
        weights = weights / weights.sum(dim=2, keepdim=True).clamp_min(1)  # (S, N, M); empty rows all 0
        pooled = torch.einsum("snm,nmh->snh", weights, projected)  # (S, N, H)
        return self.head[1:](pooled)
