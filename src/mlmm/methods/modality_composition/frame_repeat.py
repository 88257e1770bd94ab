"""Modality composition at the time-step level: frame repeat, then the standard encoders."""

from __future__ import annotations

from ...components.encode_pool import EncodePoolFusion
from ...components.pooling import masked_mean
from ...components.temporal import frame_repeat_fill
from ...components.time_pool import batch_observed_steps
from ...data.batch import Batch
from ..base import MethodInfo, Output
from ..registry import register_method


@register_method("frame-repeat")
class FrameRepeat(EncodePoolFusion):
    """Fill each unobserved time step with the last observed step of the same sequence
    (a leading gap takes the first observed step), then ``masked-mean``'s encoders,
    masked mean over modalities and head.

    Sequence modality m, (B, T, C) with observed steps o_m (B, T):
    x̃_m[b, t] = x_m[b, max{s <= t : o_m[b, s]}] (or the first observed step if none
    before t) — ``mlmm.components.temporal.frame_repeat_fill``; z_m = E_m(x̃_m) (B, D);
    h = Σ_m a_m z_m / Σ_m a_m; logits = head(h) (B, C).

    The fill acts within a sequence: a modality missing as a whole (no observed
    step) has nothing to repeat and leaves the mean, as in ``masked-mean``.
    Without time masks it is ``masked-mean``.
    """

    info = MethodInfo(
        category="modality-composition",
        fusion="intermediate",
        recovers_missing=False,
        needs_complete_train=False,
        paper="Frame repeat / last observation carried forward for missing frames (survey Sec. 2.1.1, "
              "modality composition for sequences)",
        summary="unobserved time steps filled by the last observed step, per-modality encoders, masked mean",
    )

    pool = staticmethod(masked_mean)

    def fill(self, batch: Batch) -> Batch:
        """The batch with every sequence modality frame-repeated over its unobserved steps
        (time masks dropped: every step of a present sequence now holds a value)."""
        inputs = dict(batch.inputs)
        for j, m in enumerate(self.spec.modalities):
            if m.kind == "sequence" and batch.time_mask is not None and m.name in batch.time_mask:
                inputs[m.name] = frame_repeat_fill(inputs[m.name], batch_observed_steps(batch, self.spec, j))
        return Batch(inputs, batch.mask, batch.target)

    def forward(self, batch: Batch) -> Output:
        return super().forward(self.fill(batch))
