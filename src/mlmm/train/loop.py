"""The training loop — the only one in mlmm.

Methods supply ``forward``, ``loss``, ``prepare`` and ``stages``; this loop
owns optimisation (AdamW), modality dropout, early stopping and model
selection on the validation split (never the test split), devices and seeds.
A method may declare per stage what the loop must do for it
(``MissingModalityModel.training_control`` -> ``StageControl``: full batch,
alternating parameter groups, fixed epochs, a minimum epoch before selection,
modality dropout on the inputs / off / offered); the loop carries each training
sample's row index in ``Batch.index``.
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from dataclasses import asdict, dataclass, field, fields
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from ..data.base import MultimodalDataset
from ..data.batch import Batch, validate_batch
from ..data.preprocess import Standardizer
from ..data.spec import DatasetSpec
from ..methods.base import MissingModalityModel, Output, StageControl
from ..methods.params import check_method_params
from ..methods.registry import METHODS
from ..errors import EmptySplitError, TrainingDiverged, UnseenModalityWarning
from ..validation import COUNT, NONNEG, POSITIVE, PROBABILITY, Options, validate_params
from . import distributed
from .devices import check_device


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block under torch's RNG seeded with ``seed``, restoring the caller's RNG state after.

    Library code must not reseed the global RNG for its caller; forking it
    gives parameter init and dropout a fixed seed while the caller's stream
    is left exactly as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_method(name: str, spec: DatasetSpec, seed: int = 0, **params) -> MissingModalityModel:
    """Instantiate registered method ``name`` for ``spec`` with parameters initialised from ``seed``.

    Every parameter is checked (name, type, range, finite) before anything is built:
    ``InvalidParameterError`` names the parameter, the value and what is allowed."""
    cls = METHODS.get(name)
    check_method_params(name, cls, params)
    with seeded(seed):
        return cls(spec, **params)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. ``modality_dropout`` is the per-(sample, present modality)
    drop probability during training; a sample never loses its last modality."""

    max_epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-2
    patience: int = 15
    # On by default: training on random sub-patterns of what is present is the
    # cheapest robustness to missing modalities (0.3 chosen on handwritten's
    # validation split; set 0 to train on the given masks only).
    modality_dropout: float = 0.3
    # Small training splits get smaller batches, down to 8 samples, so that an epoch
    # has up to this many optimisation steps: with 32 training samples and batch 128,
    # one epoch would be one step, and 100 epochs 100 steps in all.
    min_steps_per_epoch: int = 10
    # Model selection on the validation split: "loss" (the task loss; on handwritten
    # at entry rates 0 and 0.5 it beat accuracy by ~0.3-0.5 points over 5 seeds, as
    # accuracy saturates early and picks an early epoch) or "accuracy" (ties broken by loss).
    select_on: str = "loss"
    grad_clip: float | None = 5.0

    def __post_init__(self) -> None:
        validate_params("TrainConfig", {f.name: getattr(self, f.name) for f in fields(self)}, TRAIN_CONSTRAINTS)


#: What each ``TrainConfig`` field allows (checked in ``__post_init__``, so a config that exists is valid).
TRAIN_CONSTRAINTS: dict[str, list] = {
    "max_epochs": [COUNT],
    "batch_size": [COUNT],
    "lr": [POSITIVE],
    "weight_decay": [NONNEG],
    "patience": [COUNT],
    "modality_dropout": [PROBABILITY],
    "min_steps_per_epoch": [COUNT],
    "select_on": [Options(("loss", "accuracy"))],
    "grad_clip": [None, POSITIVE],
}


def _check_present_finite(batch: Batch) -> None:
    """``ValueError`` naming the modality and first row where a present float entry is NaN or inf."""
    for j, (name, x) in enumerate(batch.inputs.items()):
        if not x.is_floating_point() or x.numel() == 0:
            continue
        bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1) & batch.mask[:, j]
        if bool(bad.any()):
            row = int(bad.nonzero()[0, 0])
            raise ValueError(f"modality {name!r} holds NaN or inf in {int(bad.sum())} present rows (first row {row}); "
                             "mark those entries missing in the mask, or fill them, before predicting")


