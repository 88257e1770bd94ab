"""Time-step-level building blocks for sequence modalities."""

from __future__ import annotations

import torch
from torch import Tensor


def frame_repeat_fill(x: Tensor, step_mask: Tensor) -> Tensor:
    """Frame repeat (last observation carried forward) over missing time steps.

    x: (B, T, C); step_mask: (B, T) bool, True where step t of sample b was observed.
    Returns (B, T, C): an observed step is kept; a missing step t takes the value of
    the last observed step before it,

        src(b, t) = max{s <= t : step_mask[b, s]},   y[b, t] = x[b, src(b, t)],

    and a leading gap (no observed step yet) takes the *first* observed step
    (carried backward). A row with no observed step at all becomes zeros.

    Vectorised (a cumulative max over step indices, then one gather). NaN-safe:
    the value of a masked step is never read, in the output or its gradient
    (every gathered step is observed; all-missing rows are replaced with
    ``torch.where``), so masked steps may hold NaN/inf.
    """
    if x.dim() != 3:
        raise ValueError(f"x must be (B, T, C), got shape {tuple(x.shape)}")
    if step_mask.shape != x.shape[:2]:
        raise ValueError(f"step_mask shape {tuple(step_mask.shape)} != (B, T) = {tuple(x.shape[:2])}")
    step_mask = step_mask.to(torch.bool)
    n_steps = x.shape[1]
    steps = torch.arange(n_steps, device=x.device).expand_as(step_mask)
    last = torch.where(step_mask, steps, torch.full_like(steps, -1)).cummax(dim=1).values  # (B, T)
    first = torch.where(step_mask, steps, torch.full_like(steps, n_steps)).min(dim=1, keepdim=True).values  # (B, 1)
    src = torch.where(last >= 0, last, first).clamp(max=max(n_steps - 1, 0))
    out = x.gather(1, src.unsqueeze(-1).expand_as(x))
    any_observed = step_mask.any(dim=1).reshape(-1, 1, 1)
    return torch.where(any_observed, out, torch.zeros((), dtype=x.dtype, device=x.device))
