"""The strongest default: train several candidate pipelines, keep the one that scores best on validation."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...data.batch import Batch
from ...data.passes import SplitPasses
from ...data.preprocess import Standardizer
from ...data.spec import DatasetSpec
from ...validation import STRING, SequenceOf
from ..base import Capability, MethodInfo, MissingModalityModel, Output
from ..registry import METHODS, register_method

#: Candidates tried by default: the fixed-feature time-series baselines and the learned default.
DEFAULT_CANDIDATES = ("summary-linear", "rocket-linear", "masked-mean")


@register_method("strongest-default")
class StrongestDefault(MissingModalityModel):
    """Train every candidate method side by side, then keep the one with the best validation score.

    Shapes: B batch, C outputs, K candidates (registered method names; default: those of
    ``DEFAULT_CANDIDATES`` — summary statistics + linear, random convolutions + linear, and
    masked-mean over learned per-modality encoders, i.e. a choice among *encoders*, each
    behind the head that suits it — that take every modality kind of the spec, so on image or
    text data only masked-mean remains; named candidates that cannot take the spec are refused).

    Training: one loop, one optimiser; loss = Σ_k (candidate k's own loss terms), each
    candidate seeing the same (modality-dropped) batch. Until calibration the output is
    the candidates' mean log-probability (classification; mean output for regression), so
    the loop's early stopping watches the whole set.

    ``calibrate(val)`` (run once by ``Trainer.fit`` after training, on the validation split
    with its missingness) scores each candidate: accuracy with NLL as tie-break
    (classification), minus MSE (regression); ties go to the earlier candidate. The chosen
    index is a buffer (``chosen``, -1 = not yet calibrated), so a saved model predicts
    with the same candidate; ``scores`` keeps the figures (not saved). Afterwards the
    output is candidate ``chosen``'s alone, and ``aux["chosen"]`` says which.

    Why a method and not a helper: it runs wherever a method runs (CLI, grids, saving),
    and the choice is made on the validation split only, never on test.
    """

    info = MethodInfo(
        category="scheduler",
        fusion="hybrid",
        recovers_missing=False,
        needs_complete_train=False,
        paper="Model selection among strong default pipelines by validation score (cf. AutoML-style "
              "selection; candidates: summary-statistic and random-convolution time-series features "
              "+ linear head, learned encoders + masked mean)",
        summary="trains summary-linear, rocket-linear and masked-mean together; keeps the one with the best "
                "validation accuracy (chosen once, after training; saved with the model)",
        capabilities=frozenset({Capability.CALIBRATES}),
        fixed_encoders={"*": "each candidate is a default pipeline built with its own components (fixed "
                             "time-series features or learned encoders); pass encoders to a candidate method"},
    )

    # names are checked against the registry when built (an unknown one is a KeyError naming it)
    param_constraints: ClassVar[dict] = {"candidates": [STRING, SequenceOf(STRING)]}

    def __init__(self, spec: DatasetSpec, candidates: tuple[str, ...] | list[str] | str = DEFAULT_CANDIDATES,
                 **components) -> None:
        super().__init__(spec, **components)
        if candidates is DEFAULT_CANDIDATES:
            # The default set leaves out a candidate that declares a kind of this spec unsupported
            # (time-series features on an image or text modality); a given list is taken as given.
            candidates = tuple(c for c in candidates if not any(
                m.kind in METHODS.get(c).info.unsupported_kinds for m in spec.modalities))
        if isinstance(candidates, str):
            candidates = tuple(c.strip() for c in candidates.split(",") if c.strip())
        candidates = tuple(candidates)
        if not candidates:
            raise ValueError("strongest-default needs at least one candidate method")
        if len(set(candidates)) != len(candidates):
            raise ValueError(f"strongest-default: candidate methods repeat: {candidates}")
        for name in candidates:
            if name == "strongest-default":
                raise ValueError("strongest-default cannot be its own candidate")
            cls = METHODS.get(name)  # KeyError names the unknown method
            if cls.info.needs_complete_train:
                raise ValueError(f"strongest-default: candidate {name!r} needs complete training data; "
                                 "pick candidates that train on incomplete data")
        self.candidate_names = candidates
        self.candidates = nn.ModuleList(METHODS.get(name)(spec) for name in candidates)
        self.register_buffer("chosen", torch.tensor(-1, dtype=torch.long))
        #: candidate name -> validation figures from the last ``calibrate`` (not saved).
        self.scores: dict[str, dict[str, float]] = {}

    @property
    def capabilities(self) -> frozenset[Capability]:
        """CALIBRATES (the choice), plus PREPARES / AFTER_STEP where a candidate has them (forwarded);
        PREPARES_BY_BATCH / CALIBRATES_BY_BATCH when every candidate with the step has it by batch
        (the choice itself is scored by batch)."""
        caps = {Capability.CALIBRATES}
        for c in self.candidates:
            caps |= c.capabilities & {Capability.PREPARES, Capability.AFTER_STEP}
        for step, by_batch in ((Capability.PREPARES, Capability.PREPARES_BY_BATCH),
                               (Capability.CALIBRATES, Capability.CALIBRATES_BY_BATCH)):
            if step in caps and all(c.has(by_batch) for c in self.candidates if c.has(step)):
                caps.add(by_batch)
        return frozenset(caps)

    @property
    def split_limit(self) -> tuple[int, str] | None:
        """The smallest of the candidates' declared split limits (None if none declares one)."""
        limits = [c.split_limit for c in self.candidates if c.split_limit is not None]
        return min(limits, key=lambda limit: limit[0]) if limits else None

    def stages(self) -> tuple[str, ...]:
        for name, c in zip(self.candidate_names, self.candidates):
            if c.stages() != ("main",):
                raise ValueError(f"strongest-default: candidate {name!r} trains in stages {c.stages()}; "
                                 "only single-stage candidates can share one loop")
        return ("main",)

    def prepare(self, train: Batch, standardizer: Standardizer) -> None:
        for c in self.candidates:
            c.prepare(train, standardizer)

    def prepare_split(self, split: SplitPasses, standardizer: Standardizer) -> None:
        for c in self.candidates:
            if c.has(Capability.PREPARES):
                c.prepare_split(split, standardizer)

    def after_step(self) -> None:
        for c in self.candidates:
            c.after_step()

    def _combine(self, outputs: list[Output]) -> Tensor:
        if self.spec.task.kind == "classification":
            return torch.stack([F.log_softmax(o.logits, dim=-1) for o in outputs]).mean(dim=0)
        return torch.stack([o.logits for o in outputs]).mean(dim=0)

    def forward(self, batch: Batch) -> Output:
        k = int(self.chosen)
        if k >= 0 and not self.training:
            out = self.candidates[k](batch)
            return Output(out.logits, aux={**out.aux, "chosen": self.chosen.expand(batch.size)})
        outputs = [c(batch) for c in self.candidates]
        aux: dict[str, Tensor] = {}
        for name, o in zip(self.candidate_names, outputs):
            aux[f"{name}/logits"] = o.logits
            aux.update({f"{name}/{key}": v for key, v in o.aux.items()})
        logits = outputs[k].logits if k >= 0 else self._combine(outputs)
        return Output(logits, aux=aux)

    def _candidate_output(self, output: Output, name: str) -> Output:
        prefix = f"{name}/"
        aux = {key[len(prefix):]: v for key, v in output.aux.items() if key.startswith(prefix)}
        return Output(aux.pop("logits"), aux=aux)

    def loss(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        if f"{self.candidate_names[0]}/logits" not in output.aux:  # eval output of a calibrated model
            return {"task": self.task_loss(output.logits, batch.target)}
        terms = {}
        for name, c in zip(self.candidate_names, self.candidates):
            for key, value in c.loss(batch, self._candidate_output(output, name)).items():
                terms[f"{name}/{key}"] = value
        return terms

    def calibrate(self, val: Batch) -> None:
        """Pick the candidate with the best validation score (see the class docstring)."""
        for c in self.candidates:
            c.eval()
            c.calibrate(val)
        self._choose(SplitPasses.of_batch(val))

    def calibrate_split(self, split: SplitPasses) -> None:
        """``calibrate`` in passes: each candidate's own calibration by batch, then the scores."""
        for c in self.candidates:
            c.eval()
            if c.has(Capability.CALIBRATES):
                c.calibrate_split(split)
        self._choose(split)

    def _choose(self, split: SplitPasses) -> None:
        """Score every (calibrated, eval-mode) candidate in one pass over ``split`` (summed hits and
        losses, divided at the end) and keep the best in ``chosen``."""
        classification = self.spec.task.kind == "classification"
        hits = [0.0] * len(self.candidates)
        losses = [0.0] * len(self.candidates)
        n = 0
        for batch in split.batches():
            for k, c in enumerate(self.candidates):
                logits = c(batch).logits
                if classification:
                    hits[k] += float((logits.argmax(dim=1) == batch.target).sum())
                    losses[k] += float(F.cross_entropy(logits.double(), batch.target, reduction="sum"))
                else:
                    losses[k] += float(F.mse_loss(logits.reshape(batch.target.shape).double(),
                                                  batch.target.double(), reduction="sum"))
            n += batch.target.numel()
        self.scores = {}
        best, best_key = 0, None
        for k, name in enumerate(self.candidate_names):
            if classification:
                accuracy, nll = hits[k] / max(n, 1), losses[k] / max(n, 1)
                self.scores[name] = {"accuracy": accuracy, "nll": nll}
                key = (accuracy, -nll)
            else:
                mse = losses[k] / max(n, 1)
                self.scores[name] = {"mse": mse}
                key = (-mse,)
            if best_key is None or key > best_key:
                best, best_key = k, key
        self.chosen = torch.tensor(best, dtype=torch.long, device=self.chosen.device)
