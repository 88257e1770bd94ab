"""DynMM-style dynamic multimodal gating: pick one feasible expert per sample, paying for its compute."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...components.encoders import PerModalityEncoders
from ...components.pooling import masked_mean
from ...data.batch import Batch
from ...data.spec import DatasetSpec
from ..base import Capability, MethodInfo, MissingModalityModel, Output
from ..registry import register_method

#: Gate logit of an infeasible expert: exp(-1e4) is exactly 0 in float32, and unlike -inf
#: it keeps the (straight-through) softmax and its gradient NaN-free.
_INFEASIBLE = -1e4


def encoder_costs(encoders: PerModalityEncoders) -> Tensor:
    """(M,) relative compute of each modality's encoder: its parameter count over the total
    (a proxy for FLOPs that holds for the MLP / conv encoders of ``mlmm.components.encoders``)."""
    counts = torch.tensor([float(sum(p.numel() for p in enc.parameters())) for enc in encoders.encoders.values()])
    return counts / counts.sum()


def straight_through_softmax(logits: Tensor, temperature: float, hard: bool = True) -> Tensor:
    """DynMM's ``DiffSoftmax``: softmax(logits / τ), and with ``hard`` its one-hot argmax in the
    forward pass with the softmax's gradient in the backward pass (y_hard - sg(y_soft) + y_soft)."""
    soft = torch.softmax(logits / temperature, dim=-1)
    if not hard:
        return soft
    index = soft.argmax(dim=-1, keepdim=True)
    one_hot = torch.zeros_like(soft).scatter_(-1, index, 1.0)
    return one_hot - soft.detach() + soft


