"""The "oracle" of dedicated training: one independent model per availability pattern."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...components.encoders import build_encoder
from ...components.heads import mlp_head
from ...components.subpatterns import pattern_ids, resample_rows
from ...data.batch import Batch
from ...data.spec import DatasetSpec
from ...missing.functional import all_subsets
from ..base import MethodInfo, MissingModalityModel, Output, mask_column
from ..registry import register_method


class PatternModel(nn.Module):
    """The model of one pattern c: its own encoder per modality of c, concatenation, head.

    Reads only the modalities of c: (B, *shape_m) for m in c -> logits (B, C).
    """

    def __init__(self, spec: DatasetSpec, members: tuple[int, ...], embed_dim: int, hidden: int | None,
                 dropout: float) -> None:
        super().__init__()
        self.members = members
        self.names = [spec.modalities[j].name for j in members]
        self.encoders = nn.ModuleList(
            build_encoder(spec.modalities[j], embed_dim, hidden=hidden, dropout=dropout) for j in members
        )
        self.head = mlp_head(len(members) * embed_dim, spec.task.output_dim, hidden=embed_dim, dropout=dropout)

    def forward(self, inputs: list[Tensor]) -> Tensor:
        return self.head(torch.cat([enc(x) for enc, x in zip(self.encoders, inputs)], dim=1))


@register_method("pattern-oracle")
class PatternOracle(MissingModalityModel):
    """Independent models, one per availability pattern; each sample goes to its own.

    For pattern c ⊆ {1..M} (2^M − 1 of them), f_c reads exactly the modalities of c
    (own encoders, concatenated embeddings, own head); logits_b = f_{c(a_b)}(x_b) (B, C).
    No parameter is shared between patterns: the "oracle" reference of dedicated training
    (what a model specialised to each pattern reaches, at 2^M − 1 times the parameters).

    Training samples sub-patterns: with probability ``subpattern_prob`` a sample's mask a
    (after the loop's modality dropout) is replaced by a uniformly random non-empty subset
    of a, and the sample trains that pattern's model; so every pattern's model trains on
    all samples that hold its modalities, even with complete training data.

    Large M: 2^M − 1 models. Above ``max_patterns`` (63 by default, M <= 6) the
    constructor refuses with a ``ValueError`` rather than silently building thousands of
    models; ``pattern-adapters`` shares a backbone and scales to seen patterns instead.
    A sample with no modality gets zero logits (a uniform prediction).
    Works with incomplete training data. Smaller default width (``embed_dim`` 64,
    ``hidden`` 128) than the shared-backbone methods, as each model sees fewer samples.

    Paper: the per-pattern "oracle" reference of dedicated training (one model trained per
    modality combination, as in the HeMIS/RFNet per-subset baselines); survey Sec. 4.2.1.
    """

    info = MethodInfo(
        category="dedicated",
        fusion="intermediate",
        recovers_missing=False,
        needs_complete_train=False,
        paper="Per-pattern independent models, the oracle reference of dedicated training (survey Sec. 4.2.1)",
        summary="one independent model per availability pattern (own encoders + head), each sample routed "
                "to its pattern's model; trained on sampled sub-patterns",
    )

    def __init__(self, spec: DatasetSpec, embed_dim: int = 64, hidden: int | None = 128, dropout: float = 0.5,
                 subpattern_prob: float = 0.5, max_patterns: int = 63) -> None:
        super().__init__(spec)
        n_all = 2 ** spec.n_modalities - 1
        if n_all > max_patterns:
            raise ValueError(
                f"pattern-oracle builds one model per availability pattern: {spec.n_modalities} modalities give "
                f"{n_all} patterns, more than max_patterns={max_patterns}; raise max_patterns or use "
                "pattern-adapters (a shared backbone with adapters for the seen patterns)"
            )
        if not 0.0 <= subpattern_prob <= 1.0:
            raise ValueError(f"subpattern_prob must be in [0, 1], got {subpattern_prob}")
        self.subpattern_prob = float(subpattern_prob)
        subsets = all_subsets(spec.n_modalities)
        # models[k] serves the pattern whose id (Σ 2^m) is slot_ids[k]
        self.models = nn.ModuleList(PatternModel(spec, tuple(c), embed_dim, hidden, dropout) for c in subsets)
        self.register_buffer("slot_id", pattern_ids(torch.stack(
            [torch.zeros(spec.n_modalities, dtype=torch.bool).index_fill(0, torch.tensor(c), True) for c in subsets]
        )), persistent=False)

    def forward(self, batch: Batch) -> Output:
        mask = batch.mask
        if self.training and self.subpattern_prob > 0:
            mask = resample_rows(mask, self.subpattern_prob)
        ids = pattern_ids(mask)
        logits = torch.zeros(mask.shape[0], self.spec.task.output_dim, device=mask.device,
                             dtype=next(self.parameters()).dtype)
        for k, model in enumerate(self.models):
            rows = torch.nonzero(ids == self.slot_id[k]).flatten()
            if rows.numel() == 0:
                continue
            inputs = []
            for j, name in zip(model.members, model.names):
                x = batch.inputs[name].index_select(0, rows)
                keep = mask_column(mask.index_select(0, rows), j, x.dim())  # all True: c(a) holds j
                inputs.append(torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device)))
            logits = logits.index_copy(0, rows, model(inputs))
        return Output(logits)
