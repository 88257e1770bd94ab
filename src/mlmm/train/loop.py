"""The training loop — the only one in mlmm.

Methods supply ``forward``, ``loss``, ``prepare``, ``stages`` and (per stage)
``training_control``; the steps of training — standardisation, prepare, stages,
modality dropout, optimisation (``TrainConfig.optimizer``, AdamW by default),
after-step hooks, early stopping and model selection on the validation split
(never the test split), calibration — are ``mlmm.train.steps.FitSteps``, public so
that a user's own loop (or ``mlmm.train.lightning``) runs the same steps. This
module is the loop around them, with devices and seeds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from ..data.base import MultimodalDataset
from ..data.spec import DatasetSpec
from ..errors import UnseenModalityWarning  # noqa: F401  (re-exported)
from ..methods.base import MissingModalityModel
from ..methods.params import check_method_params
from ..methods.registry import METHODS
from . import distributed
from .config import TRAIN_CONSTRAINTS, TrainConfig  # noqa: F401  (re-exported)
from .devices import check_device
from .fitted import FittedModel
from .steps import (  # noqa: F401  (re-exported)
    FitNeverImproved,
    FitSteps,
    check_trainable,
    drop_modalities,
    effective_batch_size,
)
from .streamed import training_loader


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


@dataclass
class FitResult:
    """The fitted model and what happened: per-epoch history and the selected epoch per stage."""

    model: FittedModel
    history: list[dict] = field(default_factory=list)
    best_epoch: dict[str, int] = field(default_factory=dict)
    train_seconds: float = 0.0
    #: stage -> whether its selected state scored better on validation than the state the
    #: stage started from (epoch 0). False means the stage's training achieved nothing:
    #: ``Trainer.fit`` warns (``FitNeverImproved``) and callers can refuse the fit.
    improved: dict[str, bool] = field(default_factory=dict)

    @property
    def never_improved(self) -> list[str]:
        """Stages whose training never beat their starting state on validation."""
        return [stage for stage, ok in self.improved.items() if not ok]


class Trainer:
    """Trains a method on a (masked) training split with early stopping on the validation split.

    A loop around ``FitSteps`` (``mlmm.train.steps``), whose steps a user's own loop drives
    the same way. ``device`` is chosen by the caller; ``on_epoch`` (optional) receives each
    epoch's record, e.g. for a progress bar — the loop itself never prints.
    ``use_unseen_modalities``: a modality absent from every training row is treated as
    missing at prediction (warned) unless this is True (see ``FittedModel``).
    ``streamed``: read the splits batch by batch through a DataLoader (``mlmm.train.streamed``);
    None (default) does so for any dataset not held in memory (e.g. ``mlmm.data.MemmapDataset``).
    """

    def __init__(self, config: TrainConfig | None = None, device: str | torch.device = "cpu",
                 on_epoch: Callable[[dict], None] | None = None, use_unseen_modalities: bool = False,
                 streamed: bool | None = None) -> None:
        self.streamed = streamed
        self.config = config or TrainConfig()
        self.use_unseen_modalities = use_unseen_modalities  # see FittedModel
        self.device = check_device(device)  # a bogus name or an absent GPU fails here, before any work
        self.on_epoch = on_epoch

    def fit(self, method: MissingModalityModel, train: MultimodalDataset, val: MultimodalDataset,
            seed: int = 0) -> FitResult:
        import time

        check_trainable(method, train, val)
        start = time.perf_counter()
        with seeded(seed):
            steps = FitSteps(method, train, val, config=self.config, device=self.device, seed=seed,
                             use_unseen_modalities=self.use_unseen_modalities, on_epoch=self.on_epoch,
                             streamed=self.streamed)
            result = FitResult(steps.model, history=steps.history, best_epoch=steps.best_epoch,
                               improved=steps.improved)
            for _ in steps.stages():
                self._run_stage(steps, seed)
            steps.finish()
        result.train_seconds = time.perf_counter() - start
        return result

    def _run_stage(self, steps: FitSteps, seed: int) -> None:
        """The epochs of the current stage over the standardised training split: rows shuffled
        by ``steps.generator`` (sharded under torchrun), in batches of ``steps.batch_size``; streamed:
        the same order through a DataLoader over the raw split, standardised per batch."""
        if steps.streamed:
            loader = training_loader(steps)  # one per stage: its workers (if any) serve every epoch
            for _ in steps.epochs():
                for batch in loader:
                    steps.step(batch, standardised=True)
            return
        train = steps.train_batch
        n, batch_size = train.size, steps.batch_size
        for epoch in steps.epochs():
            if distributed.is_distributed():
                order = distributed.shard_order(n, epoch, seed, self.device)
            else:
                order = torch.randperm(n, generator=steps.generator, device=self.device)
            for i in range(0, len(order), batch_size):
                steps.step(train.select(order[i:i + batch_size]), standardised=True)
