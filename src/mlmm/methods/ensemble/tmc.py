"""Trusted Multi-view Classification: evidential late fusion with a per-sample uncertainty."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...components.encoders import PerModalityEncoders
from ...components.evidential import combine_opinions, evidential_loss, opinion, opinion_to_alpha
from ...data.batch import Batch
from ...data.spec import DatasetSpec
from ..base import MethodInfo, MissingModalityModel, Output
from ..registry import register_method


@register_method("tmc")
class TrustedMultiviewClassification(MissingModalityModel):
    """TMC (Han et al., ICLR 2021; TPAMI 2022): Dirichlet evidence per modality, fused by
    the reduced Dempster–Shafer rule.

    Shapes: B batch, M modalities, K classes, D = ``embed_dim``.

        z_m = E_m(x_m)                               (B, M, D)
        e_m = a_m · softplus(f_m(z_m))               (B, M, K)   evidence; 0 where m is missing
        α_m = e_m + 1,  S_m = Σ_k α_mk,  b_m = e_m / S_m,  u_m = K / S_m
        (b, u) = (b_1, u_1) ⊕ (b_2, u_2) ⊕ ... ⊕ (b_M, u_M)     (B, K), (B,)
            with (b1, u1) ⊕ (b2, u2): C = Σ_{i≠j} b1_i b2_j,
            b = (b1 b2 + b1 u2 + b2 u1) / (1 - C),  u = u1 u2 / (1 - C)
        α = b K / u + 1;   logits = log α             (B, K)

    A missing modality has zero evidence, i.e. the vacuous opinion (b = 0, u = 1),
    which is the identity of ⊕: it drops out of the fusion exactly, and a sample
    with no modality gets α = 1 (uniform logits, u = 1). softmax(logits) = α / S is
    the Dirichlet mean, and argmax logits = argmax of the combined belief.
    ``aux["uncertainty"]`` (B,) is u; it grows as modalities go missing.

    Loss: for every present (sample, modality) and for the fused α,
    ψ(S) - ψ(α_y) + λ_t KL(Dir(α̃) ‖ Dir(1)) with α̃ = y + (1 - y) α; as in the official
    code, a sample's per-modality terms are summed over its present modalities (weight 1
    each beside the fused term, so M : 1 on complete data), and both are averaged over
    samples. Schedule: the loop's (AdamW, early stopping on the validation loss), not the
    official 500 epochs of Adam at lr 3e-4 (disclosed adaptation). λ_t =
    min(1, t / ``anneal_steps``), t the number of optimisation steps seen so far
    (the paper anneals over 50 of 500 epochs). t lives in the ``train_steps`` buffer
    and counts training-mode forwards that follow a parameter update (an optimiser
    step changes the parameters' version counters), so repeated forwards on one set
    of parameters — as in the conformance checks — see the same λ_t.

    Works with incomplete training data: absent modalities contribute neither evidence
    nor loss. Classification only.
    """

    info = MethodInfo(
        category="ensemble",
        fusion="late",
        recovers_missing=False,
        needs_complete_train=False,
        paper="Han et al., Trusted Multi-View Classification, ICLR 2021 (TPAMI 2022 extension)",
        summary="per-modality Dirichlet evidence (softplus), reduced Dempster-Shafer fusion over present "
                "modalities, digamma expected-CE + annealed KL for each present view and the fusion (official "
                "weights, 1 each); per-sample uncertainty u = K/S; adaptation: mlmm's loop schedule",
        unsupported_kinds={"regression": "tmc fuses Dirichlet distributions over classes"},
    )

    def __init__(self, spec: DatasetSpec, embed_dim: int = 128, hidden: int | None = None, dropout: float = 0.5,
                 anneal_steps: int = 500, **components) -> None:
        super().__init__(spec, **components)
        if spec.task.kind != "classification":
            raise ValueError("tmc builds Dirichlet distributions over classes; it needs a classification task")
        if anneal_steps < 1:
            raise ValueError(f"anneal_steps must be >= 1, got {anneal_steps}")
        self.anneal_steps = int(anneal_steps)
        self.encoders = PerModalityEncoders(spec, embed_dim, hidden=hidden, dropout=dropout, choices=self.components)
        self.heads = nn.ModuleList(
            self.components.make_head(embed_dim, spec.task.output_dim, hidden=embed_dim,
                                      dropout=dropout) for _ in spec.modalities
        )
        self.register_buffer("train_steps", torch.zeros((), dtype=torch.long))
        self._seen_versions: tuple | None = None

    def _count_step(self) -> None:
        """Advance ``train_steps`` once per parameter update (see the class docstring)."""
        versions = tuple(p._version for p in self.parameters())
        if versions != self._seen_versions:
            self._seen_versions = versions
            with torch.no_grad():
                self.train_steps += 1

    def kl_weight(self) -> float:
        return min(1.0, float(self.train_steps) / self.anneal_steps)

    def forward(self, batch: Batch) -> Output:
        if self.training and torch.is_grad_enabled():
            self._count_step()
        z = self.encoders(batch)  # (B, M, D)
        member_logits = torch.stack([head(z[:, j]) for j, head in enumerate(self.heads)], dim=1)  # (B, M, K)
        zero = torch.zeros((), dtype=member_logits.dtype, device=member_logits.device)
        evidence = torch.where(batch.mask.unsqueeze(-1), F.softplus(member_logits), zero)
        belief, uncertainty = opinion(evidence)  # (B, M, K), (B, M); vacuous where missing
        fused_b, fused_u = combine_opinions(belief, uncertainty)
        alpha = opinion_to_alpha(fused_b, fused_u)
        return Output(alpha.log(), aux={"evidence": evidence, "alpha": alpha, "uncertainty": fused_u,
                                        "modality_uncertainty": uncertainty})

    def loss(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        weight = self.kl_weight()
        evidence, alpha = output.aux["evidence"], output.aux["alpha"]
        b, m, k = evidence.shape
        per_entry = evidential_loss((evidence + 1.0).reshape(b * m, k), batch.target.repeat_interleave(m),
                                    weight).reshape(b, m)
        # As the official code: the per-view losses are summed over a sample's (present) views,
        # weight 1 each beside the fused term, then averaged over samples.
        members = torch.where(batch.mask, per_entry, torch.zeros((), dtype=per_entry.dtype,
                                                                  device=per_entry.device)).sum(dim=1).mean()
        fused = evidential_loss(alpha, batch.target, weight).mean()
        return {"fused": fused, "members": members}
