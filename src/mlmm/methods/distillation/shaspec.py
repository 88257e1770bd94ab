"""ShaSpec: shared and specific features; a missing specific feature is filled from shared ones."""

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


@register_method("shaspec")
class ShaSpec(MissingModalityModel):
    """Shared-specific feature modelling (ShaSpec).

    For modality m (embeddings (B, M, D)):
      shared   s_m = S(U_m(x_m)): a per-modality input adapter U_m (modalities differ in
               shape, so no single encoder can read them all) followed by one trunk S
               common to every modality, where the sharing happens;
      specific p_m = P_m(x_m), a separate encoder per modality;
      fused    f_m = s_m + G([s_m; p_m])            if a_m = 1
               f_m = s̄ = Σ_n a_n s_n / Σ_n a_n      if a_m = 0 (mean of the present shared features)
    logits = head(concat_m f_m) (B, C).

    Loss (both auxiliary terms masked by availability, unlike the official code, which
    applies them to zero-filled missing slots):

        L = task + α · mean_{m<n} mean_{b: a_bm a_bn} |s_bm − s_bn|₁ / D   (shared alignment, L1)
                 + β · mean_{(b,m): a_bm} CE(D(p_bm), m)                     (modality classification)

    with α = ``align_weight`` (0.1) and β = ``domain_weight`` (0.02), the paper's defaults.
    Works with incomplete training data (the aligned pairs come from samples holding both).

    Paper: Wang et al., "Multi-modal learning with missing modality via shared-specific
    feature modelling" (CVPR 2023); survey Sec. 3.2.1.
    """

    info = MethodInfo(
        category="distillation",
        fusion="intermediate",
        recovers_missing=True,
        needs_complete_train=False,
        paper="Wang et al., Multi-modal learning with missing modality via shared-specific feature "
              "modelling (ShaSpec, CVPR 2023)",
        summary="shared + specific encoders; missing specific feature = mean of present shared features; "
                "masked shared-alignment and modality-classification losses; concatenation fusion; adaptations: "
                "the shared encoder is per-modality adapters + one common trunk (ShaSpec: one network on every "
                "modality), alignment averaged over all available pairs (ShaSpec: cyclic pairs), no full-modality "
                "warm-up stage",
        recovery_space="embedding",
    )

    def __init__(self, spec: DatasetSpec, embed_dim: int = 128, hidden: int | None = None, dropout: float = 0.5,
                 align_weight: float = 0.1, domain_weight: float = 0.02, **components) -> None:
        super().__init__(spec, **components)
        self.align_weight, self.domain_weight = float(align_weight), float(domain_weight)
        d, n = embed_dim, spec.n_modalities
        self.shared_in = PerModalityEncoders(spec, d, hidden=hidden, dropout=dropout, choices=self.components)
        self.shared_trunk = nn.Sequential(nn.GELU(), nn.Linear(d, d))
        self.specific = PerModalityEncoders(spec, d, hidden=hidden, dropout=dropout, choices=self.components)
        self.fuse = nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), nn.Linear(d, d))
        self.domain = nn.Linear(d, n)
        self.head = self.components.make_head(n * d, spec.task.output_dim, hidden=d, dropout=dropout)

    def features(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """(shared s (B, M, D), specific p (B, M, D), fused f (B, M, D)); s, p are
        meaningless at missing slots, f is defined everywhere."""
        s = self.shared_trunk(self.shared_in(batch))
        p = self.specific(batch)
        present = batch.mask.unsqueeze(-1)
        mean_shared = masked_mean(s, batch.mask).unsqueeze(1)  # (B, 1, D); zeros for an empty sample
        if self.plain_fill:
            mean_shared = torch.zeros_like(mean_shared)
        f = torch.where(present, s + self.fuse(torch.cat([s, p], dim=-1)), mean_shared)
        return s, p, f

    def recover(self, batch: Batch) -> dict[str, Tensor]:
        """Modality name -> (B, D) fused feature f_m: at a missing slot the mean of the
        present shared features (the recovery), at a present one s_m + G([s_m; p_m]).
        ``plain_fill`` replaces the recovery by zeros."""
        _, _, f = self.features(batch)
        return {m.name: f[:, j] for j, m in enumerate(self.spec.modalities)}

    def forward(self, batch: Batch) -> Output:
        s, p, f = self.features(batch)
        return Output(self.head(f.flatten(1)), aux={"shared": s, "specific": p})

    def loss(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        terms = {"task": self.task_loss(output.logits, batch.target)}
        s, p, mask = output.aux["shared"], output.aux["specific"], batch.mask
        zero = torch.zeros((), dtype=s.dtype, device=s.device)
        n = mask.shape[1]
        align, pairs = zero, zero
        for i in range(n):
            for j in range(i + 1, n):
                both = mask[:, i] & mask[:, j]
                dist = torch.where(both, (s[:, i] - s[:, j]).abs().mean(dim=-1), zero)  # (B,)
                count = both.sum()
                align = align + dist.sum() / count.clamp_min(1).to(s.dtype)
                pairs = pairs + (count > 0).to(s.dtype)
        terms["align"] = self.align_weight * align / pairs.clamp_min(1)
        b = mask.shape[0]
        modality = torch.arange(n, device=mask.device).expand(b, n)
        ce = F.cross_entropy(self.domain(p).reshape(b * n, n), modality.reshape(-1), reduction="none").reshape(b, n)
        present = mask.to(ce.dtype)
        domain = (torch.where(mask, ce, zero) * present).sum() / present.sum().clamp_min(1)
        terms["domain"] = self.domain_weight * domain
        return terms
