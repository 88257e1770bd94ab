"""Uncertainty under missingness: entropy, error-detection AUROC, calibration per subset and
per number of present modalities, a method's own Output.aux["uncertainty"], the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mlmm.cli import main
from mlmm.data.datasets.synthetic import make_synthetic
from mlmm.data.preprocess import Standardizer
from mlmm.diagnostics.uncertainty import error_auroc, normalised_entropy, subset_uncertainty, uncertainty_report
from mlmm.methods.base import MethodInfo, MissingModalityModel, Output
from mlmm.train.loop import FittedModel


def test_normalised_entropy_bounds() -> None:
    logits = torch.tensor([[0.0, 0.0, 0.0], [100.0, 0.0, 0.0]])
    np.testing.assert_allclose(normalised_entropy(logits), [1.0, 0.0], atol=1e-9)


def test_error_auroc_known_answers() -> None:
    wrong = np.array([0, 0, 1, 1], dtype=bool)
    assert error_auroc(np.array([0.1, 0.2, 0.8, 0.9]), wrong) == 1.0
    assert error_auroc(np.array([0.9, 0.8, 0.1, 0.2]), wrong) == 0.0
    assert np.isnan(error_auroc(np.array([0.1, 0.2]), np.array([False, False])))


class EvidenceToy(MissingModalityModel):
    """Class evidence = sum over present modalities of the first feature of each (a
    "vote" for class 1 vs 0): fewer modalities, less evidence, higher entropy. Outputs its
    own uncertainty 1 / (1 + |evidence|) in aux. Not registered."""

    info = MethodInfo(category="dedicated", fusion="late", recovers_missing=False, needs_complete_train=False,
                      paper="test toy", summary="evidence sum")

    def forward(self, batch) -> Output:
        e = torch.zeros(batch.size)
        for j, x in enumerate(batch.inputs.values()):
            e = e + torch.where(batch.mask[:, j], x[:, 0], torch.zeros(()))
        logits = torch.stack([-e, e], dim=1)
        return Output(logits, aux={"uncertainty": 1.0 / (1.0 + e.abs())})


@pytest.fixture(scope="module")
def toy():
    data = make_synthetic(n_samples=300, n_classes=2, n_modalities=3, dims=2, seed=0)
    y = data.labels
    # Rebuild first features so each modality votes for the true class with noise.
    rng = np.random.default_rng(0)
    inputs = {}
    for name in data.spec.modality_names:
        x = data.as_batch().inputs[name].numpy().copy()
        x[:, 0] = (2 * y - 1) * 0.7 + rng.normal(size=len(y))
        inputs[name] = x
    from mlmm.data.base import MultimodalDataset

    data = MultimodalDataset(data.spec, inputs, y)
    model = FittedModel(Standardizer(data.spec).fit(data.as_batch()), EvidenceToy(data.spec))
    return model, data


def test_report_has_calibration_auroc_and_uncertainty_growing_as_modalities_go_missing(toy) -> None:
    model, data = toy
    mask = torch.ones(len(data), 3, dtype=torch.bool)
    mask[: len(data) // 3, 1:] = False  # one third keep one modality
    mask[len(data) // 3: 2 * len(data) // 3, 2] = False  # one third keep two
    r = uncertainty_report(model, data.with_mask(mask))
    assert set(r["auroc"]) == {"entropy", "method"}
    assert r["auroc"]["entropy"] > 0.6 and r["auroc"]["method"] > 0.6  # uncertain samples err more
    assert 0.0 <= r["ece"] <= 1.0 and sum(r["reliability"]["count"]) == len(data)
    by = r["by_n_present"]
    assert set(by) == {1, 2, 3} and by[1]["n"] == 100
    assert by[1]["mean_uncertainty"]["entropy"] > by[2]["mean_uncertainty"]["entropy"] \
        > by[3]["mean_uncertainty"]["entropy"]
    assert by[1]["accuracy"] < by[3]["accuracy"]


def test_subset_table_covers_every_subset_and_sizes(toy) -> None:
    model, data = toy
    s = subset_uncertainty(model, data)
    assert len(s["subsets"]) == 7 and s["subsets"]["m0+m1+m2"]["size"] == 3
    assert s["by_size"][1]["mean_uncertainty"]["entropy"] > s["by_size"][3]["mean_uncertainty"]["entropy"]
    assert all(0.0 <= v["ece"] <= 1.0 for v in s["subsets"].values())


def test_cli_uncertainty_json(capsys) -> None:
    rc = main(["uncertainty", "--dataset", "basicmotions", "--method", "masked-mean", "--rates", "0,0.5",
               "--epochs", "1", "--param", "embed_dim=8", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["rates"]) == {"0.0", "0.5"}
    assert "entropy" in out["rates"]["0.5"]["auroc"]
    assert set(out["subsets"]) == {"accelerometer", "gyroscope", "accelerometer+gyroscope"}


def test_regression_task_is_refused_by_name() -> None:
    from mlmm.data.base import MultimodalDataset
    from mlmm.data.spec import DatasetSpec, ModalitySpec, TaskSpec

    spec = DatasetSpec("reg", (ModalitySpec("a", "vector", (2,)),), TaskSpec("regression"))
    data = MultimodalDataset(spec, {"a": np.zeros((4, 2), np.float32)}, np.zeros((4, 1), np.float32))
    model = FittedModel(Standardizer(spec).fit(data.as_batch()), EvidenceToy(spec))
    with pytest.raises(ValueError, match="classification"):
        uncertainty_report(model, data)
