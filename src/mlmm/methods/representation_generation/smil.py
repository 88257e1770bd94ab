"""SMIL: Bayesian meta-learning of missing-modality reconstruction, adapted to M modalities."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...components.encoders import PerModalityEncoders
from ...components.memory_bank import TrainingBankMixin
from ...components.pooling import masked_mean
from ...data.batch import Batch
from ...data.passes import SplitPasses
from ...data.preprocess import Standardizer
from ...data.spec import DatasetSpec
from ...validation import COUNT, NONNEG, WIDTH
from ..base import Capability, MethodInfo, MissingModalityModel, Output, StageControl
from ..registry import register_method


def kmeans(x: Tensor, k: int, generator: torch.Generator, iterations: int = 25) -> Tensor:
    """(N, D) points -> (k, D) centres by Lloyd's algorithm from k distinct random points
    (points repeated when N < k); an emptied cluster keeps its centre."""
    n = x.shape[0]
    order = torch.randperm(n, generator=generator)
    centres = x[order[torch.arange(k) % n]].clone()
    for _ in range(iterations):
        assign = torch.cdist(x, centres).argmin(dim=1)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        centres = torch.where(counts.unsqueeze(1) > 0, sums / counts.clamp_min(1).unsqueeze(1), centres)
    return centres


def simulate_missing(mask: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """SMIL's meta-train view: every sample with K >= 2 present modalities keeps a uniformly
    drawn number in 1..K-1 of them (uniformly chosen), so each loses at least one; samples
    with one modality keep it. (B, M) bool -> (B, M) bool ⊆ mask. Draws from ``generator``."""
    k = mask.sum(dim=1)
    keep = (torch.rand(mask.shape[0], device=mask.device,
                       generator=generator) * (k - 1).clamp_min(1)).floor().long() + 1
    scores = torch.rand(mask.shape, device=mask.device, generator=generator).masked_fill(~mask, -1.0)
    rank = scores.argsort(dim=1, descending=True).argsort(dim=1)
    return torch.where((k >= 2).unsqueeze(1), mask & (rank < keep.unsqueeze(1)), mask)


@register_method("smil")
class SMIL(TrainingBankMixin, MissingModalityModel):
    """SMIL (Ma, Ren, Zhao, Tulyakov, Wu & Peng, "SMIL: Multimodal Learning with Severely Missing
    Modality", AAAI 2021), generalised from image + sometimes-audio to M modalities.

    Shapes: B batch, M modalities, D = ``embed_dim``, P = ``n_prototypes``, H = ``hidden``-wide head.

        z_m = E_m(x_m)                                         (B, M, D)
        c   = masked mean of the present z                     (B, D)   what reconstruction sees
        reconstruction of a missing m (SMIL's "missing modality reconstruction"):
              w = softplus(R_m(c))                             (B, P)
              ẑ_m = Σ_p w_p C_{m,p} / Σ_p w_p                  (B, D)   C_m: K-means prototypes of z_m
        f   = [z or ẑ per slot]  (B, M·D);   h = relu(W1 f)     (B, H);   logits = W2 dropout(h)
        feature regularisation (SMIL's Bayesian perturbation), only on samples missing a modality:
              f <- f + softplus(mu_1(c) + eps ⊙ s_1(c)),   h <- h + softplus(mu_2(f) + eps ⊙ s_2(f))
              eps ~ N(0, I) while meta-training, eps = 0 otherwise (the official meta_train flag)

    Training (``stages()`` = pretrain, meta):
      pretrain  the fusion network on the data as given (missing slots zero; the official code
                pre-trains on the paired subset), then ``set_stage("meta")`` fits the prototypes
                C_m by K-means (P = 10, as the official code) on the training bank's z_m, rows holding m;
      meta      per batch, a meta-train view a' = ``simulate_missing(a)`` (SMIL's image-only batch):
                L_in  = CE(reconstructed + perturbed net on a'), one inner SGD step on the head
                        (W1, W2) with create_graph: θ' = θ - ``inner_lr`` ∇θ L_in;
                L_out = CE(θ' on a', perturbed) + 0.01 ‖f_clean - f_a'‖² + 0.01 ‖h_clean - h_a'‖²
                        (``clean`` = θ' on the sample's own mask a, no perturbation);
                loss = L_in + L_out (the official meta-train + meta-validation sum, KDLossAlignTwo).

    Deviations (disclosed): the inner step updates the head only, not the encoders (the
    official inner step also updates the image extractor); the encoders and the
    reconstruction keep training through L_in / L_out; meta-train and meta-validation
    views come from the same batch (a' vs a) instead of two loaders (image-only vs paired
    subsets); prototypes come from the jointly trained encoders after pretraining, not a
    separately pre-trained audio network; the loop's early stopping replaces the fixed
    8000 iterations. Works with incomplete training data.
    """

    info = MethodInfo(
        category="representation-generation",
        fusion="intermediate",
        recovers_missing=True,
        recovery_space="embedding",
        needs_complete_train=False,
        capabilities=frozenset({Capability.PREPARES, Capability.PREPARES_BY_BATCH, Capability.MULTI_STAGE}),
        paper="SMIL: Multimodal Learning with Severely Missing Modality (Ma, Ren, Zhao, Tulyakov, Wu & Peng, "
              "AAAI 2021)",
        summary="missing embedding = softplus-weighted mix of K-means prototypes of that modality, weights from "
                "the present ones; Bayesian feature perturbation; meta-learning (inner step on a simulated "
                "missing view, outer loss on the full view + feature alignment). Adapted to M modalities and "
                "simplified: the inner step updates the head only; meta-train/meta-val views come from one batch; "
                "prototypes from the jointly pre-trained encoders; early stopping instead of 8000 iterations",
    )

    param_constraints: ClassVar[dict] = {"encoder_hidden": [WIDTH, None], "n_prototypes": [COUNT], "inner_lr": [NONNEG]}

    def __init__(self, spec: DatasetSpec, embed_dim: int = 64, hidden: int = 64, encoder_hidden: int | None = None,
                 dropout: float = 0.5, n_prototypes: int = 10, inner_lr: float = 1e-3, align_weight: float = 0.01,
                 bank_size: int = 512, bank_seed: int = 0, **components) -> None:
        super().__init__(spec, **components)
        if n_prototypes < 1:
            raise ValueError(f"n_prototypes must be >= 1, got {n_prototypes}")
        m = spec.n_modalities
        self.inner_lr, self.align_weight = float(inner_lr), float(align_weight)
        self.n_prototypes = int(n_prototypes)
        self.encoders = PerModalityEncoders(spec, embed_dim, hidden=encoder_hidden, dropout=dropout,
                                            choices=self.components)
        self.reconstruct = nn.ModuleList(nn.Linear(embed_dim, n_prototypes) for _ in range(m))
        self.perturb_fused = nn.Linear(embed_dim, 2 * m * embed_dim)
        self.perturb_hidden = nn.Linear(m * embed_dim, 2 * hidden)
        self.fc1 = nn.Linear(m * embed_dim, hidden)
        self.fc2 = nn.Linear(hidden, spec.task.output_dim)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("prototypes", torch.zeros(m, n_prototypes, embed_dim))
        self.init_bank(bank_size, bank_seed)

    # ---------------------------------------------------------------- stages

    def stages(self) -> tuple[str, ...]:
        return ("pretrain", "meta")

    def training_control(self, stage: str) -> StageControl:
        # meta draws its own simulated-missing view (the paper's image-only meta-train batch)
        return StageControl(modality_dropout="off" if stage == "meta" else "inputs")

    def prepare_split(self, split: SplitPasses, standardizer: Standardizer) -> None:
        self.fill_bank(split)

    def set_stage(self, stage: str) -> None:
        super().set_stage(stage)
        if stage == "meta":
            self.fit_prototypes()

    @torch.no_grad()
    def fit_prototypes(self) -> None:
        """K-means prototypes of each modality's embeddings over the bank rows that hold it."""
        if self.bank_mask.shape[0] == 0:
            return
        z = self.encode_bank(self.encoders)  # (N, M, D), eval mode, no grad
        g = torch.Generator().manual_seed(self.bank_seed)
        protos = self.prototypes.clone()
        for j in range(self.spec.n_modalities):
            rows = self.bank_mask[:, j]
            if bool(rows.any()):
                protos[j] = kmeans(z[rows, j].float().cpu(), self.n_prototypes, g).to(protos)
        self.prototypes = protos

    # ------------------------------------------------------------- the network

    def reconstructions(self, z: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """(ẑ (B, M, D) for every slot, context c (B, D)) from the present embeddings."""
        c = masked_mean(z, mask)
        w = torch.stack([F.softplus(r(c)) for r in self.reconstruct], dim=1)  # (B, M, P)
        w = w / w.sum(dim=2, keepdim=True).clamp_min(1e-12)
        return torch.einsum("bmp,mpd->bmd", w, self.prototypes.to(z.dtype)), c

    @staticmethod
    def _perturbation(layer: nn.Linear, x: Tensor, sample: bool) -> Tensor:
        mu, scale = layer(x).chunk(2, dim=-1)
        if sample:
            mu = mu + F.softplus(scale) * torch.randn_like(mu)
        return F.softplus(mu)

    def run(self, z: Tensor, mask: Tensor, head: dict[str, Tensor] | None = None, *, perturb: bool = True,
            sample: bool = False, zero_fill: bool = False) -> dict[str, Tensor]:
        """The fusion network on embeddings z under ``mask``; ``head`` overrides (fc1, fc2) weights."""
        head = head or {n: p for n, p in self.named_parameters() if n.startswith(("fc1.", "fc2."))}
        zero = torch.zeros((), dtype=z.dtype, device=z.device)
        if zero_fill:
            slots, c = torch.where(mask.unsqueeze(-1), z, zero), masked_mean(z, mask)
        else:
            recon, c = self.reconstructions(z, mask)
            if self.plain_fill:
                recon = torch.zeros_like(recon)
            slots = torch.where(mask.unsqueeze(-1), z, recon)
        f = slots.flatten(1)
        incomplete = (~mask.all(dim=1, keepdim=True)).to(z.dtype)  # perturb only where something is missing
        if perturb and not zero_fill:
            f = f + incomplete * self._perturbation(self.perturb_fused, c, sample)
        h = F.relu(F.linear(f, head["fc1.weight"], head["fc1.bias"]))
        if perturb and not zero_fill:
            h = h + incomplete * self._perturbation(self.perturb_hidden, f, sample)
        logits = F.linear(self.dropout(h), head["fc2.weight"], head["fc2.bias"])
        return {"logits": logits, "fused": f, "hidden": h, "slots": slots}

    def recover(self, batch: Batch) -> dict[str, Tensor]:
        """Modality -> (B, D): z_m where present, the prototype reconstruction where missing."""
        z = self.encoders(batch)
        slots = self.run(z, batch.mask, perturb=False)["slots"]
        return {name: slots[:, j] for j, name in enumerate(self.spec.modality_names)}

    def forward(self, batch: Batch) -> Output:
        z = self.encoders(batch)
        out = self.run(z, batch.mask, zero_fill=self.stage == "pretrain")
        return Output(out["logits"], aux={"z": z})

    def loss(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        if self.stage != "meta" or not self.training:
            return {"task": self.task_loss(output.logits, batch.target)}
        z, mask = output.aux["z"], batch.mask
        view = simulate_missing(mask, generator=self.generator)
        head = {n: p for n, p in self.named_parameters() if n.startswith(("fc1.", "fc2."))}
        inner = self.task_loss(self.run(z, view, head, sample=True)["logits"], batch.target)
        grads = torch.autograd.grad(inner, list(head.values()), create_graph=True, allow_unused=True)
        adapted = {n: p - self.inner_lr * g if g is not None else p for (n, p), g in zip(head.items(), grads)}
        noised = self.run(z, view, adapted, sample=True)
        clean = self.run(z, mask, adapted, perturb=False)
        outer = (self.task_loss(noised["logits"], batch.target)
                 + self.align_weight * F.mse_loss(noised["fused"], clean["fused"])
                 + self.align_weight * F.mse_loss(noised["hidden"], clean["hidden"]))
        return {"meta_train": inner, "meta_val": outer}
