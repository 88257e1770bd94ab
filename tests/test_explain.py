"""Modality Shapley values (mlmm.explain): closed-form games, a toy model with known
contributions, the efficiency axiom on a trained method, the sampled estimate, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mlmm.cli import main
from mlmm.data.datasets.synthetic import make_synthetic
from mlmm.data.preprocess import Standardizer
from mlmm.explain import (
    harsanyi_dividends,
    interaction_index,
    modality_contributions,
    permutation_shapley,
    shapley_values,
)
from mlmm.methods.base import MethodInfo, MissingModalityModel, Output
from mlmm.train.loop import FittedModel, TrainConfig, Trainer, build_method

W = np.array([0.1, 0.2, 0.15])
C0 = 0.3


def _table(fn, m: int) -> np.ndarray:
    return np.array([[fn({j for j in range(m) if s >> j & 1}) for s in range(2 ** m)]])


def test_additive_game_gives_its_weights_and_no_interaction() -> None:
    v = _table(lambda S: C0 + sum(W[j] for j in S), 3)
    np.testing.assert_allclose(shapley_values(v)[0], W)
    np.testing.assert_allclose(interaction_index(v)[0], 0.0, atol=1e-12)
    d = harsanyi_dividends(v)[0]
    np.testing.assert_allclose(d[[1, 2, 4]], W)
    np.testing.assert_allclose(d[[3, 5, 6, 7]], 0.0, atol=1e-12)


def test_unanimity_game_splits_evenly_and_is_a_pure_pair_interaction() -> None:
    # v(S) = 1 iff modalities 0 and 1 are both in S; modality 2 is a null player.
    v = _table(lambda S: float({0, 1} <= S), 3)
    np.testing.assert_allclose(shapley_values(v)[0], [0.5, 0.5, 0.0])
    assert interaction_index(v)[0, 0, 1] == pytest.approx(1.0)
    assert interaction_index(v)[0, 0, 2] == pytest.approx(0.0)
    d = harsanyi_dividends(v)[0]
    assert d[3] == pytest.approx(1.0) and np.abs(np.delete(d, 3)).max() < 1e-12


def test_efficiency_on_random_games() -> None:
    v = np.random.default_rng(0).random((5, 2 ** 4))
    phi = shapley_values(v)
    np.testing.assert_allclose(phi.sum(1), v[:, -1] - v[:, 0])
    np.testing.assert_allclose(harsanyi_dividends(v)[:, 1:].sum(1), v[:, -1] - v[:, 0])


class AdditiveToy(MissingModalityModel):
    """p(class 1 | present set A) = C0 + Σ_{j in A} W_j; never reads inputs (not registered)."""

    info = MethodInfo(category="modality-composition", fusion="late", recovers_missing=False,
                      needs_complete_train=False, paper="test toy", summary="additive probability")

    def forward(self, batch) -> Output:
        p = C0 + batch.mask.to(torch.float64) @ torch.as_tensor(W)
        logit = torch.log(p / (1 - p)).float()
        return Output(torch.stack([torch.zeros_like(logit), logit], dim=1))


def _toy_fitted():
    data = make_synthetic(n_samples=24, n_classes=2, n_modalities=3, dims=2, seed=0)
    mask = torch.ones(len(data), 3, dtype=torch.bool)
    mask[::3, 2] = False  # some samples lack modality 2: a null player for them
    data = data.with_mask(mask)
    model = FittedModel(Standardizer(data.spec).fit(data.as_batch()), AdditiveToy(data.spec))
    return model, data, mask


def test_toy_model_contributions_are_its_weights_and_zero_for_missing_modalities() -> None:
    model, data, mask = _toy_fitted()
    c = modality_contributions(model, data)  # predicted class is 1 (p >= 0.6) for every sample
    np.testing.assert_allclose(c.phi, mask.numpy() * W, atol=1e-6)
    np.testing.assert_allclose(c.v_empty, C0, atol=1e-6)
    np.testing.assert_allclose(c.pairwise, 0.0, atol=1e-6)
    s = c.summary()
    assert s["modalities"]["m1"]["mean_phi"] == pytest.approx(W[1], abs=1e-6)
    assert s["efficiency_max_abs_gap"] < 1e-9


def test_sampled_estimate_is_exact_for_an_additive_model_and_close_otherwise() -> None:
    model, data, mask = _toy_fitted()
    c = modality_contributions(model, data, max_exact=2, n_permutations=8, seed=1)
    assert not c.exact and c.se is not None
    np.testing.assert_allclose(c.phi, mask.numpy() * W, atol=1e-6)  # every permutation gives the same marginals
    np.testing.assert_allclose(c.se, 0.0, atol=1e-6)
    # A non-additive game: the estimate is within a few standard errors of the exact values.
    rng = np.random.default_rng(0)
    v = rng.random((50, 2 ** 4))

    def value_of_masks(masks: np.ndarray) -> np.ndarray:
        idx = (masks * (1 << np.arange(4))).sum(1)
        return v[np.arange(50), idx]

    phi, se, ends = permutation_shapley(value_of_masks, 50, 4, 200, rng)
    exact = shapley_values(v)
    np.testing.assert_allclose(phi.sum(1), v[:, -1] - v[:, 0], atol=1e-12)  # efficiency holds per permutation
    assert np.mean(np.abs(phi - exact) <= 3 * se + 1e-12) > 0.95


def test_efficiency_holds_for_a_trained_method_on_real_subsets() -> None:
    data = make_synthetic(n_samples=90, n_classes=3, n_modalities=3, dims=4, seed=0)
    train, test = data.split("train"), data.split("test")
    method = build_method("masked-mean", data.spec, seed=0, embed_dim=16)
    model = Trainer(TrainConfig(max_epochs=2, patience=1)).fit(method, train, train, seed=0).model
    for target in ("predicted", "true"):
        c = modality_contributions(model, test, target=target)
        np.testing.assert_allclose(c.phi.sum(1), c.v_full - c.v_empty, atol=1e-9)
        assert np.isfinite(c.v_empty).all()


def test_bad_target_is_named() -> None:
    model, data, _ = _toy_fitted()
    with pytest.raises(ValueError, match="target must be one of"):
        modality_contributions(model, data, target="label")


def test_cli_explain_json(capsys) -> None:
    rc = main(["explain", "--dataset", "basicmotions", "--method", "masked-mean", "--epochs", "1", "--json",
               "--param", "embed_dim=8"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["modalities"]) == {"accelerometer", "gyroscope"}
    seed0 = out["per_seed"][0]
    assert seed0["exact"] and seed0["efficiency_max_abs_gap"] < 1e-6
    assert out["top_pairwise"][0]["pair"] == "accelerometer+gyroscope"


def test_cli_explain_rejects_unknown_method(capsys) -> None:
    assert main(["explain", "--dataset", "handwritten", "--method", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
