"""Representation composition by max-type pooling of the present embeddings.

Both methods reuse ``MaskedMeanFusion``'s structure (per-modality encoders,
pooling, MLP head) and only swap its ``pool``; the pooling functions are the
pure ``masked_max`` / ``sign_max`` in ``methods/_parts/pooling.py``.
"""

from __future__ import annotations

from ..base import MethodInfo
from .._parts.pooling import masked_max, sign_max
from ..registry import register_method
from .composition import MaskedMeanFusion


@register_method("masked-max")
class MaskedMaxFusion(MaskedMeanFusion):
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
        paper="Max pooling of available modality embeddings (Zhou et al., 2021; Wang et al., 2023b; survey Sec. 3.2.2)",
        summary="per-modality encoders, element-wise max of present embeddings, MLP head",
    )

    pool = staticmethod(masked_max)


@register_method("sign-max")
class SignMaxFusion(MaskedMeanFusion):
    """Intermediate fusion by sign-max pooling: per element, the present value of largest magnitude.

    Paper: the sign-max merge of Delgado-Escano et al. (2021), which selects the
    highest absolute value across feature vectors, preserving both positive and
    negative activations (survey Sec. 3.2.2, representation composition).

    z_m = E_m(x_m)                                  (B, D) per modality, stacked (B, M, D)
    m*[b, d] = argmax_{m : a[b, m] = 1} |z_m[b, d]| (first on a tie)
    h[b, d] = z_{m*}[b, d]                          (B, D), sign kept
    logits = head(h)                                (B, C)

    Parameter-free composition; missing slots are never read. Works with
    incomplete training data: every sample is pooled over the subset it holds.
    """

    info = MethodInfo(
        category="representation-composition",
        fusion="intermediate",
        recovers_missing=False,
        needs_complete_train=False,
        paper="Sign-max merge of modality features (Delgado-Escano et al., 2021; survey Sec. 3.2.2)",
        summary="per-modality encoders, per-element present value of largest magnitude, MLP head",
    )

    pool = staticmethod(sign_max)
