"""An ensemble of independently initialised copies of one method, trained together."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...components.factorised import FactorisedFusion, is_factorised
from ...data.batch import Batch
from ...data.preprocess import Standardizer
from ...data.spec import DatasetSpec
from ..base import MethodInfo, MissingModalityModel, Output
from ..registry import METHODS, register_method


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
    masked-mean). When the member is factorised (encode once, fuse per subset)
    so is the ensemble: its per-modality encoding is the members' encodings
    concatenated on the last axis, (B, M, Σ_k D_k). Works with incomplete
    training data unless the member needs complete data. Costs K times the member.
    """

    info = MethodInfo(
        category="ensemble",
        fusion="hybrid",
        recovers_missing=False,
        needs_complete_train=False,
        paper="Deep ensembles (Lakshminarayanan et al., NeurIPS 2017) of a missing-modality method",
        summary="K independently initialised members of one method (default masked-mean), probabilities averaged",
    )

    @classmethod
    def forwarded_params_class(cls, params: dict) -> type:
        """The method class that receives the ``**member_params`` (checked against its constraints)."""
        member = params.get("member", "masked-mean")
        if not isinstance(member, str):
            raise ValueError(f"method 'deep-ensemble': member must be a method name, got {member!r}")
        return METHODS.get(member)

    def __init__(self, spec: DatasetSpec, member: str = "masked-mean", members: int = 5, **member_params) -> None:
        super().__init__(spec)
        if members < 1:
            raise ValueError(f"members must be >= 1, got {members}")
        cls = METHODS.get(member)
        if cls is DeepEnsemble:
            raise ValueError("deep-ensemble cannot be its own member")
        if cls.info.needs_complete_train:
            raise ValueError(f"member {member!r} needs complete training data; deep-ensemble does not declare that")
        self.member_name = member
        self.members = nn.ModuleList(cls(spec, **member_params) for _ in range(members))
        self._factorised = is_factorised(cls)
        self._widths: list[int] = []  # last-axis width of each member's encoding, set on first encode

    def prepare(self, train: Batch, standardizer: Standardizer) -> None:
        for m in self.members:
            m.prepare(train, standardizer)

    def after_step(self) -> None:
        for m in self.members:
            m.after_step()

    def _combine(self, logits: list[Tensor]) -> Tensor:
        stacked = torch.stack(logits)  # (K, B, C)
        if self.spec.task.kind != "classification":
            return stacked.mean(dim=0)
        return torch.logsumexp(F.log_softmax(stacked, dim=-1), dim=0) - math.log(len(logits))

    def forward(self, batch: Batch) -> Output:
        if self._factorised:
            return super().forward(batch)
        return self._ensemble_output([m(batch) for m in self.members])

    def encode_modalities(self, batch: Batch) -> Tensor:
        """(B, M, Σ_k D_k): every member's per-modality encoding, concatenated."""
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
        aux = {name[len(prefix):]: v for name, v in output.aux.items()
               if name.startswith(prefix) and name != f"{k}.logits"}
        return Output(output.aux[f"{k}.logits"], aux)

    def loss(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        terms: dict[str, Tensor] = {}
        for k, m in enumerate(self.members):
            for name, value in m.loss(batch, self._member_output(k, output)).items():
                terms[f"m{k}.{name}"] = value
        return terms
