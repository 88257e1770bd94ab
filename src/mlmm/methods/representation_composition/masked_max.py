"""Representation composition by element-wise maximum pooling of the present embeddings.

The per-modality encoders and MLP head are ``EncodePoolFusion``'s; the pooling is the
pure ``mlmm.components.pooling.masked_max``.
"""

from __future__ import annotations

from ...components.encode_pool import EncodePoolFusion
from ...components.pooling import masked_max
from ..base import Capability, MethodInfo
from ..registry import register_method


@register_method("masked-max")
class MaskedMaxFusion(EncodePoolFusion):
    """Intermediate fusion by the element-wise maximum of present embeddings.

    Paper: parameter-free average/max pooling of modality features (Zhou et al.,
    2021; Wang et al., 2023b), as cited in the survey's arithmetic-operation
    representation composition (Sec. 3.2.2).

    z_m = E_m(x_m)                                  (B, D) per modality, stacked (B, M, D)
    h[b, d] = max_{m : a[b, m] = 1} z_m[b, d]       (B, D)
    logits = head(h)                                (B, C)

    Parameter-free composition: a missing modality simply leaves the max (its
    slot is never read, even if NaN). Works with incomplete training data:
    every sample is pooled over whatever subset it holds.
    """

    info = MethodInfo(
        category="representation-composition",
        fusion="intermediate",
        recovers_missing=False,
        needs_complete_train=False,
        capabilities=frozenset({Capability.FACTORISED}),
        paper="Max pooling of available modality embeddings (Zhou et al., 2021; Wang et al., 2023b; survey Sec. 3.2.2)",
        summary="per-modality encoders, element-wise max of present embeddings, MLP head",
    )

    pool = staticmethod(masked_max)
