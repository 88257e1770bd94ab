"""DynMM-style dynamic multimodal gating: pick one feasible expert per sample, paying for its compute."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...components.encoders import PerModalityEncoders
from ...components.pooling import masked_mean
from ...data.batch import Batch
from ...data.spec import DatasetSpec
from ..base import MethodInfo, MissingModalityModel, Output
from ..registry import register_method

#: Gate logit of an infeasible expert: exp(-1e4) is exactly 0 in float32, and unlike -inf
#: it keeps the (straight-through) softmax and its gradient NaN-free.
_INFEASIBLE = -1e4


def encoder_costs(encoders: PerModalityEncoders) -> Tensor:
    """(M,) relative compute of each modality's encoder: its parameter count over the total
    (a proxy for FLOPs that holds for the MLP / conv encoders of ``mlmm.components.encoders``)."""
    counts = torch.tensor([float(sum(p.numel() for p in enc.parameters())) for enc in encoders.encoders.values()])
    return counts / counts.sum()


@register_method("dynmm-gate")
class DynMMGate(MissingModalityModel):
    """DynMM (Xue & Marculescu, "Dynamic Multimodal Fusion", CVPR 2023 MULA workshop),
    modality-level: a gate picks one expert per sample among the *feasible* ones.

    Experts (E = M + 1): expert m < M is unimodal, head_m(z_m), and needs modality m;
    expert M is the fusion expert, head_F(masked mean of present z_m), feasible whenever
    any modality is present. Shapes: B batch, M modalities, D = ``embed_dim``, C outputs.

        z_m = E_m(x_m)                                          (B, M, D)
        y_e = expert logits                                     (B, E, C)
        feasible_e = a_e (unimodal) | any_m a_m (fusion)        (B, E)
        g = gate([masked mean of z; a])                         (B, E) gate logits
        g_e = -1e4 where not feasible_e                         (an infeasible expert is never picked)
        w = straight-through Gumbel-softmax(g, τ) in training, one_hot(argmax g) in eval   (B, E)
        logits = Σ_e w_e y_e                                    (B, C)
        cost_e = compute of the encoders expert e runs (relative; all modalities = 1)   (B, E)

    Loss: task(logits) + ``compute_penalty`` · mean_b Σ_e w_e cost_e, plus the mean
    task loss of every feasible expert on its own (the experts are trained jointly
    with the gate, where DynMM pre-trains them; without this an expert the gate never
    picks would never learn). ``aux["expert"]`` (B,) is the chosen expert index (names
    in ``expert_names``), ``aux["expert_cost"]`` (B,) its cost. This implementation
    runs every encoder (batched) and reports the compute the chosen expert would use.
    A sample with no modality has no feasible expert: uniform logits, expert -1.

    Works with incomplete training data: expert losses only where the expert is feasible.
    """

    info = MethodInfo(
        category="ensemble",
        fusion="hybrid",
        recovers_missing=False,
        needs_complete_train=False,
        paper="Xue & Marculescu, Dynamic Multimodal Fusion (DynMM), CVPR 2023 Workshops (MULA)",
        summary="unimodal experts + masked-mean fusion expert; gate over feasible experts only "
                "(straight-through Gumbel-softmax in training, argmax at eval) with a compute penalty; "
                "adaptations (DynMM differs): the gate reads the jointly trained encoders' embeddings (DynMM: raw "
                "features, so routing saves no encoder compute), Gumbel noise instead of DynMM's straight-through "
                "softmax, experts trained jointly rather than pre-trained and frozen",
    )

    def __init__(self, spec: DatasetSpec, embed_dim: int = 128, hidden: int | None = None, dropout: float = 0.5,
                 compute_penalty: float = 0.01, temperature: float = 1.0, gate_hidden: int = 64, **components) -> None:
        super().__init__(spec, **components)
        if compute_penalty < 0:
            raise ValueError(f"compute_penalty must be >= 0, got {compute_penalty}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.compute_penalty, self.temperature = float(compute_penalty), float(temperature)
        n_modalities, out = spec.n_modalities, spec.task.output_dim
        self.encoders = PerModalityEncoders(spec, embed_dim, hidden=hidden, dropout=dropout, choices=self.components)
        self.unimodal_heads = nn.ModuleList(self.components.make_head(embed_dim, out, hidden=embed_dim, dropout=dropout)
                                            for _ in spec.modalities)
        self.fusion_head = self.components.make_head(embed_dim, out, hidden=embed_dim, dropout=dropout)
        self.gate = nn.Sequential(nn.Linear(embed_dim + n_modalities, gate_hidden), nn.GELU(),
                                  nn.Linear(gate_hidden, n_modalities + 1))
        self.expert_names = tuple(f"only:{m}" for m in spec.modality_names) + ("fusion",)
        self.register_buffer("modality_cost", encoder_costs(self.encoders), persistent=False)

    def feasible(self, mask: Tensor) -> Tensor:
        """(B, E) bool: expert e can run on sample b's available modalities."""
        return torch.cat([mask, mask.any(dim=1, keepdim=True)], dim=1)

    def expert_cost(self, mask: Tensor) -> Tensor:
        """(B, E) relative compute of each expert on each sample (fusion: its present encoders)."""
        cost = self.modality_cost.to(mask.device)
        unimodal = cost.expand(mask.shape[0], -1)
        fusion = (mask.to(cost.dtype) * cost).sum(dim=1, keepdim=True)
        return torch.cat([unimodal, fusion], dim=1)

    def forward(self, batch: Batch) -> Output:
        mask = batch.mask
        z = self.encoders(batch)  # (B, M, D)
        pooled = masked_mean(z, mask)  # (B, D)
        expert_logits = torch.stack([head(z[:, j]) for j, head in enumerate(self.unimodal_heads)]
                                    + [self.fusion_head(pooled)], dim=1)  # (B, E, C)
        feasible = self.feasible(mask)
        gate_logits = self.gate(torch.cat([pooled, mask.to(pooled.dtype)], dim=1))
        gate_logits = torch.where(feasible, gate_logits, torch.full((), _INFEASIBLE, dtype=gate_logits.dtype,
                                                                     device=gate_logits.device))
        if self.training:
            weights = F.gumbel_softmax(gate_logits, tau=self.temperature, hard=True)
        else:
            weights = F.one_hot(gate_logits.argmax(dim=1), gate_logits.shape[1]).to(gate_logits.dtype)
        # The -1e4 logit already gives an infeasible expert weight 0; the where makes it exact.
        weights = torch.where(feasible, weights, torch.zeros((), dtype=weights.dtype, device=weights.device))
        logits = (weights.unsqueeze(-1) * expert_logits).sum(dim=1)
        any_present = feasible[:, -1]
        # Policy for a sample with no modality (rejected by the data layer): no expert, uniform logits.
        logits = torch.where(any_present.unsqueeze(1), logits, torch.zeros((), dtype=logits.dtype,
                                                                           device=logits.device))
        cost = self.expert_cost(mask)
        chosen = torch.where(any_present, weights.argmax(dim=1), torch.full_like(any_present, -1, dtype=torch.long))
        return Output(logits, aux={"expert_logits": expert_logits, "weights": weights, "feasible": feasible,
                                   "expert": chosen, "expert_cost": (weights * cost).sum(dim=1),
                                   "gate_logits": gate_logits})

    def loss(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        feasible = output.aux["feasible"]
        expert_logits = output.aux["expert_logits"]
        b, e, c = expert_logits.shape
        per_expert = F.cross_entropy(expert_logits.reshape(b * e, c), batch.target.repeat_interleave(e),
                                     reduction="none").reshape(b, e) if self.spec.task.kind == "classification" \
            else ((expert_logits - batch.target.reshape(b, 1, -1)) ** 2).mean(dim=-1)
        zero = torch.zeros((), dtype=per_expert.dtype, device=per_expert.device)
        experts = torch.where(feasible, per_expert, zero).sum() / feasible.sum().clamp_min(1).to(per_expert.dtype)
        any_present = feasible[:, -1]
        task = self.task_loss(output.logits[any_present], batch.target[any_present]) if bool(any_present.any()) \
            else output.logits.sum() * 0.0
        return {"task": task, "experts": experts,
                "compute": self.compute_penalty * output.aux["expert_cost"].mean()}
