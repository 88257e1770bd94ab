"""Coordinated representation: align modality embeddings in one space with masked pairwise InfoNCE."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ...components.aligned_fusion import AlignedFusion
from ...components.contrastive import pairwise_masked_infonce
from ...data.spec import DatasetSpec
from ..base import Capability, MethodInfo
from ..registry import register_method


@register_method("infonce-align")
class InfoNCEAlign(AlignedFusion):
    """Masked-mean fusion of modality embeddings aligned by pairwise symmetric InfoNCE.

    Paper: contrastive coordinated representation — the symmetric InfoNCE of
    CLIP (Radford et al., ICML 2021; InfoNCE: van den Oord et al., 2018) used to
    coordinate available modalities in one space (survey Sec. 3.2.1,
    coordinated representation), with the loss restricted per pair to the
    samples holding both modalities.

    Shapes: B batch, M modalities, P = ``proj_dim``.

        u_m = W_m E_m(x_m)                                             (B, M, P)
        h = Σ_m a_m u_m / Σ_m a_m ;  logits = head(h)                  (B, P) -> (B, C)
        B_ij = {b : a_b^i = a_b^j = 1},  û = u / ‖u‖,  s_bc = <û_b^i, û_c^j> / τ
        L_ij = 1/|B_ij| Σ_{b∈B_ij} ½ [ -log softmax_{c∈B_ij}(s_b·)_b - log softmax_{c∈B_ij}(s_·b)_b ]
        L = L_task + λ · mean_{i<j, |B_ij| >= 2} L_ij

    The fused embedding is the aligned one (the projection output), so a
    sample missing a modality is pooled from vectors that live in the same
    space as the absent one. τ is a fixed hyper-parameter (default 0.07, not
    learned); λ = ``weight`` (default 0.1). Pairs held by fewer than 2 samples
    of a batch are skipped; samples missing either modality of a pair never
    enter its loss (their slots are zeroed before the similarity and their
    rows/columns excluded), so the term is never NaN. The alignment term uses
    batch-mates (negatives) only in ``loss``; eval-mode logits of a sample
    depend on that sample alone.

    Works with incomplete training data: every pair is trained on whatever
    samples hold it, and the task loss sees every sample's present subset.
    """

    info = MethodInfo(
        category="coordinated-representation",
        fusion="intermediate",
        recovers_missing=False,
        needs_complete_train=False,
        capabilities=frozenset({Capability.FACTORISED}),
        paper="Symmetric InfoNCE alignment (CLIP, Radford et al., ICML 2021; van den Oord et al., 2018) "
              "masked to co-present modality pairs (survey Sec. 3.2.1, coordinated representation)",
        summary="per-modality encoders + projections aligned by masked pairwise InfoNCE (τ=0.07, λ=0.1); "
                "masked mean of aligned embeddings; MLP head",
    )

    def __init__(self, spec: DatasetSpec, embed_dim: int = 128, proj_dim: int = 128, hidden: int | None = None,
                 dropout: float = 0.5, temperature: float = 0.07, weight: float = 0.1, **components) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        super().__init__(spec, **components, embed_dim=embed_dim, proj_dim=proj_dim, hidden=hidden, dropout=dropout,
                         weight=weight)
        self.temperature = float(temperature)

    def alignment_loss(self, embeddings: Tensor, mask: Tensor) -> Tensor:
        """Mean masked pairwise symmetric InfoNCE (unweighted) of (B, M, P) embeddings under a (B, M) mask."""
        return pairwise_masked_infonce(F.normalize(embeddings, dim=-1), mask, self.temperature)
