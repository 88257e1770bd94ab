"""Early fusion of filled modalities and mask indicators: the shared body of the fill methods.

x̃_m = a_m x_m + (1 - a_m) f_m for every modality m; the fused input is the
concatenation of all x̃_m and the (B, M) mask itself (missing indicators),
fed to one encoder and a head. Works with incomplete training data. Subclasses
(``zero-fill``, ``mean-fill``, ``retrieval-fill``) say what f_m is.
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor

from ..data.batch import Batch
from ..data.passes import SplitPasses
from ..data.preprocess import Standardizer
from ..data.spec import DatasetSpec, ModalitySpec
from ..methods.base import MissingModalityModel, Output, mask_column
from .encoders import build_encoder


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
    return ModalitySpec("early_fusion", "vector", (sum(m.size for m in spec.modalities) + spec.n_modalities,))


#: ``MethodInfo.unsupported_kinds`` of the methods built on this module (why text is refused).
EARLY_FILL_UNSUPPORTED = {"text": ("early fusion concatenates and fills raw inputs as numbers, and token ids are "
            "categories, not numbers (use an intermediate fusion, e.g. product-of-experts)")}


class FillEarlyFusion(MissingModalityModel, abc.ABC):
    """Abstract: subclasses define the fill value f_m of every modality in ``fill_values``."""

    def __init__(self, spec: DatasetSpec, embed_dim: int = 128, hidden: int | None = None,
                 dropout: float = 0.5, **components) -> None:
        super().__init__(spec, **components)
        self.layout = early_fusion_layout(spec)
        # One encoder over the fused input: the subclasses declare per-modality encoders fixed.
        # One encoder over the fused input: the subclasses declare per-modality encoders fixed.
        self.encoder = build_encoder(self.layout, embed_dim, hidden=hidden, dropout=dropout)
        self.head = self.components.make_head(embed_dim, spec.task.output_dim, hidden=embed_dim, dropout=dropout)
        for m in spec.modalities:
            self.register_buffer(f"fill_{m.name}", torch.zeros(m.shape))

    @abc.abstractmethod
    def fill_values(self, split: SplitPasses, standardizer: Standardizer) -> dict[str, Tensor]:
        """modality -> fill value of shape spec.shape, in the standardised space the model sees,
        from passes over the standardised training ``split`` (PREPARES_BY_BATCH)."""

    def prepare_split(self, split: SplitPasses, standardizer: Standardizer) -> None:
        for name, value in self.fill_values(split, standardizer).items():
            getattr(self, f"fill_{name}").copy_(value)

    def filled(self, batch: Batch) -> list[Tensor]:
        """Every modality (B, *shape_m) in spec order, its missing rows replaced by the fill f_m
        (under ``plain_fill`` by 0, the standardised training mean)."""
        out = []
        for j, m in enumerate(self.spec.modalities):
            x = batch.inputs[m.name]
            fill = torch.zeros((), dtype=x.dtype, device=x.device) if self.plain_fill else getattr(self,
                                                                                                   f"fill_{m.name}")
            out.append(torch.where(mask_column(batch.mask, j, x.dim()), x, fill))
        return out

    def recover(self, batch: Batch) -> dict[str, Tensor]:
        """Modality -> x̃_m (B, *shape_m) in standardised input space: x_m where present, the
        constant fill f_m where missing (what the early fusion reads): the recovery of a fill
        method is its fill (zero-fill: raw zeros; mean-fill: the training mean)."""
        return dict(zip(self.spec.modality_names, self.filled(batch)))

    def fuse(self, batch: Batch) -> Tensor:
        """Constant-filled modalities + indicators -> the early-fusion tensor (B, *layout.shape)."""
        return self.concatenate(self.filled(batch), batch.mask)

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
