"""The one training loop and the fitted-model wrapper."""

from .loop import FitResult, FittedModel, TrainConfig, Trainer, build_method, seeded

__all__ = ["FitResult", "FittedModel", "TrainConfig", "Trainer", "build_method", "seeded"]
