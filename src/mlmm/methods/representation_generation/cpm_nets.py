"""CPM-Nets: encoder-free per-sample latents fitted by masked reconstruction (transductive at test)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...components.row_lookup import resize_to_saved
from ...data.batch import Batch
from ...data.preprocess import Standardizer
from ...data.spec import DatasetSpec
from ...validation import COUNT, POSITIVE, Options
from ..base import Capability, MethodInfo, MissingModalityModel, Output, StageControl, mask_column
from ..registry import register_method

_DATA_SIZED = ("latents", "latent_class")
NORMALISATIONS = ("standardize", "paper")


@register_method("cpm-nets")
class CrossPartialMultiViewNets(MissingModalityModel):
    """CPM-Nets: a free latent per sample, decoders to every modality, class-structured latents.

    Paper: Zhang, Han, Fu, Zhou, Hu & Zhou, "CPM-Nets: Cross Partial Multi-View Networks",
    NeurIPS 2019 (TPAMI 2020: "Deep Partial Multi-View Learning"); survey Sec. 3.3.

    Shapes: B batch, N training rows, K = ``latent_dim``, C classes, d_m = numel of modality m.

        h_n                    training latent of row n, a free parameter, starts near 0   (N, K)
        r(h, x, a) = Σ_m a_m ‖g_m(h) − x_m‖²     masked reconstruction (sum over features, as
                               the official code), g_m: K -> hidden -> d_m
        F(h_n, c) = mean_{j ≠ n, y_j = c} h_nᵀ h_j        class similarity (the paper's F)   (C,)
        hinge(h_n, y_n) = max_c [1(c ≠ y_n) + F(h_n, c)] − F(h_n, y_n)   (the paper's structured hinge)
        L = mean_n r(h_n, x_n, a_n) + λ · mean_n hinge(h_n, y_n)

    Training follows the official schedule (its ``StageControl``): full-batch steps, each epoch
    ``net_steps`` Adam steps on the decoders then ``latent_steps`` Adam steps on all training
    latents, both at ``lr`` (0.01), for a fixed ``epochs`` (30); no early stopping (the
    validation loss of per-sample latents has spurious early minima), no modality dropout
    (the paper trains on the given masks). A training sample's latent is row ``batch.index``
    of ``latents`` (the loop sets it; O(B) per step, nothing compared by value).

    Test time is transductive and consistent with training: with the decoders frozen, each
    sample's latent starts at 0 (training latents start at the official Xavier-uniform draw,
    |h| ≈ 0.06 per entry on handwritten), and takes ``fit_steps`` Adam steps
    (default ``epochs · latent_steps``, the number a training latent takes) at ``fit_lr``
    (default ``lr``) on its reconstruction objective (the training objective without the hinge,
    which needs the label). Adam is element-wise and the objective a sum over samples, so a
    sample's latent never depends on its batch-mates. Prediction: ŷ = argmax_c hᵀμ_c with μ_c
    the mean training latent of class c (the official ``classfiy.ave``). Logits are τ·hᵀμ_c
    with τ fitted after training on the validation split (``calibrate``, a 1-D search of the
    validation log-loss): an addition to the paper that changes no prediction and makes the
    logits usable for validation-loss and calibration metrics.

    ``normalisation``: "standardize" (mlmm's per-feature standardisation, as the loop hands it)
    or "paper" (the official ``Normalize``: per view one scalar shift and scale, (x − mean) /
    (max − min) over all its entries; computed here on the training split's present entries and
    applied to every split, where the official code recomputes it on the test split itself).

    Deviations from the official code, with reasons: decoders are ``hidden``-wide MLPs with a
    GELU (the official decoder is linear-linear with output dropout 0.9, even at test time);
    the hinge is the paper's structured hinge with margin 1(c ≠ y) (the official code adds
    1 only when the sample is misclassified); test latents start at 0 rather than at a random
    draw, so that a prediction is deterministic.
    Works with incomplete training data. Classification only; modalities must be float inputs
    (vector, sequence, image), not token ids.

    Recovery axis: a non-recovery method (``recovers_missing`` False). The latent is fitted to
    the present modalities and classified directly; a missing modality's reconstruction
    g_m(h) (``reconstruct``) is a by-product that no prediction reads.
    """

    info = MethodInfo(
        category="representation-generation",
        fusion="intermediate",
        recovers_missing=False,
        needs_complete_train=False,
        capabilities=frozenset({Capability.PREPARES, Capability.CALIBRATES}),
        unsupported_kinds={"regression": "cpm-nets classifies by class-mean similarity in its latent space",
                           "text": "every modality is reconstructed from the latent by regression, and token ids "
                                   "cannot be regressed"},
        paper="CPM-Nets: Zhang et al., CPM-Nets: Cross Partial Multi-View Networks, NeurIPS 2019 "
              "(TPAMI 2020, Deep Partial Multi-View Learning); survey Sec. 3.3",
        summary="TRANSDUCTIVE: no encoder; a free latent per training sample fitted by masked reconstruction "
                "through per-modality decoders + class-structured hinge, official schedule (full batch, 5 decoder "
                "/ 5 latent Adam steps per epoch, lr 0.01, 30 epochs); each test latent fitted by the same "
                "reconstruction objective, start and step count (decoders frozen); nearest class mean",
        fixed_encoders={"*": "CPM-Nets has no encoder: each sample's latent is fitted by reconstruction "
                             "through per-modality decoders, in input space"},
        split_row_limit=100_000,
        split_limit_reason="the official schedule is full batch (every step reads the whole training split at "
                           "once) with one free latent per training row, and calibrate fits the whole validation "
                           "split's latents together: the split must be in memory, not streamed",
    )

    #: The training latents and their labels are kept: prediction classifies a test latent by
    #: its similarity to the per-class mean training latent (test latents start at 0).
    training_state = {"latents": "prediction compares test latents with the per-class mean training latents",
                      "latent_class": "prediction compares test latents with the per-class mean training latents"}
    param_constraints = {"epochs": [COUNT], "net_steps": [COUNT], "latent_steps": [COUNT], "lr": [POSITIVE],
                         "normalisation": [Options(NORMALISATIONS)]}

    def __init__(self, spec: DatasetSpec, latent_dim: int = 64, hidden: int = 256, hinge_weight: float = 1.0,
                 epochs: int = 30, net_steps: int = 5, latent_steps: int = 5, lr: float = 0.01,
                 fit_steps: int | None = None, fit_lr: float | None = None,
                 normalisation: str = "standardize", **components) -> None:
        super().__init__(spec, **components)
        if spec.task.kind != "classification":
            raise ValueError("cpm-nets classifies by class-mean similarity; it needs a classification task")
        if normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
        fit_steps = epochs * latent_steps if fit_steps is None else fit_steps
        fit_lr = lr if fit_lr is None else fit_lr
        if min(epochs, net_steps, latent_steps) < 1 or fit_steps < 0 or lr <= 0 or fit_lr <= 0:
            raise ValueError(f"need epochs, net_steps, latent_steps >= 1, fit_steps >= 0, lr > 0, fit_lr > 0; got "
                             f"{epochs}, {net_steps}, {latent_steps}, {fit_steps}, {lr}, {fit_lr}")
        self.latent_dim = int(latent_dim)
        self.hinge_weight = float(hinge_weight)
        self.epochs, self.net_steps, self.latent_steps = int(epochs), int(net_steps), int(latent_steps)
        self.lr = float(lr)
        self.fit_steps, self.fit_lr = int(fit_steps), float(fit_lr)
        self.normalisation = normalisation
        self.decoders = nn.ModuleDict({
            m.name: nn.Sequential(nn.Linear(latent_dim, hidden), nn.GELU(), nn.Linear(hidden, math.prod(m.shape)))
            for m in spec.modalities
        })
        self.latents = nn.Parameter(torch.zeros(0, latent_dim))  # (N, K), sized by prepare
        self.register_buffer("latent_class", torch.zeros(0, dtype=torch.long))
        self.register_buffer("log_temperature", torch.zeros(()))
        # Per-feature affine map from the loop's standardised values to the paper's per-view
        # normalisation (identity for "standardize"); set by prepare.
        for j, m in enumerate(spec.modalities):
            self.register_buffer(f"view_scale{j}", torch.ones(m.shape))
            self.register_buffer(f"view_shift{j}", torch.zeros(m.shape))

    def training_control(self, stage: str) -> StageControl:
        # The official schedule: full batch, alternating decoder / latent Adam steps, fixed epochs.
        return StageControl(full_batch=True, groups=(("decoders.", self.net_steps), ("latents", self.latent_steps)),
                            epochs=self.epochs, modality_dropout="off", optimizer="adam", lr=self.lr,
                            weight_decay=0.0, grad_clip=False)

    # ------------------------------------------------------------ training rows

    def prepare(self, train: Batch, standardizer: Standardizer) -> None:
        """One free latent per training row (Xavier-uniform, from the loop's seeded RNG), its
        label, and the normalisation."""
        if train.target is None:
            raise ValueError("cpm-nets needs training labels (train.target is None)")
        # The official Xavier-uniform start, U(±sqrt(6 / (N + K))): near 0, where test latents start.
        bound = math.sqrt(6.0 / (train.size + self.latent_dim))
        init = (torch.rand(train.size, self.latent_dim, device=train.mask.device,
                           generator=self.generator) * 2 - 1) * bound
        self.latents = nn.Parameter(init)
        self.latent_class = train.target.to(torch.long).clone()
        if self.normalisation == "paper":
            self._fit_view_normalisation(train, standardizer)

    @torch.no_grad()
    def _fit_view_normalisation(self, train: Batch, standardizer: Standardizer) -> None:
        """x_paper = (raw − mean_v) / (max_v − min_v), one scalar pair per view over its present
        training entries, written as an affine map of the standardised values."""
        for j, m in enumerate(self.spec.modalities):
            mean = getattr(standardizer, f"mean_{m.name}").expand(m.shape)
            std = getattr(standardizer, f"std_{m.name}").expand(m.shape)
            raw = train.inputs[m.name][train.mask[:, j]] * std + mean
            if raw.shape[0] == 0:
                continue
            span = (raw.max() - raw.min()).clamp_min(1e-8)
            getattr(self, f"view_scale{j}").copy_(std / span)
            getattr(self, f"view_shift{j}").copy_((mean - raw.mean()) / span)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        resize_to_saved(self, state_dict, prefix, _DATA_SIZED)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def class_means(self) -> Tensor:
        """(C, K) mean training latent per class (zeros for a class with no training row)."""
        onehot = F.one_hot(self.latent_class, self.spec.task.output_dim).to(self.latents.dtype)  # (N, C)
        return (onehot.t() @ self.latents) / onehot.sum(dim=0).clamp_min(1).unsqueeze(1)

    # ------------------------------------------------------------ reconstruction

    def _targets(self, batch: Batch) -> list[Tensor]:
        """Per modality (B, d_m) flattened, normalised inputs with masked-out rows zeroed (never read)."""
        out = []
        for j, x in enumerate(batch.inputs.values()):
            x = x * getattr(self, f"view_scale{j}") + getattr(self, f"view_shift{j}")
            x = torch.where(mask_column(batch.mask, j, x.dim()), x, torch.zeros((), dtype=x.dtype, device=x.device))
            out.append(x.flatten(1))
        return out

    def reconstruction_error(self, h: Tensor, targets: list[Tensor], mask: Tensor) -> Tensor:
        """(B,) r(h_b, x_b, a_b) = Σ_m a_bm · Σ_d (g_m(h_b) − x_bm)²."""
        total = h.new_zeros(h.shape[0])
        for j, (name, x) in enumerate(zip(self.spec.modality_names, targets)):
            err = (self.decoders[name](h) - x).pow(2).sum(dim=1)
            total = total + torch.where(mask[:, j], err, torch.zeros((), dtype=err.dtype, device=err.device))
        return total

    def fit_latents(self, batch: Batch, steps: int | None = None) -> Tensor:
        """(B, K) test-time latents, decoders fixed: from 0, ``steps`` Adam steps (lr ``fit_lr``,
        torch's defaults β = (0.9, 0.999), ε = 1e-8) on Σ_b r(h_b, x_b, a_b); element-wise, so
        batch-mates never interact. Detached; decoders receive no gradient."""
        steps = self.fit_steps if steps is None else int(steps)
        targets = self._targets(batch)
        h = self.latents.new_zeros(batch.size, self.latent_dim)
        m1, m2 = torch.zeros_like(h), torch.zeros_like(h)
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        with torch.enable_grad():
            for t in range(1, steps + 1):
                h.requires_grad_(True)
                (grad,) = torch.autograd.grad(self.reconstruction_error(h, targets, batch.mask).sum(), h)
                m1 = beta1 * m1 + (1 - beta1) * grad
                m2 = beta2 * m2 + (1 - beta2) * grad * grad
                step = (m1 / (1 - beta1 ** t)) / ((m2 / (1 - beta2 ** t)).sqrt() + eps)
                h = (h - self.fit_lr * step).detach()
        return h.detach()

    # ---------------------------------------------------------------- forward

    def _logits(self, h: Tensor, means: Tensor) -> Tensor:
        return self.log_temperature.exp() * (h @ means.t())

    def forward(self, batch: Batch) -> Output:
        means = self.class_means()
        if self.training and batch.index is not None and self.latents.shape[0]:
            # A training row: its free latent (row ``batch.index``, set by the loop).
            h = self.latents[batch.index]
            return Output(self._logits(h.detach(), means.detach()), aux={"h": h})
        # Test time (or a batch that is not training rows): a latent fitted to the present modalities.
        return Output(self._logits(self.fit_latents(batch), means.detach()))

    def class_similarity(self, h: Tensor, index: Tensor) -> Tensor:
        """(B, C) F(h_b, c) = mean over training rows j ≠ index_b of class c of h_bᵀh_j."""
        onehot = F.one_hot(self.latent_class, self.spec.task.output_dim).to(h.dtype)  # (N, C)
        sums = h @ (onehot.t() @ self.latents).t()  # (B, C)
        counts = onehot.sum(dim=0).unsqueeze(0).expand(h.shape[0], -1)  # (B, C)
        own = onehot[index]  # (B, C): the row itself is left out of its own class mean
        sums = sums - own * (h * self.latents[index]).sum(dim=1, keepdim=True)
        return sums / (counts - own).clamp_min(1)

    def loss(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        if "h" not in output.aux:  # eval mode, or samples without a training row: nothing to fit
            zero = output.logits.new_zeros(())
            return {"reconstruction": zero, "hinge": zero}
        h = output.aux["h"]
        recon = self.reconstruction_error(h, self._targets(batch), batch.mask)
        similarity = self.class_similarity(h, batch.index)
        target = batch.target
        margin = 1.0 - F.one_hot(target, similarity.shape[1]).to(similarity.dtype)  # 1(c != y)
        own = similarity.gather(1, target.unsqueeze(1)).squeeze(1)
        hinge = (margin + similarity).max(dim=1).values - own
        return {"reconstruction": recon.mean(), "hinge": self.hinge_weight * hinge.mean()}

    @torch.no_grad()
    def calibrate(self, val: Batch) -> None:
        """τ minimising the validation log-loss of τ·hᵀμ_c over a log-spaced grid (no prediction changes)."""
        if val.size == 0 or val.target is None:
            return
        scores = self.fit_latents(val) @ self.class_means().t()  # (B, C)
        grid = torch.linspace(-8.0, 4.0, 241, device=scores.device)
        losses = torch.stack([F.cross_entropy(scores * g.exp(), val.target) for g in grid])
        self.log_temperature.fill_(float(grid[int(losses.argmin())]))

    def reconstruct(self, batch: Batch) -> dict[str, Tensor]:
        """Modality -> (B, *shape) g_m(h), h fitted to the present modalities, in the method's
        normalised units (for inspection; predictions never use it)."""
        h = self.fit_latents(batch)
        with torch.no_grad():
            return {m.name: self.decoders[m.name](h).reshape(-1, *m.shape) for m in self.spec.modalities}
