"""HeMIS: per-modality embeddings fused by their mean and variance across the present modalities."""

from __future__ import annotations

import torch
from torch import Tensor

from ...components.encode_pool import EncodePoolFusion
from ...data.spec import DatasetSpec
from ..base import Capability, MethodInfo, Output
from ..registry import register_method


def masked_mean_variance(z: Tensor, mask: Tensor) -> Tensor:
    """HeMIS's abstraction layer: [mean ; variance] over the present modalities.

    z: (B, M, D) embeddings (missing slots ignored, even NaN); mask: (B, M) bool.
    Returns (B, 2D): the first D columns are Σ_m a_m z_m / K, the last D the unbiased
    variance Σ_m a_m (z_m - mean)² / (K - 1), with K = Σ_m a_m; the variance is 0 when K = 1
    (as in the paper) and both halves are 0 for a sample with no modality.
    """
    w = mask.unsqueeze(-1)
    zero = torch.zeros((), dtype=z.dtype, device=z.device)
    present = torch.where(w, z, zero)
    k = mask.sum(dim=1, keepdim=True).to(z.dtype)  # (B, 1)
    mean = present.sum(dim=1) / k.clamp_min(1)
    centred = torch.where(w, z - mean.unsqueeze(1), zero)
    var = (centred * centred).sum(dim=1) / (k - 1).clamp_min(1)
    return torch.cat([mean, var], dim=1)


@register_method("hemis")
class HeMIS(EncodePoolFusion):
    """HeMIS (Havaei et al., "HeMIS: Hetero-Modal Image Segmentation", MICCAI 2016).

    Shapes: B batch, M modalities, D = ``embed_dim``, C outputs; K_b = Σ_m a[b, m].

        z_m = E_m(x_m)                                        (B, D) "back-end", one encoder per modality
        mu  = Σ_m a_m z_m / K                                 (B, D)  \\ "abstraction layer":
        s2  = Σ_m a_m (z_m - mu)² / (K - 1),  0 if K = 1      (B, D)  / first and second moments
        logits = head([mu ; s2])                              (B, C) "front-end"

    The moments are taken over whatever subset a sample holds, so any of the 2^M - 1
    subsets is a valid input and a missing modality is never read. As in the paper,
    training draws random sub-patterns of the present modalities (the loop's modality
    dropout; HeMIS drops each modality with p = 0.5 keeping at least one). Adaptation:
    the paper's back-end is per-modality convolution stacks over image volumes and the
    front-end a convolutional segmenter; here encoders and head are mlmm's defaults for
    the data's kind (or injected), on a classification/regression target. Works with
    incomplete training data.
    """

    info = MethodInfo(
        category="representation-composition",
        fusion="intermediate",
        recovers_missing=False,
        needs_complete_train=False,
        capabilities=frozenset({Capability.FACTORISED}),
        paper="HeMIS: Hetero-Modal Image Segmentation (Havaei, Guizard, Chapados & Bengio, MICCAI 2016)",
        summary="per-modality encoders; mean and variance (0 for one modality) across the present embeddings, "
                "concatenated, MLP head",
    )

    pool = staticmethod(masked_mean_variance)

    def __init__(self, spec: DatasetSpec, embed_dim: int = 128, hidden: int | None = None,
                 dropout: float = 0.5, **components) -> None:
        super().__init__(spec, **components, embed_dim=embed_dim, hidden=hidden, dropout=dropout)
        # The front-end reads the 2D moments, not a D-wide mean.
        self.head = self.components.make_head(2 * embed_dim, spec.task.output_dim, hidden=embed_dim, dropout=dropout)

    def fuse_embeddings(self, z: Tensor, mask: Tensor) -> Output:
        """z (B, M, D), mask (B, M) -> logits (B, C) of head([mean ; variance])."""
        return Output(self.head(self.pool(z, mask)))
