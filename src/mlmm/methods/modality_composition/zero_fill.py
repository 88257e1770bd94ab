"""Zero imputation with missing indicators and early fusion (``FillEarlyFusion``)."""

from __future__ import annotations

import torch
from torch import Tensor

from ...components.early_fill import EARLY_FILL_UNSUPPORTED, FillEarlyFusion
from ...data.passes import SplitPasses
from ...data.preprocess import Standardizer
from ..base import Capability, MethodInfo
from ..registry import register_method


@register_method("zero-fill")
class ZeroFill(FillEarlyFusion):
    """Zero imputation: a missing modality reads as raw zeros (what a dead sensor sends),
    plus missing indicators, early fusion.

    Shapes: inputs (B, *shape_m) per modality, mask (B, M) -> logits (B, C).
    The fill is raw 0 mapped through the training standardisation, so it is
    -mean/std in the model's space; compare ``mean-fill``, whose fill is 0 there.
    """

    info = MethodInfo(
        category="modality-composition",
        fusion="early",
        recovers_missing=True,
        needs_complete_train=False,
        capabilities=frozenset({Capability.PREPARES, Capability.PREPARES_BY_BATCH}),
        recovery_space="input",
        unsupported_kinds=EARLY_FILL_UNSUPPORTED,
        paper="Zero imputation, the common baseline (e.g. Ma et al., SMIL, AAAI 2021; survey Sec. 2.1.1)",
        summary="missing modality filled with raw zeros, mask indicators appended, early fusion MLP/TCN",
        fixed_encoders={"*": "early fusion: one encoder reads every modality, constant-filled and "
                             "concatenated, so there is no per-modality encoder to replace"},
    )

    def fill_values(self, split: SplitPasses, standardizer: Standardizer) -> dict[str, Tensor]:
        """Raw zero in standardised units: from the standardiser alone (no row is read)."""
        return {
            m.name: standardizer.transform_values(m.name, torch.zeros(1, *m.shape, device=split.mask.device))[0]
            for m in self.spec.modalities
        }
