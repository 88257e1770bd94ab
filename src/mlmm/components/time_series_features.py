"""Fixed feature transforms for sequence modalities: the field's strong time-series baselines.

Two transforms that need no training, each mapping one sequence modality's (B, T, C)
tensor to a (B, F) feature vector, sample by sample (no batch statistics):

- ``summary_statistics``: per channel, mean, standard deviation, minimum, maximum,
  least-squares slope and quantiles over time — what a practitioner computes
  first and feeds to logistic regression.
- ``RandomConvolutionFeatures``: ROCKET / MiniRocket-style random convolutions
  (Dempster et al., 2020; 2021): fixed random kernels of length 9 at
  exponentially spaced dilations, drawn once from an explicit generator and kept
  as buffers; per kernel, the proportion of positive values (PPV) and the
  maximum of the biased convolution output over time.

Written here rather than taken from ``aeon`` / ``sktime``: their MiniRocket runs
on numba (an LLVM compiler dependency the project does not otherwise need) and
fits its biases on training data, which a drop-in per-modality encoder cannot
see. Differences from MiniRocket: weights are Gaussian and mean-centred (ROCKET's
choice, not MiniRocket's {-1, 2}), every kernel reads all channels, and biases
are drawn uniformly rather than from quantiles of training convolutions — so
each kernel is scaled to unit norm, making a standardised input's convolution
output O(1) and U(-1, 1) biases meaningful.

``SummaryStatsEncoder`` and ``RandomConvEncoder`` wrap the transforms as
per-modality encoders ((B, T, C) -> (B, out_dim)) usable by any method.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Quantiles of ``summary_statistics`` (besides min and max).
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
#: Statistic names in output order; each covers all channels (feature index = stat * C + channel).
SUMMARY_NAMES = ("mean", "std", "min", "max", "slope") + tuple(f"q{int(q * 100)}" for q in QUANTILES)


def summary_statistics(x: Tensor) -> Tensor:
    """(B, T, C) -> (B, len(SUMMARY_NAMES) * C): per channel, over time, the mean, the
    standard deviation, min, max, the least-squares slope times (T - 1) (the fitted line's
    total change, so its scale does not shrink with T) and the QUANTILES."""
    if x.dim() != 3:
        raise ValueError(f"summary_statistics expects (B, T, C), got shape {tuple(x.shape)}")
    t_len = x.shape[1]
    mean = x.mean(dim=1)
    std = x.std(dim=1, unbiased=False)
    t = torch.arange(t_len, dtype=x.dtype, device=x.device)
    t = t - t.mean()
    denom = (t * t).sum().clamp_min(torch.finfo(x.dtype).tiny)
    slope = torch.einsum("btc,t->bc", x - mean.unsqueeze(1), t) / denom * max(t_len - 1, 1)
    q = torch.quantile(x, torch.tensor(QUANTILES, dtype=x.dtype, device=x.device), dim=1)  # (Q, B, C)
    parts = [mean, std, x.amin(dim=1), x.amax(dim=1), slope, *q.unbind(0)]
    return torch.cat(parts, dim=1)


def summary_feature_dim(channels: int) -> int:
    return len(SUMMARY_NAMES) * channels


def rocket_dilations(length: int, n_dilations: int, kernel_length: int = 9) -> list[int]:
    """Exponentially spaced dilations 1 .. (T - 1) / (kernel_length - 1), as in MiniRocket (unique ints)."""
    top = max((length - 1) / (kernel_length - 1), 1.0)
    grid = torch.logspace(0, math.log2(top), n_dilations, base=2).floor().to(torch.long).tolist()
    return sorted({int(d) for d in grid})


class RandomConvolutionFeatures(nn.Module):
    """(B, T, C) -> (B, 2K) ROCKET-style features of K fixed random kernels (see the module doc).

    Kernels (K_d, C, 9) per dilation d, unit Frobenius norm, mean-centred; biases U(-1, 1).
    Feature order: for each dilation, for each of its kernels, (PPV, max). Drawn from
    ``torch.Generator().manual_seed(seed)`` at build time (not from the global RNG), so the
    same seed gives the same transform anywhere; stored as buffers (saved in state_dict).
    Zero ('same') padding keeps T outputs per kernel.
    """

    def __init__(self, channels: int, length: int, n_kernels: int = 500, n_dilations: int = 5,
                 kernel_length: int = 9, seed: int = 0) -> None:
        super().__init__()
        if n_kernels < 1:
            raise ValueError(f"n_kernels must be >= 1, got {n_kernels}")
        self.dilations = rocket_dilations(length, n_dilations, kernel_length)
        g = torch.Generator().manual_seed(seed)
        per = [n_kernels // len(self.dilations) + (i < n_kernels % len(self.dilations))
               for i in range(len(self.dilations))]
        self.kernel_length = kernel_length
        self.counts = per
        for i, k in enumerate(per):
            w = torch.randn(k, channels, kernel_length, generator=g)
            w = w - w.mean(dim=(1, 2), keepdim=True)
            w = w / w.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1)
            self.register_buffer(f"weight{i}", w)
            self.register_buffer(f"bias{i}", torch.rand(k, generator=g) * 2 - 1)
        self.out_dim = 2 * sum(per)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3:
            raise ValueError(f"RandomConvolutionFeatures expects (B, T, C), got shape {tuple(x.shape)}")
        h = x.transpose(1, 2)  # (B, C, T)
        feats = []
        for i, d in enumerate(self.dilations):
            if self.counts[i] == 0:
                continue
            w, b = getattr(self, f"weight{i}"), getattr(self, f"bias{i}")
            pad = (self.kernel_length - 1) * d // 2
            out = F.conv1d(h, w.to(h.dtype), b.to(h.dtype), padding=pad, dilation=d)  # (B, K_d, T')
            ppv = (out > 0).to(h.dtype).mean(dim=2)
            feats.append(torch.stack([ppv, out.amax(dim=2)], dim=2).flatten(1))
        return torch.cat(feats, dim=1)


class SummaryStatsEncoder(nn.Module):
    """(B, T, C) -> (B, out_dim): ``summary_statistics`` then a linear map (the only trainable part)."""

    def __init__(self, channels: int, out_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(summary_feature_dim(channels), out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.out(summary_statistics(x))


class RandomConvEncoder(nn.Module):
    """(B, T, C) -> (B, out_dim): ``RandomConvolutionFeatures`` then a linear map (the only trainable part)."""

    def __init__(self, channels: int, length: int, out_dim: int, n_kernels: int = 500, dropout: float = 0.1,
                 seed: int = 0) -> None:
        super().__init__()
        self.features = RandomConvolutionFeatures(channels, length, n_kernels=n_kernels, seed=seed)
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.features.out_dim, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.features(x))
