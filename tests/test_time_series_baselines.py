"""Mechanism tests of the time-series baselines: summary statistics, random convolutions,
summary-linear / rocket-linear and strongest-default."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mlmm.components.time_series_features import (
    SUMMARY_NAMES,
    RandomConvolutionFeatures,
    summary_statistics,
)
from mlmm.data.base import MultimodalDataset
from mlmm.data.preprocess import Standardizer
from mlmm.data.spec import DatasetSpec, ModalitySpec, TaskSpec
from mlmm.train.loop import TrainConfig, Trainer, build_method


def _stat(features: torch.Tensor, name: str, channels: int) -> torch.Tensor:
    i = SUMMARY_NAMES.index(name)
    return features[:, i * channels:(i + 1) * channels]


def test_summary_statistics_of_a_line_and_a_constant() -> None:
    t = torch.arange(50, dtype=torch.float64)
    # channel 0: the line 3 + 0.5 t; channel 1: the constant -2
    x = torch.stack([3 + 0.5 * t, torch.full_like(t, -2.0)], dim=1).unsqueeze(0)  # (1, 50, 2)
    f = summary_statistics(x)
    assert f.shape == (1, len(SUMMARY_NAMES) * 2)
    torch.testing.assert_close(_stat(f, "mean", 2)[0], torch.tensor([3 + 0.5 * 24.5, -2.0], dtype=torch.float64))
    # slope is the fitted line's total change over the series: 0.5 per step * 49 steps
    torch.testing.assert_close(_stat(f, "slope", 2)[0], torch.tensor([24.5, 0.0], dtype=torch.float64))
    torch.testing.assert_close(_stat(f, "min", 2)[0], torch.tensor([3.0, -2.0], dtype=torch.float64))
    torch.testing.assert_close(_stat(f, "max", 2)[0], torch.tensor([3 + 0.5 * 49, -2.0], dtype=torch.float64))
    assert float(_stat(f, "std", 2)[0, 1]) == 0.0
    torch.testing.assert_close(_stat(f, "q50", 2)[0, 0], torch.tensor(3 + 0.5 * 24.5, dtype=torch.float64))


def test_summary_statistics_ignore_order_except_the_slope() -> None:
    x = torch.randn(4, 30, 3, generator=torch.Generator().manual_seed(0))
    f, g = summary_statistics(x), summary_statistics(x.flip(1))
    slope = SUMMARY_NAMES.index("slope")
    others = [i for i in range(len(SUMMARY_NAMES)) if i != slope]

    def pick(v, idx):
        return torch.cat([v[:, i * 3:(i + 1) * 3] for i in idx], dim=1)

    torch.testing.assert_close(pick(f, others), pick(g, others))
    torch.testing.assert_close(pick(g, [slope]), -pick(f, [slope]))


def _sines(n: int, length: int = 64, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Class 0: sine of 5 cycles, class 1: 13 cycles; random phase and amplitude, so that the
    value distribution (hence every summary statistic but the slope) barely tells them apart."""
    g = np.random.default_rng(seed)
    y = np.arange(n) % 2
    t = np.arange(length) / length
    cycles = np.where(y == 0, 5.0, 13.0)[:, None]
    x = g.uniform(0.5, 2.0, (n, 1)) * np.sin(2 * np.pi * cycles * t + g.uniform(0, 2 * np.pi, (n, 1)))
    return torch.tensor(x[:, :, None], dtype=torch.float32), y


def _cv_accuracy(features: torch.Tensor, y: np.ndarray) -> float:
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return float(cross_val_score(clf, features.numpy(), y, cv=4).mean())


def test_random_convolutions_see_frequency_that_summary_statistics_miss() -> None:
    x, y = _sines(120)
    rocket = RandomConvolutionFeatures(channels=1, length=64, n_kernels=100, seed=0)
    assert _cv_accuracy(rocket(x), y) >= 0.95
    assert _cv_accuracy(summary_statistics(x), y) <= 0.7


def test_random_convolutions_are_fixed_by_their_seed_and_use_their_biases() -> None:
    x = torch.randn(3, 40, 2, generator=torch.Generator().manual_seed(1))
    a = RandomConvolutionFeatures(2, 40, n_kernels=20, seed=5)
    b = RandomConvolutionFeatures(2, 40, n_kernels=20, seed=5)
    c = RandomConvolutionFeatures(2, 40, n_kernels=20, seed=6)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    assert not torch.allclose(a(x), c(x))
    assert a(x).shape == (3, 40)
    # On an all-zero series every convolution output is the kernel's bias: PPV = [bias > 0], max = bias.
    zero = a(torch.zeros(1, 40, 2)).view(-1, 2)
    bias = torch.cat([getattr(a, f"bias{i}") for i in range(len(a.dilations))])
    torch.testing.assert_close(zero[:, 0], (bias > 0).float())
    torch.testing.assert_close(zero[:, 1], bias)


