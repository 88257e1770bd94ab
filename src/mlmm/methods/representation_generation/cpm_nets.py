"""CPM-Nets: encoder-free per-sample latents fitted by masked reconstruction (transductive at test)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...components.row_lookup import TrainingRowLookup, resize_to_saved
from ...data.batch import Batch
from ...data.preprocess import Standardizer
from ...data.spec import DatasetSpec
from ..base import MethodInfo, MissingModalityModel, Output, mask_column
from ..registry import register_method

_DATA_SIZED = ("latents", "latent_class", "row_fp", "row_mask")


@register_method("cpm-nets")
class CrossPartialMultiViewNets(TrainingRowLookup, MissingModalityModel):
    """CPM-Nets: a free latent per sample, decoders to every modality, class-structured latents.

    Paper: Zhang, Han, Fu, Zhou, Hu & Zhou, "CPM-Nets: Cross Partial Multi-View Networks",
    NeurIPS 2019 (TPAMI 2020: "Deep Partial Multi-View Learning"); survey Sec. 3.3.

    Shapes: B batch, N training rows, K = ``latent_dim``, C classes, d_m = numel of modality m.

        h_n = s · H[n]         training latent of row n (a free parameter, s = ``latent_scale``) (N, K)
        r(h, n) = Σ_m a_nm · mean_d (g_m(h) − x_nm)²     masked reconstruction, g_m: K -> d_m
        μ_c = mean_{n: y_n = c} h_n                                                         (C, K)
        F(h, c) = hᵀ μ_c          (the paper's mean of hᵀh_j over class-c training rows)    (B, C)
        hinge(h, y) = max_c [1(c ≠ y) + F(h, c)] − F(h, y)
        L = mean_n r(h_n, n) + λ · mean_n hinge(h_n, y_n)   (+ a calibration term, see below)

    Test time is transductive: with the decoders frozen, each test sample's latent is fitted by
    masked reconstruction alone, ``fit_steps`` steps of gradient descent with momentum from the
    mean training latent (deterministic), on the SUM over samples of r, so a sample's latent
    never depends on its batch-mates; then ŷ = argmax_c F(h, c). This runs inside ``forward``
    in eval mode (under ``torch.enable_grad``; only the latents get gradients, never the
    decoders). Logits are τ·F(h, ·) with a learned temperature τ trained by cross-entropy on
    sg(F) of the *fitted* latents of the training batch ("calibration" term; the free training
    latents are separable by construction and would make τ far too large): it changes no
    prediction but makes the logits usable for validation-loss model selection and
    calibration metrics (an addition to the paper). The forward pass always predicts from the
    fitted latent, in training mode too, so each training step also pays one test-time fit.

    Training latents: the loop feeds random subsets of the standardised training batch that
    ``prepare`` saw (modality dropout applied), so a training sample's latent is found by row
    identity (``TrainingRowLookup``: values on the modalities both hold). A training-mode sample
    that matches no training row gets a test-time-fitted latent and no loss. Works with
    incomplete training data (the reconstruction is masked by availability; the official code's
    full-batch TF1 training is replaced by the loop's mini-batches, alternating net/latent steps
    by joint AdamW steps; ``latent_scale`` lets Adam move the latents faster than the network,
    as the paper's larger latent learning rate does). Classification only; modalities must be
    float inputs (vector, sequence, image), not token ids. No encoder: nothing at test time
    depends on an encoder, so this also suits samples with any subset of modalities.

    Recovery axis: a non-recovery method (``recovers_missing`` False). The latent is fitted to
    the present modalities and classified directly; a missing modality's reconstruction
    g_m(h) (``reconstruct``) is a by-product that no prediction reads, so there is nothing
    for a plain fill to replace.
    """

    info = MethodInfo(
        category="representation-generation",
        fusion="intermediate",
        recovers_missing=False,
        needs_complete_train=False,
        unsupported_kinds={"text": "every modality is reconstructed from the latent by regression, and token ids "
                                   "cannot be regressed"},
        paper="CPM-Nets: Zhang et al., CPM-Nets: Cross Partial Multi-View Networks, NeurIPS 2019 "
              "(TPAMI 2020, Deep Partial Multi-View Learning); survey Sec. 3.3",
        summary="TRANSDUCTIVE: no encoder; a free latent per training sample fitted by masked reconstruction "
                "through per-modality decoders + class-structured hinge; each test sample's latent is fitted "
                "by masked reconstruction (decoders frozen, fixed GD steps) inside forward; nearest class mean",
    )

    #: Row fingerprints only find training rows during training (not saved); the training
    #: latents and their labels are kept: prediction starts each latent fit from their mean and
    #: classifies by the per-class mean training latent.
    training_state = {"row_*": None,
                      "latents": "prediction starts each test latent from the mean training latent",
                      "latent_class": "prediction compares test latents with the per-class mean training latents"}

    def __init__(self, spec: DatasetSpec, latent_dim: int = 64, hidden: int = 256, hinge_weight: float = 1.0,
                 latent_scale: float = 10.0, init_std: float = 0.1, fit_steps: int = 50, fit_lr: float = 0.5,
                 fit_momentum: float = 0.9) -> None:
        super().__init__(spec)
        if spec.task.kind != "classification":
            raise ValueError("cpm-nets classifies by class-mean similarity; it needs a classification task")
        if fit_steps < 0 or fit_lr <= 0 or not 0 <= fit_momentum < 1 or latent_scale <= 0:
            raise ValueError(f"need fit_steps >= 0, fit_lr > 0, 0 <= fit_momentum < 1, latent_scale > 0; got "
                             f"{fit_steps}, {fit_lr}, {fit_momentum}, {latent_scale}")
        self.latent_dim = int(latent_dim)
        self.hinge_weight = float(hinge_weight)
        self.latent_scale = float(latent_scale)
        self.init_std = float(init_std)
        self.fit_steps, self.fit_lr, self.fit_momentum = int(fit_steps), float(fit_lr), float(fit_momentum)
        self.decoders = nn.ModuleDict({
            m.name: nn.Sequential(nn.Linear(latent_dim, hidden), nn.GELU(), nn.Linear(hidden, math.prod(m.shape)))
            for m in spec.modalities
        })
        self.log_temperature = nn.Parameter(torch.zeros(()))
        self.latents = nn.Parameter(torch.zeros(0, latent_dim))  # (N, K), sized by prepare
        self.register_buffer("latent_class", torch.zeros(0, dtype=torch.long))
        self.init_row_lookup()

    # ------------------------------------------------------------ training rows

    def prepare(self, train: Batch, standardizer: Standardizer) -> None:
        """One free latent per training row (seeded random init), its label, and the row lookup."""
        if train.target is None:
            raise ValueError("cpm-nets needs training labels (train.target is None)")
        device = train.mask.device
        init = torch.randn(train.size, self.latent_dim, device=device) * (self.init_std / self.latent_scale)
        self.latents = nn.Parameter(init)
        self.latent_class = train.target.to(torch.long).clone()
        self.fit_row_lookup(train)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        resize_to_saved(self, state_dict, prefix, _DATA_SIZED)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def training_latents(self) -> Tensor:
        """(N, K) h_n = s · H[n]."""
        return self.latent_scale * self.latents

    def class_means(self) -> Tensor:
        """(C, K) mean training latent per class (zeros for a class with no training row)."""
        h = self.training_latents()
        onehot = F.one_hot(self.latent_class, self.spec.task.output_dim).to(h.dtype)  # (N, C)
        return (onehot.t() @ h) / onehot.sum(dim=0).clamp_min(1).unsqueeze(1)

    # ------------------------------------------------------------ reconstruction

    def _targets(self, batch: Batch) -> list[Tensor]:
        """Per modality (B, d_m) flattened inputs with masked-out rows zeroed (never read)."""
        out = []
        for j, x in enumerate(batch.inputs.values()):
            x = torch.where(mask_column(batch.mask, j, x.dim()), x, torch.zeros((), dtype=x.dtype, device=x.device))
            out.append(x.flatten(1))
        return out

    def reconstruction_error(self, h: Tensor, targets: list[Tensor], mask: Tensor) -> Tensor:
        """(B,) r(h, b) = Σ_m a_bm · mean_d (g_m(h_b) − x_bm)²."""
        total = h.new_zeros(h.shape[0])
        for j, (name, x) in enumerate(zip(self.spec.modality_names, targets)):
            err = (self.decoders[name](h) - x).pow(2).mean(dim=1)
            total = total + torch.where(mask[:, j], err, torch.zeros((), dtype=err.dtype, device=err.device))
        return total

    def fit_latents(self, batch: Batch, steps: int | None = None) -> Tensor:
        """(B, K) latents fitted by masked reconstruction with the decoders fixed (detached).

        Gradient descent with heavy-ball momentum on Σ_b r(h_b, b) from the mean training
        latent; the sum makes each h_b's gradient its own, so batch-mates never interact.
        """
        steps = self.fit_steps if steps is None else int(steps)
        targets = self._targets(batch)
        if self.latents.shape[0]:
            start = self.training_latents().detach().mean(dim=0)
        else:
            start = self.latents.new_zeros(self.latent_dim)
        h = start.expand(batch.size, -1).clone()
        velocity = torch.zeros_like(h)
        with torch.enable_grad():
            for _ in range(steps):
                h.requires_grad_(True)
                loss = self.reconstruction_error(h, targets, batch.mask).sum()
                (grad,) = torch.autograd.grad(loss, h)
                velocity = self.fit_momentum * velocity + grad
                h = (h - self.fit_lr * velocity).detach()
        return h.detach()

    # ---------------------------------------------------------------- forward

    def forward(self, batch: Batch) -> Output:
        # The prediction is always the test-time one: a latent fitted to the present modalities.
        fitted = self.fit_latents(batch)
        means = self.class_means()
        logits = self.log_temperature.exp() * (fitted @ means.detach().t())
        aux = {}
        if self.training:
            # Training rows also get their free latent h_n, for the reconstruction and hinge terms.
            rows = self.find_rows(batch)
            found = rows >= 0
            h = torch.where(found.unsqueeze(1), self.training_latents()[rows.clamp_min(0)], fitted)
            aux = {"h": h, "similarity": h @ means.t(), "found": found}
        return Output(logits, aux=aux)

    def loss(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        # τ is fitted on the test-time predictions (fitted latents): the free training latents are
        # separable by construction, and a temperature fitted on them would be far too confident.
        terms = {"calibration": self.task_loss(output.logits, batch.target)}
        if "h" not in output.aux:  # eval mode: no training latents were looked up
            zero = output.logits.new_zeros(())
            return {"reconstruction": zero, "hinge": zero, **terms}
        h, similarity, found = output.aux["h"], output.aux["similarity"], output.aux["found"]
        zero = h.new_zeros(())
        n_found = found.sum().clamp_min(1).to(h.dtype)
        recon = torch.where(found, self.reconstruction_error(h, self._targets(batch), batch.mask), zero)
        target = batch.target
        margin = 1.0 - F.one_hot(target, similarity.shape[1]).to(similarity.dtype)  # 1(c != y)
        own = similarity.gather(1, target.unsqueeze(1)).squeeze(1)
        hinge = torch.where(found, (margin + similarity).max(dim=1).values - own, zero)
        return {"reconstruction": recon.sum() / n_found, "hinge": self.hinge_weight * hinge.sum() / n_found, **terms}

    def reconstruct(self, batch: Batch) -> dict[str, Tensor]:
        """Modality -> (B, *shape) g_m(h), h fitted to the present modalities (for inspection;
        predictions never use it, see the class docstring)."""
        h = self.fit_latents(batch)
        with torch.no_grad():
            return {m.name: self.decoders[m.name](h).reshape(-1, *m.shape) for m in self.spec.modalities}
