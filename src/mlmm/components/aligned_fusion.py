"""Coordinated representation: per-modality embeddings projected into one space, fused by
their masked mean, and pulled together by a pairwise alignment loss a subclass defines
(``infonce-align``: masked InfoNCE; ``dcca-align``: masked deep CCA).

Shapes: B batch, M modalities, P = ``proj_dim``::

    u_m = W_m E_m(x_m)                                             (B, M, P)
    h = Σ_m a_m u_m / Σ_m a_m ;  logits = head(h)                  (B, P) -> (B, C)
    L = L_task + λ · alignment_loss(u, a)
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor, nn

from ..data.batch import Batch
from ..data.spec import DatasetSpec
from ..methods.base import MissingModalityModel, Output
from .encoders import PerModalityEncoders
from .factorised import FactorisedFusion
from .pooling import masked_mean


class AlignedFusion(FactorisedFusion, MissingModalityModel):
    """Masked-mean fusion of projected modality embeddings plus λ × ``alignment_loss``.

    Never registered itself. The fused embedding is the aligned one (the projection
    output), so a sample missing a modality is pooled from vectors that live in the
    same space as the absent one. The alignment term uses batch-mates only in ``loss``;
    eval-mode logits of a sample depend on that sample alone.
    """

    def __init__(self, spec: DatasetSpec, embed_dim: int = 128, proj_dim: int = 128, hidden: int | None = None,
                 dropout: float = 0.5, weight: float = 0.1, **components) -> None:
        super().__init__(spec, **components)
        if weight < 0:
            raise ValueError(f"weight must be >= 0, got {weight}")
        self.weight = float(weight)
        self.encoders = PerModalityEncoders(spec, embed_dim, hidden=hidden, dropout=dropout, choices=self.components)
        self.projections = nn.ModuleDict({m.name: nn.Linear(embed_dim, proj_dim) for m in spec.modalities})
        self.head = self.components.make_head(proj_dim, spec.task.output_dim, hidden=proj_dim, dropout=dropout)

    def embed(self, batch: Batch) -> Tensor:
        """(B, M, P) aligned embeddings u_m (values at missing slots are meaningless; mask them)."""
        z = self.encoders(batch)
        return torch.stack([self.projections[m.name](z[:, j]) for j, m in enumerate(self.spec.modalities)], dim=1)

    # forward = fuse_embeddings(encode_modalities(batch), mask) (FactorisedFusion): all-subsets
    # evaluation embeds each modality once and re-runs only the masked mean and the head.
    def encode_modalities(self, batch: Batch) -> Tensor:
        return self.embed(batch)

    def fuse_embeddings(self, z: Tensor, mask: Tensor) -> Output:
        """z (B, M, P) aligned embeddings, mask (B, M) -> logits (B, C); z kept in aux for the loss."""
        return Output(self.head(masked_mean(z, mask)), aux={"embeddings": z})

    @abc.abstractmethod
    def alignment_loss(self, embeddings: Tensor, mask: Tensor) -> Tensor:
        """Unweighted alignment loss (a scalar, never NaN) of (B, M, P) embeddings under a (B, M) mask."""

    def loss(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        terms = {"task": self.task_loss(output.logits, batch.target)}
        terms["align"] = self.weight * self.alignment_loss(output.aux["embeddings"], batch.mask)
        return terms
