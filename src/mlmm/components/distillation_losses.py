"""Distillation losses (private: imported by the distillation methods)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def kd_per_sample(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Hinton et al. (2015) knowledge distillation per sample.

    student_logits, teacher_logits: (B, C). Returns (B,)
    τ² KL(softmax(t/τ) ‖ softmax(s/τ)); the τ² keeps gradient magnitudes comparable
    across temperatures. Exactly 0 where the two logit rows are equal. The teacher is
    detached (its logits are a target).
    """
    log_p_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(dim=-1)
    return temperature ** 2 * kl


def distill_per_sample(student_logits: Tensor, teacher_logits: Tensor, task_kind: str,
                       temperature: float = 1.0) -> Tensor:
    """(B,) distillation loss of a student's outputs towards a (detached) teacher's:
    ``kd_per_sample`` for classification, the mean squared difference per sample for
    regression (outputs (B, ...), where a temperature means nothing)."""
    if task_kind == "classification":
        return kd_per_sample(student_logits, teacher_logits, temperature)
    return (student_logits - teacher_logits.detach()).pow(2).flatten(1).mean(dim=1)


def masked_mean_of(values: Tensor, keep: Tensor) -> Tensor:
    """Mean of (B,) ``values`` over rows where ``keep`` (B,) bool; 0 when none (never NaN)."""
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    total = torch.where(keep, values, zero).sum()
    return total / keep.sum().clamp_min(1).to(values.dtype)