@register_method("dynmm-gate")
class DynMMGate(MissingModalityModel):
    """DynMM (Xue & Marculescu, "Dynamic Multimodal Fusion", CVPR 2023 MULA workshop),
    modality-level: a gate picks one expert per sample among the *feasible* ones.

    Two stages, as DynMM: ``experts`` pre-trains every expert on its own task loss; ``gate``
    freezes them (``requires_grad`` off, eval mode, so no dropout) and trains only the gate.
    Experts (E = M + 1), each its own network: expert m < M is unimodal, head_m(E_m(x_m)), and
    needs modality m; expert M is the fusion expert, head_F(masked mean over present m of
    F_m(x_m)), feasible whenever any modality is present, so routing need not discard a
    present modality. Shapes: B batch, M modalities, D = ``embed_dim``, G = ``gate_dim``, C outputs.

        y_e = expert logits                                             (B, E, C)
        feasible_e = a_e (unimodal) | any_m a_m (fusion)                (B, E)
        g = MLP([g_1(x_1) .. g_M(x_M) (zeros where missing); a])        (B, E) gate logits; g_m are
            the gate's own light encoders (width G), so the gate reads the inputs, not the experts
        g_e = -1e4 where not feasible_e                                 (an infeasible expert is never picked)
        w = straight-through softmax(g / τ): one-hot argmax forward, softmax gradient backward
            (DynMM's DiffSoftmax with --hard); one-hot argmax at eval   (B, E)
        logits = Σ_e w_e y_e                                            (B, C)
        cost_e = compute of the encoders expert e runs (relative; the fusion expert on all
                 modalities = 1)                                        (B, E)

    Loss, stage ``experts``: mean task loss of every feasible (sample, expert) pair. Stage
    ``gate``: task(logits) + ``compute_penalty`` · mean_b Σ_e w_e cost_e (DynMM's λ·Σ w_e FLOPs_e).
    ``aux["expert"]`` (B,) is the chosen expert index (names in ``expert_names``),
    ``aux["expert_cost"]`` (B,) its cost. This implementation runs every expert (batched) and
    reports the compute the chosen one would use. A sample with no modality has no feasible
    expert: uniform logits, expert -1. The loop's modality dropout applies in both stages, so
    the fusion expert learns every subset and the gate routes under missingness.
    """

    STAGES = ("experts", "gate")

    info = MethodInfo(
        category="ensemble",
        fusion="hybrid",
        recovers_missing=False,
        needs_complete_train=False,
        capabilities=frozenset({Capability.MULTI_STAGE}),
        paper="Xue & Marculescu, Dynamic Multimodal Fusion (DynMM), CVPR 2023 Workshops (MULA)",
        summary="unimodal experts + a fusion expert over all present modalities, each its own network, "
                "pre-trained (stage 1) then frozen; a gate with its own light encoders over the present inputs "
                "routes each sample to one feasible expert with DynMM's straight-through softmax (hard forward, "
                "soft backward) and a compute penalty (stage 2). Adaptation: infeasible experts masked out (DynMM "
                "does not model missing modalities); parameter counts as the compute proxy instead of FLOPs",
    )

    def __init__(self, spec: DatasetSpec, embed_dim: int = 128, hidden: int | None = None, dropout: float = 0.5,
                 compute_penalty: float = 0.01, temperature: float = 1.0, gate_dim: int = 16,
                 gate_hidden: int = 64, **components) -> None:
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
        self.fusion_encoders = PerModalityEncoders(spec, embed_dim, hidden=hidden, dropout=dropout,
                                                   choices=self.components)
        self.fusion_head = self.components.make_head(embed_dim, out, hidden=embed_dim, dropout=dropout)
        # The gate's own light encoders (defaults, never the user's): routing reads the inputs.
        self.gate_encoders = PerModalityEncoders(spec, gate_dim, hidden=gate_dim, dropout=0.0)
        self.gate = nn.Sequential(nn.Linear(n_modalities * gate_dim + n_modalities, gate_hidden), nn.GELU(),
                                  nn.Linear(gate_hidden, n_modalities + 1))
        self.expert_names = tuple(f"only:{m}" for m in spec.modality_names) + ("fusion",)
        self.register_buffer("modality_cost", encoder_costs(self.fusion_encoders), persistent=False)
        # A built (or restored) model predicts with the gate, the final stage.
        self.set_stage("gate")

    def stages(self) -> tuple[str, ...]:
        return self.STAGES

    def _experts(self) -> list[nn.Module]:
        return [self.encoders, self.unimodal_heads, self.fusion_encoders, self.fusion_head]

    def set_stage(self, stage: str) -> None:
        if stage not in self.STAGES:
            raise ValueError(f"dynmm-gate has stages {self.STAGES}, got {stage!r}")
        super().set_stage(stage)
        experts = stage == "experts"
        for module in self._experts():  # stage 2: experts frozen, as DynMM's pre-trained experts
            module.requires_grad_(experts)
            module.train(self.training and experts)
        for module in (self.gate_encoders, self.gate):
            module.requires_grad_(not experts)

    def train(self, mode: bool = True) -> DynMMGate:
        super().train(mode)
        for module in self._experts():  # frozen experts run without dropout
            module.train(mode and self.stage == "experts")
        return self

    def feasible(self, mask: Tensor) -> Tensor:
        """(B, E) bool: expert e can run on sample b's available modalities."""
        return torch.cat([mask, mask.any(dim=1, keepdim=True)], dim=1)

    def expert_cost(self, mask: Tensor) -> Tensor:
        """(B, E) relative compute of each expert on each sample (fusion: its present encoders)."""
        cost = self.modality_cost.to(mask.device)
        unimodal = cost.expand(mask.shape[0], -1)
        fusion = (mask.to(cost.dtype) * cost).sum(dim=1, keepdim=True)
        return torch.cat([unimodal, fusion], dim=1)

    def expert_logits(self, batch: Batch) -> Tensor:
        """(B, E, C) every expert's logits (an infeasible expert's are computed and never used)."""
        z = self.encoders(batch)  # (B, M, D)
        pooled = masked_mean(self.fusion_encoders(batch), batch.mask)  # (B, D)
        return torch.stack([head(z[:, j]) for j, head in enumerate(self.unimodal_heads)]
                           + [self.fusion_head(pooled)], dim=1)

    def gate_logits(self, batch: Batch) -> Tensor:
        """(B, E) the gate's logits from its own encoders, infeasible experts at -1e4."""
        mask = batch.mask
        g = self.gate_encoders(batch)  # (B, M, G)
        g = torch.where(mask.unsqueeze(-1), g, torch.zeros((), dtype=g.dtype, device=g.device))
        logits = self.gate(torch.cat([g.flatten(1), mask.to(g.dtype)], dim=1))
        return torch.where(self.feasible(mask), logits, torch.full((), _INFEASIBLE, dtype=logits.dtype,
                                                                    device=logits.device))

    def forward(self, batch: Batch) -> Output:
        mask = batch.mask
        expert_logits = self.expert_logits(batch)
        feasible = self.feasible(mask)
        any_present = feasible[:, -1]
        zero = torch.zeros((), dtype=expert_logits.dtype, device=expert_logits.device)
        if self.stage == "experts":  # pre-training: validated on the fusion expert
            logits = torch.where(any_present.unsqueeze(1), expert_logits[:, -1], zero)
            return Output(logits, aux={"expert_logits": expert_logits, "feasible": feasible})
        gate_logits = self.gate_logits(batch)
        if self.training:
            weights = straight_through_softmax(gate_logits, self.temperature)
        else:
            weights = F.one_hot(gate_logits.argmax(dim=1), gate_logits.shape[1]).to(gate_logits.dtype)
        # The -1e4 logit already gives an infeasible expert weight 0; the where makes it exact.
        weights = torch.where(feasible, weights, zero)
        logits = (weights.unsqueeze(-1) * expert_logits).sum(dim=1)
        # Policy for a sample with no modality (rejected by the data layer): no expert, uniform logits.
        logits = torch.where(any_present.unsqueeze(1), logits, zero)
        cost = self.expert_cost(mask)
        chosen = torch.where(any_present, weights.argmax(dim=1), torch.full_like(any_present, -1, dtype=torch.long))
        return Output(logits, aux={"expert_logits": expert_logits, "weights": weights, "feasible": feasible,
                                   "expert": chosen, "expert_cost": (weights * cost).sum(dim=1),
                                   "gate_logits": gate_logits})

    def loss(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        feasible = output.aux["feasible"]
        if self.stage == "experts":
            expert_logits = output.aux["expert_logits"]
            b, e, c = expert_logits.shape
            per_expert = F.cross_entropy(expert_logits.reshape(b * e, c), batch.target.repeat_interleave(e),
                                         reduction="none").reshape(b, e) if self.spec.task.kind == "classification" \
                else ((expert_logits - batch.target.reshape(b, 1, -1)) ** 2).mean(dim=-1)
            zero = torch.zeros((), dtype=per_expert.dtype, device=per_expert.device)
            return {"experts": torch.where(feasible, per_expert, zero).sum()
                    / feasible.sum().clamp_min(1).to(per_expert.dtype)}
        any_present = feasible[:, -1]
        task = self.task_loss(output.logits[any_present], batch.target[any_present]) if bool(any_present.any()) \
            else output.logits.sum() * 0.0
        return {"task": task, "compute": self.compute_penalty * output.aux["expert_cost"].mean()}
