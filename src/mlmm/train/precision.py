"""Mixed precision of the training steps (``TrainConfig.precision``).

- "fp32": plain float32 arithmetic (the default, and the CPU's default).
- "bf16": the forward pass and the losses under ``torch.autocast`` to bfloat16 (CUDA, or the CPU's
  own autocast); bfloat16 keeps float32's exponent range, so no gradient scaling is needed.
- "fp16": autocast to float16 with ``torch.amp.GradScaler`` (the loss is scaled before backward so
  small gradients do not flush to zero; a step whose gradients overflow is skipped and the scale
  lowered). CUDA only: refused on the CPU with an error saying what to use instead.

Weights and optimiser state stay float32 (autocast casts per operation), and so do validation,
model selection and prediction: the precision changes how fast training runs, not what a fitted
model computes at prediction.
"""

from __future__ import annotations

import contextlib
import weakref

import torch

#: ``TrainConfig.precision`` -> the autocast dtype (None: no autocast).
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device | str) -> None:
    """Refuse a precision the device cannot train at, with the reason and what to use instead."""
    device = torch.device(device)
    if precision not in AUTOCAST_DTYPES:
        raise ValueError(f"precision must be one of {', '.join(AUTOCAST_DTYPES)}, got {precision!r}")
    if precision == "fp32":
        return
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision 'fp16' needs a CUDA device (float16 autocast with gradient scaling); on "
                         f"{device.type!r} use 'bf16' (CPU autocast) or 'fp32'")
    if device.type not in ("cuda", "cpu"):
        raise ValueError(f"precision {precision!r} runs on CUDA (and bf16 on the CPU), not on {device.type!r}; "
                         "use 'fp32'")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision 'bf16': {torch.cuda.get_device_name(device)} has no bfloat16 support; "
                         "use 'fp16' or 'fp32'")


class MixedPrecision:
    """The autocast context and the gradient scalers (one per optimiser, fp16 only) of a fit."""

    def __init__(self, precision: str, device: torch.device | str) -> None:
        check_precision(precision, device)
        self.precision = precision
        self.device_type = torch.device(device).type
        self._scalers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def autocast(self) -> contextlib.AbstractContextManager:
        """Forward and loss of a training step run inside this (a no-op for fp32)."""
        dtype = AUTOCAST_DTYPES[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=dtype)

    def scaler(self, optimiser: torch.optim.Optimizer) -> torch.amp.GradScaler | None:
        """The gradient scaler of ``optimiser`` under fp16 (created on first use), else None."""
        if self.precision != "fp16":
            return None
        if optimiser not in self._scalers:
            self._scalers[optimiser] = torch.amp.GradScaler(self.device_type)
        return self._scalers[optimiser]
