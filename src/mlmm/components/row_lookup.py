"""Data-sized state in ``state_dict``: resize a module's parameters / buffers to the saved shapes.

Methods that keep state sized by their training data (a latent per training row, a memory
bank, per-pattern tables) are built empty and sized by ``prepare``; a fresh instance loading
a checkpoint must first take the saved shapes. (Training rows are identified by
``Batch.index``, set by the training loop — never by comparing values with stored rows.)
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn


def resize_to_saved(module: nn.Module, state_dict, prefix: str, names: Iterable[str]) -> None:
    """Give ``module``'s parameters / buffers ``names`` the shapes saved in ``state_dict``
    (for data-sized state, before ``load_state_dict`` copies into them)."""
    for name in names:
        saved = state_dict.get(prefix + name)
        if not isinstance(saved, Tensor):
            continue
        if name in module._parameters and module._parameters[name] is not None:
            own = module._parameters[name]
            if own.shape != saved.shape:
                module._parameters[name] = nn.Parameter(
                    torch.empty(saved.shape, dtype=own.dtype, device=own.device), requires_grad=own.requires_grad)
        elif name in module._buffers and module._buffers[name] is not None:
            own = module._buffers[name]
            if own.shape != saved.shape:
                module._buffers[name] = torch.empty(saved.shape, dtype=own.dtype, device=own.device)
