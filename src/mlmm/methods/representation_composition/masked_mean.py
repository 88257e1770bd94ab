"""Representation composition: pool the embeddings of the modalities that are present by their mean."""

from __future__ import annotations

from ...components.encode_pool import EncodePoolFusion
from ...components.pooling import masked_mean
from ..base import Capability, MethodInfo
from ..registry import register_method


@register_method("masked-mean")
class MaskedMeanFusion(EncodePoolFusion):
    """Intermediate fusion by the mean of present embeddings.

    z_m = E_m(x_m) (B, D); h = Σ_m a_m z_m / Σ_m a_m (B, D); logits = head(h) (B, C).
    Parameter-free composition: a missing modality simply leaves the mean.
    """

    info = MethodInfo(
        category="representation-composition",
        fusion="intermediate",
        recovers_missing=False,
        needs_complete_train=False,
        capabilities=frozenset({Capability.FACTORISED}),
        paper="Masked average of modality embeddings (survey Sec. 2.2.2, e.g. HeMIS, Havaei et al., MICCAI 2016)",
        summary="per-modality encoders, mean of present embeddings, MLP head",
    )

    pool = staticmethod(masked_mean)
    mean_then_head = True  # fuse_subsets shares the head's first layer across masks
