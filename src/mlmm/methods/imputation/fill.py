"""Modality composition by a constant fill, with early fusion and mask indicators.

x̃_m = a_m x_m + (1 - a_m) f_m for every modality m; the fused input is the
concatenation of all x̃_m and the (B, M) mask itself (missing indicators),
fed to one encoder and a head. Works with incomplete training data.
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor, nn

from ...data.batch import Batch
from ...data.preprocess import Standardizer
from ...data.spec import DatasetSpec, ModalitySpec
from ...encoders import build_encoder
from ..base import MethodInfo, MissingModalityModel, Output, mask_column
from .._parts.heads import mlp_head
from ..registry import register_method


def early_fusion_layout(spec: DatasetSpec) -> ModalitySpec:
    """The fused input's spec.

    Sequences of one common length are stacked along channels (+ M indicator
    channels), so a temporal encoder still sees time; anything else is
    flattened and concatenated (+ M indicators) into one vector.
    """
    kinds = {m.kind for m in spec.modalities}
    lengths = {m.shape[0] for m in spec.modalities if m.kind == "sequence"}
    if kinds == {"sequence"} and len(lengths) == 1:
        channels = sum(m.shape[1] for m in spec.modalities) + spec.n_modalities
        return ModalitySpec("early_fusion", "sequence", (lengths.pop(), channels))
    if "text" in kinds:
        raise ValueError("early fusion cannot concatenate token ids; use an intermediate-fusion method")
    return ModalitySpec("early_fusion", "vector", (sum(m.size for m in spec.modalities) + spec.n_modalities,))


class FillEarlyFusion(MissingModalityModel, abc.ABC):
    """Abstract: subclasses define the fill value f_m of every modality in ``fill_values``."""

    def __init__(self, spec: DatasetSpec, embed_dim: int = 128, hidden: int | None = None, dropout: float = 0.5) -> None:
        super().__init__(spec)
        self.layout = early_fusion_layout(spec)
        self.encoder = build_encoder(self.layout, embed_dim, hidden=hidden, dropout=dropout)
        self.head = mlp_head(embed_dim, spec.task.output_dim, hidden=embed_dim, dropout=dropout)
        for m in spec.modalities:
            self.register_buffer(f"fill_{m.name}", torch.zeros(m.shape))

    @abc.abstractmethod
    def fill_values(self, train: Batch, standardizer: Standardizer) -> dict[str, Tensor]:
        """modality -> fill value of shape spec.shape, in the standardised space the model sees."""

    def prepare(self, train: Batch, standardizer: Standardizer) -> None:
        for name, value in self.fill_values(train, standardizer).items():
            getattr(self, f"fill_{name}").copy_(value)

    def fuse(self, batch: Batch) -> Tensor:
        """Constant-filled modalities + indicators -> the early-fusion tensor (B, *layout.shape)."""
        filled = []
        for j, m in enumerate(self.spec.modalities):
            x = batch.inputs[m.name]
            filled.append(torch.where(mask_column(batch.mask, j, x.dim()), x, getattr(self, f"fill_{m.name}")))
        return self.concatenate(filled, batch.mask)

    def concatenate(self, filled: list[Tensor], mask: Tensor) -> Tensor:
        """Per-modality filled inputs (B, *shape_m) in spec order + the (B, M) mask as
        indicators -> the early-fusion tensor (B, *layout.shape)."""
        indicators = mask.to(filled[0].dtype)
        if self.layout.kind == "sequence":
            steps = self.layout.shape[0]
            return torch.cat(filled + [indicators.unsqueeze(1).expand(-1, steps, -1)], dim=2)
        return torch.cat([x.flatten(1) for x in filled] + [indicators], dim=1)

    def forward(self, batch: Batch) -> Output:
        return Output(self.head(self.encoder(self.fuse(batch))))


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
        paper="Zero imputation, the common baseline (e.g. Ma et al., SMIL, AAAI 2021; survey Sec. 2.1.1)",
        summary="missing modality filled with raw zeros, mask indicators appended, early fusion MLP/TCN",
    )

    def fill_values(self, train: Batch, standardizer: Standardizer) -> dict[str, Tensor]:
        return {
            m.name: standardizer.transform_values(m.name, torch.zeros(1, *m.shape, device=train.mask.device))[0]
            for m in self.spec.modalities
        }


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
        paper="Mean imputation (Zhang et al., survey Sec. 2.1.1; CPM-Nets' FeatConcat baseline)",
        summary="missing modality filled with its training mean over present samples, mask indicators, early fusion",
    )

    def fill_values(self, train: Batch, standardizer: Standardizer) -> dict[str, Tensor]:
        values = {}
        for j, m in enumerate(self.spec.modalities):
            present = train.inputs[m.name][train.mask[:, j]]
            values[m.name] = present.mean(dim=0) if present.shape[0] else torch.zeros(m.shape, device=present.device)
        return values
