"""Teacher–student distillation from a full-modality teacher."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ...components.distillation_losses import distill_per_sample
from ...components.fusion_net import MaskedMeanNet
from ...components.subpatterns import drop_present
from ...data.batch import Batch
from ...data.spec import DatasetSpec
from ..base import Capability, MethodInfo, MissingModalityModel, Output, StageControl
from ..registry import register_method


@register_method("teacher-student")
class TeacherStudent(MissingModalityModel):
    """Two stages: a teacher trained on complete samples, then a student trained on dropped
    modalities to match it.

    Both nets are masked-mean fusion nets (per-modality encoders, mean of present
    embeddings h (B, D), MLP head -> logits (B, C)).

    - stage "teacher": the teacher alone, task loss on the complete training rows.
    - stage "student" (teacher frozen, in eval mode): the teacher sees the complete row a,
      the student a' ⊆ a (each present modality dropped with ``student_drop``, one kept):

        L = task(S(a')) + λ τ² KL(p_T^τ(a) ‖ p_S^τ(a')) + μ ‖h_S(a') − sg(h_T(a))‖²

    The loop's modality dropout is off in both stages (``training_control``): it would hand
    the "full-modality" teacher incomplete rows; the student's drop is the method's own.
    Predictions (and validation) come from the student, on the batch's own mask; in the
    teacher stage, from the teacher. **Needs complete training samples**
    (``needs_complete_train``: the loop refuses incomplete training data).

    Paper: Hinton et al., "Distilling the knowledge in a neural network" (2015), applied to
    missing modalities as in KD-Net (Hu et al., MICCAI 2020) and ACN (Wang et al., MICCAI
    2021); survey Sec. 3.2.1.
    """

    info = MethodInfo(
        category="distillation",
        fusion="intermediate",
        recovers_missing=False,
        needs_complete_train=True,
        capabilities=frozenset({Capability.MULTI_STAGE}),
        paper="Hinton et al. 2015 knowledge distillation for missing modalities (KD-Net, Hu et al., "
              "MICCAI 2020; survey Sec. 3.2.1)",
        summary="full-modality teacher (stage 1), then a student on dropped modalities with temperature KD "
                "+ fused-embedding matching; teacher frozen",
    )

    STAGES = ("teacher", "student")

    def __init__(self, spec: DatasetSpec, embed_dim: int = 128, hidden: int | None = None, dropout: float = 0.5,
                 temperature: float = 2.0, kd_weight: float = 1.0, feature_weight: float = 1.0,
                 student_drop: float = 0.3, **components) -> None:
        super().__init__(spec, **components)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= student_drop < 1.0:
            raise ValueError(f"student_drop must be in [0, 1), got {student_drop}")
        self.temperature, self.kd_weight = float(temperature), float(kd_weight)
        self.feature_weight = float(feature_weight)
        self.student_drop = float(student_drop)
        self.teacher = MaskedMeanNet(spec, embed_dim, hidden=hidden, dropout=dropout, choices=self.components)
        self.student = MaskedMeanNet(spec, embed_dim, hidden=hidden, dropout=dropout, choices=self.components)
        # A built (or restored) model predicts with the student, the final stage.
        self.set_stage("student")

    def stages(self) -> tuple[str, ...]:
        return self.STAGES

    def training_control(self, stage: str) -> StageControl:
        # The teacher must see complete inputs in both stages; the student's drop is drawn in forward.
        return StageControl(modality_dropout="off")

    def set_stage(self, stage: str) -> None:
        if stage not in self.STAGES:
            raise ValueError(f"teacher-student has stages {self.STAGES}, got {stage!r}")
        super().set_stage(stage)
        # The teacher trains in its stage and is frozen in the student's.
        self.teacher.requires_grad_(stage == "teacher")
        self.teacher.train(self.training and stage == "teacher")

    def train(self, mode: bool = True) -> TeacherStudent:
        super().train(mode)
        self.teacher.train(mode and self.stage == "teacher")  # a frozen teacher runs without dropout
        return self

    def forward(self, batch: Batch) -> Output:
        if self.stage == "teacher":
            logits, _ = self.teacher(batch)
            return Output(logits)
        if not self.training:
            logits, _ = self.student(batch)
            return Output(logits)
        with torch.no_grad():
            t_logits, t_h = self.teacher(batch)
        student_batch = batch.with_mask(drop_present(batch.mask, self.student_drop, self.generator))
        logits, h = self.student(student_batch)
        return Output(logits, aux={"teacher_logits": t_logits, "teacher_h": t_h, "student_h": h,
                                   "student_mask": student_batch.mask})

    def loss(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        terms = {"task": self.task_loss(output.logits, batch.target)}
        if "teacher_logits" not in output.aux:
            return terms
        kd = distill_per_sample(output.logits, output.aux["teacher_logits"], self.spec.task.kind,
                                self.temperature).mean()
        terms["kd"] = self.kd_weight * kd
        terms["feature"] = self.feature_weight * F.mse_loss(output.aux["student_h"], output.aux["teacher_h"].detach())
        return terms
