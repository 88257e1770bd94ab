"""The steps of training a method, as one public object any loop can drive.

``Trainer.fit`` is a loop around these steps, and so can be yours (a plain
PyTorch loop over a ``DataLoader``; a Lightning module: ``mlmm.train.lightning``)::

    steps = FitSteps(method, train, val, config=TrainConfig(), seed=0)   # 1-3 below
    for stage in steps.stages():                                         # 4
        for epoch in steps.epochs():                                     # 8 after each epoch
            for batch in train.loader(batch_size=steps.batch_size, shuffle=True):
                steps.step(batch)                                        # 5, 6
    model = steps.finish()                                               # 7

1. refuse training data the method cannot use (a method that needs complete training
   samples on incomplete ones, an empty split, no labels) — at construction, before any work;
2. fit the standardiser on the training split (present entries only); every batch is
   standardised with it (``step`` does it to raw batches);
3. ``method.prepare`` on the whole standardised training split (fill values, banks); on
   streamed data ``method.prepare_split`` in passes over batches (``mlmm.train.streamed``);
4. per stage: ``set_stage``, the stage's ``StageControl`` (its optimiser or alternating
   parameter groups, full batch, fixed epochs, how modality dropout applies);
5. per batch: modality dropout (never drops a sample's last modality), forward, loss,
   a non-finite loss raised as ``TrainingDiverged``, backward, gradient clipping, the
   optimiser step of each group (``TrainConfig.optimizer``, AdamW by default);
6. ``method.after_step()`` after every optimiser step (e.g. an EMA teacher follows);
7. after the last stage, ``method.calibrate`` on the validation split (e.g. the pattern
   router's per-pattern table; streamed: ``calibrate_split``); a ``FittedModel`` refuses to
   predict until it has run;
8. per epoch: validate, keep the best state (early stopping with ``patience``), load it at
   the end of the stage, warn (``FitNeverImproved``) when the stage never beat its start.
   A stage with ``StageControl.parts`` does this per part instead (``mlmm.train.parts``).

The method's optional hooks run only where it declares the capability (``Capability``:
PREPARES, AFTER_STEP, CALIBRATES, NEEDS_COMPLETE_TRAIN, MULTI_STAGE), never by probing.
Randomness: modality dropout and the method's own draws (``method.generator``, handed over
with ``use_generator``) come from ``steps.generator``, seeded by ``seed``; ``nn.Dropout`` and
parameter initialisation draw from the caller's torch RNG (``Trainer.fit`` runs under
``seeded(seed)``; do the same in your loop for a fixed seed).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterator

import torch
import torch.utils.data
from torch import Tensor, nn

from ..data.base import MultimodalDataset
from ..data.batch import Batch
from ..data.preprocess import Standardizer
from ..errors import EmptySplitError, MlmmWarning, TrainingDiverged
from ..methods.base import Capability, MissingModalityModel, StageControl
from . import distributed
from .config import OPTIMIZERS, TrainConfig
from .fitted import FittedModel
from .parts import PartSelection
from .precision import MixedPrecision
from .streamed import (
    is_streamed,
    loader_options,
    needs_whole_split,
    split_passes,
    stream_batches,
    streamed_validation,
    whole_split,
)


class FitNeverImproved(MlmmWarning):
    """A training stage ended no better on validation than where it started."""


def check_trainable(method: MissingModalityModel, train: MultimodalDataset, val: MultimodalDataset | None) -> None:
    """Refuse data the method cannot learn from: training samples without labels, an empty
    split, and incomplete training samples for a method that needs complete ones
    (``Capability.NEEDS_COMPLETE_TRAIN``)."""
    name = method.method_name or type(method).__name__
    if method.has(Capability.NEEDS_COMPLETE_TRAIN) and not bool(train.mask.all()):
        n_incomplete = int((~train.mask.all(dim=1)).sum())
        raise ValueError(
            f"method {name!r} needs complete training samples, but {n_incomplete} of {len(train)} "
            "training samples are incomplete"
        )
    for role, part in (("training", train), ("validation", val)):
        if part is None:
            continue
        if len(part) == 0:
            raise EmptySplitError(f"the {role} split is empty (0 rows): nothing to "
                                  f"{'train on' if role == 'training' else 'select the model on'}")
        if part.target is None:
            raise ValueError(f"method {name!r}: the {role} data has no labels (target is None)")


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


def optimiser_groups(method: MissingModalityModel, control: StageControl,
                     cfg: TrainConfig) -> list[tuple[list[nn.Parameter], torch.optim.Optimizer, int]]:
    """[(params, optimiser, steps per batch)] for a stage: one group over every trainable
    parameter, or the stage's alternating groups (by name prefix; each trainable parameter
    in exactly one, else a ValueError naming it). The optimiser is the stage's own
    (``StageControl.optimizer``) or ``TrainConfig.optimizer``."""
    lr = control.lr if control.lr is not None else cfg.lr
    weight_decay = control.weight_decay if control.weight_decay is not None else cfg.weight_decay
    # torch's default implementation: forcing foreach=True measured x1.01 on CPU
    # (benchmarks/bench_train_step.py), so it is not worth a special case.
    make = OPTIMIZERS[control.optimizer or cfg.optimizer]
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


def _diverged(terms: dict[str, Tensor], stage: str, epoch: int, step: int) -> None:
    """Raise ``TrainingDiverged`` naming the first non-finite loss term of a training step."""
    bad = [name for name, value in terms.items() if not bool(torch.isfinite(value.detach()).all())]
    term = bad[0] if bad else "total"
    values = ", ".join(f"{name}={float(value.detach()):.4g}" for name, value in terms.items())
    raise TrainingDiverged(
        f"training diverged: loss term {term!r} is non-finite at epoch {epoch}, step {step} of stage {stage!r} "
        f"({values}); try a lower lr or a smaller grad_clip (--lr, --grad-clip)", epoch=epoch, stage=stage, term=term)


def effective_batch_size(n_train: int, config: TrainConfig) -> int:
    """``config.batch_size``, shrunk (never below 8) so that an epoch over ``n_train``
    samples has up to ``config.min_steps_per_epoch`` steps."""
    return max(min(config.batch_size, 8), min(config.batch_size, n_train // config.min_steps_per_epoch))


class ShuffledRows(torch.utils.data.Sampler):
    """Sampler of a permutation of ``range(n)`` per epoch, drawn from ``generator`` exactly as
    ``Trainer`` draws its row order (one ``randperm`` per epoch and nothing else, unlike
    ``RandomSampler``, which draws again at the end of an epoch)."""

    def __init__(self, n: int, generator: torch.Generator) -> None:
        self.n, self.generator = int(n), generator

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=self.generator, device=self.generator.device).tolist())


class _Stage:
    """Book-keeping of the stage in progress."""

    def __init__(self, name: str, control: StageControl, groups, max_epochs: int, start_score: float | None,
                 best_state: dict, forward) -> None:
        self.name, self.control, self.groups, self.forward = name, control, groups, forward
        self.max_epochs = max_epochs
        self.min_epochs = min(control.min_epochs, max_epochs)
        self.start_score = start_score
        self.best_score, self.best_epoch, self.best_state = -math.inf, 0, best_state
        self.epoch, self.total, self.steps, self.stop = 0, 0.0, 0, False
        self.parts: PartSelection | None = None  # StageControl.parts: each part selected on its own


class FitSteps:
    """The training steps of ``Trainer.fit`` for any loop (see the module docstring).

    method: a freshly built method; train / val: ``MultimodalDataset`` in raw units (``val``
    may be None: then nothing is selected or calibrated, every epoch runs, and a method
    that calibrates cannot predict). Construction runs steps 1-3. ``on_epoch`` (optional)
    receives each epoch's record. After ``finish``: ``model`` (the ``FittedModel``),
    ``history`` (a record per epoch), ``best_epoch`` and ``improved`` per stage.
    """

    def __init__(self, method: MissingModalityModel, train: MultimodalDataset, val: MultimodalDataset | None = None,
                 config: TrainConfig | None = None, device: str | torch.device = "cpu", seed: int = 0,
                 use_unseen_modalities: bool = False, on_epoch: Callable[[dict], None] | None = None,
                 streamed: bool | None = None) -> None:
        check_trainable(method, train, val)
        self.config = config or TrainConfig()
        self.device = torch.device(device)
        #: ``TrainConfig.precision`` of the training steps (checked against the device here, before any work).
        self.precision = MixedPrecision(self.config.precision, self.device)
        self.method = method
        self.on_epoch = on_epoch
        self.seed = seed
        #: True: the splits stay where they are (e.g. memory-mapped, ``mlmm.data.memmap``) and are read
        #: batch by batch (see ``mlmm.train.streamed``); None picks it for any dataset not held in memory.
        self.streamed = is_streamed(train) if streamed is None else bool(streamed)
        self.train_data, self.val_data = train, val
        self.n_train = len(train)
        self.has_val = val is not None
        if self.streamed:
            batches = stream_batches(train, **loader_options(self.config, self.device))
            standardizer = Standardizer(train.spec, method.preprocessing).fit_batches(batches)
        else:
            standardizer = Standardizer(train.spec, method.preprocessing).fit(train.as_batch())
        self.model = FittedModel(standardizer, method, use_unseen_modalities=use_unseen_modalities,
                                 class_names=getattr(train, "class_names", None)).to(self.device)
        self.model.seen_modalities.copy_(train.mask.any(dim=0))
        #: The whole standardised training split on the device, each sample carrying its row
        #: (``Batch.index``: methods with per-row state find it in O(1)); None when streamed.
        self.train_batch = None
        #: The standardised validation split; model selection sees what prediction will (unseen
        #: modalities hidden unless opted in). None when streamed (validated batch by batch).
        self.val_batch = None
        if not self.streamed:
            with torch.no_grad():
                self.train_batch = standardizer(train.as_batch().to(self.device))
                self.train_batch = self.train_batch.with_index(torch.arange(self.train_batch.size, device=self.device))
                if val is not None:
                    self.val_batch = self._standardised_val(val.as_batch())
        self.generator = torch.Generator(device=self.device).manual_seed(distributed.rank_seed(seed))
        self.history: list[dict] = []
        self.best_epoch: dict[str, int] = {}
        self.improved: dict[str, bool] = {}
        self._stage: _Stage | None = None
        # The method's own random draws (hiding modalities, sampling rows) use this generator.
        method.use_generator(self.generator)
        if self.streamed:
            if distributed.is_distributed():
                raise ValueError("streamed training (data not held in memory) does not run under torchrun yet")
            if method.has(Capability.PREPARES_BY_BATCH):  # passes over batches, rows by index
                with torch.no_grad():
                    method.prepare_split(split_passes(train, standardizer, self.device), standardizer)
            elif needs_whole_split(method, "prepare"):
                # A declared limit: the method's prepare needs the whole standardised split at once.
                whole = whole_split(train, method, "prepare")
                with torch.no_grad():
                    batch = standardizer(whole.to(self.device))
                method.prepare(batch.with_index(torch.arange(batch.size, device=self.device)), standardizer)
        elif method.has(Capability.PREPARES):
            method.prepare(self.train_batch, standardizer)

    def _standardised_val(self, raw: Batch) -> Batch:
        """A raw validation batch on the device, unseen modalities hidden (unless opted in), standardised."""
        with torch.no_grad():
            raw = raw.to(self.device)
            if not self.model.use_unseen_modalities:
                raw = self.model._hide_unseen(raw)
            return self.model.standardizer(raw)

    # ---------------------------------------------------------------- stages

    def stages(self) -> Iterator[str]:
        """Each training stage in order (``begin_stage`` before the caller's body, ``end_stage`` after)."""
        for stage in self.method.stages():
            self.begin_stage(stage)
            yield stage
            self.end_stage()

    def begin_stage(self, stage: str) -> None:
        """``set_stage``, the stage's optimisers, its starting validation score."""
        method = self.method
        method.set_stage(stage)
        control = method.training_control(stage)
        groups = optimiser_groups(method, control, self.config)
        best_state = copy.deepcopy(method.state_dict())
        # What "improved" is measured against (a fixed schedule selects nothing: not validated before)
        start = self._validate(stage, epoch=0)[0] if self.has_val and control.epochs is None else None
        max_epochs = control.epochs if control.epochs is not None else self.config.max_epochs
        # Under torchrun: a DDP-wrapped forward (see distributed.py); the method itself otherwise.
        self._stage = _Stage(stage, control, groups, max_epochs, start, best_state, distributed.wrap(method))
        if control.parts and self.has_val:
            self._stage.parts = PartSelection(method, control.parts, self._stage.min_epochs, self.config.patience)
            self._stage.parts.begin(self._part_losses())

    def end_stage(self) -> int:
        """Load the stage's best state (not for a fixed schedule: its last epoch is the model);
        warn when it never improved on its start. Returns the selected epoch."""
        st = self._require_stage("end_stage")
        if not self.has_val:
            st.best_epoch = st.epoch
        elif st.parts is not None:
            st.parts.load_best()
            st.best_epoch = st.parts.last_selection
        elif st.control.epochs is None:
            self.method.load_state_dict(st.best_state)
        self.best_epoch[st.name] = st.best_epoch
        if self.has_val and st.start_score is not None:
            self.improved[st.name] = st.parts.improved if st.parts is not None else st.best_score > st.start_score
            if not self.improved[st.name]:
                warnings.warn(FitNeverImproved(
                    f"stage {st.name!r} never improved on its starting state: best validation score "
                    f"{st.best_score:.4g} (epoch {st.best_epoch}) vs {st.start_score:.4g} before training; try "
                    "another lr or more epochs"), stacklevel=3)
        self._stage = None
        return st.best_epoch

    @property
    def max_epochs(self) -> int:
        """Epochs of the current stage at most (its fixed count, or ``TrainConfig.max_epochs``)."""
        return self._require_stage("max_epochs").max_epochs

    @property
    def batch_size(self) -> int:
        """Batch size of the current stage: the whole training split for a full-batch stage,
        else ``effective_batch_size`` (per rank under torchrun)."""
        st = self._require_stage("batch_size")
        n = self.n_train
        if st.control.full_batch:
            if self.streamed:
                whole_split(self.train_data, self.method, "a full-batch stage")  # refuses beyond the limit
            return n
        size = effective_batch_size(n, self.config)
        return distributed.per_rank_batch_size(size) if distributed.is_distributed() else size

    def sampler(self) -> ShuffledRows:
        """A DataLoader sampler over the training rows giving ``Trainer``'s order (the rows are
        shuffled by ``self.generator``, which also draws modality dropout)."""
        return ShuffledRows(self.n_train, self.generator)

    # ---------------------------------------------------------------- epochs

    def epochs(self) -> Iterator[int]:
        """The current stage's epochs (1, 2, ...): train mode before the caller's body,
        ``end_epoch`` after it; ends at ``max_epochs`` (or the stage's fixed count) or when
        early stopping says so."""
        st = self._require_stage("epochs")
        for epoch in range(1, st.max_epochs + 1):
            self.begin_epoch(epoch)
            yield epoch
            if self.end_epoch():
                break

    def begin_epoch(self, epoch: int | None = None) -> None:
        st = self._require_stage("begin_epoch")
        st.epoch = st.epoch + 1 if epoch is None else epoch
        st.total, st.steps = 0.0, 0
        self.method.train()

    def end_epoch(self) -> bool:
        """Validate, record the epoch (``history``, ``on_epoch``), keep the best state so far;
        True when the stage should stop (no improvement for ``patience`` epochs)."""
        st = self._require_stage("end_epoch")
        epoch, control = st.epoch, st.control
        if not self.has_val or (control.epochs is not None and epoch < st.max_epochs):
            # A fixed schedule selects nothing, so only its last epoch is validated (for the record).
            score, val_loss = math.nan, math.nan
        else:
            score, val_loss = self._validate(st.name, epoch)
        record = {"stage": st.name, "epoch": epoch, "train_loss": st.total / max(st.steps, 1),
                  "val_loss": val_loss, "val_score": score}
        self.history.append(record)
        if self.on_epoch is not None:
            self.on_epoch(record)
        if not self.has_val:
            return False
        if control.epochs is not None:  # fixed schedule: the last epoch is the model
            st.best_score, st.best_epoch = score, epoch
            return False
        if st.parts is not None:  # each part its own best epoch and patience
            st.stop = st.parts.update(epoch, self._part_losses())
            return st.stop
        if epoch < st.min_epochs:  # too early to select: nothing kept, no patience used
            return False
        if score > st.best_score:
            st.best_score, st.best_epoch = score, epoch
            st.best_state = copy.deepcopy(self.method.state_dict())
        elif epoch - max(st.best_epoch, st.min_epochs) >= self.config.patience:
            st.stop = True
        return st.stop

    # ----------------------------------------------------------------- steps

    def training_batch(self, batch: Batch, standardised: bool = False) -> Batch:
        """``batch`` on the device, standardised (unless ``standardised``), with the stage's
        modality dropout: on the inputs, off, or offered to the method as ``batch.kept``."""
        st = self._require_stage("training_batch")
        if batch.target is None:
            raise ValueError("a training batch needs labels (target is None)")
        batch = batch.to(self.device, non_blocking=True)  # asynchronous from pinned memory (streamed, CUDA)
        if not standardised:
            with torch.no_grad():
                batch = self.model.standardizer(batch)
        p = self.config.modality_dropout
        if st.control.modality_dropout == "off":
            return batch
        if st.control.modality_dropout == "offered":
            return batch.with_kept(drop_modalities(batch.mask, p, self.generator))
        return batch.with_mask(drop_modalities(batch.mask, p, self.generator)) if p > 0 else batch

    def step(self, batch: Batch, standardised: bool = False) -> float:
        """One training batch (raw units, e.g. from ``train.loader()``; ``standardised=True``
        for rows of ``self.train_batch``): modality dropout, then for each parameter group
        its steps of forward, loss, backward, clipping, optimiser step and ``after_step``.
        Returns the last step's loss; a non-finite loss raises ``TrainingDiverged``."""
        st = self._require_stage("step")
        batch = self.training_batch(batch, standardised=standardised)
        if not self.method.training:  # after a validation; never per step (a stage may set parts to eval)
            self.method.train()
        clip = self.config.grad_clip if st.control.grad_clip else None
        after_step = self.method.has(Capability.AFTER_STEP)
        step_loss = math.nan
        for params, optimiser, n_steps in st.groups:
            for _ in range(n_steps):
                with self.precision.autocast():  # a no-op for fp32
                    terms = self.method.loss(batch, st.forward(batch))
                    loss = sum(terms.values())
                step_loss = float(loss.detach())
                if not math.isfinite(step_loss):  # refuse before the step spreads NaN into the weights
                    _diverged(terms, st.name, st.epoch, st.steps + 1)
                optimiser.zero_grad(set_to_none=True)
                scaler = self.precision.scaler(optimiser)  # fp16 only
                (loss if scaler is None else scaler.scale(loss)).backward()
                if st.parts is not None:
                    st.parts.drop_stopped_gradients()  # a stopped part keeps its weights
                if clip:
                    if scaler is not None:
                        scaler.unscale_(optimiser)  # clip the true gradients, not the scaled ones
                    nn.utils.clip_grad_norm_(params, clip)
                if scaler is None:
                    optimiser.step()
                else:
                    scaler.step(optimiser)  # skipped when the scaled gradients overflowed
                    scaler.update()
                if after_step:
                    self.method.after_step()  # e.g. an EMA teacher follows the updated weights
                st.total += step_loss
                st.steps += 1
        return step_loss

    # ------------------------------------------------------------ validation

    @torch.no_grad()
    def _validate(self, stage: str, epoch: int) -> tuple[float, float]:
        """Selection score on the validation split, higher is better: with ``select_on``
        "accuracy", accuracy minus a tiny loss term as a tie-break (classification);
        otherwise minus the task loss (and always for regression). A non-finite validation
        loss raises ``TrainingDiverged``."""
        method = self.method
        method.eval()
        if self.streamed:
            loss, accuracy = streamed_validation(self)
        else:
            val = self.val_batch
            output = method(val)
            loss = float(method.task_loss(output.logits, val.target))
            accuracy = None
            if method.spec.task.kind == "classification":
                accuracy = float((output.logits.argmax(dim=1) == val.target).float().mean())
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"training diverged: validation loss is {loss} at epoch {epoch} of stage {stage!r}"
                + (" (before any training step: the initial weights or the data hold non-finite values)"
                   if epoch == 0 else "; try a lower lr or a smaller grad_clip (--lr, --grad-clip)"),
                epoch=epoch, stage=stage, term="validation")
        if method.spec.task.kind == "classification" and self.config.select_on == "accuracy":
            return accuracy - 1e-3 * min(loss, 10.0), loss
        return -loss, loss

    @torch.no_grad()
    def _part_losses(self) -> Tensor:
        """(P,) the method's ``part_losses`` on the standardised validation split (whole, when streamed)."""
        self.method.eval()
        val = self.val_batch
        if val is None:
            val = self._standardised_val(whole_split(self.val_data, self.method, "per-part selection"))
        return self.method.part_losses(val)

    def finish(self) -> FittedModel:
        """Once, after the last stage (best state loaded): ``method.calibrate`` on the
        validation split in eval mode without gradients (choices that need held-out data),
        then the ``FittedModel`` in eval mode."""
        if self._stage is not None:
            raise RuntimeError("finish() inside a stage: let the steps.stages() loop end first")
        self.method.eval()
        if self.has_val:
            with torch.no_grad():
                val = self.val_batch
                if val is None and self.method.has(Capability.CALIBRATES_BY_BATCH):
                    seen = self.model.seen_modalities.to(self.val_data.mask.device)
                    mask = self.val_data.mask if self.model.use_unseen_modalities else self.val_data.mask & seen
                    self.method.calibrate_split(split_passes(self.val_data, self._standardised_val, self.device,
                                                             mask=mask))
                elif val is None and needs_whole_split(self.method, "calibrate"):
                    val = self._standardised_val(whole_split(self.val_data, self.method, "calibrate"))
                if val is not None and self.method.has(Capability.CALIBRATES):
                    self.method.calibrate(val)
            self.model.mark_calibrated()
        self.method.use_generator(None)  # a fitted model keeps no reference to the loop's generator
        self.model.eval()
        return self.model

    def _require_stage(self, what: str) -> _Stage:
        if self._stage is None:
            raise RuntimeError(f"{what} outside a stage: iterate over steps.stages() (or call begin_stage)")
        return self._stage
