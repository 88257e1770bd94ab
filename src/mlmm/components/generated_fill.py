"""What the modality-generation methods share: decoders, training-time hiding, the
masked reconstruction loss, and the downstream model that reads generated fills.

A subclass supplies ``generate(batch, visible)`` (every modality's x̂_m from the
modalities ``visible`` marks present) and ``hide(mask)`` (the training-time
drop policy); this module turns that into ``forward``, ``loss``, ``recover``
and ``prepare``.
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor, nn

from ..data.batch import Batch
from ..data.passes import SplitPasses, present_means
from ..data.preprocess import Standardizer
from ..data.spec import DatasetSpec, ModalitySpec
from ..methods.base import MissingModalityModel, Output, mask_column
from .encoders import PerModalityEncoders

#: ``MethodInfo.unsupported_kinds`` of the methods built on this module (why text is refused).
INPUT_GENERATION_UNSUPPORTED = {"text": ("it generates missing modalities in input space by regression, and token ids "
            "cannot be regressed (use an intermediate fusion, e.g. product-of-experts)")}


class FlatDecoder(nn.Module):
    """(B, in_dim) -> (B, *spec.shape): a two-layer MLP whose output is reshaped to the modality.

    One flat output per scalar of the modality, so it suits vectors, short
    sequences (T x C outputs) and small images; its last layer has
    ``hidden * spec.size`` weights, which is large for big images.
    """

    def __init__(self, spec: ModalitySpec, in_dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.shape = spec.shape
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, spec.size))

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h).reshape(h.shape[0], *self.shape)


def hide_bernoulli(mask: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """Each present entry of the (B, M) mask hidden with probability ``p``; a sample that would
    lose everything keeps one present modality, drawn uniformly. Returns (B, M) bool ⊆ ``mask``.

    Uses torch's global RNG (the training loop seeds it) with a data-independent number of draws.
    """
    hidden = (torch.rand(mask.shape, device=mask.device, generator=generator) < p) & mask
    kept = mask & ~hidden
    scores = torch.rand(mask.shape, device=mask.device, generator=generator).masked_fill(~mask, -1.0)
    rescue = torch.zeros_like(mask).scatter_(1, scores.argmax(dim=1, keepdim=True), True) & mask
    return kept | (rescue & ~kept.any(dim=1, keepdim=True))


def keep_random_subset(mask: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """A uniformly sized random non-empty subset of each sample's present modalities (ActionMAE's
    masking, drawn per sample): keep k ~ U{1..n_b} of the n_b present entries, chosen uniformly.
    (B, M) bool -> (B, M) bool ⊆ ``mask``; an empty row stays empty. Draws from ``generator``, as
    ``hide_bernoulli``."""
    scores = torch.rand(mask.shape, device=mask.device, generator=generator).masked_fill(~mask, -1.0)
    rank = scores.argsort(dim=1, descending=True).argsort(dim=1)  # 0 = highest score; absent rank last
    n_present = mask.sum(dim=1, keepdim=True)
    keep_count = (torch.rand(mask.shape[0], 1, device=mask.device, generator=generator) * n_present).floor().long() + 1
    return mask & (rank < keep_count)


def masked_reconstruction(generated: list[Tensor], batch: Batch, targets: Tensor) -> Tensor:
    """Mean squared error of x̂_m against x_m over the (sample, modality) entries ``targets`` marks.

    generated: per modality (B, *shape_m) in spec order; targets: (B, M) bool, a subset of
    ``batch.mask`` (present entries only: the inputs of other entries are never read).
    Each entry's error is the mean over its scalars, so modalities of any size weigh alike;
    the result is the mean over marked entries, 0 when none is marked (never NaN).
    """
    targets = targets & batch.mask
    zero = torch.zeros((), dtype=generated[0].dtype, device=generated[0].device)
    total = zero
    for j, (x_hat, x) in enumerate(zip(generated, batch.inputs.values())):
        truth = torch.where(mask_column(targets, j, x.dim()), x, zero)
        error = ((x_hat - truth) ** 2).flatten(1).mean(dim=1)
        total = total + torch.where(targets[:, j], error, zero).sum()
    return total / targets.sum().clamp_min(1).to(total.dtype)


class GeneratedFillModel(MissingModalityModel, abc.ABC):
    """Abstract downstream of the modality-generation methods.

    Shapes: B batch, M modalities, D = ``embed_dim``, C outputs; a (B, M) availability mask.

        v = hide(a) in training, a in eval                         (B, M) visible modalities
        x̂_m = generate(x, v)_m                                     (B, *shape_m), from visible ones only
        x̃_m = v_m x_m + (1 - v_m) sg(x̂_m)                          (B, *shape_m)
        z_m = E_m(x̃_m) + (1 - v_m) g_m                             (B, M, D), g_m a learned "generated" marker
        logits = head(mean_m z_m)                                  (B, C)
        L = L_task + λ · mean_{(b, m): a_bm = 1, v_bm = 0} mean(x̂_bm - x_bm)²

    The mask reaches the downstream through the markers g_m, so it knows which
    inputs are generated. The reconstruction loss is taken only on modalities
    that are present but hidden (their truth is known and the generator did
    not see it); truly missing entries get no loss. ``sg`` keeps the task loss
    from pulling the generator towards inputs that merely help the classifier.
    With ``plain_fill`` the missing slots get the training mean instead of x̂_m
    (the recover-or-not diagnostics).
    """

    def __init__(self, spec: DatasetSpec, embed_dim: int = 128, hidden: int | None = None, dropout: float = 0.5,
                 recon_weight: float = 1.0, **components) -> None:
        super().__init__(spec, **components)
        if recon_weight < 0:
            raise ValueError(f"recon_weight must be >= 0, got {recon_weight}")
        self.recon_weight = float(recon_weight)
        self.encoders = PerModalityEncoders(spec, embed_dim, hidden=hidden, dropout=dropout, choices=self.components)
        self.generated_marker = nn.Parameter(torch.zeros(spec.n_modalities, embed_dim))
        self.head = self.components.make_head(embed_dim, spec.task.output_dim, hidden=embed_dim, dropout=dropout)
        for m in spec.modalities:
            self.register_buffer(f"fill_{m.name}", torch.zeros(m.shape))

    # ------------------------------------------------------------ subclass hooks

    @abc.abstractmethod
    def generate(self, batch: Batch, visible: Tensor) -> list[Tensor]:
        """x̂_m (B, *shape_m) for every modality m in spec order, computed from the modalities
        ``visible`` (B, M) marks present (``visible`` ⊆ ``batch.mask``; nothing else is read)."""

    @abc.abstractmethod
    def hide(self, mask: Tensor) -> Tensor:
        """Training-time visible mask (B, M) ⊆ ``mask``: present modalities hidden from the generator."""

    # ------------------------------------------------------------ contract

    def prepare_split(self, split: SplitPasses, standardizer: Standardizer) -> None:
        """Training mean of every modality over the rows holding it (one streamed pass): the ``plain_fill`` value."""
        means = present_means(split, list(self.spec.modality_names))
        for m in self.spec.modalities:
            value = means[m.name]
            getattr(self, f"fill_{m.name}").copy_(torch.zeros(m.shape) if value is None else value)

    def plain_fill_value(self, name: str) -> Tensor:
        """The training mean of the modality (set by ``prepare``), what ``plain_fill`` puts in place."""
        return getattr(self, f"fill_{name}")

    def recover(self, batch: Batch) -> dict[str, Tensor]:
        """Modality -> x̂_m (B, *shape_m) generated from the sample's *other* present modalities
        (in the current train/eval mode; never hides anything)."""
        return dict(zip(self.spec.modality_names, self.generate(batch, batch.mask)))

    def forward(self, batch: Batch) -> Output:
        visible = self.hide(batch.mask) if self.training else batch.mask
        generated = self.generate(batch, visible)
        filled = {}
        for j, (m, x_hat) in enumerate(zip(self.spec.modalities, generated)):
            x = batch.inputs[m.name]
            fill = getattr(self, f"fill_{m.name}").expand_as(x_hat) if self.plain_fill else x_hat.detach()
            filled[m.name] = torch.where(mask_column(visible, j, x.dim()), x, fill)
        every = torch.ones_like(batch.mask)
        z = self.encoders(Batch(filled, every))
        z = z + (~visible).unsqueeze(-1).to(z.dtype) * self.generated_marker
        aux = {"visible": visible}
        aux.update({f"generated/{m.name}": x_hat for m, x_hat in zip(self.spec.modalities, generated)})
        return Output(self.head(z.mean(dim=1)), aux=aux)

    def loss(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        generated = [output.aux[f"generated/{m.name}"] for m in self.spec.modalities]
        hidden = batch.mask & ~output.aux["visible"]
        return {
            "task": self.task_loss(output.logits, batch.target),
            "reconstruction": self.recon_weight * masked_reconstruction(generated, batch, hidden),
        }
