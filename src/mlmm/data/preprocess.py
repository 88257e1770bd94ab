"""Per-modality standardisation fitted on training data, over present entries only.

It is an ``nn.Module`` with buffers so it travels with the model in
``state_dict`` and moves with ``.to(device)``.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from .batch import Batch, float_values
from .spec import DatasetSpec
from .timemask import observed_steps

# Reduction axes (beyond the sample axis) per kind: vectors get one statistic per
# feature; sequences and images one per channel, shared over time or space.
_STAT_SHAPE = {
    "vector": lambda shape: shape,
    "sequence": lambda shape: (1, shape[1]),
    "image": lambda shape: (shape[0], 1, 1),
}


class Standardizer(nn.Module):
    """x -> (x - mean) / std for present entries; masked-out slots stay exactly 0.

    Text modalities (token ids) pass through untouched. Images stored as uint8 are
    scaled to [0, 1] float32 first (``mlmm.data.batch.float_values``), so what comes
    out is always float.
    """

    def __init__(self, spec: DatasetSpec) -> None:
        super().__init__()
        self.spec = spec
        for m in spec.modalities:
            if m.kind in _STAT_SHAPE:
                stat_shape = _STAT_SHAPE[m.kind](m.shape)
                self.register_buffer(f"mean_{m.name}", torch.zeros(stat_shape))
                self.register_buffer(f"std_{m.name}", torch.ones(stat_shape))

    @torch.no_grad()
    def fit(self, batch: Batch) -> Standardizer:
        """Statistics from the present rows of ``batch`` (the training split only); for a
        sequence with a time mask, from its observed steps only (the zeros at unobserved
        steps are not data)."""
        for j, m in enumerate(self.spec.modalities):
            if m.kind not in _STAT_SHAPE:
                continue
            x = float_values(batch.inputs[m.name][batch.mask[:, j]]).double()
            if batch.time_mask is not None and m.name in batch.time_mask:
                # (K observed steps, C) -> (K, 1, C): channel statistics reduce over axes 0 and 1.
                x = x[batch.time_mask[m.name][batch.mask[:, j]]].unsqueeze(1)
            mean, std = getattr(self, f"mean_{m.name}"), getattr(self, f"std_{m.name}")
            if x.shape[0] == 0:  # never observed in training: identity transform
                mean.zero_()
                std.fill_(1.0)
                continue
            dims = [0] + [d + 1 for d, s in enumerate(mean.shape) if s == 1 and m.shape[d] != 1]
            mean.copy_(x.mean(dim=dims, keepdim=True)[0].float())
            sd = x.std(dim=dims, keepdim=True, unbiased=False)[0].float()
            # Constant features (e.g. always-zero pixels) would divide by 0.
            std.copy_(torch.where(sd > 1e-8, sd, torch.ones_like(sd)))
        return self

    def transform_values(self, name: str, x: Tensor) -> Tensor:
        """Standardise raw values of modality ``name`` regardless of the mask: (B, *shape) -> same."""
        x = float_values(x)
        if not hasattr(self, f"mean_{name}"):
            return x
        return (x - getattr(self, f"mean_{name}")) / getattr(self, f"std_{name}")

    def forward(self, batch: Batch) -> Batch:
        inputs = {}
        for j, m in enumerate(self.spec.modalities):
            x = batch.inputs[m.name]
            if m.kind in _STAT_SHAPE:
                x = float_values(x)
                keep = batch.mask[:, j].reshape(-1, *([1] * len(m.shape)))
                if batch.time_mask is not None and m.name in batch.time_mask:  # unobserved steps stay 0
                    keep = observed_steps(batch.mask, batch.time_mask, j, m.name, m.shape[0]).unsqueeze(-1)
                x = torch.where(keep, self.transform_values(m.name, x), torch.zeros((), dtype=x.dtype, device=x.device))
            inputs[m.name] = x
        return dataclasses.replace(batch, inputs=inputs)  # index / kept travel unchanged
