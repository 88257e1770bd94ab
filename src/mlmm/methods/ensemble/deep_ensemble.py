"""An ensemble of independently initialised copies of one method, trained together."""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...components.factorised import FactorisedFusion
from ...data.batch import Batch
from ...data.passes import SplitPasses
from ...data.preprocess import Standardizer
from ...data.spec import DatasetSpec
from ..base import Capability, MethodInfo, MissingModalityModel, Output, StageControl
from ..registry import METHODS, register_method


class EnsembleStreamState(NamedTuple):
    """The members' stream states, in member order."""

    members: tuple


@register_method("deep-ensemble")
class DeepEnsemble(FactorisedFusion, MissingModalityModel):
    """K members of one registered method, each with its own initialisation and dropout.

    Member k maps a batch to logits l_k (B, C). Classification:
    p = (1/K) Σ_k softmax(l_k), logits = log p (B, C); regression: the mean of the
    members' outputs. loss = Σ_k loss_k (each member's own terms, so auxiliary
    losses stay masked exactly as the member defines them); the members share
    the batch and its modality dropout, and differ by initialisation and dropout
    noise (Lakshminarayanan et al., "Simple and scalable predictive uncertainty
    estimation using deep ensembles", NeurIPS 2017).

    Missing modalities are handled by each member (the default member is
    masked-mean). The ensemble has every capability of its member and forwards
    each one (``capabilities`` is the member's): ``prepare``, ``stages`` /
    ``set_stage`` / ``training_control``, ``after_step``, ``calibrate``, ``recover``
    (input space: the members' mean; embedding space: their recoveries concatenated,
    (B, Σ_k D_k)) with ``recovery_target`` and ``plain_fill``, streaming (one state per
    member, logits combined per step), needing complete training data, and the
    factorised fusion: its per-modality encoding is the members' encodings concatenated
    on the last axis, (B, M, Σ_k D_k). Costs K times the member.
    """

    info = MethodInfo(
        category="ensemble",
        fusion="hybrid",
        recovers_missing=False,
        needs_complete_train=False,
        paper="Deep ensembles (Lakshminarayanan et al., NeurIPS 2017) of a missing-modality method",
        summary="K independently initialised members of one method (default masked-mean), probabilities averaged; "
                "the member's capabilities are forwarded",
    )

    @classmethod
    def forwarded_params_class(cls, params: dict) -> type:
        """The method class that receives the ``**member_params`` (checked against its constraints)."""
        member = params.get("member", "masked-mean")
        if not isinstance(member, str):
            raise ValueError(f"method 'deep-ensemble': member must be a method name, got {member!r}")
        return METHODS.get(member)

    def __init__(self, spec: DatasetSpec, member: str = "masked-mean", members: int = 5, **member_params) -> None:
        components = {k: member_params.pop(k) for k in ("encoders", "head", "preprocess") if k in member_params}
        super().__init__(spec, **components)
        if members < 1:
            raise ValueError(f"members must be >= 1, got {members}")
        cls = METHODS.get(member)
        if cls is DeepEnsemble:
            raise ValueError("deep-ensemble cannot be its own member")
        self.member_name = member
        # Each member gets its own copy of user encoder instances (never shared weights).
        self.members = nn.ModuleList(cls(spec, **member_params, **self.components.as_kwargs())
                                     for _ in range(members))
        self._widths: list[int] = []  # last-axis width of each member's encoding, set on first encode

    # ------------------------------------------------------------ forwarded declarations

    @property
    def capabilities(self) -> frozenset[Capability]:
        return self.members[0].capabilities

    @property
    def split_limit(self) -> tuple[int, str] | None:
        return self.members[0].split_limit

    @property
    def recovery_space(self) -> str | None:
        return self.members[0].recovery_space

    @property
    def preprocessing(self) -> dict[str, str]:
        return self.members[0].preprocessing

    @property
    def plain_fill(self) -> bool:
        return self.__dict__.get("_plain_fill", False)

    @plain_fill.setter
    def plain_fill(self, value: bool) -> None:
        self.__dict__["_plain_fill"] = bool(value)
        for m in self.__dict__.get("_modules", {}).get("members", ()):
            m.plain_fill = bool(value)

    # ------------------------------------------------------------ forwarded hooks

    def prepare(self, train: Batch, standardizer: Standardizer) -> None:
        for m in self.members:
            m.prepare(train, standardizer)

    def prepare_split(self, split: SplitPasses, standardizer: Standardizer) -> None:
        for m in self.members:
            m.prepare_split(split, standardizer)

    def stages(self) -> tuple[str, ...]:
        return self.members[0].stages()

    def set_stage(self, stage: str) -> None:
        super().set_stage(stage)
        for m in self.members:
            m.set_stage(stage)

    def training_control(self, stage: str) -> StageControl:
        """The member's control; its parameter groups name every member's parameters."""
        control = self.members[0].training_control(stage)
        if not control.groups:
            return control
        groups = tuple((f"members.{k}.{prefix}", steps) for prefix, steps in control.groups
                       for k in range(len(self.members)))
        return dataclasses.replace(control, groups=groups)

    def after_step(self) -> None:
        for m in self.members:
            m.after_step()

    def calibrate(self, val: Batch) -> None:
        for m in self.members:
            m.calibrate(val)

    def calibrate_split(self, split: SplitPasses) -> None:
        for m in self.members:
            m.calibrate_split(split)

    def recover(self, batch: Batch) -> dict[str, Tensor]:
        """Input space: the members' mean recovery; embedding space: their recoveries concatenated."""
        parts = [m.recover(batch) for m in self.members]
        return self._combine_recoveries(parts)

    def recovery_target(self, batch: Batch) -> dict[str, Tensor]:
        if self.recovery_space == "input":
            return super().recovery_target(batch)
        return self._combine_recoveries([m.recovery_target(batch) for m in self.members])

    def plain_fill_value(self, name: str) -> Tensor | None:
        return self.members[0].plain_fill_value(name) if self.recovery_space == "input" else None

    def _combine_recoveries(self, parts: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        if self.recovery_space == "input":
            return {name: torch.stack([p[name] for p in parts]).mean(dim=0) for name in parts[0]}
        return {name: torch.cat([p[name] for p in parts], dim=-1) for name in parts[0]}

    def stream_init(self, batch_size: int, static: Batch | None = None) -> EnsembleStreamState:
        if not self.has(Capability.STREAMING):
            raise TypeError(f"member {self.member_name!r} cannot stream")
        return EnsembleStreamState(tuple(m.stream_init(batch_size, static) for m in self.members))

    def stream_step(self, state: EnsembleStreamState, frames, observed: Tensor) -> tuple[EnsembleStreamState, Tensor]:
        """Every member's step; logits combined as in ``forward``."""
        states, logits = [], []
        for m, s in zip(self.members, state.members):
            s, out = m.stream_step(s, frames, observed)
            states.append(s)
            logits.append(out)
        return EnsembleStreamState(tuple(states)), self._combine(logits)

    # ------------------------------------------------------------ forward

    def _combine(self, logits: list[Tensor]) -> Tensor:
        stacked = torch.stack(logits)  # (K, B, C)
        if self.spec.task.kind != "classification":
            return stacked.mean(dim=0)
        return torch.logsumexp(F.log_softmax(stacked, dim=-1), dim=0) - math.log(len(logits))

    def forward(self, batch: Batch) -> Output:
        if self.has(Capability.FACTORISED):
            return self.fuse_embeddings(self.encode_modalities(batch), batch.mask)
        return self._ensemble_output([m(batch) for m in self.members])

    def encode_modalities(self, batch: Batch) -> Tensor:
        """(B, M, Σ_k D_k): every member's per-modality encoding, concatenated (FACTORISED members)."""
        parts = [m.encode_modalities(batch) for m in self.members]
        self._widths = [p.shape[-1] for p in parts]
        return torch.cat(parts, dim=-1)

    def fuse_embeddings(self, z: Tensor, mask: Tensor) -> Output:
        widths = self._widths or [z.shape[-1] // len(self.members)] * len(self.members)
        return self._ensemble_output([m.fuse_embeddings(part, mask)
                                      for m, part in zip(self.members, z.split(widths, dim=-1))])

    def _ensemble_output(self, outputs: list[Output]) -> Output:
        """Combined logits; each member's logits and aux tensors kept as aux["k.name"] for its loss."""
        aux = {}
        for k, out in enumerate(outputs):
            aux[f"{k}.logits"] = out.logits
            aux.update({f"{k}.{name}": value for name, value in out.aux.items()})
        return Output(self._combine([o.logits for o in outputs]), aux)

    def _member_output(self, k: int, output: Output) -> Output:
        prefix = f"{k}."
        aux = {name[len(prefix):]: v for name,
               v in output.aux.items() if name.startswith(prefix) and name != f"{k}.logits"}
        return Output(output.aux[f"{k}.logits"], aux)

    def loss(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        terms: dict[str, Tensor] = {}
        for k, m in enumerate(self.members):
            for name, value in m.loss(batch, self._member_output(k, output)).items():
                terms[f"m{k}.{name}"] = value
        return terms