class FittedModel(nn.Module):
    """A trained method with the preprocessing it was trained under.

    ``forward`` takes a *raw* batch (the units of the data set), standardises
    present entries with the training statistics and runs the method, so the
    preprocessing travels with the model (``state_dict`` holds both).
    """

    def __init__(self, standardizer: Standardizer, method: MissingModalityModel,
                 use_unseen_modalities: bool = False) -> None:
        super().__init__()
        self.standardizer = standardizer
        self.method = method
        #: (M,) bool: modalities present in at least one training row (set by ``Trainer.fit``).
        #: A modality never seen in training has an untrained encoder and no standardisation
        #: statistics; it is treated as missing at prediction (with an ``UnseenModalityWarning``)
        #: unless ``use_unseen_modalities`` is True.
        self.register_buffer("seen_modalities", torch.ones(method.spec.n_modalities, dtype=torch.bool))
        self.use_unseen_modalities = use_unseen_modalities

    @property
    def spec(self) -> DatasetSpec:
        return self.method.spec

    def forward(self, batch: Batch) -> Output:
        if not self.use_unseen_modalities:
            batch = self._hide_unseen(batch)
        return self.method(self.standardizer(batch))

    def check_data(self, data: MultimodalDataset | Batch) -> None:
        """``ValueError`` unless ``data`` has this model's modalities, in order, with its shapes
        (e.g. a model evaluated on another dataset's data)."""
        inputs = data.inputs
        names, given = self.spec.modality_names, tuple(inputs)
        if given != names:
            raise ValueError(f"the data has modalities ({', '.join(given)}) but the model was trained on "
                             f"{self.spec.name!r} with ({', '.join(names)}); evaluate it on data of that dataset")
        for m in self.spec.modalities:
            shape = tuple(inputs[m.name].shape[1:])
            if shape != tuple(m.shape):
                raise ValueError(f"modality {m.name!r} has per-sample shape {shape} in the data but "
                                 f"{tuple(m.shape)} in the model trained on {self.spec.name!r}")

    def _hide_unseen(self, batch: Batch) -> Batch:
        seen = self.seen_modalities
        if bool(seen.all()):
            return batch
        given = (batch.mask & ~seen).any(dim=0)
        if bool(given.any()):
            names = [m for m, g in zip(self.spec.modality_names, given.tolist()) if g]
            warnings.warn(UnseenModalityWarning(
                f"modalit{'y' if len(names) == 1 else 'ies'} {', '.join(map(repr, names))} never present in the "
                "training split: treated as missing (its encoder is untrained; pass use_unseen_modalities=True "
                "to use it anyway)"), stacklevel=3)
        return batch.with_mask(batch.mask & seen)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        # state saved before seen_modalities existed: every modality counts as seen
        state_dict.setdefault(prefix + "seen_modalities", torch.ones_like(self.seen_modalities))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    @torch.no_grad()
    def predict_logits(self, data: MultimodalDataset | Batch, batch_size: int = 1024, validate: bool = False) -> Tensor:
        """(N, C) logits for every sample of ``data``, in eval mode, on the model's device, returned on CPU."""
        self.check_data(data)
        batch = data.as_batch() if isinstance(data, MultimodalDataset) else data
        if validate:
            validate_batch(batch, self.spec)
        else:
            _check_present_finite(batch)  # (a NaN present entry gave NaN logits, silently)
        device = next(self.parameters(), torch.empty(0)).device
        was_training = self.training
        self.eval()
        try:
            outs = [self(batch.select(slice(i, i + batch_size)).to(device)).logits.cpu()
                    for i in range(0, batch.size, batch_size)]
        finally:
            self.train(was_training)
        return torch.cat(outs) if outs else torch.empty(0, self.spec.task.output_dim)


