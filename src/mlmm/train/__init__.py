"""The one training loop, its reusable steps, the fitted-model wrapper, saving and loading.

``Trainer.fit`` trains with the steps of ``FitSteps`` (``mlmm.train.steps``), which a
user's own loop can drive too; ``mlmm.train.lightning`` adapts them to PyTorch
Lightning (optional extra ``lightning``). ``FittedModel.save`` / ``load`` write and
read a model directory (``mlmm.train.saving``).
"""

from .config import TrainConfig
from .fitted import FittedModel
from .loop import FitResult, Trainer, build_method, seeded
from .saving import ModelFileError, load
from .steps import (
           FitNeverImproved,
           FitSteps,
           check_trainable,
           drop_modalities,
           effective_batch_size,
)

__all__ = ["FitNeverImproved", "FitResult", "FitSteps", "FittedModel", "ModelFileError", "TrainConfig", "Trainer",
           "build_method", "check_trainable", "drop_modalities", "effective_batch_size", "load", "seeded"]
