"""Task metrics, seed summaries and evaluation over modality subsets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mlmm.data.base import MultimodalDataset
from mlmm.data.datasets import make_synthetic
from mlmm.data.preprocess import Standardizer
from mlmm.data.spec import DatasetSpec, ModalitySpec, TaskSpec
from mlmm.data.splits import make_splits
from mlmm.methods.base import MethodInfo, MissingModalityModel, Output
from mlmm.metrics.evaluate import evaluate, evaluate_subsets, modality_subsets
from mlmm.metrics.task import classification_metrics, summarise_seeds
from mlmm.train.loop import FittedModel, TrainConfig, Trainer, build_method


def _logits_for(pred: list[int], n_classes: int) -> np.ndarray:
    return np.eye(n_classes)[pred] * 2.0 - 1.0


# --- classification_metrics --------------------------------------------------


def test_classification_metrics_hand_computed():
    target = np.array([0, 0, 1, 1, 2, 2])
    pred = [0, 0, 1, 0, 1, 1]  # class 2 is never predicted
    # class 0: P=2/3, R=1 -> F1=0.8; class 1: P=1/3, R=1/2 -> F1=0.4; class 2: F1=0.
    out = classification_metrics(_logits_for(pred, 3), target, 3)
    assert out["accuracy"] == pytest.approx(0.5)
    assert out["macro_f1"] == pytest.approx((0.8 + 0.4 + 0.0) / 3)
    assert set(out) == {"accuracy", "macro_f1"}
    assert all(type(v) is float for v in out.values())


def test_classification_metrics_perfect_and_argmax():
    target = np.array([2, 0, 1, 2])
    logits = np.array([[0.1, 0.2, 0.9], [3.0, -1.0, 0.0], [0.0, 0.5, 0.4], [-5.0, -4.0, -3.0]])
    out = classification_metrics(logits, target, 3)
    assert out == {"accuracy": 1.0, "macro_f1": 1.0}


def test_classification_metrics_class_absent_from_predictions_and_targets_counts_zero():
    target = np.array([0, 1, 0, 1])
    out = classification_metrics(_logits_for([0, 1, 0, 1], 3), target, 3)
    assert out["accuracy"] == 1.0
    # Averaged over all n_classes labels: the unseen class 2 contributes 0.
    assert out["macro_f1"] == pytest.approx(2 / 3)


# --- summarise_seeds ---------------------------------------------------------


def test_summarise_seeds_mean_std_ci():
    values = [0.5, 0.7, 0.9]
    out = summarise_seeds(values)
    assert out["mean"] == pytest.approx(0.7)
    assert out["std"] == pytest.approx(0.2)  # sample std, ddof=1
    t_975_2 = 4.302652729911275  # Student t quantile, 2 degrees of freedom
    assert out["ci95"] == pytest.approx(t_975_2 * 0.2 / math.sqrt(3))
    assert out["per_seed"] == values


def test_summarise_seeds_two_values():
    out = summarise_seeds([1.0, 2.0])
    assert out["std"] == pytest.approx(math.sqrt(0.5))
    assert out["ci95"] == pytest.approx(12.706204736174698 * math.sqrt(0.5) / math.sqrt(2))


def test_summarise_seeds_single_seed():
    out = summarise_seeds([0.83])
    assert out == {"mean": 0.83, "std": 0.0, "ci95": 0.0, "per_seed": [0.83]}


# --- evaluate_subsets --------------------------------------------------------


def test_modality_subsets_order_and_count():
    assert modality_subsets(3) == [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]
    for m in range(1, 6):
        subsets = modality_subsets(m)
        assert len(subsets) == 2 ** m - 1 == len(set(subsets))


class _Spy(MissingModalityModel):
    """Records what it is shown; logits are a fixed function of the inputs."""

    info = MethodInfo(category="dedicated", fusion="late", recovers_missing=False, needs_complete_train=False,
                      paper="test", summary="test spy")

    def __init__(self, spec: DatasetSpec) -> None:
        super().__init__(spec)
        self.seen: list[tuple[torch.Tensor, dict[str, torch.Tensor]]] = []

    def forward(self, batch):
        self.seen.append((batch.mask.clone(), {k: v.clone() for k, v in batch.inputs.items()}))
        n = batch.size
        return Output(torch.zeros(n, self.spec.task.n_classes))


def _spy_data() -> MultimodalDataset:
    spec = DatasetSpec("spy", tuple(ModalitySpec(n, "vector", (2,)) for n in ("x", "y", "z")), TaskSpec(n_classes=2))
    rng = np.random.default_rng(0)
    n = 10
    mask = np.ones((n, 3), dtype=bool)
    mask[0] = [True, False, False]
    mask[1] = [False, True, False]
    mask[2] = [False, False, True]
    mask[3] = [False, True, True]
    inputs = {k: (rng.standard_normal((n, 2)) + 5).astype(np.float32) for k in ("x", "y", "z")}
    return MultimodalDataset(spec, inputs, np.arange(n) % 2, mask)


def test_evaluate_subsets_names_counts_and_hiding():
    data = _spy_data()
    spy = _Spy(data.spec)
    model = FittedModel(Standardizer(data.spec), spy).eval()
    results = evaluate_subsets(model, data)
    assert list(results) == ["x", "y", "z", "x+y", "x+z", "y+z", "x+y+z"]
    natural = data.mask
    # n = samples with at least one modality of the subset in their natural mask.
    for name, subset in zip(results, modality_subsets(3)):
        assert results[name]["n"] == int(natural[:, list(subset)].any(dim=1).sum()), name
        assert set(results[name]) == {"accuracy", "macro_f1", "n"}
    assert results["x"]["n"] == 7 and results["y+z"]["n"] == 9 and results["x+y+z"]["n"] == 10
    # The model saw exactly the subset (intersected with the natural mask), others zeroed.
    assert len(spy.seen) == 7
    for (mask, inputs), subset in zip(spy.seen, modality_subsets(3)):
        outside = [j for j in range(3) if j not in subset]
        assert not mask[:, outside].any()
        assert mask.any(dim=1).all()
        for j, name in enumerate(("x", "y", "z")):
            assert torch.all(inputs[name][~mask[:, j]] == 0)
            assert torch.all(inputs[name][mask[:, j]] != 0)


def test_evaluate_subsets_skips_subset_nobody_has():
    data = _spy_data()
    mask = data.mask.clone()
    mask[:, 2] = False
    only_xy = data.with_mask(mask)  # sample 2 (z only) is left with nothing
    model = FittedModel(Standardizer(data.spec), _Spy(data.spec)).eval()
    results = evaluate_subsets(model, only_xy)
    assert "z" not in results
    assert results["y+z"]["n"] == results["y"]["n"]
    # A sample left with no modality is not evaluated under any subset.
    assert results["x+y+z"]["n"] == len(only_xy) - 1 == 9


def test_evaluate_subsets_really_hides_uninformative_modalities():
    # Only m0 carries the label; m1, m2 are pure noise.
    data = make_synthetic(n_samples=240, n_classes=3, n_modalities=3, dims=8, informativeness=[3.0, 0.0, 0.0],
                          noise=0.5, seed=0)
    train, val, test = make_splits(data, "fixed", seed=0)
    method = build_method("masked-mean", data.spec, seed=0, embed_dim=16, hidden=32)
    config = TrainConfig(max_epochs=15, batch_size=32, lr=1e-2, modality_dropout=0.5)
    fit = Trainer(config).fit(method, train, val, seed=0)
    results = evaluate_subsets(fit.model, test)
    assert len(results) == 7
    assert all(r["n"] == len(test) for r in results.values())
    chance = 1 / 3
    for name in ("m0", "m0+m1", "m0+m2", "m0+m1+m2"):
        assert results[name]["accuracy"] > 0.8, (name, results[name])
    for name in ("m1", "m2", "m1+m2"):
        assert results[name]["accuracy"] < chance + 0.2, (name, results[name])
    # evaluate() on the full test split equals the all-modalities subset.
    assert evaluate(fit.model, test)["accuracy"] == results["m0+m1+m2"]["accuracy"]
