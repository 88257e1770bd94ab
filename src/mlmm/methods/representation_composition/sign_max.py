"""Representation composition by sign-max (present value of largest magnitude) pooling of the present embeddings.

The per-modality encoders and MLP head are ``EncodePoolFusion``'s; the pooling is the
pure ``mlmm.components.pooling.sign_max``.
"""

from __future__ import annotations

from ...components.encode_pool import EncodePoolFusion
from ...components.pooling import sign_max
from ..base import Capability, MethodInfo
from ..registry import register_method


@register_method("sign-max")
class SignMaxFusion(EncodePoolFusion):
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
        capabilities=frozenset({Capability.FACTORISED}),
        paper="Sign-max merge of modality features (Delgado-Escano et al., 2021; survey Sec. 3.2.2)",
        summary="per-modality encoders, per-element present value of largest magnitude, MLP head",
    )

    pool = staticmethod(sign_max)
