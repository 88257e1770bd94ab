"""ShaSpec: shared and specific features; a missing specific feature is filled from shared ones."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...components.encoders import PerModalityEncoders
from ...components.pooling import masked_mean
from ...data.batch import Batch
from ...data.spec import DatasetSpec
from ..base import Capability, MethodInfo, MissingModalityModel, Output, StageControl, mask_column
from ..registry import register_method


class SharedEncoder(nn.Module):
    """ShaSpec's shared encoder for modalities of different shapes: a per-modality input
    projection U_m to a common width W (a linear map for a vector modality, the modality
    kind's encoder otherwise, or the user's encoder), then one network S applied to every
    modality (the modalities stacked on the batch axis, as ShaSpec stacks them).

    inputs dict + mask -> (B, M, D) shared features s_m = S(U_m(x_m)); missing rows are
    zeroed before U_m, so poisoned inputs never reach s (callers ignore s at missing slots).
    """

    def __init__(self, spec: DatasetSpec, width: int, out_dim: int, dropout: float, components) -> None:
        super().__init__()
        self.spec = spec
        self.project = nn.ModuleDict({
            m.name: nn.Linear(m.shape[0], width) if m.kind == "vector" and m.name not in components.custom
            else components.encoder(m, width, dropout=dropout)
            for m in spec.modalities})
        self.shared = nn.Sequential(nn.GELU(), nn.Dropout(dropout), nn.Linear(width, width), nn.GELU(),
                                    nn.Dropout(dropout), nn.Linear(width, out_dim))

    def forward(self, batch: Batch) -> Tensor:
        projected = []
        for j, m in enumerate(self.spec.modalities):
            x = batch.inputs[m.name]
            x = torch.where(mask_column(batch.mask, j, x.dim()), x, torch.zeros((), dtype=x.dtype, device=x.device))
            projected.append(self.project[m.name](x))
        u = torch.stack(projected, dim=1)  # (B, M, W)
        b, n, w = u.shape
        return self.shared(u.reshape(b * n, w)).reshape(b, n, -1)  # one network over every modality


@register_method("shaspec")
class ShaSpec(MissingModalityModel):
    """Shared-specific feature modelling (ShaSpec, Wang et al., CVPR 2023).

    For modality m (features (B, M, D)):
      shared   s_m = S(U_m(x_m)): ONE shared encoder S applied to every modality, after a
               per-modality input projection U_m to a common width (``SharedEncoder``);
      specific p_m = P_m(x_m), a separate encoder per modality;
      fused    f_m = s_m + G([s_m; p_m])            if a_m = 1  (G: ShaSpec's residual compositional
                                                                layer, one linear map shared by all m)
               f_m = s̄ = Σ_n a_n s_n / Σ_n a_n      if a_m = 0  (the paper's mean of the present shared
                                                                features; the official code takes the first)
    logits = head(concat_m f_m) (B, C).

    Loss, as the official ``train_SS.py`` computes it (L1 distribution alignment over the cyclic
    pairs (m, m+1 mod M), summed; domain classification of the specific features), but masked by
    availability (the official code also aligns and classifies the zero-filled missing slots):

        L = task + α · Σ_m mean_{b: a_bm a_b,m+1} |s_bm − s_b,m+1|₁ / D
                 + β · mean_{(b,m): a_bm} CE(Dom(p_bm), m)

    with α = ``align_weight`` (0.1) and β = ``domain_weight`` (0.02), the official weights.
    Training has two stages, as the official schedule: ``warmup`` without the loop's modality
    dropout (the official 80k iterations on full modalities; here each row's own modalities),
    then ``main`` with it. Works with incomplete training data.
    """

    STAGES = ("warmup", "main")

    info = MethodInfo(
        category="distillation",
        fusion="intermediate",
        recovers_missing=True,
        needs_complete_train=False,
        capabilities=frozenset({Capability.MULTI_STAGE}),
        paper="Wang et al., Multi-modal learning with missing modality via shared-specific feature "
              "modelling (ShaSpec, CVPR 2023)",
        summary="one shared encoder applied to every modality (after per-modality input projections) + "
                "specific encoders; residual compositional layer; missing fused feature = mean of present shared "
                "features; cyclic L1 distribution alignment on shared features (0.1) and domain classification of "
                "specific features (0.02), as the official code, but masked by availability; warm-up stage without "
                "modality dropout, then with it; concatenation fusion. Adaptation: MLP encoders and a classifier "
                "head instead of 3D U-Nets and a segmentation decoder",
        recovery_space="embedding",
    )

    def __init__(self, spec: DatasetSpec, embed_dim: int = 128, hidden: int | None = None, dropout: float = 0.5,
                 align_weight: float = 0.1, domain_weight: float = 0.02, **components) -> None:
        super().__init__(spec, **components)
        self.align_weight, self.domain_weight = float(align_weight), float(domain_weight)
        d, n = embed_dim, spec.n_modalities
        self.shared = SharedEncoder(spec, hidden or 256, d, dropout, self.components)
        self.specific = PerModalityEncoders(spec, d, hidden=hidden, dropout=dropout, choices=self.components)
        self.compose = nn.Linear(2 * d, d)
        self.domain = nn.Linear(d, n)
        self.head = self.components.make_head(n * d, spec.task.output_dim, hidden=d, dropout=dropout)
        self.set_stage("main")

    def stages(self) -> tuple[str, ...]:
        return self.STAGES

    def training_control(self, stage: str) -> StageControl:
        # Warm-up on the rows as they are (the official code warms up on full modalities).
        return StageControl(modality_dropout="off" if stage == "warmup" else "inputs")

    def features(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """(shared s (B, M, D), specific p (B, M, D), fused f (B, M, D)); s, p are
        meaningless at missing slots, f is defined everywhere."""
        s = self.shared(batch)
        p = self.specific(batch)
        present = batch.mask.unsqueeze(-1)
        mean_shared = masked_mean(s, batch.mask).unsqueeze(1)  # (B, 1, D); zeros for an empty sample
        if self.plain_fill:
            mean_shared = torch.zeros_like(mean_shared)
        f = torch.where(present, s + self.compose(torch.cat([s, p], dim=-1)), mean_shared)
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
        align = zero
        # The official cyclic pairs (m, m+1 mod M); with two modalities the one pair, once.
        pairs = [(0, 1)] if n == 2 else [(i, (i + 1) % n) for i in range(n)] if n > 2 else []
        for i, j in pairs:
            both = mask[:, i] & mask[:, j]
            dist = torch.where(both, (s[:, i] - s[:, j]).abs().mean(dim=-1), zero)  # (B,)
            align = align + dist.sum() / both.sum().clamp_min(1).to(s.dtype)
        terms["align"] = self.align_weight * align
        b = mask.shape[0]
        modality = torch.arange(n, device=mask.device).expand(b, n)
        ce = F.cross_entropy(self.domain(p).reshape(b * n, n), modality.reshape(-1), reduction="none").reshape(b, n)
        present = mask.to(ce.dtype)
        domain = (torch.where(mask, ce, zero) * present).sum() / present.sum().clamp_min(1)
        terms["domain"] = self.domain_weight * domain
        return terms
