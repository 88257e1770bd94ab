"""Indirect representation generation: masked-modality autoencoding (ActionMAE-style)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...components.encoders import PerModalityEncoders
from ...components.subpatterns import random_sub_mask
from ...data.batch import Batch
from ...data.spec import DatasetSpec
from ...validation import PROBABILITY
from ..base import MethodInfo, MissingModalityModel, Output, StageControl
from ..registry import register_method


@register_method("masked-modality-ae")
class MaskedModalityAutoencoder(MissingModalityModel):
    """Masked-modality autoencoding with one token per modality (indirect representation generation).

    Paper: ActionMAE (Woo et al., "Towards Good Practices for Missing Modality Robust Action
    Recognition", AAAI 2023); also M3AE. Survey Sec. 3.3 (indirect representation generation).

    Shapes: B batch, M modalities, D = ``embed_dim``, C outputs.

        z_m  = E_m(x_m),  u_m = LN(z_m)  (no affine: the per-token normalised target)    (B, M, D)
        a' ⊆ a: in training, each sample keeps k ~ U{1..n} of its n present modalities,
             chosen uniformly (ActionMAE's len_keep, per sample; k = n: nothing dropped);
             at test a' = a
        t_m  = (u_m if a'_m else [MASK]_m) + type_m                                      (B, M, D)
        o    = LN(Transformer(t))                       (the decoder output of every token) (B, M, D)
        ẑ    = W · o                                     (reconstruction of every token)  (B, M, D)
        logits = Σ_m h_m(o_m)    (ActionMAE's fusion: a linear head per modality on the
                                  decoder output of all tokens, summed)                  (B, C)
        L = CE_{ls=0.1} + λ · Σ_{b,m: a=1, a'=0} ‖ẑ_m − sg(u_m)‖² / (D · #such entries)

    Missing tokens are learned [MASK] tokens put in with ``torch.where``, so masked-out
    inputs never reach the transformer and no key-padding mask is needed (a sample with no
    modality at all is M [MASK] tokens: finite). Truly missing modalities get no
    reconstruction loss (nothing to compare with); the target is detached, unlike the
    official code. CE uses label smoothing 0.1 (ActionMAE's) in training; validation and
    metrics use plain CE. The loop's modality dropout is off (``training_control``): the
    method's own masking is ActionMAE's. Works with incomplete training data (only dropped
    *present* tokens are targets). Adaptation: the dropped tokens stay in the sequence as
    [MASK] tokens (one transformer instead of encoder + memory tokens + decoder; M is small).
    ``plain_fill`` zeroes the decoder output at missing slots before the heads (so the
    prediction reads only present tokens' outputs); ``recover`` gives f_m = u_m where present,
    ẑ_m where missing.
    """

    info = MethodInfo(
        category="representation-generation",
        fusion="intermediate",
        recovers_missing=True,
        needs_complete_train=False,
        paper="ActionMAE: Woo et al., Towards Good Practices for Missing Modality Robust Action Recognition, "
              "AAAI 2023 (survey Sec. 3.3, indirect representation generation)",
        summary="per-modality tokens; each sample keeps k ~ U{1..n} of its present tokens in training "
                "(ActionMAE, no drop included), a transformer reconstructs the dropped ones (detached, masked "
                "MSE); prediction = sum of per-modality linear heads on the outputs of all tokens; label "
                "smoothing 0.1; adaptation: one transformer with [MASK] tokens, not encoder + decoder",
        recovery_space="embedding",
    )

    param_constraints = {"label_smoothing": [PROBABILITY]}

    def __init__(self, spec: DatasetSpec, embed_dim: int = 128, hidden: int | None = None, dropout: float = 0.5,
                 n_layers: int = 2, n_heads: int = 4, ff_dim: int = 256, attn_dropout: float = 0.1,
                 recon_weight: float = 1.0, label_smoothing: float = 0.1, **components) -> None:
        super().__init__(spec, **components)
        if embed_dim % n_heads:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by n_heads {n_heads}")
        if recon_weight < 0:
            raise ValueError(f"recon_weight must be >= 0, got {recon_weight}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.recon_weight, self.label_smoothing = float(recon_weight), float(label_smoothing)
        m = spec.n_modalities
        self.encoders = PerModalityEncoders(spec, embed_dim, hidden=hidden, dropout=dropout, choices=self.components)
        self.mask_tokens = nn.Parameter(torch.randn(m, embed_dim) * 0.02)
        self.type_embed = nn.Parameter(torch.randn(m, embed_dim) * 0.02)
        layer = nn.TransformerEncoderLayer(embed_dim, n_heads, ff_dim, attn_dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        # enable_nested_tensor only matters with a key-padding mask, which is never used here.
        self.transformer = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.out_norm = nn.LayerNorm(embed_dim)
        self.reconstruct = nn.Linear(embed_dim, embed_dim)
        self.token_heads = nn.ModuleList(nn.Linear(embed_dim, spec.task.output_dim) for _ in range(m))

    def training_control(self, stage: str) -> StageControl:
        # ActionMAE's own masking (k ~ U{1..n} kept per sample) replaces the loop's modality dropout.
        return StageControl(modality_dropout="off")

    def _tokens(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(u, kept, o, ẑ): normalised embeddings (B, M, D), the kept mask a' (B, M), decoder
        outputs (B, M, D), reconstructions (B, M, D)."""
        z = self.encoders(batch)
        u = F.layer_norm(z, z.shape[-1:])
        kept = random_sub_mask(batch.mask, strict=False, generator=self.generator) if self.training else batch.mask
        t = torch.where(kept.unsqueeze(-1), u, self.mask_tokens.unsqueeze(0)) + self.type_embed
        o = self.out_norm(self.transformer(t))
        return u, kept, o, self.reconstruct(o)

    def _filled(self, u: Tensor, kept: Tensor, z_hat: Tensor) -> Tensor:
        fill = torch.zeros((), dtype=u.dtype, device=u.device) if self.plain_fill else z_hat
        return torch.where(kept.unsqueeze(-1), u, fill)

    def forward(self, batch: Batch) -> Output:
        u, kept, o, z_hat = self._tokens(batch)
        if self.plain_fill:  # read only the present tokens' outputs
            o = torch.where(kept.unsqueeze(-1), o, torch.zeros((), dtype=o.dtype, device=o.device))
        logits = sum(head(o[:, j]) for j, head in enumerate(self.token_heads))
        return Output(logits, aux={"u": u, "kept": kept, "z_hat": z_hat})

    def recon_loss(self, batch: Batch, output: Output) -> Tensor:
        """Mean squared error over (sample, modality) entries present but dropped; 0 if none."""
        u, kept, z_hat = output.aux["u"], output.aux["kept"], output.aux["z_hat"]
        target_entries = batch.mask & ~kept  # (B, M)
        err = (z_hat - u.detach()).pow(2).mean(dim=-1)  # (B, M); u at absent slots is finite (zeroed inputs)
        err = torch.where(target_entries, err, torch.zeros((), dtype=err.dtype, device=err.device))
        return err.sum() / target_entries.sum().clamp_min(1).to(err.dtype)

    def loss(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        if self.spec.task.kind == "classification":
            terms = {"task": F.cross_entropy(output.logits, batch.target, label_smoothing=self.label_smoothing)}
        else:
            terms = {"task": self.task_loss(output.logits, batch.target)}
        if self.recon_weight > 0:
            terms["reconstruction"] = self.recon_weight * self.recon_loss(batch, output)
        return terms

    def recover(self, batch: Batch) -> dict[str, Tensor]:
        """Modality -> (B, D): u_m (the normalised embedding) where present, ẑ_m where missing."""
        u, kept, _, z_hat = self._tokens(batch)
        filled = self._filled(u, kept, z_hat)
        return {name: filled[:, j] for j, name in enumerate(self.spec.modality_names)}
