"""Encode each modality, pool the present embeddings, classify: the shared body of
``masked-mean``, ``masked-max``, ``sign-max``, ``masked-mean-aux`` and ``frame-repeat``.

z_m = E_m(x_m) (B, D) per modality, stacked (B, M, D); h = pool(z, a) (B, D);
logits = head(h) (B, C). A subclass sets ``pool`` (a pure function of the
embeddings and the mask, ``mlmm.components.pooling``) and its ``MethodInfo``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..data.batch import Batch
from ..data.spec import DatasetSpec
from ..methods.base import MissingModalityModel, Output
from .encoders import PerModalityEncoders
from .factorised import FactorisedFusion


class EncodePoolFusion(FactorisedFusion, MissingModalityModel):
    """Per-modality encoders, a masked pooling of their embeddings, an MLP head.

    Never registered itself: the registered methods are its subclasses, each
    choosing ``pool``. ``mean_then_head`` declares that ``fuse_embeddings(z,
    mask).logits`` is ``head(masked_mean(z, mask))``; ``fuse_subsets`` then shares the
    head's first (affine) layer across masks (see there).
    """

    #: (B, M, D) embeddings, (B, M) mask -> (B, D).
    pool: ClassVar[Callable[[Tensor, Tensor], Tensor]]
    #: True only when ``pool`` is the masked mean and the logits are ``head(pool(z, mask))``.
    mean_then_head: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        # A subclass that changes the pooling or the fusion but does not re-declare
        # ``mean_then_head`` loses the shortcut: the promise was made for the parent's fusion.
        if ("pool" in vars(cls) or "fuse_embeddings" in vars(cls)) and "mean_then_head" not in vars(cls):
            cls.mean_then_head = False

    def __init__(self, spec: DatasetSpec, embed_dim: int = 128, hidden: int | None = None,
                 dropout: float = 0.5, **components) -> None:
        super().__init__(spec, **components)
        self.encoders = PerModalityEncoders(spec, embed_dim, hidden=hidden, dropout=dropout, choices=self.components)
        self.head = self.components.make_head(embed_dim, spec.task.output_dim, hidden=embed_dim, dropout=dropout)

    # forward = fuse_embeddings(encode_modalities(batch), mask) (FactorisedFusion), so
    # all-subsets evaluation encodes each modality once and re-runs only pool + head.
    def encode_modalities(self, batch: Batch) -> torch.Tensor:
        """(B, M, D) per-modality embeddings."""
        return self.encoders(batch)

    def fuse_embeddings(self, z: torch.Tensor, mask: torch.Tensor) -> Output:
        """z (B, M, D), mask (B, M) -> logits (B, C) of the pooled present embeddings."""
        return Output(self.head(self.pool(z, mask)))

    def fuse_subsets(self, z: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """z (N, M, D), masks (S, N, M) -> logits (S, N, C) (see ``FactorisedFusion``).

        With ``mean_then_head``: the mean of present embeddings and the head's first layer
        (affine) commute for a row with at least one modality: W (Σ a_m z_m / Σ a_m) + b =
        Σ a_m (W z_m + b) / Σ a_m. So each modality is projected once (N, M, H), and per mask
        only the weighted sum (one batched matrix product over all masks) and the rest of the
        head run; the head's first layer was ~half the per-subset cost. Otherwise: the default.
        """
        if not (self.mean_then_head and isinstance(self.head, nn.Sequential) and isinstance(self.head[0], nn.Linear)):
            return super().fuse_subsets(z, masks)
        projected = self.head[0](z)  # (N, M, H)
        weights = masks.to(projected.dtype)
        weights = weights / weights.sum(dim=2, keepdim=True).clamp_min(1)  # (S, N, M); empty rows all 0
        pooled = torch.einsum("snm,nmh->snh", weights, projected)  # (S, N, H)
        return self.head[1:](pooled)
