"""Train one (dataset, method, scenario, seed) cell and keep the model and test splits.

The diagnostics (``mlmm explain``, ``mlmm recover``, ``mlmm uncertainty``) need the
fitted model itself, which ``mlmm.experiment.run_seed`` does not return; both train
through ``mlmm.experiment.fit_seed``, so a cell here is the cell ``mlmm run`` trains
for the same arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..data.base import MultimodalDataset
from ..data.registry import load_dataset
from ..experiment import ExperimentConfig, fit_seed, validate_config
from ..train.loop import FitResult, FittedModel


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


#: The diagnostics' former name for a run's configuration: there is one type, ``ExperimentConfig``.
CellConfig = ExperimentConfig


def fit_cell(config: ExperimentConfig, seed: int) -> Cell:
    """Split, mask (train/val/test from the scenario, as ``mlmm run``), train; the fitted cell.
    ``config.seeds`` is ignored: the cell is trained under ``seed``."""
    experiment = replace(config, seeds=(seed,))
    validate_config(experiment, load_dataset(config.dataset).spec)
    seed_fit = fit_seed(experiment, seed)
    return Cell(seed_fit.fit.model, seed_fit.test, seed_fit.test_masked, seed_fit.fit, seed, config.rate)