def _sine_dataset(n: int = 96, seed: int = 0) -> MultimodalDataset:
    x, y = _sines(n, seed=seed)
    noise = torch.randn(n, 64, 1, generator=torch.Generator().manual_seed(seed + 1))
    spec = DatasetSpec("sines", (ModalitySpec("wave", "sequence", (64, 1)), ModalitySpec("noise", "sequence", (64, 1))),
                       TaskSpec("classification", n_classes=2))
    return MultimodalDataset(spec, {"wave": x.numpy(), "noise": noise.numpy()}, y)


@pytest.mark.parametrize("name", ["summary-linear", "rocket-linear"])
def test_prepare_standardises_features_on_the_rows_holding_the_modality(name: str) -> None:
    data = _sine_dataset()
    mask = torch.ones(len(data), 2, dtype=torch.bool)
    mask[::3, 0] = False  # a third of the rows lack "wave"
    batch = data.with_mask(mask).as_batch()
    method = build_method(name, data.spec, 0)
    method.prepare(batch, Standardizer(data.spec))
    feats = method.features(batch)  # (B, F_wave + F_noise + 2)
    width = method.feat_mean0.numel()
    wave = feats[mask[:, 0], :width]
    torch.testing.assert_close(wave.mean(dim=0), torch.zeros(width), atol=1e-4, rtol=0)
    assert bool((feats[~mask[:, 0], :width] == 0).all())  # missing: the training mean, i.e. 0
    assert torch.equal(feats[:, -2:], mask.float())


def test_strongest_default_keeps_the_candidate_that_wins_on_validation() -> None:
    data = _sine_dataset(96)
    train, val = data.subset(np.arange(64)), data.subset(np.arange(64, 96))
    method = build_method("strongest-default", data.spec, 0, candidates=("summary-linear", "rocket-linear"))
    fit = Trainer(TrainConfig(max_epochs=15, patience=15, modality_dropout=0.0)).fit(method, train, val, seed=0)
    scores = method.scores
    assert scores["rocket-linear"]["accuracy"] > scores["summary-linear"]["accuracy"]
    assert method.candidate_names[int(method.chosen)] == "rocket-linear"
    # The choice is a buffer: a fresh instance loaded from the state predicts with the same candidate.
    fresh = build_method("strongest-default", data.spec, 1, candidates=("summary-linear", "rocket-linear"))
    fresh.load_state_dict(method.state_dict())
    fresh.eval()
    batch = fit.model.standardizer(val.as_batch())
    with torch.no_grad():
        out = fresh(batch)
        torch.testing.assert_close(out.logits, fresh.candidates[1](batch).logits)
    assert bool((out.aux["chosen"] == 1).all())


def test_strongest_default_rejects_bad_candidates() -> None:
    spec = _sine_dataset(8).spec
    with pytest.raises(ValueError, match="its own candidate"):
        build_method("strongest-default", spec, 0, candidates=("strongest-default",))
    with pytest.raises(KeyError):
        build_method("strongest-default", spec, 0, candidates=("no-such-method",))


@pytest.mark.parametrize("name", ["summary-linear", "rocket-linear"])
def test_fixed_feature_methods_refuse_images_by_name(name: str) -> None:
    spec = DatasetSpec("pics", (ModalitySpec("pic", "image", (1, 4, 4)),), TaskSpec("classification", n_classes=2))
    with pytest.raises(ValueError, match="image modalities.*'pic'"):
        build_method(name, spec, 0)


def test_strongest_default_keeps_only_default_candidates_that_take_the_data() -> None:
    spec = DatasetSpec("mixed", (ModalitySpec("pic", "image", (1, 4, 4)), ModalitySpec("s", "sequence", (8, 2))),
                       TaskSpec("classification", n_classes=2))
    assert build_method("strongest-default", spec, 0).candidate_names == ("masked-mean",)
    with pytest.raises(ValueError, match="summary-linear does not take image"):
        build_method("strongest-default", spec, 0, candidates=("summary-linear", "masked-mean"))
    assert build_method("strongest-default", _sine_dataset(8).spec, 0).candidate_names == (
        "summary-linear", "rocket-linear", "masked-mean")


def test_time_series_encoders_map_sequences_to_embeddings_with_only_a_linear_map_trained() -> None:
    from mlmm.components.time_series_features import RandomConvEncoder, SummaryStatsEncoder

    x = torch.randn(5, 32, 3, generator=torch.Generator().manual_seed(0))
    for enc in (SummaryStatsEncoder(3, 16, dropout=0.0), RandomConvEncoder(3, 32, 16, n_kernels=40, dropout=0.0)):
        enc.eval()
        out = enc(x)
        assert out.shape == (5, 16)
        trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
        assert trainable == {"out.1.weight", "out.1.bias"}  # the features themselves are fixed
        # each sample on its own: no batch statistics
        torch.testing.assert_close(enc(x[2:3]), out[2:3])
