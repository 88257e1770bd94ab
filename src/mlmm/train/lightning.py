"""PyTorch Lightning adapter: Lightning runs the loop, ``FitSteps`` does mlmm's steps.

Optional: ``pip install 'mlmm[lightning]'``. ::

    from mlmm.train.lightning import fit_lightning
    model = fit_lightning(method, train, val, config=TrainConfig(), seed=0,
                          accelerator="cpu")          # any lightning.Trainer keyword
    model.predict(new_data)

Each stage of the method is one ``lightning.Trainer.fit`` of an ``MLMMModule`` (manual
optimisation: ``FitSteps.step`` takes the optimiser steps, so a stage's own optimiser,
alternating parameter groups, gradient clipping and ``after_step`` hooks are the loop's,
not re-implemented); epochs end with ``FitSteps.end_epoch`` (validation, best state, early
stopping through ``trainer.should_stop``); ``finish`` calibrates after the last stage. The
complete-data check happens in ``FitSteps`` before Lightning starts.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Any

import torch

from ..data.base import MultimodalDataset
from ..data.batch import Batch, collate
from ..methods.base import MissingModalityModel
from .config import TrainConfig
from .fitted import FittedModel
from .loop import seeded
from .steps import FitSteps

try:
    import lightning as L
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("mlmm.train.lightning needs PyTorch Lightning: pip install 'mlmm[lightning]'") from err


@contextlib.contextmanager
def _quiet_lightning():
    """Lightning logs INFO lines (GPU available, tips) at every Trainer; library code never prints."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


class MLMMModule(L.LightningModule):
    """One stage of ``steps`` as a LightningModule (manual optimisation)."""

    def __init__(self, steps: FitSteps) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.steps = steps
        self.method = steps.method  # registered as a submodule: Lightning moves it to its device

    def configure_optimizers(self) -> Any:
        # The stage's optimisers live in FitSteps (created by begin_stage); Lightning only loops.
        return None

    def transfer_batch_to_device(self, batch: Batch, device: torch.device, dataloader_idx: int) -> Batch:
        return batch.to(device)

    def on_train_epoch_start(self) -> None:
        self.steps.begin_epoch(self.current_epoch + 1)

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        loss = self.steps.step(batch)
        self.log("train_loss", loss, batch_size=batch.size, prog_bar=False)

    def on_train_epoch_end(self) -> None:
        if self.steps.end_epoch():
            self.trainer.should_stop = True


def fit_lightning(method: MissingModalityModel, train: MultimodalDataset, val: MultimodalDataset | None,
                  config: TrainConfig | None = None, seed: int = 0, device: str = "cpu",
                  **trainer_kwargs: Any) -> FittedModel:
    """Train ``method`` with Lightning running the loop and mlmm's ``FitSteps`` inside it;
    returns the calibrated ``FittedModel``. ``device``: where the steps run ("cpu", "cuda:0");
    Lightning's accelerator follows it. ``trainer_kwargs`` go to ``lightning.Trainer`` (default:
    one device, no logger, checkpoints, progress bar or model summary). Batches come from
    a ``DataLoader`` over ``train`` shuffled by ``steps.generator`` (the same row order as
    ``Trainer.fit``)."""
    config = config or TrainConfig()
    device_t = torch.device(device)
    accelerator = "gpu" if device_t.type == "cuda" else device_t.type
    devices = [device_t.index] if device_t.type == "cuda" and device_t.index is not None else 1
    options = {"accelerator": accelerator, "devices": devices, "logger": False, "enable_checkpointing": False,
               "enable_progress_bar": False, "enable_model_summary": False, **trainer_kwargs}
    with seeded(seed):
        steps = FitSteps(method, train, val, config=config, device=device_t, seed=seed)
        for _ in steps.stages():
            loader = torch.utils.data.DataLoader(train, batch_size=steps.batch_size, sampler=steps.sampler(),
                                                 collate_fn=collate, generator=torch.Generator())
            trainer = L.Trainer(max_epochs=steps.max_epochs, **options)
            with warnings.catch_warnings(), _quiet_lightning():
                # Lightning's advice for its own loop (worker count, no optimiser: FitSteps has them).
                warnings.filterwarnings("ignore", module=r"lightning\..*")
                warnings.filterwarnings("ignore", message=r".*(num_workers|configure_optimizers|does not have many).*")
                trainer.fit(MLMMModule(steps), train_dataloaders=loader)
        return steps.finish()
