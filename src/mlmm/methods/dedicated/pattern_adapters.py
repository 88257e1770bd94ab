"""A shared backbone with one small residual adapter per availability pattern."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...components.fusion_net import MaskedMeanNet
from ...components.subpatterns import pattern_ids, resample_rows
from ...data.batch import Batch
from ...data.passes import SplitPasses
from ...data.preprocess import Standardizer
from ...data.spec import DatasetSpec
from ..base import Capability, MethodInfo, MissingModalityModel, Output
from ..registry import register_method


class BottleneckAdapter(nn.Module):
    """(N, D) -> (N, D): h + W_up GELU(W_down LN(h)), a residual bottleneck of width r."""

    def __init__(self, dim: int, bottleneck: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, bottleneck), nn.GELU(), nn.Linear(bottleneck, dim))

    def forward(self, h: Tensor) -> Tensor:
        return h + self.net(h)


@register_method("pattern-adapters")
class PatternAdapters(MissingModalityModel):
    """Shared masked-mean backbone + a residual bottleneck adapter per availability pattern.

    h = Σ_m a_m E_m(x_m) / Σ_m a_m (B, D); c = Σ_m a_m 2^m the sample's pattern;
    logits = head(A_c(h)) (B, C), with A_c(h) = h + W_up,c GELU(W_down,c LN(h)).
    Every adapter only ever sees samples of its own pattern, so its parameters are only
    updated by them; encoders and head are shared by all patterns.

    Training samples sub-patterns of what each sample holds: with probability
    ``subpattern_prob`` a sample's mask a (after the loop's modality dropout) is replaced
    by a uniformly random non-empty subset of a, so every pattern's adapter trains even
    when the training data are complete.

    Patterns: with 2^M − 1 <= ``max_patterns`` there is one adapter per pattern. For
    larger M there are ``max_patterns`` adapters, given in ``prepare`` to the most
    frequent patterns of the training masks; any other pattern (unseen in training, or a
    sampled sub-pattern off the table) falls back to the shared path, logits = head(h).
    Works with incomplete training data.

    Paper: dedicated per-pattern training as in missing-aware prompts (Lee et al., CVPR
    2023) and per-pattern adapters; survey Sec. 4.2.1.
    """

    info = MethodInfo(
        category="dedicated",
        fusion="intermediate",
        recovers_missing=False,
        needs_complete_train=False,
        capabilities=frozenset({Capability.PREPARES, Capability.PREPARES_BY_BATCH}),
        paper="Dedicated per-pattern parameters on a shared backbone (survey Sec. 4.2.1; cf. Lee et al., "
              "Multimodal prompting with missing modalities, CVPR 2023)",
        summary="masked-mean backbone + a residual bottleneck adapter per availability pattern "
                "(seen patterns + shared fallback for large M), trained on sampled sub-patterns",
    )

    def __init__(self, spec: DatasetSpec, embed_dim: int = 128, hidden: int | None = None, dropout: float = 0.5,
                 bottleneck: int = 32, subpattern_prob: float = 0.5, max_patterns: int = 255, **components) -> None:
        super().__init__(spec, **components)
        if not 0.0 <= subpattern_prob <= 1.0:
            raise ValueError(f"subpattern_prob must be in [0, 1], got {subpattern_prob}")
        if max_patterns < 1:
            raise ValueError(f"max_patterns must be >= 1, got {max_patterns}")
        self.subpattern_prob = float(subpattern_prob)
        n_all = 2 ** spec.n_modalities - 1
        self.every_pattern = n_all <= max_patterns
        n_slots = n_all if self.every_pattern else max_patterns
        self.backbone = MaskedMeanNet(spec, embed_dim, hidden=hidden, dropout=dropout, choices=self.components)
        self.adapters = nn.ModuleList(BottleneckAdapter(embed_dim, bottleneck) for _ in range(n_slots))
        # slot k serves pattern id slot_pattern[k] (-1: unused). With every pattern, id k + 1.
        table = torch.arange(1, n_slots + 1) if self.every_pattern else torch.full((n_slots,), -1)
        self.register_buffer("slot_pattern", table.to(torch.long))

    def prepare_split(self, split: SplitPasses, standardizer: Standardizer | None) -> None:
        """The most frequent training patterns get the adapter slots: counted from the mask alone."""
        if self.every_pattern:
            return
        mask = split.mask
        ids, counts = torch.unique(pattern_ids(mask[mask.any(dim=1)]), return_counts=True)
        top = ids[torch.argsort(counts, descending=True, stable=True)][: len(self.adapters)]
        table = torch.full_like(self.slot_pattern, -1)
        table[: len(top)] = top.to(table.device)
        self.slot_pattern.copy_(table)

    def slots(self, mask: Tensor) -> Tensor:
        """(B, M) mask -> (B,) adapter slot of each sample's pattern, -1 for the shared fallback."""
        ids = pattern_ids(mask)
        hit = ids.unsqueeze(1) == self.slot_pattern.unsqueeze(0)  # (B, n_slots); -1 never matches
        return torch.where(hit.any(dim=1), hit.to(torch.long).argmax(dim=1), torch.full_like(ids, -1))

    def adapt(self, h: Tensor, slots: Tensor) -> Tensor:
        """(B, D) backbone embeddings -> (B, D): each row through its own pattern's adapter."""
        out = h
        for slot in torch.unique(slots).tolist():
            if slot < 0:
                continue
            rows = torch.nonzero(slots == slot).flatten()
            out = out.index_copy(0, rows, self.adapters[slot](h.index_select(0, rows)))
        return out

    def forward(self, batch: Batch) -> Output:
        if self.training and self.subpattern_prob > 0:
            batch = batch.with_mask(resample_rows(batch.mask, self.subpattern_prob, self.generator))
        h = self.backbone.embed(batch)
        return Output(self.backbone.head(self.adapt(h, self.slots(batch.mask))))
