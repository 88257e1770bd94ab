"""Indirect representation generation: masked-modality autoencoding (ActionMAE-style)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...components.encoders import PerModalityEncoders
from ...components.heads import mlp_head
from ...components.pooling import masked_mean
from ...components.subpatterns import random_sub_mask
from ...data.batch import Batch
from ...data.spec import DatasetSpec
from ..base import MethodInfo, MissingModalityModel, Output
from ..registry import register_method


@register_method("masked-modality-ae")
class MaskedModalityAutoencoder(MissingModalityModel):
    """Masked-modality autoencoding with one token per modality (indirect representation generation).

    Paper: ActionMAE (Woo et al., "Towards Good Practices for Missing Modality Robust Action
    Recognition", AAAI 2023); also M3AE. Survey Sec. 3.3 (indirect representation generation).

    Shapes: B batch, M modalities, D = ``embed_dim``, C outputs.

        z_m  = E_m(x_m),  u_m = LN(z_m)  (no affine: the per-token normalised target)    (B, M, D)
        a' ⊆ a: in training, every sample with >= 2 present modalities drops a random
             non-empty strict subset of them (k ~ U{1..n-1}); at test a' = a
        t_m  = (u_m if a'_m else [MASK]_m) + type_m                                      (B, M, D)
        ẑ    = W · Transformer(t)                         (reconstruction of every token) (B, M, D)
        f_m  = u_m if a'_m else ẑ_m                       (missing filled by reconstruction)
        logits = head(mean_m f_m)                                                         (B, C)
        L = CE + λ · Σ_{b,m: a=1, a'=0} ‖ẑ_m − sg(u_m)‖² / (D · #such entries)

    Missing tokens are learned [MASK] tokens put in with ``torch.where``, so masked-out
    inputs never reach the transformer and no key-padding mask is needed (a sample with no
    modality at all is M [MASK] tokens: finite). Truly missing modalities get no
    reconstruction loss (nothing to compare with); the target is detached, unlike the
    official code. Works with incomplete training data (only dropped *present* tokens are
    targets). Unlike ActionMAE the dropped tokens stay in the sequence as [MASK] tokens (one
    transformer instead of encoder + decoder; M is small) and the fusion is the mean of the
    filled tokens. ``plain_fill`` replaces ẑ by zeros at missing slots; ``recover`` gives f.
    """

    info = MethodInfo(
        category="representation-generation",
        fusion="intermediate",
        recovers_missing=True,
        needs_complete_train=False,
        paper="ActionMAE: Woo et al., Towards Good Practices for Missing Modality Robust Action Recognition, "
              "AAAI 2023 (survey Sec. 3.3, indirect representation generation)",
        summary="per-modality tokens; a random non-empty strict subset of present tokens is masked in training "
                "and a transformer reconstructs it (detached, masked MSE); missing tokens filled by the "
                "reconstruction; mean of tokens; MLP head",
        recovery_space="embedding",
    )

    def __init__(self, spec: DatasetSpec, embed_dim: int = 128, hidden: int | None = None, dropout: float = 0.5,
                 n_layers: int = 2, n_heads: int = 4, ff_dim: int = 256, attn_dropout: float = 0.1,
                 recon_weight: float = 1.0) -> None:
        super().__init__(spec)
        if embed_dim % n_heads:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by n_heads {n_heads}")
        if recon_weight < 0:
            raise ValueError(f"recon_weight must be >= 0, got {recon_weight}")
        self.recon_weight = float(recon_weight)
        m = spec.n_modalities
        self.encoders = PerModalityEncoders(spec, embed_dim, hidden=hidden, dropout=dropout)
        self.mask_tokens = nn.Parameter(torch.randn(m, embed_dim) * 0.02)
        self.type_embed = nn.Parameter(torch.randn(m, embed_dim) * 0.02)
        layer = nn.TransformerEncoderLayer(embed_dim, n_heads, ff_dim, attn_dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        # enable_nested_tensor only matters with a key-padding mask, which is never used here.
        self.transformer = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.out_norm = nn.LayerNorm(embed_dim)
        self.reconstruct = nn.Linear(embed_dim, embed_dim)
        self.head = mlp_head(embed_dim, spec.task.output_dim, hidden=embed_dim, dropout=dropout)

    def _tokens(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """(u, kept, ẑ): normalised embeddings (B, M, D), the kept mask a' (B, M), reconstructions (B, M, D)."""
        z = self.encoders(batch)
        u = F.layer_norm(z, z.shape[-1:])
        kept = random_sub_mask(batch.mask, strict=True) if self.training else batch.mask
        t = torch.where(kept.unsqueeze(-1), u, self.mask_tokens.unsqueeze(0)) + self.type_embed
        z_hat = self.reconstruct(self.out_norm(self.transformer(t)))
        return u, kept, z_hat

    def _filled(self, u: Tensor, kept: Tensor, z_hat: Tensor) -> Tensor:
        fill = torch.zeros((), dtype=u.dtype, device=u.device) if self.plain_fill else z_hat
        return torch.where(kept.unsqueeze(-1), u, fill)

    def forward(self, batch: Batch) -> Output:
        u, kept, z_hat = self._tokens(batch)
        filled = self._filled(u, kept, z_hat)
        # Mean over all M slots: every slot holds a present or a reconstructed token.
        everything = torch.ones_like(kept)
        logits = self.head(masked_mean(filled, everything))
        return Output(logits, aux={"u": u, "kept": kept, "z_hat": z_hat})

    def recon_loss(self, batch: Batch, output: Output) -> Tensor:
        """Mean squared error over (sample, modality) entries present but dropped; 0 if none."""
        u, kept, z_hat = output.aux["u"], output.aux["kept"], output.aux["z_hat"]
        target_entries = batch.mask & ~kept  # (B, M)
        err = (z_hat - u.detach()).pow(2).mean(dim=-1)  # (B, M); u at absent slots is finite (zeroed inputs)
        err = torch.where(target_entries, err, torch.zeros((), dtype=err.dtype, device=err.device))
        return err.sum() / target_entries.sum().clamp_min(1).to(err.dtype)

    def loss(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        terms = {"task": self.task_loss(output.logits, batch.target)}
        if self.recon_weight > 0:
            terms["reconstruction"] = self.recon_weight * self.recon_loss(batch, output)
        return terms

    def recover(self, batch: Batch) -> dict[str, Tensor]:
        """Modality -> (B, D): u_m (the normalised embedding) where present, ẑ_m where missing."""
        u, kept, z_hat = self._tokens(batch)
        filled = self._filled(u, kept, z_hat)
        return {name: filled[:, j] for j, name in enumerate(self.spec.modality_names)}
