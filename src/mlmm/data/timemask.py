"""Time-level availability for sequence modalities: the (B, T) time mask.

A sequence modality (kind ``sequence``, per-sample shape (T, C)) may carry a
time mask ``time_mask[name]``: a (B, T) bool tensor, True where step t of
sample b was observed. It refines, and never contradicts, the (B, M)
modality mask:

- **A modality with no observed step counts as missing**: the (B, M) mask is
  ANDed with ``time_mask[name].any(1)`` (``apply_time_mask`` does this).
- **Unobserved steps hold zeros**, like masked-out slots; a method never
  reads them.
- A modality with no entry in ``time_mask`` is observed at every step.
- The (B, M) mask stays the truth about whole modalities: where it is False,
  the modality's time-mask row means nothing (``observed_steps`` ANDs them).

Methods that do not understand time masks see the (B, M) mask only and
zeros at unobserved steps — what a sensor that sends nothing looks like.
Methods that do (``masked-temporal-pool``, ``frame-repeat``, ``streaming-gru``)
read ``observed_steps(batch, name)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from .spec import DatasetSpec

TimeMask = Mapping[str, Tensor]


def observed_steps(mask: Tensor, time_mask: TimeMask | None, j: int, name: str, n_steps: int) -> Tensor:
    """(B, T) bool: step t of modality ``name`` (mask column ``j``) is observed in sample b.

    mask: (B, M) modality mask; time_mask: modality -> (B, T) or None.
    Equals ``mask[:, j, None] & time_mask[name]`` (all steps when ``name`` has no time mask).
    """
    present = mask[:, j].unsqueeze(1)
    if time_mask is None or name not in time_mask:
        return present.expand(-1, n_steps)
    return present & time_mask[name]


def apply_time_mask(
    inputs: Mapping[str, Tensor], mask: Tensor, time_mask: TimeMask, spec: DatasetSpec
) -> tuple[dict[str, Tensor], Tensor]:
    """Enforce the time-mask rules: (inputs with zeros at unobserved steps, narrowed (B, M) mask).

    inputs: modality -> (B, *shape); mask: (B, M) bool; time_mask: modality -> (B, T) bool.
    A modality whose row has no observed step becomes missing (its whole row is
    zeroed). NaN at unobserved steps is allowed and removed (``torch.where``).
    Nothing is mutated.
    """
    check_time_mask(time_mask, spec, int(mask.shape[0]))
    mask = mask.clone()
    out = dict(inputs)
    for j, m in enumerate(spec.modalities):
        if m.name not in time_mask:
            continue
        steps = time_mask[m.name]
        mask[:, j] &= steps.any(dim=1)
        keep = (steps & mask[:, j].unsqueeze(1)).unsqueeze(-1)  # (B, T, 1)
        x = inputs[m.name]
        out[m.name] = torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))
    return out, mask


def merge_time_masks(old: TimeMask | None, new: TimeMask | None) -> dict[str, Tensor] | None:
    """Steps observed under both (AND, per modality); a modality in only one keeps that one."""
    if old is None and new is None:
        return None
    merged = dict(old or {})
    for name, steps in (new or {}).items():
        merged[name] = merged[name] & steps if name in merged else steps
    return merged


def check_time_mask(time_mask: TimeMask, spec: DatasetSpec, n: int) -> None:
    """Raise ``ValueError`` naming the modality unless every entry is a (n, T_m) bool tensor
    of a sequence modality of ``spec``."""
    if not isinstance(time_mask, Mapping):
        raise ValueError(f"time_mask must be a mapping modality -> (B, T) bool tensor, got {type(time_mask).__name__}")
    kinds = {m.name: m for m in spec.modalities}
    for name, steps in time_mask.items():
        if name not in kinds:
            raise ValueError(f"time_mask: unknown modality {name!r}; dataset {spec.name!r} has {', '.join(kinds)}")
        m = kinds[name]
        if m.kind != "sequence":
            raise ValueError(f"time_mask: modality {name!r} is a {m.kind}, only sequence modalities have time steps")
        if not isinstance(steps, Tensor) or steps.dtype != torch.bool:
            got = getattr(steps, "dtype", type(steps).__name__)
            raise ValueError(f"time_mask[{name!r}] must be a bool tensor, got {got}")
        if tuple(steps.shape) != (n, m.shape[0]):
            raise ValueError(f"time_mask[{name!r}] must have shape ({n}, {m.shape[0]}) (B, T), "
                             f"got {tuple(steps.shape)}")


def select_time_mask(time_mask: TimeMask | None, index) -> dict[str, Tensor] | None:
    """Rows ``index`` of every time mask (None stays None)."""
    return None if time_mask is None else {k: v[index] for k, v in time_mask.items()}


def time_mask_to(time_mask: TimeMask | None, device) -> dict[str, Tensor] | None:
    return None if time_mask is None else {k: v.to(device) for k, v in time_mask.items()}


def missing_step_fractions(time_mask: TimeMask | None, mask: Tensor, names: Sequence[str]) -> dict[str, float]:
    """Modality -> fraction of (sample, step) pairs unobserved, counting a missing modality's
    steps as unobserved; only modalities with a time mask are listed."""
    if not time_mask:
        return {}
    out = {}
    for j, name in enumerate(names):
        if name in time_mask:
            steps = time_mask[name] & mask[:, j].unsqueeze(1)
            out[name] = float((~steps).double().mean()) if steps.numel() else 0.0
    return out
