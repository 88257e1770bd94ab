"""Strong time-series baseline: random-convolution (ROCKET/MiniRocket-style) features and a linear head."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from ...components.fixed_feature_linear import (
    FIXED_FEATURE_UNSUPPORTED,
    FixedFeatureLinear,
)
from ...components.time_series_features import RandomConvolutionFeatures
from ...data.spec import DatasetSpec, ModalitySpec
from ...validation import COUNT, NONNEG_COUNT
from ..base import Capability, MethodInfo
from ..registry import register_method


@register_method("rocket-linear")
class RocketLinear(FixedFeatureLinear):
    """Per-modality random-convolution features (PPV and max of ``n_kernels`` fixed random
    kernels at exponentially spaced dilations) and a linear head on the standardised,
    zero-imputed features plus the mask (see ``FixedFeatureLinear``).

    ROCKET / MiniRocket (Dempster et al., DMKD 2020; KDD 2021) classify with a ridge
    classifier on these features; here the linear layer is trained by the loop (AdamW,
    weight decay = ridge-like shrinkage, early stopping on validation). The kernels come
    from ``torch.Generator().manual_seed(kernel_seed + j)`` for modality j; the differences
    from MiniRocket (Gaussian weights, all channels per kernel, uniform biases) are listed
    in ``components/time_series_features.py``.
    """

    info = MethodInfo(
        category="representation-composition",
        fusion="early",
        recovers_missing=False,
        needs_complete_train=False,
        capabilities=frozenset({Capability.PREPARES, Capability.PREPARES_BY_BATCH}),
        unsupported_kinds=FIXED_FEATURE_UNSUPPORTED,
        paper="ROCKET / MiniRocket random convolutional kernels (Dempster et al., DMKD 2020; KDD 2021), "
              "own implementation, + linear model",
        summary="per-modality fixed random dilated convolutions (PPV + max per kernel), standardised on the "
                "training rows, zero-imputed when missing, + mask -> one linear layer",
        fixed_encoders={"*": "its features are fixed random-convolution transforms of each modality, "
                             "not a learned encoder"},
    )

    param_constraints: ClassVar[dict] = {"n_kernels": [COUNT], "kernel_seed": [NONNEG_COUNT]}

    def __init__(self, spec: DatasetSpec, n_kernels: int = 500, kernel_seed: int = 0, dropout: float = 0.1,
                 **components) -> None:
        self.n_kernels, self.kernel_seed = int(n_kernels), int(kernel_seed)
        super().__init__(spec, **components, dropout=dropout)

    def build_transforms(self, spec: DatasetSpec) -> None:
        self.rocket = nn.ModuleDict({
            str(j): RandomConvolutionFeatures(m.shape[1], m.shape[0], n_kernels=self.n_kernels,
                                              seed=self.kernel_seed + j)
            for j, m in enumerate(spec.modalities) if m.kind == "sequence"
        })

    def sequence_features(self, j: int, x: Tensor) -> Tensor:
        return self.rocket[str(j)](x)

    def sequence_feature_dim(self, j: int, m: ModalitySpec) -> int:
        return self.rocket[str(j)].out_dim