@dataclass
class FitResult:
    """The fitted model and what happened: per-epoch history and the selected epoch per stage."""

    model: FittedModel
    history: list[dict] = field(default_factory=list)
    best_epoch: dict[str, int] = field(default_factory=dict)
    train_seconds: float = 0.0
    #: stage -> whether its selected state scored better on validation than the state the
    #: stage started from (epoch 0); stages on a fixed schedule (nothing selected) are absent. False means the stage's training achieved nothing:
    #: ``Trainer.fit`` warns (``FitNeverImproved``) and callers can refuse the fit.
    improved: dict[str, bool] = field(default_factory=dict)

    @property
    def never_improved(self) -> list[str]:
        """Stages whose training never beat their starting state on validation."""
        return [stage for stage, ok in self.improved.items() if not ok]


def effective_batch_size(n_train: int, config: TrainConfig) -> int:
    """``config.batch_size``, shrunk (never below 8) so that an epoch over ``n_train``
    samples has up to ``config.min_steps_per_epoch`` steps."""
    return max(min(config.batch_size, 8), min(config.batch_size, n_train // config.min_steps_per_epoch))


def drop_modalities(mask: Tensor, p: float, generator: torch.Generator) -> Tensor:
    """Modality dropout: each present entry of the (B, M) mask is dropped with
    probability ``p``; a sample that would lose all its modalities keeps one
    present modality chosen uniformly. Returns a new (B, M) bool mask ⊆ ``mask``."""
    if p <= 0:
        return mask
    drop = (torch.rand(mask.shape, generator=generator, device=mask.device) < p) & mask
    kept = mask & ~drop
    empty = ~kept.any(dim=1)
    if empty.any():
        # Random scores on present entries; the arg-max is a uniform present modality.
        scores = torch.rand(mask.shape, generator=generator, device=mask.device).masked_fill(~mask, -1.0)
        rescue = torch.zeros_like(mask).scatter_(1, scores.argmax(dim=1, keepdim=True), True)
        kept = kept | (rescue & empty.unsqueeze(1))
    return kept


def _optimiser_groups(method: MissingModalityModel, control: StageControl,
                      cfg: TrainConfig) -> list[tuple[list[nn.Parameter], torch.optim.Optimizer, int]]:
    """[(params, optimiser, steps per batch)] for a stage: one group over every trainable
    parameter, or the stage's alternating groups (by name prefix; each trainable parameter
    in exactly one, else a ValueError naming it)."""
    lr = control.lr if control.lr is not None else cfg.lr
    weight_decay = control.weight_decay if control.weight_decay is not None else cfg.weight_decay
    # torch's default implementation: forcing foreach=True measured x1.01 on CPU
    # (benchmarks/bench_train_step.py), so it is not worth a special case.
    make = torch.optim.Adam if control.optimizer == "adam" else torch.optim.AdamW
    named = [(name, p) for name, p in method.named_parameters() if p.requires_grad]
    if not control.groups:
        params = [p for _, p in named]
        return [(params, make(params, lr=lr, weight_decay=weight_decay), 1)]
    owners = {name: [prefix for prefix, _ in control.groups if name.startswith(prefix)] for name, _ in named}
    for name, prefixes in owners.items():
        if len(prefixes) != 1:
            raise ValueError(f"{type(method).__name__}: trainable parameter {name!r} falls in "
                             f"{len(prefixes)} of the stage's parameter groups {[g for g, _ in control.groups]} "
                             "(it must fall in exactly one)")
    out = []
    for prefix, steps in control.groups:
        params = [p for name, p in named if owners[name][0] == prefix]
        if params:
            out.append((params, make(params, lr=lr, weight_decay=weight_decay), steps))
    return out


class FitNeverImproved(UserWarning):
    """A training stage ended no better on validation than where it started."""


def _diverged(terms: dict[str, Tensor], stage: str, epoch: int, step: int) -> None:
    """Raise ``TrainingDiverged`` naming the first non-finite loss term of a training step."""
    bad = [name for name, value in terms.items() if not bool(torch.isfinite(value.detach()).all())]
    term = bad[0] if bad else "total"
    values = ", ".join(f"{name}={float(value.detach()):.4g}" for name, value in terms.items())
    raise TrainingDiverged(
        f"training diverged: loss term {term!r} is non-finite at epoch {epoch}, step {step} of stage {stage!r} "
        f"({values}); try a lower lr (e.g. --lr) or a smaller grad_clip", epoch=epoch, stage=stage, term=term)


class Trainer:
    """Trains a method on a (masked) training split with early stopping on the validation split.

    ``device`` is chosen by the caller; ``on_epoch`` (optional) receives each
    epoch's record, e.g. for a progress bar — the loop itself never prints.
    ``use_unseen_modalities``: a modality absent from every training row is treated as
    missing at prediction (warned) unless this is True (see ``FittedModel``).
    """

    def __init__(self, config: TrainConfig | None = None, device: str | torch.device = "cpu",
                 on_epoch: Callable[[dict], None] | None = None, use_unseen_modalities: bool = False) -> None:
        self.config = config or TrainConfig()
        self.use_unseen_modalities = use_unseen_modalities  # see FittedModel
        self.device = check_device(device)  # a bogus name or an absent GPU fails here, before any work
        self.on_epoch = on_epoch

    def fit(self, method: MissingModalityModel, train: MultimodalDataset, val: MultimodalDataset,
            seed: int = 0) -> FitResult:
        import time

        if method.info.needs_complete_train and not bool(train.mask.all()):
            n_incomplete = int((~train.mask.all(dim=1)).sum())
            raise ValueError(
                f"method {getattr(method, 'method_name', type(method).__name__)!r} needs complete training "
                f"samples, but {n_incomplete} of {len(train)} training samples are incomplete"
            )
        for role, part in (("training", train), ("validation", val)):
            if len(part) == 0:
                raise EmptySplitError(f"the {role} split is empty (0 rows): nothing to "
                                      f"{'train on' if role == 'training' else 'select the model on'}")
        start = time.perf_counter()
        standardizer = Standardizer(train.spec).fit(train.as_batch())
        model = FittedModel(standardizer, method, use_unseen_modalities=self.use_unseen_modalities).to(self.device)
        model.seen_modalities.copy_(train.mask.any(dim=0))
        with torch.no_grad():
            # Each training sample carries its row index, so methods with per-row state
            # (a latent per row) find it in O(1) rather than by comparing values.
            train_batch = standardizer(train.as_batch().to(self.device))
            train_batch = train_batch.with_index(torch.arange(train_batch.size, device=self.device))
            # model selection sees what prediction will: unseen modalities hidden unless opted in
            val_raw = val.as_batch().to(self.device)
            val_batch = standardizer(val_raw if self.use_unseen_modalities else model._hide_unseen(val_raw))
        result = FitResult(model)
        with seeded(seed):
            generator = torch.Generator(device=self.device).manual_seed(distributed.rank_seed(seed))
            method.prepare(train_batch, standardizer)
            for stage in method.stages():
                method.set_stage(stage)
                result.best_epoch[stage] = self._run_stage(method, stage, train_batch, val_batch, generator,
                                                           result, seed)
            # Once, after the best state is loaded: choices that need held-out data.
            method.eval()
            with torch.no_grad():
                method.calibrate(val_batch)
        model.eval()
        result.train_seconds = time.perf_counter() - start
        return result

    def _run_stage(self, method: MissingModalityModel, stage: str, train: Batch, val: Batch,
                   generator: torch.Generator, result: FitResult, seed: int = 0) -> int:
        cfg = self.config
        control = method.training_control(stage)
        groups = _optimiser_groups(method, control, cfg)
        best_score, best_epoch, best_state = -math.inf, 0, copy.deepcopy(method.state_dict())
        # What "improved" is measured against (a fixed schedule selects nothing: not validated before)
        start_score = self._validate(method, val, stage, epoch=0)[0] if control.epochs is None else None
        n = train.size
        batch_size = n if control.full_batch else effective_batch_size(n, cfg)
        # Under torchrun: DDP-wrapped forward, sharded rows, per-rank batch (see distributed.py).
        forward = distributed.wrap(method)
        if distributed.is_distributed() and not control.full_batch:
            batch_size = distributed.per_rank_batch_size(batch_size)
        max_epochs = control.epochs if control.epochs is not None else cfg.max_epochs
        min_epochs = min(control.min_epochs, max_epochs)
        for epoch in range(1, max_epochs + 1):
            method.train()
            if distributed.is_distributed():
                order = distributed.shard_order(n, epoch, seed, self.device)
            else:
                order = torch.randperm(n, generator=generator, device=self.device)
            total, steps = 0.0, 0
            for i in range(0, len(order), batch_size):
                batch = self._drop(train.select(order[i:i + batch_size]), control, generator)
                for params, optimiser, n_steps in groups:
                    for _ in range(n_steps):
                        output = forward(batch)
                        terms = method.loss(batch, output)
                        loss = sum(terms.values())
                        step_loss = float(loss.detach())
                        if not math.isfinite(step_loss):  # refuse before the step spreads NaN into the weights
                            _diverged(terms, stage, epoch, steps + 1)
                        optimiser.zero_grad(set_to_none=True)
                        loss.backward()
                        if cfg.grad_clip and control.grad_clip:
                            nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                        optimiser.step()
                        method.after_step()  # e.g. an EMA teacher follows the updated weights
                        total += step_loss
                        steps += 1
            if control.epochs is not None and epoch < max_epochs:
                # A fixed schedule selects nothing, so only its last epoch is validated (for the record).
                score, val_loss = math.nan, math.nan
            else:
                score, val_loss = self._validate(method, val, stage, epoch)
            record = {"stage": stage, "epoch": epoch, "train_loss": total / max(steps, 1),
                      "val_loss": val_loss, "val_score": score}
            result.history.append(record)
            if self.on_epoch is not None:
                self.on_epoch(record)
            if control.epochs is not None:  # fixed schedule: the last epoch is the model
                best_score, best_epoch = score, epoch
                continue
            if epoch < min_epochs:  # too early to select: nothing kept, no patience used
                continue
            if score > best_score:
                best_score, best_epoch = score, epoch
                best_state = copy.deepcopy(method.state_dict())
            elif epoch - max(best_epoch, min_epochs) >= cfg.patience:
                break
        if control.epochs is None:
            method.load_state_dict(best_state)
        if start_score is None:
            return best_epoch
        result.improved[stage] = best_score > start_score
        if not result.improved[stage]:
            warnings.warn(FitNeverImproved(
                f"stage {stage!r} never improved on its starting state: best validation score {best_score:.4g} "
                f"(epoch {best_epoch}) vs {start_score:.4g} before training; try another lr or more epochs"),
                stacklevel=3)
        return best_epoch

    def _drop(self, batch: Batch, control: StageControl, generator: torch.Generator) -> Batch:
        """The loop's modality dropout as the stage declares it: on the inputs, off, or offered
        to the method as ``batch.kept`` with the batch's full mask left in place."""
        p = self.config.modality_dropout
        if control.modality_dropout == "off":
            return batch
        if control.modality_dropout == "offered":
            return batch.with_kept(drop_modalities(batch.mask, p, generator))
        return batch.with_mask(drop_modalities(batch.mask, p, generator)) if p > 0 else batch

    @torch.no_grad()
    def _validate(self, method: MissingModalityModel, val: Batch, stage: str, epoch: int) -> tuple[float, float]:
        """Selection score on the validation split, higher is better: with ``select_on``
        "accuracy", accuracy minus a tiny loss term as a tie-break (classification);
        otherwise minus the task loss (and always for regression). A non-finite validation
        loss raises ``TrainingDiverged``."""
        method.eval()
        output = method(val)
        loss = float(method.task_loss(output.logits, val.target))
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"training diverged: validation loss is {loss} at epoch {epoch} of stage {stage!r}"
                + (" (before any training step: the initial weights or the data hold non-finite values)"
                   if epoch == 0 else "; try a lower lr (e.g. --lr) or a smaller grad_clip"),
                epoch=epoch, stage=stage, term="validation")
        if method.spec.task.kind == "classification" and self.config.select_on == "accuracy":
            accuracy = float((output.logits.argmax(dim=1) == val.target).float().mean())
            return accuracy - 1e-3 * min(loss, 10.0), loss
        return -loss, loss
