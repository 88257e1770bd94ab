"""Fixed per-modality features + one linear layer: the shared body of ``summary-linear`` and ``rocket-linear``."""

from __future__ import annotations

import abc

import torch
from torch import Tensor, nn

from ..data.batch import Batch
from ..data.passes import RunningMoments, SplitPasses
from ..data.preprocess import Standardizer
from ..data.spec import DatasetSpec, ModalitySpec
from ..methods.base import MissingModalityModel, Output, mask_column

#: What subclasses declare in ``MethodInfo.unsupported_kinds``: the features are time-series
#: statistics (sequences) or the vector itself; images and token ids have no such features here.
FIXED_FEATURE_UNSUPPORTED = {
    "image": "fixed time-series features are defined for sequence (and vector) modalities only",
    "text": "fixed time-series features are defined for sequence (and vector) modalities only",
}


class FixedFeatureLinear(MissingModalityModel, abc.ABC):
    """Fixed per-modality features, standardised with training statistics, and one linear layer.

    Shapes: B batch, M modalities, F_m features of modality m, C outputs.

        f_m = phi_m(x_m)                              (B, F_m): ``sequence_features`` for a sequence,
                                                      x_m itself for a vector
        u_m = a_m (f_m - mu_m) / sigma_m              (B, F_m); mu, sigma over the training rows
                                                      holding m (``prepare``), 0 where m is missing
        logits = W [u_1; ...; u_M; a] + b             (B, C)

    Setting a missing modality's standardised features to 0 is imputing its training mean;
    the mask column gives each pattern its own offset, so the model is logistic regression
    on zero-imputed standardised features plus missingness indicators (the practitioner's
    baseline). The features have no parameters, so the linear layer (and dropout on its
    input) is all that trains. Never registered itself: subclasses implement
    ``sequence_features`` / ``sequence_feature_dim`` (and ``build_transforms``) and set ``info``.
    """

    def __init__(self, spec: DatasetSpec, dropout: float = 0.1, **components) -> None:
        super().__init__(spec, **components)  # refuses the kinds in info.unsupported_kinds (FIXED_FEATURE_UNSUPPORTED)
        self.build_transforms(spec)
        dims = [self.feature_dim(j, m) for j, m in enumerate(spec.modalities)]
        for j, d in enumerate(dims):
            self.register_buffer(f"feat_mean{j}", torch.zeros(d))
            self.register_buffer(f"feat_std{j}", torch.ones(d))
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(sum(dims) + spec.n_modalities, spec.task.output_dim)

    # --------------------------------------------------- per-modality transform

    def build_transforms(self, spec: DatasetSpec) -> None:
        """Build any modules ``sequence_features`` needs (default: none)."""

    @abc.abstractmethod
    def sequence_features(self, j: int, x: Tensor) -> Tensor:
        """(B, T, C) sequence of modality j -> (B, F_j) fixed features."""

    @abc.abstractmethod
    def sequence_feature_dim(self, j: int, m: ModalitySpec) -> int:
        """F_j, the width ``sequence_features`` gives for modality j."""

    def feature_dim(self, j: int, m: ModalitySpec) -> int:
        return self.sequence_feature_dim(j, m) if m.kind == "sequence" else m.shape[0]

    def raw_features(self, j: int, x: Tensor) -> Tensor:
        """(B, *shape_j) with missing rows already zeroed -> (B, F_j)."""
        return self.sequence_features(j, x) if x.dim() == 3 else x

    # --------------------------------------------------------------- contract

    def _present(self, batch: Batch, j: int) -> Tensor:
        x = batch.inputs[self.spec.modalities[j].name]
        return torch.where(mask_column(batch.mask, j, x.dim()), x, torch.zeros((), dtype=x.dtype, device=x.device))

    def prepare_split(self, split: SplitPasses, standardizer: Standardizer) -> None:
        """Feature means and standard deviations over the training rows that hold each modality,
        accumulated over one streamed pass (features are per-row, so chunks merge exactly)."""
        moments = [RunningMoments() for _ in range(self.spec.n_modalities)]
        with torch.no_grad():
            for batch in split.batches():
                for j in range(self.spec.n_modalities):
                    rows = batch.mask[:, j]
                    if bool(rows.any()):
                        moments[j].update(self.raw_features(j, self._present(batch, j)[rows]))
            for j, acc in enumerate(moments):
                if acc.count == 0:
                    continue
                mean = getattr(self, f"feat_mean{j}")
                std = acc.std(mean.dtype) if acc.count > 1 else torch.ones_like(mean)
                setattr(self, f"feat_mean{j}", acc.mean(mean.dtype))
                # A constant feature (std 0) is centred but not scaled.
                setattr(self, f"feat_std{j}", torch.where(std > 1e-6, std, torch.ones_like(std)).to(mean.dtype))

    def features(self, batch: Batch) -> Tensor:
        """(B, Σ F_m + M) standardised features, zero for missing modalities, then the mask."""
        parts = []
        for j in range(self.spec.n_modalities):
            f = self.raw_features(j, self._present(batch, j))
            u = (f - getattr(self, f"feat_mean{j}")) / getattr(self, f"feat_std{j}")
            parts.append(torch.where(batch.mask[:, j:j + 1], u, torch.zeros((), dtype=u.dtype, device=u.device)))
        return torch.cat(parts + [batch.mask.to(parts[0].dtype)], dim=1)

    def forward(self, batch: Batch) -> Output:
        return Output(self.linear(self.dropout(self.features(batch))))
