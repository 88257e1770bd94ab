"""Train one (dataset, method, scenario, seed) cell and keep the model and test splits.

The diagnostics (``mlmm explain``, ``mlmm recover``, ``mlmm uncertainty``) need the
fitted model itself, which ``mlmm.experiment.run_seed`` does not return; both train
through ``mlmm.experiment.fit_seed``, so a cell here is the cell ``mlmm run`` trains
for the same arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..data.base import MultimodalDataset
from ..data.registry import load_dataset
from ..experiment import ExperimentConfig, fit_seed, validate_config
from ..train.loop import FitResult, FittedModel, TrainConfig


@dataclass
class Cell:
    """A trained model with its test split, complete (``test``: the natural masks) and
    masked by the scenario's test protocol (``test_masked``)."""

    model: FittedModel
    test: MultimodalDataset
    test_masked: MultimodalDataset
    fit: FitResult
    seed: int
    rate: float


@dataclass(frozen=True)
class CellConfig:
    dataset: str
    method: str
    rate: float = 0.0
    protocol: str = "entry"
    split: str = "fixed"
    train: TrainConfig = field(default_factory=TrainConfig)
    device: str = "cpu"
    method_params: dict[str, Any] = field(default_factory=dict)
    protocol_params: dict[str, Any] = field(default_factory=dict)

    def experiment(self, seed: int) -> ExperimentConfig:
        return ExperimentConfig(dataset=self.dataset, method=self.method, protocol=self.protocol, rate=self.rate,
                                split=self.split, seeds=(seed,), protocol_params=dict(self.protocol_params),
                                method_params=dict(self.method_params), train=self.train, device=self.device)


def fit_cell(config: CellConfig, seed: int) -> Cell:
    """Split, mask (train/val/test from the scenario, as ``mlmm run``), train; the fitted cell."""
    experiment = config.experiment(seed)
    validate_config(experiment, load_dataset(config.dataset).spec)
    seed_fit = fit_seed(experiment, seed)
    return Cell(seed_fit.fit.model, seed_fit.test, seed_fit.test_masked, seed_fit.fit, seed, config.rate)
