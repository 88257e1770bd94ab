"""Find which training row a training-loop sample is, by its values.

The one training loop feeds methods random subsets of the standardised
training batch that ``prepare`` saw, with modality dropout applied (dropped
slots zeroed). A method that keeps per-row state for training samples (a
free latent per row, a full-modality copy for a teacher) must recover the row
from the values alone. Each present modality of a row is summarised by a
fixed random projection (float64, seeded by the spec, not the global RNG);
a sample matches a stored row when the projections agree on every modality
both hold. Exact duplicates on those modalities resolve to the first row.

Mixed into a ``MissingModalityModel``: call ``init_row_lookup()`` in
``__init__`` and ``fit_row_lookup(train)`` in ``prepare``; buffers
``row_fp`` (N, M) float64 and ``row_mask`` (N, M) bool travel in
``state_dict`` (resized on load, their size depends on the data).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from ..data.batch import Batch
from ..methods.base import mask_column

#: Relative tolerance of a fingerprint match: the same row summed by a different
#: matmul kernel differs in the last bits (~1e-16); distinct rows differ by O(1).
_RTOL = 1e-9


class TrainingRowLookup:
    def init_row_lookup(self, seed: int = 20240527) -> None:
        g = torch.Generator().manual_seed(seed)
        for j, m in enumerate(self.spec.modalities):
            proj = torch.randn(math.prod(m.shape), generator=g, dtype=torch.float64)
            self.register_buffer(f"_row_proj{j}", proj, persistent=False)
        self.register_buffer("row_fp", torch.zeros(0, self.spec.n_modalities, dtype=torch.float64))
        self.register_buffer("row_mask", torch.zeros(0, self.spec.n_modalities, dtype=torch.bool))

    @torch.no_grad()
    def row_fingerprints(self, inputs: Iterable[Tensor], mask: Tensor) -> Tensor:
        """(B, M) float64 projection of each present modality of each row; 0 where absent.
        Masked-out values are never read (zeroed with torch.where first)."""
        cols = []
        for j, x in enumerate(inputs):
            x = torch.where(mask_column(mask, j, x.dim()), x, torch.zeros((), dtype=x.dtype, device=x.device))
            cols.append(x.flatten(1).to(torch.float64) @ getattr(self, f"_row_proj{j}"))
        return torch.stack(cols, dim=1) * mask

    def fit_row_lookup(self, train: Batch) -> None:
        """Remember the rows of the (standardised) training batch, in its order."""
        self.row_fp = self.row_fingerprints(train.inputs.values(), train.mask)
        self.row_mask = train.mask.clone()

    @torch.no_grad()
    def find_rows(self, batch: Batch) -> Tensor:
        """(B,) long: the stored row each sample is (agreeing on every modality both hold,
        with at least one such modality), or -1 where none is."""
        fp = self.row_fingerprints(batch.inputs.values(), batch.mask)  # (B, M)
        if self.row_fp.shape[0] == 0:
            return torch.full((batch.size,), -1, dtype=torch.long, device=fp.device)
        shared = batch.mask.unsqueeze(1) & self.row_mask.unsqueeze(0)  # (B, N, M)
        tol = _RTOL * (1.0 + self.row_fp.abs()).unsqueeze(0)
        close = (fp.unsqueeze(1) - self.row_fp.unsqueeze(0)).abs() <= tol
        match = (close | ~shared).all(dim=2) & shared.any(dim=2)  # (B, N)
        first = match.to(torch.int8).argmax(dim=1)
        return torch.where(match.any(dim=1), first, torch.full_like(first, -1))


def resize_to_saved(module: nn.Module, state_dict, prefix: str, names: Iterable[str]) -> None:
    """Give ``module``'s parameters / buffers ``names`` the shapes saved in ``state_dict``
    (for data-sized state, before ``load_state_dict`` copies into them)."""
    for name in names:
        saved = state_dict.get(prefix + name)
        if not isinstance(saved, Tensor):
            continue
        if name in module._parameters and module._parameters[name] is not None:
            own = module._parameters[name]
            if own.shape != saved.shape:
                module._parameters[name] = nn.Parameter(
                    torch.empty(saved.shape, dtype=own.dtype, device=own.device), requires_grad=own.requires_grad)
        elif name in module._buffers and module._buffers[name] is not None:
            own = module._buffers[name]
            if own.shape != saved.shape:
                module._buffers[name] = torch.empty(saved.shape, dtype=own.dtype, device=own.device)
