"""MultiModN: sequential modular fusion — a state updated by one module per present modality."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...components.encoders import PerModalityEncoders
from ...components.factorised import FactorisedFusion
from ...data.batch import Batch
from ...data.spec import DatasetSpec
from ...validation import BOOLEAN, NONNEG, WIDTH
from ..base import Capability, MethodInfo, MissingModalityModel, Output
from ..registry import register_method


@register_method("multimodn")
class MultiModN(FactorisedFusion, MissingModalityModel):
    """MultiModN (Swamy et al., "MultiModN — Multimodal, Multi-Task, Interpretable Modular
    Networks", NeurIPS 2023).

    Shapes: B batch, M modalities, D = ``embed_dim`` features per modality, S = ``state_dim``, C outputs.

        h_m = relu(E_m(x_m))                               (B, D)  the module's feature layers
        s_0 = learned initial state                        (S,)    broadcast to (B, S)
        for m in order:                                    one encoder module per modality
            s_m = a_m * W_m [h_m ; s_{m-1}] + (1 - a_m) * s_{m-1}     (B, S)
        p_t = dec(s_t) for every state t = 0..M            (B, M+1, C)  per-step predictions
        logits = p_M                                       (B, C)  the prediction after the last step

    Missing modality: its module is skipped for that sample only, so the state passes
    through unchanged (the official code skips a module for the *whole batch* when any
    sample has a NaN; here the skip is per sample, through the mask). The decoder reads
    every intermediate state, so ``aux["step_logits"]`` (B, M+1, C) is the interpretable
    trace "prediction before any modality, after modality 1, after modality 2 ...", and
    ``aux["step_applied"]`` (B, M+1) says which steps changed the state (step 0 always).

    Loss (official form): the task loss of the decoder at every state, averaged over the
    (sample, step) pairs that exist — the initial state and each *applied* module step;
    a skipped step repeats the previous prediction and is not counted twice — times
    ``err_penalty``, plus 0.01 * ``state_change_penalty`` * mean over applied steps of
    mean_j (s_t - s_{t-1})_j² (official default 0 in its MNAR experiments, as here).

    ``shuffle=True`` draws a random module order per training batch (the official
    ``shuffle_mode``); evaluation always uses the modalities' order in the spec. One
    decoder (mlmm has one task per data set). Works with incomplete training data.

    Adaptation: each module's feature layers are mlmm's default encoder for the modality's
    kind (or an injected one) instead of the official MLP/LSTM/ResNet per data set.

    Category: the survey names no sequential-fusion class. MultiModN composes the
    representations of whichever modalities are present into one state, a missing one
    simply leaving it unchanged — the survey's representation composition (Sec. 3.2.2:
    fusing any number of available representations), with learned update modules in place
    of a parameter-free pooling. It is not dedicated training (no model or adapter per
    missingness pattern: the same modules serve every pattern) and not an ensemble (one
    prediction path; the per-step predictions are read-outs of one state).
    """

    info = MethodInfo(
        category="representation-composition",
        fusion="intermediate",
        recovers_missing=False,
        needs_complete_train=False,
        capabilities=frozenset({Capability.FACTORISED}),
        paper="MultiModN: Multimodal, Multi-Task, Interpretable Modular Networks (Swamy et al., NeurIPS 2023)",
        summary="learned state updated in turn by one module per present modality (skipped per sample when "
                "missing); a decoder reads every state (per-step predictions in aux), per-step losses",
    )

    param_constraints: ClassVar[dict] = {"state_dim": [WIDTH], "err_penalty": [NONNEG],
                                         "state_change_penalty": [NONNEG], "shuffle": [BOOLEAN]}

    def __init__(self, spec: DatasetSpec, embed_dim: int = 128, state_dim: int = 64, hidden: int | None = None,
                 dropout: float = 0.2, err_penalty: float = 1.0, state_change_penalty: float = 0.0,
                 shuffle: bool = False, **components) -> None:
        super().__init__(spec, **components)
        self.err_penalty = float(err_penalty)
        self.state_change_penalty = float(state_change_penalty)
        self.shuffle = bool(shuffle)
        self.encoders = PerModalityEncoders(spec, embed_dim, hidden=hidden, dropout=dropout, choices=self.components)
        self.init_state = nn.Parameter(torch.zeros(state_dim))
        self.update = nn.ModuleList(nn.Linear(embed_dim + state_dim, state_dim) for _ in spec.modalities)
        self.decoder = self.components.make_head(state_dim, spec.task.output_dim, hidden=state_dim, dropout=dropout)

    def encode_modalities(self, batch: Batch) -> Tensor:
        """(B, M, D) module features h_m = relu(E_m(x_m)) (missing rows: zeros in, ignored later)."""
        return F.relu(self.encoders(batch))

    def order(self) -> list[int]:
        m = self.spec.n_modalities
        if self.shuffle and self.training:
            g = self.generator
            return torch.randperm(m, generator=g, device=g.device if g is not None else None).tolist()
        return list(range(m))

    def fuse_embeddings(self, z: Tensor, mask: Tensor) -> Output:
        """z (B, M, D) module features, mask (B, M) -> final logits (B, C) and the per-step trace."""
        b = z.shape[0]
        state = self.init_state.to(z.dtype).expand(b, -1)
        steps, applied, changes = [self.decoder(state)], [torch.ones(b, dtype=torch.bool, device=z.device)], []
        for j in self.order():
            present = mask[:, j]
            updated = self.update[j](torch.cat([z[:, j], state], dim=1))
            new_state = torch.where(present.unsqueeze(1), updated, state)
            changes.append(((new_state - state) ** 2).mean(dim=1))
            state = new_state
            steps.append(self.decoder(state))
            applied.append(present)
        step_logits = torch.stack(steps, dim=1)  # (B, M+1, C)
        return Output(step_logits[:, -1], aux={"step_logits": step_logits,
                                               "step_applied": torch.stack(applied, dim=1),
                                               "state_change": torch.stack(changes, dim=1)})

    def loss(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        step_logits, applied = output.aux["step_logits"], output.aux["step_applied"]
        b, t, c = step_logits.shape
        target = batch.target.repeat_interleave(t, dim=0)
        if self.spec.task.kind == "classification":
            per = F.cross_entropy(step_logits.reshape(b * t, c), target, reduction="none")
        else:
            per = F.mse_loss(step_logits.reshape(b * t, c), target.reshape(b * t, -1).to(step_logits.dtype),
                             reduction="none").mean(dim=1)
        weights = applied.reshape(-1).to(per.dtype)
        zero = torch.zeros((), dtype=per.dtype, device=per.device)
        steps = torch.where(applied.reshape(-1), per, zero).sum() / weights.sum().clamp_min(1)
        terms = {"steps": self.err_penalty * steps}
        if self.state_change_penalty:
            moved = applied[:, 1:]
            change = torch.where(moved, output.aux["state_change"], zero).sum() / moved.sum().clamp_min(1)
            terms["state_change"] = 0.01 * self.state_change_penalty * change
        return terms
