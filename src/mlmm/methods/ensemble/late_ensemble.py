"""Ensembles over modalities."""

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


@register_method("late-ensemble")
class MarginalisedLateEnsemble(FactorisedFusion, MissingModalityModel):
    """Marginalised unimodal late fusion.

    p_m = softmax(f_m(E_m(x_m))) (B, M, C); p = Σ_m a_m p_m / Σ_m a_m (B, C);
    logits = log p. Each unimodal member is trained with its own cross-entropy
    on the samples where its modality is present (masked mean over entries),
    so a missing modality neither votes nor learns.
    """

    info = MethodInfo(
        category="ensemble",
        fusion="late",
        recovers_missing=False,
        needs_complete_train=False,
        capabilities=frozenset({Capability.FACTORISED}),
        paper="Late fusion ensemble marginalised over available modalities (survey Sec. 4.1.1)",
        summary="one classifier per modality, probabilities averaged over present modalities",
        unsupported_kinds={"regression": "late-ensemble averages class probabilities"},
    )

    def __init__(self, spec: DatasetSpec, embed_dim: int = 128, hidden: int | None = None,
                 dropout: float = 0.5, **components) -> None:
        super().__init__(spec, **components)
        if spec.task.kind != "classification":
            raise ValueError("late-ensemble averages class probabilities; it needs a classification task")
        self.encoders = PerModalityEncoders(spec, embed_dim, hidden=hidden, dropout=dropout, choices=self.components)
        self.heads = nn.ModuleList(
            self.components.make_head(embed_dim, spec.task.output_dim, hidden=embed_dim,
                                      dropout=dropout) for _ in spec.modalities
        )

    # forward = fuse_embeddings(encode_modalities(batch), mask) (FactorisedFusion). The
    # per-modality part runs through the members' heads, since member m's logits depend on
    # x_m alone: all-subsets evaluation then re-runs only the masked average per subset.
    def encode_modalities(self, batch: Batch) -> Tensor:
        """(B, M, C) member logits f_m(E_m(x_m)) (values at missing slots are ignored)."""
        return member_logits(self.encoders, self.heads, batch)

    def fuse_embeddings(self, member_logits: Tensor, mask: Tensor) -> Output:
        """member_logits (B, M, C), mask (B, M) -> log of the mean present member probability (B, C)."""
        log_p = F.log_softmax(member_logits, dim=-1)
        # log Σ_m a_m p_m - log Σ_m a_m, computed in log space for stability.
        masked = log_p.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        n_present = mask.sum(dim=1, keepdim=True)
        fused = torch.logsumexp(masked, dim=1) - n_present.clamp_min(1).to(log_p.dtype).log()
        # Policy for a sample with no modality (the data layer rejects them, but the
        # op stays total): no member votes, so the prediction is uniform, not -inf.
        uniform = torch.full_like(fused, -math.log(fused.shape[1]))
        fused = torch.where(n_present > 0, fused, uniform)
        return Output(fused, aux={"member_logits": member_logits})

    def loss(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        return {"members": member_cross_entropy(output.aux["member_logits"], batch.target, batch.mask)}
