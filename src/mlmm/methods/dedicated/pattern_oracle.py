"""The "oracle" of dedicated training: one independent model per availability pattern."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...components.injection import ComponentChoices
from ...components.subpatterns import pattern_ids
from ...data.batch import Batch
from ...data.spec import DatasetSpec
from ...missing.functional import all_subsets
from ..base import MethodInfo, MissingModalityModel, Output, StageControl
from ..registry import register_method


class PatternModel(nn.Module):
    """The model of one pattern c: its own encoder per modality of c, concatenation, head.

    Reads only the modalities of c: (B, *shape_m) for m in c -> logits (B, C).
    """

    def __init__(self, spec: DatasetSpec, members: tuple[int, ...], embed_dim: int, hidden: int | None,
                 dropout: float, choices: ComponentChoices) -> None:
        super().__init__()
        self.members = members
        self.names = [spec.modalities[j].name for j in members]
        self.encoders = nn.ModuleList(
            choices.encoder(spec.modalities[j], embed_dim, hidden=hidden, dropout=dropout) for j in members
        )
        self.head = choices.make_head(len(members) * embed_dim, spec.task.output_dim, hidden=embed_dim, dropout=dropout)

    def forward(self, inputs: list[Tensor]) -> Tensor:
        return self.head(torch.cat([enc(x) for enc, x in zip(self.encoders, inputs)], dim=1))


@register_method("pattern-oracle")
class PatternOracle(MissingModalityModel):
    """Independent models, one per availability pattern; each sample goes to its own.

    For pattern c ⊆ {1..M} (2^M − 1 of them), f_c reads exactly the modalities of c
    (own encoders, concatenated embeddings, own head); logits_b = f_{c(a_b)}(x_b) (B, C).
    No parameter is shared between patterns: the "oracle" reference of dedicated training
    (what a model specialised to each pattern reaches, at 2^M − 1 times the parameters).

    Training: every model f_c trains on *every* training row that holds all the modalities
    of c (R_c = {b : c ⊆ a_b}), in every step:

        L = Σ_c mean_{b ∈ R_c} task(f_c(x_b), y_b)

    The sum gives each model the gradient of its own mean loss (no parameter is shared, and
    Adam's update is per parameter), so the models train as if alone. The loop's modality
    dropout is off (``training_control``): dropping entries would only hide rows from the
    models that could use them. Each model is also *selected* alone (``StageControl.parts``,
    ``mlmm.train.parts``): its own early stopping and best epoch on its validation loss over
    the validation rows holding its modalities (``part_losses``), as if it were trained
    alone; a stopped model takes no more steps. The loop's gradient-norm clipping is off
    (a global norm over all models would couple their steps).

    Large M: 2^M − 1 models. Above ``max_patterns`` (63 by default, M <= 6) the
    constructor refuses with a ``ValueError`` rather than silently building thousands of
    models; ``pattern-adapters`` shares a backbone and scales to seen patterns instead.
    A sample with no modality gets zero logits (a uniform prediction).
    Works with incomplete training data. Smaller default width (``embed_dim`` 64,
    ``hidden`` 128) than the shared-backbone methods, as each model sees fewer samples.

    Paper: the per-pattern "oracle" reference of dedicated training (one model trained per
    modality combination, as in the HeMIS/RFNet per-subset baselines); survey Sec. 4.2.1.
    """

    info = MethodInfo(
        category="dedicated",
        fusion="intermediate",
        recovers_missing=False,
        needs_complete_train=False,
        paper="Per-pattern independent models, the oracle reference of dedicated training (survey Sec. 4.2.1)",
        summary="one independent model per availability pattern (own encoders + head), each sample routed "
                "to its pattern's model; each model trains on every training row holding its modalities and is "
                "early-stopped on the validation rows holding them",
    )

    def __init__(self, spec: DatasetSpec, embed_dim: int = 64, hidden: int | None = 128, dropout: float = 0.5,
                 max_patterns: int = 63, **components) -> None:
        super().__init__(spec, **components)
        n_all = 2 ** spec.n_modalities - 1
        if n_all > max_patterns:
            raise ValueError(
                f"pattern-oracle builds one model per availability pattern: {spec.n_modalities} modalities give "
                f"{n_all} patterns, more than max_patterns={max_patterns}; raise max_patterns or use "
                "pattern-adapters (a shared backbone with adapters for the seen patterns)"
            )
        subsets = all_subsets(spec.n_modalities)
        # models[k] serves the pattern whose id (Σ 2^m) is slot_ids[k]
        self.models = nn.ModuleList(PatternModel(spec, tuple(c), embed_dim, hidden, dropout,
                                                 choices=self.components) for c in subsets)
        self.register_buffer("slot_id", pattern_ids(torch.stack(
            [torch.zeros(spec.n_modalities, dtype=torch.bool).index_fill(0, torch.tensor(c), True) for c in subsets]
        )), persistent=False)

    def training_control(self, stage: str) -> StageControl:
        return StageControl(modality_dropout="off", grad_clip=False,
                            parts=tuple(f"models.{k}." for k in range(len(self.models))))

    def part_losses(self, val: Batch) -> Tensor:
        """(2^M − 1,) each model's task loss on the validation rows holding all its modalities
        (the rows it would train on), NaN for a model without such rows."""
        losses = torch.full((len(self.models),), float("nan"), device=val.mask.device)
        for k, model in enumerate(self.models):
            rows = torch.nonzero(val.mask[:, list(model.members)].all(dim=1)).flatten()
            if rows.numel() > 0:
                out = model([val.inputs[name].index_select(0, rows) for name in model.names])
                losses[k] = self.task_loss(out, val.target.index_select(0, rows))
        return losses

    def forward(self, batch: Batch) -> Output:
        """Eval: each sample through its own pattern's model. Training: also every model c through
        all rows holding c; aux "pattern_loss" (Σ_c mean task loss over R_c, when the batch has
        targets) and "rows_per_model" ((2^M − 1,) long, |R_c| in this batch)."""
        mask = batch.mask
        ids = pattern_ids(mask)
        logits = torch.zeros(mask.shape[0], self.spec.task.output_dim, device=mask.device,
                             dtype=next(self.parameters()).dtype)
        pattern_loss = logits.new_zeros(())
        rows_per_model = torch.zeros(len(self.models), dtype=torch.long, device=mask.device)
        for k, model in enumerate(self.models):
            if self.training:
                rows = torch.nonzero(mask[:, list(model.members)].all(dim=1)).flatten()  # R_c
            else:
                rows = torch.nonzero(ids == self.slot_id[k]).flatten()  # the samples of pattern c
            if rows.numel() == 0:
                continue
            # Every member of c is present in these rows, so only present values are read.
            out = model([batch.inputs[name].index_select(0, rows) for name in model.names])
            own = ids.index_select(0, rows) == self.slot_id[k]
            logits = logits.index_copy(0, rows[own], out[own])
            if self.training:
                rows_per_model[k] = rows.numel()
                if batch.target is not None:
                    pattern_loss = pattern_loss + self.task_loss(out, batch.target.index_select(0, rows))
        aux = {"pattern_loss": pattern_loss, "rows_per_model": rows_per_model} if self.training else {}
        return Output(logits, aux=aux)

    def loss(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        if "pattern_loss" in output.aux:
            return {"task": output.aux["pattern_loss"]}
        return super().loss(batch, output)
