"""Train one (dataset, method, scenario, seed) cell and keep the model and test splits.

The diagnostics (``mlmm explain``, ``mlmm recover``, ``mlmm uncertainty``) need the
fitted model itself, which ``mlmm.experiment.run_seed`` does not return; this
builds the same cell from the same pieces (split, scenario, ``Trainer``), so a
cell here is the cell ``mlmm run`` trains for the same arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..data.base import MultimodalDataset
from ..data.registry import load_dataset
from ..data.splits import make_splits
from ..experiment import ExperimentConfig, validate_config
from ..train.loop import FitResult, FittedModel, TrainConfig, Trainer, build_method


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
    data = load_dataset(config.dataset)
    experiment = config.experiment(seed)
    validate_config(experiment, data.spec)
    train, val, test = make_splits(data, config.split, seed)
    scenario = experiment.scenario()
    train_m, _ = scenario.apply(train, "train", seed)
    val_m, _ = scenario.apply(val, "val", seed)
    test_m, _ = scenario.apply(test, "test", seed)
    method = build_method(config.method, data.spec, seed=seed, **config.method_params)
    fit = Trainer(config.train, device=config.device).fit(method, train_m, val_m, seed=seed)
    return Cell(fit.model, test, test_m, fit, seed, config.rate)
