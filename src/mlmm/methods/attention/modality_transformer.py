"""Modality-token transformer: missing modalities as learned tokens or padded keys."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...components.encoders import PerModalityEncoders
from ...components.pooling import masked_mean
from ...components.subpatterns import drop_present
from ...data.batch import Batch
from ...data.spec import DatasetSpec
from ..base import MethodInfo, MissingModalityModel, Output
from ..registry import register_method

MISSING_MODES = ("token", "padding")
POOLS = ("cls", "mean")


@register_method("modality-transformer")
class ModalityTransformer(MissingModalityModel):
    """A transformer over one token per modality plus a CLS token.

    Tokens (B, 1 + M, D): t_0 = CLS, and for modality m

        t_m = E_m(x_m) + type_m          if a_m = 1
        t_m = MISS_m + type_m            if a_m = 0 and missing = "token"
        t_m masked out as a key          if a_m = 0 and missing = "padding"

    (key_padding_mask = [False, ¬a]: the always-present CLS keeps every row of
    the attention non-empty, so a sample with no modality still gets finite
    logits). A pre-norm ``nn.TransformerEncoder`` (``layers`` x ``heads``) mixes
    them; logits = head(LN(t_CLS)) (B, C), or with ``pool="mean"`` the head
    reads the mean of the CLS and the present modality tokens.

    In training, on top of the loop's modality dropout, each present token is
    dropped with probability ``token_drop`` (at least one kept), so every
    [MISS_m] token is trained even on complete data. Works with incomplete
    training data.

    Paper: the modality-token transformer of missing-modality work such as
    Ma et al., "Are multimodal transformers robust to missing modality?" (CVPR 2022)
    and mmFormer (Zhang et al., MICCAI 2022); survey Sec. 3.1.1.
    """

    info = MethodInfo(
        category="attention",
        fusion="intermediate",
        recovers_missing=False,
        needs_complete_train=False,
        paper="Modality-token transformer (Ma et al., CVPR 2022; mmFormer, Zhang et al., MICCAI 2022; "
              "survey Sec. 3.1.1)",
        summary="one token per modality + type embeddings, learned [MISS_m] token or key-padding mask "
                "with an always-present CLS, pre-norm transformer, head on CLS",
    )

    def __init__(self, spec: DatasetSpec, embed_dim: int = 128, hidden: int | None = None, heads: int = 4,
                 layers: int = 2, missing: str = "token", pool: str = "cls", dropout: float = 0.5,
                 attn_dropout: float = 0.1, token_drop: float = 0.1, **components) -> None:
        super().__init__(spec, **components)
        if missing not in MISSING_MODES:
            raise ValueError(f"missing must be one of {MISSING_MODES}, got {missing!r}")
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        if embed_dim % heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by heads {heads}")
        if not 0.0 <= token_drop < 1.0:
            raise ValueError(f"token_drop must be in [0, 1), got {token_drop}")
        self.missing, self.pool, self.token_drop = missing, pool, float(token_drop)
        n = spec.n_modalities
        self.encoders = PerModalityEncoders(spec, embed_dim, hidden=hidden, dropout=dropout, choices=self.components)
        self.type_embed = nn.Parameter(0.02 * torch.randn(n, embed_dim))
        self.cls = nn.Parameter(0.02 * torch.randn(1, 1, embed_dim))
        if missing == "token":
            self.miss = nn.Parameter(0.02 * torch.randn(n, embed_dim))
        layer = nn.TransformerEncoderLayer(embed_dim, heads, dim_feedforward=2 * embed_dim, dropout=attn_dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        # No nested tensors: their fast path returns padded rows that the masked pooling must
        # not depend on, and it changes kernels with batch composition.
        self.transformer = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(embed_dim),
                                                 enable_nested_tensor=False)
        self.head = self.components.make_head(embed_dim, spec.task.output_dim, hidden=embed_dim, dropout=dropout)

    def tokens(self, batch: Batch, mask: Tensor) -> tuple[Tensor, Tensor]:
        """(tokens (B, 1 + M, D), key padding mask (B, 1 + M) bool, True = ignore)."""
        z = self.encoders(batch) + self.type_embed  # (B, M, D); missing rows encode zeros
        present = mask.unsqueeze(-1)
        if self.missing == "token":
            filler = self.miss + self.type_embed
        else:
            filler = torch.zeros((), dtype=z.dtype, device=z.device)  # never attended to
        z = torch.where(present, z, filler)
        cls = self.cls.expand(z.shape[0], -1, -1)
        tokens = torch.cat([cls, z], dim=1)
        always = torch.ones(mask.shape[0], 1, dtype=torch.bool, device=mask.device)
        padding = ~torch.cat([always, mask], dim=1) if self.missing == "padding" else None
        return tokens, padding

    def forward(self, batch: Batch) -> Output:
        mask = batch.mask
        if self.training and self.token_drop > 0:
            mask = drop_present(mask, self.token_drop, self.generator)
        tokens, padding = self.tokens(batch, mask)
        out = self.transformer(tokens, src_key_padding_mask=padding)  # (B, 1 + M, D)
        if self.pool == "cls":
            h = out[:, 0]
        else:
            visible = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
            h = masked_mean(out, visible)
        return Output(self.head(h))
