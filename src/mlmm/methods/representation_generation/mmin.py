"""Direct representation generation: MMIN's imagination of the full joint embedding."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...components.encoders import PerModalityEncoders
from ...components.subpatterns import random_sub_mask
from ...data.batch import Batch
from ...data.spec import DatasetSpec
from ..base import Capability, MethodInfo, MissingModalityModel, Output, StageControl
from ..registry import register_method


class ResidualAutoencoder(nn.Module):
    """(B, F) -> (B, F) through a bottleneck: F -> dims[0] -> ... -> dims[-1] -> ... -> F."""

    def __init__(self, dim: int, dims: Sequence[int]) -> None:
        super().__init__()
        widths = [dim, *dims]
        enc, dec = [], []
        for a, b in zip(widths[:-1], widths[1:]):
            enc += [nn.Linear(a, b), nn.GELU()]
        rev = widths[::-1]
        for i, (a, b) in enumerate(zip(rev[:-1], rev[1:])):
            dec += [nn.Linear(a, b)] + ([nn.GELU()] if i < len(rev) - 2 else [])
        self.net = nn.Sequential(*enc, *dec)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class CascadedResidualAutoencoder(nn.Module):
    """Cascaded residual autoencoder (Tran et al., CVPR 2017; MMIN's imagination module).

    x_1 = h;  x_{k+1} = x_k + AE_k(x_k)  for k = 1..K;  returns T(x_{K+1})    (B, F) -> (B, F)
    Each block sees the input plus every earlier block's correction; T is MMIN's transition
    layer (Linear F->F, ReLU, Linear F->F) after the last block.
    """

    def __init__(self, dim: int, dims: Sequence[int], n_blocks: int) -> None:
        super().__init__()
        if n_blocks < 1:
            raise ValueError(f"n_blocks must be >= 1, got {n_blocks}")
        self.blocks = nn.ModuleList(ResidualAutoencoder(dim, dims) for _ in range(n_blocks))
        self.transition = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))

    def forward(self, h: Tensor) -> Tensor:
        x = h
        for block in self.blocks:
            x = x + block(x)
        return self.transition(x)


@register_method("mmin")
class MissingModalityImagination(MissingModalityModel):
    """MMIN: imagine the full-modality joint embedding from the present modalities.

    Paper: Zhao, Li & Jin, "Missing Modality Imagination Network for Emotion Recognition with
    Uncertain Missing Modalities", ACL 2021 (survey Sec. 3.3, direct representation generation).

    Shapes: B batch, M modalities, D = ``embed_dim``, F = M·D, C outputs.

    Stage "teacher": T(x) = [T_1(x_1); ...; T_M(x_M)] (B, F) on *complete* samples,
        logits = g_T(T(x)), loss CE.
    Stage "student" (student encoders E start as a copy of the teacher's, the teacher is frozen):
        a' ⊊ a a simulated missing pattern (training: a uniform number 1..n−1 of the present
        modalities kept, never the full pattern — MMIN trains on its 6 partial conditions only;
        test: a' = a)
        h   = [a'_1 E_1(x_1); ...; a'_M E_M(x_M)]            zero-filled joint embedding (B, F)
        ẑ   = CRA(h)       imagined full joint embedding (forward imagination, with MMIN's
                           transition layer after the cascade)                          (B, F)
        h̃   = CRA_back(ẑ)             backward (cycle) imagination                       (B, F)
        logits = g(ẑ)                                                                      (B, C)
        L = CE + 4·‖ẑ − sg(T(x_full))‖²/F + 2·‖h̃ − sg(h)‖²/F      (MSE weights as in MMIN)

    Needs complete training samples (``needs_complete_train``; the training loop refuses
    incomplete training data): T(x_full) is the teacher on the sample's *complete* training
    row. Both stages declare the loop's modality dropout off (``training_control``), so the
    batch the method sees in training is the complete row itself: the teacher trains on
    complete inputs, and the student's partial pattern is drawn by the method; nothing of
    the training set is kept (no row lookup, no copy in the checkpoint). An incomplete
    training-mode sample (outside the loop) gets no imagination loss. Deviations from the paper's code,
    with reasons: the teacher target is T of the complete row (MMIN's code feeds the teacher
    the zero-filled complement, so present slots hold T(0)); the classifier reads the imagined
    joint embedding ẑ instead of the concatenated CRA block latents, so that ``plain_fill``
    (classify the zero-filled h instead) measures what the imagination contributes;
    ``recover`` gives ẑ sliced per modality (embedding space), ``recovery_target`` the
    teacher's slices it imitates. Missing slots of h are zeros,
    not the encoder of zero input, so no masked-out value is ever read.
    """

    info = MethodInfo(
        category="representation-generation",
        fusion="intermediate",
        recovers_missing=True,
        needs_complete_train=True,
        capabilities=frozenset({Capability.MULTI_STAGE}),
        paper="MMIN: Zhao, Li & Jin, Missing Modality Imagination Network for Emotion Recognition with "
              "Uncertain Missing Modalities, ACL 2021 (survey Sec. 3.3, direct representation generation)",
        summary="full-modality teacher (concatenated embeddings) trained on complete rows; cascaded residual "
                "autoencoder (+ MMIN's transition layer) imagines the teacher's joint embedding from the zero-filled "
                "one of a partial pattern (never the full one in training), backward CRA cycle term; classifier "
                "on the imagined embedding (MMIN: on the CRA block latents); needs complete training samples",
        recovery_space="embedding",
    )

    def __init__(self, spec: DatasetSpec, embed_dim: int = 64, hidden: int | None = None, dropout: float = 0.5,
                 n_blocks: int = 5, ae_dims: Sequence[int] = (256, 128, 64), imagination_weight: float = 4.0,
                 cycle_weight: float = 2.0, simulate_missing: bool = True, **components) -> None:
        super().__init__(spec, **components)
        if imagination_weight < 0 or cycle_weight < 0:
            raise ValueError(f"loss weights must be >= 0, got imagination_weight={imagination_weight}, "
                             f"cycle_weight={cycle_weight}")
        self.embed_dim = int(embed_dim)
        self.imagination_weight = float(imagination_weight)
        self.cycle_weight = float(cycle_weight)
        self.simulate_missing = bool(simulate_missing)
        joint = spec.n_modalities * self.embed_dim
        out = spec.task.output_dim
        self.teacher = PerModalityEncoders(spec, self.embed_dim, hidden=hidden, dropout=dropout,
                                           choices=self.components)
        self.teacher_head = self.components.make_head(joint, out, hidden=128, dropout=dropout)
        self.student = PerModalityEncoders(spec, self.embed_dim, hidden=hidden, dropout=dropout,
                                           choices=self.components)
        self.imagine = CascadedResidualAutoencoder(joint, tuple(ae_dims), n_blocks)
        self.imagine_back = CascadedResidualAutoencoder(joint, tuple(ae_dims), n_blocks)
        self.head = self.components.make_head(joint, out, hidden=128, dropout=dropout)
        self._set_trainable("student")
        self.stage = "student"  # the predictor after training; the loop starts with "teacher"

    # ---------------------------------------------------------------- stages

    def stages(self) -> tuple[str, ...]:
        return ("teacher", "student")

    def training_control(self, stage: str) -> StageControl:
        # The teacher trains on complete rows and the student on MMIN's own partial patterns:
        # the loop's modality dropout would hand the teacher (and its target) incomplete rows.
        return StageControl(modality_dropout="off")

    def _set_trainable(self, stage: str) -> None:
        teacher = stage == "teacher"
        for module in (self.teacher, self.teacher_head):
            module.requires_grad_(teacher)
        for module in (self.student, self.imagine, self.imagine_back, self.head):
            module.requires_grad_(not teacher)

    def set_stage(self, stage: str) -> None:
        if stage not in self.stages():
            raise ValueError(f"mmin has stages {self.stages()}, got {stage!r}")
        super().set_stage(stage)
        self._set_trainable(stage)
        if stage == "student":
            # MMIN initialises the student's encoders from the trained teacher.
            self.student.load_state_dict(self.teacher.state_dict())

    # ---------------------------------------------------------------- forward

    @staticmethod
    def _joint(encoders: PerModalityEncoders, batch: Batch, mask: Tensor) -> Tensor:
        """(B, M·D): concatenated embeddings, zeros at slots where ``mask`` is False."""
        z = encoders(batch)  # (B, M, D); missing inputs were zeroed before encoding
        z = torch.where(mask.unsqueeze(-1), z, torch.zeros((), dtype=z.dtype, device=z.device))
        return z.flatten(1)

    def teacher_embedding(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """(T(x) (B, F), complete (B,) bool): the frozen teacher (eval mode, no grad) on the
        batch as given (in training, the complete rows); ``complete`` says where the result
        is a full-modality embedding."""
        full = batch
        was_training = self.teacher.training
        self.teacher.eval()
        try:
            with torch.no_grad():
                target = self._joint(self.teacher, full, full.mask)
        finally:
            self.teacher.train(was_training)
        return target, full.mask.all(dim=1)

    def _imagine(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """(h, ẑ, kept): zero-filled joint embedding, imagined joint embedding (B, F), mask a'."""
        kept = batch.mask
        if self.training and self.simulate_missing:
            kept = random_sub_mask(batch.mask, strict=True, generator=self.generator)  # never the full pattern
        h = self._joint(self.student, batch, kept)
        return h, self.imagine(h), kept

    def forward(self, batch: Batch) -> Output:
        if self.stage == "teacher":
            return Output(self.teacher_head(self._joint(self.teacher, batch, batch.mask)))
        h, z_hat, kept = self._imagine(batch)
        logits = self.head(h if self.plain_fill else z_hat)
        aux = {"h": h, "z_hat": z_hat, "kept": kept}
        if self.training:
            aux["target"], aux["complete"] = self.teacher_embedding(batch)
        return Output(logits, aux=aux)

    def loss(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        terms = {"task": self.task_loss(output.logits, batch.target)}
        if self.stage == "teacher":
            return terms
        z_hat, h = output.aux["z_hat"], output.aux["h"]
        zero = z_hat.new_zeros(())
        if "target" in output.aux:
            complete = output.aux["complete"]
            err = (z_hat - output.aux["target"]).pow(2).mean(dim=1)  # (B,)
            err = torch.where(complete, err, zero)
            terms["imagination"] = self.imagination_weight * err.sum() / complete.sum().clamp_min(1).to(err.dtype)
        else:  # eval mode: no teacher pass (the loop never optimises eval losses)
            terms["imagination"] = zero
        terms["cycle"] = self.cycle_weight * F.mse_loss(self.imagine_back(z_hat), h.detach())
        return terms

    def recover(self, batch: Batch) -> dict[str, Tensor]:
        """Modality -> (B, D): its slice of the imagined joint embedding ẑ."""
        _, z_hat, _ = self._imagine(batch)
        d = self.embed_dim
        return {name: z_hat[:, j * d:(j + 1) * d] for j, name in enumerate(self.spec.modality_names)}

    def recovery_target(self, batch: Batch) -> dict[str, Tensor]:
        """Modality -> (B, D): the frozen teacher's embedding T_m(x_m) of a complete batch,
        what the imagination is trained to reach (the truth for the recover-or-not diagnostics)."""
        target, _ = self.teacher_embedding(batch)
        d = self.embed_dim
        return {name: target[:, j * d:(j + 1) * d] for j, name in enumerate(self.spec.modality_names)}
