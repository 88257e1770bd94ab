"""Checking a torch device before any work: a bogus name or an absent GPU is one clear error."""

from __future__ import annotations

import torch

from ..errors import DeviceError


def check_device(device: object) -> torch.device:
    """``device`` as a ``torch.device`` that exists here; ``DeviceError`` naming it otherwise."""
    try:
        dev = torch.device(device)  # type: ignore[arg-type]
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"device {device!r} is not a torch device; give e.g. cpu, cuda or cuda:1") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device!r}: CUDA is not available on this machine (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError(f"device {device!r}: MPS is not available on this machine (use --device cpu)")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"device {device!r}: mlmm runs on cpu, cuda or mps")
    return dev
