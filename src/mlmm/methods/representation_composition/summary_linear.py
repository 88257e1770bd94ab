"""Strong time-series baseline: per-modality summary statistics and a linear head."""

from __future__ import annotations

from torch import Tensor

from ...components.fixed_feature_linear import (
    FIXED_FEATURE_UNSUPPORTED,
    FixedFeatureLinear,
)
from ...components.time_series_features import summary_feature_dim, summary_statistics
from ...data.spec import ModalitySpec
from ..base import Capability, MethodInfo
from ..registry import register_method


@register_method("summary-linear")
class SummaryLinear(FixedFeatureLinear):
    """Per-modality summary statistics (mean, std, min, max, slope, 5 quantiles per channel)
    and a linear head on the standardised, zero-imputed features plus the mask.

    The strong simple baseline of sensor time-series classification (feature-based
    classification, e.g. catch22 / tsfresh-style statistics with logistic regression);
    see ``FixedFeatureLinear`` for the shapes and ``components.time_series_features``
    for the statistics. Vector modalities are used as they are.
    """

    info = MethodInfo(
        category="representation-composition",
        fusion="early",
        recovers_missing=False,
        needs_complete_train=False,
        capabilities=frozenset({Capability.PREPARES, Capability.PREPARES_BY_BATCH}),
        unsupported_kinds=FIXED_FEATURE_UNSUPPORTED,
        paper="Summary-statistic features + linear model, the feature-based time-series baseline "
              "(cf. catch22, Lubba et al., DMKD 2019; tsfresh, Christ et al., 2018)",
        summary="per-channel mean/std/min/max/slope/quantiles of each sequence modality, standardised on the "
                "training rows, zero-imputed when missing, + mask -> one linear layer",
        fixed_encoders={"*": "its features are fixed summary-statistic transforms of each modality, "
                             "not a learned encoder"},
    )

    def sequence_features(self, j: int, x: Tensor) -> Tensor:
        return summary_statistics(x)

    def sequence_feature_dim(self, j: int, m: ModalitySpec) -> int:
        return summary_feature_dim(m.shape[1])
