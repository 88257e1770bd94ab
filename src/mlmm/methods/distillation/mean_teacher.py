"""Mean-teacher self-distillation: an EMA of the model teaches it on fewer modalities."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ...components.distillation_losses import distill_per_sample, masked_mean_of
from ...components.fusion_net import MaskedMeanNet
from ...components.subpatterns import drop_present
from ...data.batch import Batch
from ...data.spec import DatasetSpec
from ..base import Capability, MethodInfo, MissingModalityModel, Output, StageControl
from ..registry import register_method


@register_method("mean-teacher")
class MeanTeacher(MissingModalityModel):
    """Self-distillation from an exponential moving average of the model's own weights.

    Student S_θ and teacher T = EMA(θ) are masked-mean fusion nets (per-modality encoders,
    mean of present embeddings, MLP head; logits (B, C)). In training the teacher (no
    dropout, no gradient) sees every modality the batch holds, a; the student sees
    a' ⊆ a (each present modality dropped with ``student_drop``, one kept):

        L = task(S(a')) + λ · mean_{b : a'_b ≠ a_b} KL(p_T(a)_b ‖ p_S(a')_b)

    The consistency term is on class probabilities and only over samples that really lost
    a modality (where a' = a, S and T see the same input and there is nothing to distil).
    After every optimiser step (``after_step``, called by the training loop)
    θ_T ← d θ_T + (1 − d) θ with d = ``decay`` (``torch.optim.swa_utils.AveragedModel``;
    its first update copies θ). Predictions come from the teacher (``predict_with``,
    default "teacher") or the student, on the batch's own mask. Works with incomplete
    training data: the teacher only ever sees what is present, and all of it: the loop's
    modality dropout is off (``training_control``), the student's drop is the method's own.

    Paper: Tarvainen & Valpola, "Mean teachers are better role models" (NeurIPS 2017),
    as self-distillation across modality subsets; survey Sec. 3.2.1.
    """

    info = MethodInfo(
        category="distillation",
        fusion="intermediate",
        recovers_missing=False,
        needs_complete_train=False,
        capabilities=frozenset({Capability.AFTER_STEP}),
        paper="Tarvainen & Valpola, Mean teachers are better role models (NeurIPS 2017); survey Sec. 3.2.1",
        summary="EMA teacher on all present modalities, student on a random subset, KL consistency "
                "on samples with a real drop; predicts with the EMA teacher",
    )

    def __init__(self, spec: DatasetSpec, embed_dim: int = 128, hidden: int | None = None, dropout: float = 0.5,
                 decay: float = 0.99, consistency_weight: float = 1.0, student_drop: float = 0.3,
                 predict_with: str = "teacher", **components) -> None:
        super().__init__(spec, **components)
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        if not 0.0 <= student_drop < 1.0:
            raise ValueError(f"student_drop must be in [0, 1), got {student_drop}")
        if predict_with not in ("teacher", "student"):
            raise ValueError(f"predict_with must be 'teacher' or 'student', got {predict_with!r}")
        self.decay, self.consistency_weight = float(decay), float(consistency_weight)
        self.student_drop, self.predict_with = float(student_drop), predict_with
        self.student = MaskedMeanNet(spec, embed_dim, hidden=hidden, dropout=dropout, choices=self.components)
        self.ema = AveragedModel(self.student, multi_avg_fn=get_ema_multi_avg_fn(self.decay))
        self.ema.requires_grad_(False)  # moved by after_step, never by the optimiser
        self.ema.eval()

    @property
    def teacher(self) -> MaskedMeanNet:
        return self.ema.module

    def train(self, mode: bool = True) -> MeanTeacher:
        super().train(mode)
        self.ema.eval()  # the teacher never uses dropout
        return self

    def training_control(self, stage: str) -> StageControl:
        # The EMA teacher sees every present modality; only the student's input is dropped (in forward).
        return StageControl(modality_dropout="off")

    def after_step(self) -> None:
        self.ema.update_parameters(self.student)

    def forward(self, batch: Batch) -> Output:
        if not self.training:
            net = self.teacher if self.predict_with == "teacher" else self.student
            logits, _ = net(batch)
            return Output(logits)
        with torch.no_grad():
            t_logits, _ = self.teacher(batch)
        student_mask = drop_present(batch.mask, self.student_drop, self.generator)
        logits, _ = self.student(batch.with_mask(student_mask))
        dropped = (student_mask != batch.mask).any(dim=1)
        return Output(logits, aux={"teacher_logits": t_logits, "dropped": dropped})

    def loss(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        terms = {"task": self.task_loss(output.logits, batch.target)}
        if "teacher_logits" not in output.aux:
            return terms
        per_sample = distill_per_sample(output.logits, output.aux["teacher_logits"], self.spec.task.kind)
        terms["consistency"] = self.consistency_weight * masked_mean_of(per_sample, output.aux["dropped"])
        return terms
