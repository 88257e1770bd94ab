"""Prediction on new data (issue 15, finding 5): datasets without labels, NaN at missing slots
accepted everywhere (make_batch too), NaN in a present entry an error naming sample and
modality or, by choice, missing; predict / predict_proba with class names; never NaN outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlmm.data import DatasetSpec, ModalitySpec, MultimodalDataset, TaskSpec, make_batch
from mlmm.methods.base import MissingModalityModel, Output
from mlmm.train import FittedModel, TrainConfig, Trainer, build_method

SPEC = DatasetSpec("toy", (ModalitySpec("a", "vector", (3,)), ModalitySpec("b", "vector", (2,))),
                   TaskSpec("classification", n_classes=2))


def _arrays(n=40, seed=0):
    g = np.random.default_rng(seed)
    y = g.integers(0, 2, n)
    return {"a": (g.normal(size=(n, 3)) + 2 * y[:, None]).astype(np.float32),
            "b": (g.normal(size=(n, 2)) - 2 * y[:, None]).astype(np.float32)}, y


@pytest.fixture(scope="module")
def model():
    x, y = _arrays()
    data = MultimodalDataset(SPEC, x, y, class_names=("no", "yes"))
    return Trainer(TrainConfig(max_epochs=5)).fit(build_method("masked-mean", SPEC, embed_dim=8),
                                                  data.subset(np.arange(30)), data.subset(np.arange(30, 40))).model


def test_dataset_without_labels():
    x, _ = _arrays(6)
    data = MultimodalDataset(SPEC, x, None)
    assert len(data) == 6 and data.target is None and not data.has_labels
    assert data.subset(np.array([0, 2])).target is None
    with pytest.raises(ValueError, match="has no labels"):
        _ = data.labels


def test_nan_at_missing_slots_is_accepted_everywhere_and_present_nan_is_named():
    x, _ = _arrays(5)
    x["b"][3] = np.nan
    mask = np.ones((5, 2), bool)
    mask[3, 1] = False
    data = MultimodalDataset(SPEC, x, None, mask)
    assert torch.equal(data.inputs["b"][3], torch.zeros(2))
    batch = make_batch(SPEC, {k: torch.as_tensor(v) for k, v in x.items()}, torch.as_tensor(mask))
    assert torch.equal(batch.inputs["b"][3], torch.zeros(2))  # make_batch zeroes masked slots too
    x["a"][1, 2] = np.inf
    with pytest.raises(ValueError, match=r"modality 'a': NaN or inf in a present entry \(sample 1\)"):
        MultimodalDataset(SPEC, x, None, mask)
    with pytest.raises(ValueError, match=r"modality 'a': NaN or inf in a present entry \(sample 1\)"):
        make_batch(SPEC, {k: torch.as_tensor(v) for k, v in x.items()}, torch.as_tensor(mask))
    lenient = MultimodalDataset(SPEC, x, None, mask, nonfinite="missing")
    assert not bool(lenient.mask[1, 0]) and bool(lenient.mask[1, 1])
    assert not bool(make_batch(SPEC, {k: torch.as_tensor(v) for k, v in x.items()}, torch.as_tensor(mask),
                               nonfinite="missing").mask[1, 0])


def test_predict_returns_class_names_and_probabilities(model):
    x, _ = _arrays(8, seed=1)
    data = MultimodalDataset(SPEC, x, None)
    labels, proba = model.predict(data), model.predict_proba(data)
    assert set(labels) <= {"no", "yes"} and proba.shape == (8, 2) and np.allclose(proba.sum(1), 1)
    assert list(labels) == [("no", "yes")[i] for i in proba.argmax(1)]
    # A dict of arrays: an absent modality or an all-NaN row is missing.
    only_a = model.predict({"a": x["a"]})
    x_nan = {"a": x["a"], "b": np.full((8, 2), np.nan, np.float32)}
    assert list(only_a) == list(model.predict(x_nan))
    with pytest.raises(ValueError, match="unknown modality 'c'"):
        model.predict({"c": x["a"]})


def test_present_nan_at_prediction_is_an_error_or_missing_by_choice(model):
    x, _ = _arrays(8, seed=1)
    x["b"][5, 0] = np.nan
    with pytest.raises(ValueError, match=r"modality 'b'.*sample 5"):
        model.predict(x)
    lenient = model.predict(x, nonfinite="missing")
    assert lenient[5] == model.predict({"a": x["a"][5:6]})[0]  # row 5 predicted from a alone


class _Broken(MissingModalityModel):
    from mlmm.methods.base import MethodInfo

    info = MethodInfo(category="representation-composition", fusion="late", recovers_missing=False,
                      needs_complete_train=False, paper="-", summary="returns NaN for sample 2")

    def __init__(self, spec):
        super().__init__(spec)
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, batch):
        logits = torch.zeros(batch.size, 2) + self.w
        logits[2 % max(batch.size, 1)] = float("nan")
        return Output(logits)


def test_nan_outputs_are_never_returned():
    from mlmm.data import Standardizer

    model = FittedModel(Standardizer(SPEC), _Broken(SPEC))
    x, _ = _arrays(4)
    with pytest.raises(ValueError, match=r"NaN/inf outputs for 1 sample\(s\) \(first: sample 2"):
        model.predict_logits(MultimodalDataset(SPEC, x, None))
