"""A modality absent from every training row is treated as missing at validation and
prediction (warned), unless the user opts in. Found: masked-mean's accuracy with a+b fell
below a alone (its b encoder is untrained, its standardiser has no statistics for b)."""

from __future__ import annotations

import warnings

import pytest
import torch

from mlmm.data.datasets import make_synthetic
from mlmm.data.splits import make_splits
from mlmm.metrics.evaluate import evaluate, evaluate_subsets
from mlmm.train.loop import FittedModel, TrainConfig, Trainer, UnseenModalityWarning, build_method


def _without(part, j):
    mask = part.mask.clone()
    mask[:, j] = False
    return part.with_mask(mask)


@pytest.fixture(scope="module")
def fits():
    data = make_synthetic(n_samples=240, n_classes=3, n_modalities=2, dims=6, noise=1.0, seed=1)
    train, val, test = make_splits(data, "fixed", seed=0)
    train, val = _without(train, 1), _without(val, 1)  # m1 never observed before test time
    out = {}
    for opt_in in (False, True):
        method = build_method("masked-mean", data.spec, seed=0, embed_dim=16, hidden=16)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnseenModalityWarning)
            out[opt_in] = Trainer(TrainConfig(max_epochs=15, lr=1e-2), use_unseen_modalities=opt_in).fit(
                method, train, val, seed=0).model
    return out, test


def test_unseen_modality_is_hidden_and_warned(fits):
    models, test = fits
    model = models[False]
    assert model.seen_modalities.tolist() == [True, False]
    with pytest.warns(UnseenModalityWarning, match="modality 'm1' never present in the training split"):
        subsets = evaluate_subsets(model, test)
    # adding the never-trained modality cannot lower accuracy: it is not used at all
    assert subsets["m0+m1"]["accuracy"] >= subsets["m0"]["accuracy"]
    assert subsets["m0+m1"]["accuracy"] == subsets["m0"]["accuracy"]
    with pytest.warns(UnseenModalityWarning):
        logits = model.predict_logits(test)
    assert torch.equal(logits, model.predict_logits(_without(test, 1)))
    with pytest.warns(UnseenModalityWarning):
        assert evaluate(model, test)["accuracy"] == subsets["m0"]["accuracy"]


def test_opting_in_uses_the_unseen_modality(fits):
    models, test = fits
    model = models[True]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnseenModalityWarning)  # no warning when opted in
        logits = model.predict_logits(test)
    assert not torch.equal(logits, model.predict_logits(_without(test, 1)))


def test_state_saved_without_seen_modalities_still_loads(fits):
    models, _ = fits
    state = {k: v for k, v in models[False].state_dict().items() if k != "seen_modalities"}
    fresh = FittedModel(models[False].standardizer, build_method("masked-mean", models[False].spec, seed=3,
                                                                 embed_dim=16, hidden=16))
    fresh.load_state_dict(state)
    assert bool(fresh.seen_modalities.all())  # older state: every modality counts as seen
