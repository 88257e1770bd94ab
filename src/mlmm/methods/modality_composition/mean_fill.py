"""Training-mean imputation with missing indicators and early fusion (``FillEarlyFusion``)."""

from __future__ import annotations

import torch
from torch import Tensor

from ...components.early_fill import EARLY_FILL_UNSUPPORTED, FillEarlyFusion
from ...data.passes import SplitPasses, present_means
from ...data.preprocess import Standardizer
from ..base import Capability, MethodInfo
from ..registry import register_method


@register_method("mean-fill")
class MeanFill(FillEarlyFusion):
    """Training-mean imputation plus missing indicators, early fusion.

    f_m = mean of modality m over the training samples that hold it (per
    feature, per time step for sequences). Shapes as in ``zero-fill``.
    """

    info = MethodInfo(
        category="modality-composition",
        fusion="early",
        recovers_missing=True,
        needs_complete_train=False,
        capabilities=frozenset({Capability.PREPARES, Capability.PREPARES_BY_BATCH}),
        recovery_space="input",
        unsupported_kinds=EARLY_FILL_UNSUPPORTED,
        paper="Mean imputation (Zhang et al., survey Sec. 2.1.1; CPM-Nets' FeatConcat baseline)",
        summary="missing modality filled with its training mean over present samples, mask indicators, early fusion",
        fixed_encoders={"*": "early fusion: one encoder reads every modality, mean-filled and concatenated,"
                             " so there is no per-modality encoder to replace"},
    )

    def fill_values(self, split: SplitPasses, standardizer: Standardizer) -> dict[str, Tensor]:
        """Mean of each modality over the training rows holding it (one streamed pass; 0 if none)."""
        means = present_means(split, list(self.spec.modality_names))
        return {m.name: torch.zeros(m.shape) if means[m.name] is None else means[m.name]
                for m in self.spec.modalities}
