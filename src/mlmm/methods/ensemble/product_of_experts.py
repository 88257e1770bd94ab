"""Reliability-weighted late fusion: a product of per-modality experts with learned weights."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...components.encoders import PerModalityEncoders
from ...components.factorised import FactorisedFusion
from ...components.unimodal_members import member_cross_entropy, member_logits
from ...data.batch import Batch
from ...data.spec import DatasetSpec
from ..base import Capability, MethodInfo, MissingModalityModel, Output
from ..registry import register_method


@register_method("product-of-experts")
class ReliabilityWeightedExperts(FactorisedFusion, MissingModalityModel):
    """Late fusion that weighs each present modality by a learned reliability.

    Member m is a unimodal classifier, log p_m = log_softmax(f_m(E_m(x_m))) (B, M, C), trained by
    its own cross-entropy on the samples holding m (so its confidence is its evidence). The fused
    logits are the reliability-weighted product of the present experts:

        logits = Σ_m a_m r_m log p_m     (B, C),   r_m = softplus(ρ_m) > 0 per modality,

    with ρ (M,) learned by the cross-entropy of the fused logits on detached member outputs, so
    it learns how far to trust each modality without bending the members. A modality whose
    expert is unsure for a sample (an uninformative caption) has a flat log p_m and abstains on
    its own; a modality that is often wrong gets a small r_m. Unlike the mean of probabilities
    (``late-ensemble``) or of embeddings (``masked-mean``), a weak modality cannot dilute a
    confident strong one.
    """

    info = MethodInfo(
        category="ensemble",
        fusion="late",
        recovers_missing=False,
        needs_complete_train=False,
        capabilities=frozenset({Capability.FACTORISED}),
        paper="Product of experts (Hinton, Neural Computation 2002) with learned per-modality reliability "
              "weights, as in uncertainty-weighted late fusion (survey Sec. 4.1.1)",
        summary="one classifier per modality; fused logits = Σ present r_m log p_m with learned reliability "
                "r_m; flat (unsure) experts abstain",
        unsupported_kinds={"regression": "product-of-experts multiplies class probabilities"},
    )

    def __init__(self, spec: DatasetSpec, embed_dim: int = 128, hidden: int | None = None, dropout: float = 0.5,
                 fusion_weight: float = 1.0, **components) -> None:
        super().__init__(spec, **components)
        if spec.task.kind != "classification":
            raise ValueError("product-of-experts multiplies class probabilities; it needs a classification task")
        if fusion_weight < 0:
            raise ValueError(f"fusion_weight must be >= 0, got {fusion_weight}")
        self.fusion_weight = float(fusion_weight)
        self.encoders = PerModalityEncoders(spec, embed_dim, hidden=hidden, dropout=dropout, choices=self.components)
        self.heads = nn.ModuleList(
            self.components.make_head(embed_dim, spec.task.output_dim, hidden=embed_dim,
                                      dropout=dropout) for _ in spec.modalities
        )
        # softplus(ρ) = 1 at start: the plain product of experts.
        self.reliability_logit = nn.Parameter(torch.full((spec.n_modalities,), math.log(math.e - 1.0)))

    # forward = fuse_embeddings(encode_modalities(batch), mask) (FactorisedFusion): member m's
    # logits depend on x_m alone, so all-subsets evaluation re-runs only the weighted sum.
    def encode_modalities(self, batch: Batch) -> Tensor:
        """(B, M, C) member logits f_m(E_m(x_m)) (values at missing slots are ignored)."""
        return member_logits(self.encoders, self.heads, batch)

    def reliability(self) -> Tensor:
        """(M,) positive weights r_m."""
        return F.softplus(self.reliability_logit)

    def _fuse(self, member_logits: Tensor, mask: Tensor) -> Tensor:
        log_p = F.log_softmax(member_logits, dim=-1)  # (B, M, C)
        weights = torch.where(mask, self.reliability().to(log_p.dtype), torch.zeros((), dtype=log_p.dtype,
                                                                                    device=log_p.device))
        # torch.where on log_p too: a missing slot's logits are ignored, even if not finite.
        log_p = torch.where(mask.unsqueeze(-1), log_p, torch.zeros((), dtype=log_p.dtype, device=log_p.device))
        return torch.einsum("bm,bmc->bc", weights, log_p)  # a sample with no modality: uniform (all 0)

    def fuse_embeddings(self, member_logits: Tensor, mask: Tensor) -> Output:
        """member_logits (B, M, C), mask (B, M) -> fused logits Σ_m a_m r_m log p_m (B, C)."""
        return Output(self._fuse(member_logits, mask), aux={"member_logits": member_logits})

    def loss(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        terms = {"members": member_cross_entropy(output.aux["member_logits"], batch.target, batch.mask)}
        fused = self._fuse(output.aux["member_logits"].detach(), batch.mask)
        terms["fusion"] = self.fusion_weight * F.cross_entropy(fused, batch.target)
        return terms
