"""mlmm — multimodal learning with missing modalities.

One contract for every method (``Batch`` in, ``Output`` out, the mask the only
truth about availability), missingness protocols whose rates mean one precise
thing, real bundled datasets, and one training loop.
"""

# Methods first: importing mlmm.methods registers every method, and the method modules import
# mlmm.components, whose modules import mlmm.methods.base. Entering through mlmm.methods keeps
# that one-way (a components module imported first would be half-built when a method needs it).
from .methods import CATEGORIES, METHODS, MethodInfo, MissingModalityModel, Output, register_method  # isort: skip
from .data import (
    Batch,
    DatasetSpec,
    ModalitySpec,
    MultimodalDataset,
    Standardizer,
    TaskSpec,
    dataset_infos,
    load_dataset,
    make_splits,
)
from .experiment import ExperimentConfig, run_experiment
from .methods.base import Capability, clone
from .metrics.evaluate import evaluate, evaluate_subsets
from .missing import PROTOCOLS, Scenario, make_protocol, realised_missingness
from .train import FitSteps, FittedModel, TrainConfig, Trainer, build_method, load

__version__ = "0.1.0"

__all__ = [
    "Batch", "CATEGORIES", "Capability", "DatasetSpec", "ExperimentConfig", "FitSteps", "FittedModel", "METHODS",
    "MethodInfo",
    "MissingModalityModel", "ModalitySpec", "MultimodalDataset", "Output", "PROTOCOLS", "Scenario",
    "Standardizer", "TaskSpec", "TrainConfig", "Trainer", "build_method", "clone", "dataset_infos", "evaluate",
    "evaluate_subsets", "load", "load_dataset", "make_protocol", "make_splits", "realised_missingness",
    "register_method", "run_experiment",
]
