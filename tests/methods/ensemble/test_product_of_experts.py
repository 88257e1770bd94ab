"""product-of-experts: reliability-weighted late fusion (issue 15)."""

from __future__ import annotations

import pytest
import torch

from mlmm import TrainConfig, Trainer, build_method
from mlmm.data.datasets import make_synthetic


def test_a_flat_expert_abstains_and_missing_slots_are_ignored():
    data = make_synthetic(n_samples=30, n_modalities=2, dims=4)
    method = build_method("product-of-experts", data.spec).eval()
    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]]])  # member 2 is flat: no opinion
    both = method.fuse_embeddings(logits, torch.tensor([[True, True]])).logits
    first = method.fuse_embeddings(logits, torch.tensor([[True, False]])).logits
    assert torch.allclose(both.softmax(-1), first.softmax(-1))
    poisoned = logits.clone()
    poisoned[0, 1] = float("nan")
    assert torch.equal(method.fuse_embeddings(poisoned, torch.tensor([[True, False]])).logits, first)
    assert torch.allclose(method.reliability(), torch.ones(2))  # starts as the plain product


def test_learns_to_trust_the_informative_modality_and_does_not_fall_below_it():
    data = make_synthetic(n_samples=300, n_modalities=2, dims=6, informativeness=(1.0, 0.1), noise=0.8, seed=1)
    train, test = data.split("train"), data.split("test")
    fit = Trainer(TrainConfig(max_epochs=30, patience=30, modality_dropout=0.0)).fit(
        build_method("product-of-experts", data.spec, seed=0), train, test, seed=0)
    r = fit.model.method.reliability()
    assert r[0] > r[1]
    logits = fit.model.predict_logits(test)
    alone = fit.model.predict_logits(test.with_mask(test.mask & torch.tensor([True, False])))
    acc = lambda x: float((x.argmax(1) == test.target).float().mean())  # noqa: E731
    assert acc(logits) >= acc(alone) - 1.5 / len(test)  # at most one sample of the 75 worse


def test_refuses_regression():
    data = make_synthetic(n_samples=30, n_modalities=2, dims=4)
    from mlmm.data import DatasetSpec, TaskSpec

    spec = DatasetSpec("r", data.spec.modalities, TaskSpec("regression"))
    with pytest.raises(ValueError, match="product-of-experts does not take a regression task"):
        build_method("product-of-experts", spec)
