"""Per-modality standardisation fitted on training data, over present entries only.

It is an ``nn.Module`` with buffers so it travels with the model in
``state_dict`` and moves with ``.to(device)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

import numpy as np
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

    ``modes``: modality name -> "standardise" (the default for vector, sequence and
    image modalities) or "none" (values pass through untouched, e.g. for an encoder
    that applies its own normalisation; masked-out slots are still zeroed). Text
    modalities (token ids) always pass through untouched. Images stored as uint8 are
    scaled to [0, 1] float32 first (``mlmm.data.batch.float_values``), so what comes
    out of a float modality is always float.
    """

    def __init__(self, spec: DatasetSpec, modes: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.spec = spec
        modes = dict(modes or {})
        unknown = sorted(set(modes) - set(spec.modality_names))
        if unknown:
            raise ValueError(f"preprocessing modes for unknown modality {', '.join(map(repr, unknown))}; "
                             f"dataset {spec.name!r} has {', '.join(spec.modality_names)}")
        for name, mode in modes.items():
            if mode not in ("standardise", "none"):
                raise ValueError(f"preprocessing of modality {name!r} must be 'standardise' or 'none', got {mode!r}")
        #: modality name -> "standardise" | "none", for every modality.
        self.modes = {m.name: ("none" if m.kind not in _STAT_SHAPE else modes.get(m.name, "standardise"))
                      for m in spec.modalities}
        for m in spec.modalities:
            if self.modes[m.name] == "standardise":
                stat_shape = _STAT_SHAPE[m.kind](m.shape)
                self.register_buffer(f"mean_{m.name}", torch.zeros(stat_shape))
                self.register_buffer(f"std_{m.name}", torch.ones(stat_shape))

    @torch.no_grad()
    def fit(self, batch: Batch) -> Standardizer:
        """Statistics from the present rows of ``batch`` (the training split only); for a
        sequence with a time mask, from its observed steps only (the zeros at unobserved
        steps are not data)."""
        for j, m in enumerate(self.spec.modalities):
            if self.modes[m.name] != "standardise":
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

    @torch.no_grad()
    def fit_batches(self, batches: Iterable[Batch]) -> Standardizer:
        """The statistics of ``fit``, in one streamed pass over raw training ``batches`` (a DataLoader over
        the training split: memory bounded by the batch). Per-batch count, mean and sum of squared
        deviations are merged in float64 (Chan et al.'s pairwise update), so the result matches ``fit``
        on the concatenated batches within float tolerance."""
        acc: dict[str, tuple[float, Tensor, Tensor]] = {}
        for batch in batches:
            for j, m in enumerate(self.spec.modalities):
                if m.kind not in _STAT_SHAPE:
                    continue
                x = float_values(batch.inputs[m.name][batch.mask[:, j]]).double()
                if batch.time_mask is not None and m.name in batch.time_mask:
                    x = x[batch.time_mask[m.name][batch.mask[:, j]]].unsqueeze(1)
                if x.shape[0] == 0:
                    continue
                mean = getattr(self, f"mean_{m.name}")
                dims = [0] + [d + 1 for d, s in enumerate(mean.shape) if s == 1 and m.shape[d] != 1]
                count = float(np.prod([x.shape[d] for d in dims]))
                b_mean = x.mean(dim=dims, keepdim=True)[0]
                b_m2 = ((x - b_mean) ** 2).sum(dim=dims, keepdim=True)[0]
                if m.name not in acc:
                    acc[m.name] = (count, b_mean, b_m2)
                    continue
                n_a, mean_a, m2_a = acc[m.name]
                total = n_a + count
                delta = b_mean - mean_a
                m2 = m2_a + b_m2 + delta ** 2 * (n_a * count / total)
                acc[m.name] = (total, mean_a + delta * (count / total), m2)
        for m in self.spec.modalities:
            if m.kind not in _STAT_SHAPE:
                continue
            mean, std = getattr(self, f"mean_{m.name}"), getattr(self, f"std_{m.name}")
            if m.name not in acc:  # never observed in training: identity transform
                mean.zero_()
                std.fill_(1.0)
                continue
            count, mu, m2 = acc[m.name]
            mean.copy_(mu.float())
            sd = (m2 / count).sqrt().float()
            std.copy_(torch.where(sd > 1e-8, sd, torch.ones_like(sd)))
        return self

    def transform_values(self, name: str, x: Tensor) -> Tensor:
        """Standardise raw values of modality ``name`` regardless of the mask: (B, *shape) -> same."""
        x = float_values(x)
        if self.modes.get(name) != "standardise":
            return x
        return (x - getattr(self, f"mean_{name}")) / getattr(self, f"std_{name}")

    def forward(self, batch: Batch) -> Batch:
        inputs = {}
        for j, m in enumerate(self.spec.modalities):
            x = batch.inputs[m.name]
            if m.kind in _STAT_SHAPE:  # float modalities: zeros at masked-out slots (and unobserved steps)
                x = float_values(x)
                keep = batch.mask[:, j].reshape(-1, *([1] * len(m.shape)))
                if batch.time_mask is not None and m.name in batch.time_mask:  # unobserved steps stay 0
                    keep = observed_steps(batch.mask, batch.time_mask, j, m.name, m.shape[0]).unsqueeze(-1)
                x = torch.where(keep, self.transform_values(m.name, x), torch.zeros((), dtype=x.dtype, device=x.device))
            inputs[m.name] = x
        return dataclasses.replace(batch, inputs=inputs)  # index / kept travel unchanged
