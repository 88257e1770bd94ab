"""mlmm's own exception types.

Every one subclasses a builtin (``ValueError``, ``RuntimeError``, ...) so that code
catching the builtin keeps working; the CLI turns each into one line and exit 2.
"""

from __future__ import annotations


class InvalidParameterError(ValueError, TypeError):
    """A parameter (of ``TrainConfig``, a method, a protocol, an experiment) has a
    value of the wrong type or outside its allowed range. Subclasses both ``ValueError``
    and ``TypeError``, as scikit-learn's ``InvalidParameterError`` does."""


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite loss: the fit is a failure, never a result.

    ``epoch``, ``stage`` and ``term`` (the loss term, or ``"validation"``) say where.
    """

    def __init__(self, message: str, *, epoch: int, stage: str, term: str) -> None:
        super().__init__(message)
        self.epoch, self.stage, self.term = epoch, stage, term


class EmptySplitError(ValueError):
    """A training or validation split has no rows, so nothing can be trained or selected."""


class UnsafeFileError(ValueError):
    """A file mlmm refuses to read as it is (YAML aliases, over the size limit, a pickle
    asking for a call outside the allowed set)."""


class DeviceError(ValueError):
    """A torch device that does not parse or is not available on this machine."""


class MlmmWarning(UserWarning):
    """Base of mlmm's own warnings: the CLI shows each as one ``mlmm: note:`` line."""


class UnseenModalityWarning(MlmmWarning):
    """A modality absent from every training row was given at prediction and treated as missing."""
