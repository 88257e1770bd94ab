"""A causal, streamable predictor: one GRU state per sequence modality, fused at every step.

``forward`` runs the recurrence over the whole sequence (training, batch
evaluation); ``stream_init`` / ``stream_step`` advance the same recurrence one
step at a time with O(1) work per step (no recomputation of the past), and
give the prediction ``forward`` would give for the prefix seen so far
(``aux["step_logits"][:, t]``). ``mlmm.streaming`` wraps it for raw data.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...components.pooling import masked_mean
from ...components.time_pool import batch_observed_steps
from ...data.batch import Batch
from ...data.spec import DatasetSpec
from ..base import Capability, MethodInfo, MissingModalityModel, Output, mask_column
from ..registry import register_method


@dataclass
class StreamState:
    """What ``stream_step`` carries between steps (for B streams at once).

    hidden: sequence modality -> (1, B, H) GRU state; seen: (B, M) bool, modality m
    has delivered at least one step (static modalities: present from the start);
    static: (B, M, D) embeddings of the non-sequence modalities (zeros elsewhere);
    t: steps consumed so far.
    """

    hidden: dict[str, Tensor]
    seen: Tensor
    static: Tensor
    t: int = 0


def normalised_entropy(logits: Tensor) -> Tensor:
    """(..., C) logits -> (...) predictive entropy / log C, in [0, 1] (1 = uniform)."""
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(dim=-1) / math.log(logits.shape[-1])


@register_method("streaming-gru")
class StreamingGRU(MissingModalityModel):
    """Per sequence modality m, a GRU over [x_m,t ⊙ o_m,t, o_m,t] (o = observed step, so
    the state also learns how long a sensor has been silent); z_m,t = W h_m,t (B, D).
    Non-sequence modalities: z_m = E_m(x_m), available from the start.
    At each step t: h_t = masked mean of z_m,t over modalities with a_m = 1 that have
    delivered a step by t (s_m,t = a_m ∧ ∃ s <= t: o_m,s); logits_t = head(h_t) (B, C).

    Output.logits = logits at the last step T - 1; aux["step_logits"] (B, T, C) and
    aux["step_seen"] (B, T) (some modality seen by t). Loss = CE(final) +
    ``prefix_weight`` · mean over (sample, step) with something seen of CE(logits_t),
    so that early predictions are trained too (anytime prediction).

    All sequence modalities must share one length T (the stream's clock).
    """

    info = MethodInfo(
        category="representation-composition",
        fusion="intermediate",
        recovers_missing=False,
        needs_complete_train=False,
        capabilities=frozenset({Capability.STREAMING}),
        paper="Recurrent per-sensor states with observation indicators (cf. GRU-D, Che et al., Sci. Rep. 2018); "
              "survey Sec. 7.8 (temporal and streaming missingness)",
        summary="causal GRU per sequence modality, masked mean of states seen so far, prediction at every step",
        fixed_encoders={"sequence": "a sequence is encoded one step at a time by a GRU so that predictions "
                                    "stream with constant work per step"},
    )

    def __init__(self, spec: DatasetSpec, embed_dim: int = 64, hidden: int = 64, dropout: float = 0.3,
                 prefix_weight: float = 0.5, **components) -> None:
        super().__init__(spec, **components)
        lengths = {m.name: m.shape[0] for m in spec.modalities if m.kind == "sequence"}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"streaming-gru needs sequence modalities of one length, got {lengths}")
        if prefix_weight < 0:
            raise ValueError(f"prefix_weight must be >= 0, got {prefix_weight}")
        self.n_steps = next(iter(lengths.values()), 1)
        self.prefix_weight = float(prefix_weight)
        self.embed_dim = embed_dim
        self.grus = nn.ModuleDict({
            m.name: nn.GRU(m.shape[1] + 1, hidden, batch_first=True) for m in spec.modalities if m.kind == "sequence"
        })
        self.projections = nn.ModuleDict({name: nn.Linear(hidden, embed_dim) for name in self.grus})
        self.statics = nn.ModuleDict({
            m.name: self.components.encoder(m, embed_dim,
                                            dropout=dropout) for m in spec.modalities if m.kind != "sequence"
        })
        self.head = self.components.make_head(embed_dim, spec.task.output_dim, hidden=embed_dim, dropout=dropout)

    # ------------------------------------------------------------- whole sequence

    def _static(self, batch: Batch) -> Tensor:
        """(B, M, D): embeddings of non-sequence modalities (zeros at sequence slots)."""
        zs = []
        for j, m in enumerate(self.spec.modalities):
            x = batch.inputs[m.name]
            if m.kind == "sequence":
                zs.append(torch.zeros(x.shape[0], self.embed_dim, dtype=x.dtype, device=x.device))
            else:
                x = torch.where(mask_column(batch.mask, j, x.dim()), x, torch.zeros((), dtype=x.dtype, device=x.device))
                zs.append(self.statics[m.name](x))
        return torch.stack(zs, dim=1)

    @staticmethod
    def _gru_input(x: Tensor, steps: Tensor) -> Tensor:
        """x (..., C), steps (...) bool -> (..., C + 1): zeros at unobserved steps, then the indicator."""
        x = torch.where(steps.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))
        return torch.cat([x, steps.unsqueeze(-1).to(x.dtype)], dim=-1)

    def forward(self, batch: Batch) -> Output:
        n, steps_t = batch.size, self.n_steps
        static = self._static(batch)  # (B, M, D)
        zs, seen = [], []
        for j, m in enumerate(self.spec.modalities):
            if m.kind == "sequence":
                steps = batch_observed_steps(batch, self.spec, j)  # (B, T)
                out, _ = self.grus[m.name](self._gru_input(batch.inputs[m.name], steps))
                zs.append(self.projections[m.name](out))  # (B, T, D)
                seen.append(steps.cummax(dim=1).values)
            else:
                zs.append(static[:, j].unsqueeze(1).expand(n, steps_t, -1))
                seen.append(batch.mask[:, j].unsqueeze(1).expand(n, steps_t))
        z = torch.stack(zs, dim=2)  # (B, T, M, D)
        s = torch.stack(seen, dim=2)  # (B, T, M)
        fused = masked_mean(z.reshape(n * steps_t, len(zs), -1), s.reshape(n * steps_t, -1)).reshape(n, steps_t, -1)
        step_logits = self.head(fused)  # (B, T, C)
        return Output(step_logits[:, -1], {"step_logits": step_logits, "step_seen": s.any(dim=2)})

    def loss(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        terms = {"task": self.task_loss(output.logits, batch.target)}
        if self.prefix_weight > 0:
            logits, seen = output.aux["step_logits"], output.aux["step_seen"]
            target = batch.target.unsqueeze(1).expand(-1, logits.shape[1])
            if self.spec.task.kind == "classification":
                per_step = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none")
            else:
                per_step = ((logits.squeeze(-1) - target) ** 2).reshape(-1)
            weight = seen.reshape(-1).to(per_step.dtype)
            terms["prefix"] = self.prefix_weight * (per_step * weight).sum() / weight.sum().clamp_min(1)
        return terms

    # ------------------------------------------------------------------ streaming

    @torch.no_grad()
    def stream_init(self, batch_size: int, static: Batch | None = None) -> StreamState:
        """A fresh state for ``batch_size`` streams. ``static`` (a standardised batch of
        ``batch_size`` rows) supplies the non-sequence modalities, which count from step 0;
        its sequence inputs are ignored."""
        device = self.head[0].weight.device
        n_mod = self.spec.n_modalities
        hidden = {name: torch.zeros(1, batch_size, gru.hidden_size, device=device) for name, gru in self.grus.items()}
        if static is None:
            if self.statics:
                raise ValueError("this spec has non-sequence modalities: pass them as `static` to stream_init")
            return StreamState(hidden, torch.zeros(batch_size, n_mod, dtype=torch.bool, device=device),
                               torch.zeros(batch_size, n_mod, self.embed_dim, device=device))
        if static.size != batch_size:
            raise ValueError(f"static batch has {static.size} rows, expected {batch_size}")
        seen = torch.zeros(batch_size, n_mod, dtype=torch.bool, device=device)
        for j, m in enumerate(self.spec.modalities):
            if m.kind != "sequence":
                seen[:, j] = static.mask[:, j]
        return StreamState(hidden, seen, self._static(static))

    @torch.no_grad()
    def stream_step(self, state: StreamState, frames: Mapping[str, Tensor],
                    observed: Tensor) -> tuple[StreamState, Tensor]:
        """Advance every stream by one step: O(1) work, the past is never revisited.

        frames: sequence modality -> (B, C) standardised values at this step (any value,
        even NaN, where not observed); observed: (B, M) bool, modality m delivered this
        step (columns of non-sequence modalities are ignored). Returns (new state,
        (B, C) logits) — equal to ``forward``'s ``aux["step_logits"][:, t]`` for the
        sequence fed so far.
        """
        n = state.seen.shape[0]
        if observed.shape != (n, self.spec.n_modalities) or observed.dtype != torch.bool:
            raise ValueError(f"observed must be a (B, M) = ({n}, {self.spec.n_modalities}) bool tensor, "
                             f"got {observed.dtype} {tuple(observed.shape)}")
        hidden, seen, zs = dict(state.hidden), state.seen.clone(), []
        for j, m in enumerate(self.spec.modalities):
            if m.kind != "sequence":
                zs.append(state.static[:, j])
                continue
            if m.name not in frames:
                raise ValueError(f"stream_step: no frame for sequence modality {m.name!r}")
            x = frames[m.name]
            if tuple(x.shape) != (n, m.shape[1]):
                raise ValueError(f"stream_step: modality {m.name!r} frame must be (B, C) = ({n}, {m.shape[1]}), "
                                 f"got {tuple(x.shape)}")
            step = observed[:, j]
            out, hidden[m.name] = self.grus[m.name](self._gru_input(x, step).unsqueeze(1), state.hidden[m.name])
            zs.append(self.projections[m.name](out[:, 0]))
            seen[:, j] |= step
        logits = self.head(masked_mean(torch.stack(zs, dim=1), seen))
        return StreamState(hidden, seen, state.static, state.t + 1), logits

    @torch.no_grad()
    def stream(self, batch: Batch) -> Iterator[Tensor]:
        """Feed a standardised ``batch`` step by step; yields (B, C) logits after each step."""
        state = self.stream_init(batch.size, batch if self.statics else None)
        observed = [batch_observed_steps(batch, self.spec, j) if m.kind == "sequence" else None
                    for j, m in enumerate(self.spec.modalities)]
        for t in range(self.n_steps):
            obs = torch.stack([o[:, t] if o is not None else batch.mask[:, j]
                               for j, o in enumerate(observed)], dim=1)
            frames = {m.name: batch.inputs[m.name][:, t] for m in self.spec.modalities if m.kind == "sequence"}
            state, logits = self.stream_step(state, frames, obs)
            yield logits
