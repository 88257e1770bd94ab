"""Recover-or-not diagnostics: fidelity of recovered modalities, reliance on them
(plain_fill), the verdict rule, the hooks of retrieval-fill and embedding-retrieval, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mlmm.cli import main
from mlmm.data.base import MultimodalDataset
from mlmm.data.datasets.synthetic import make_synthetic
from mlmm.data.preprocess import Standardizer
from mlmm.data.spec import DatasetSpec, ModalitySpec, TaskSpec
from mlmm.diagnostics.recovery import recovering_methods, recovery_fidelity, recovery_reliance, verdict
from mlmm.methods.base import MethodInfo, MissingModalityModel, Output
from mlmm.train.loop import FittedModel, TrainConfig, Trainer, build_method


class CopyRecovery(MissingModalityModel):
    """Two identical modalities; a missing one is recovered as a copy of the other (perfect
    recovery), and the prediction reads only the (recovered) second modality: argmax of its
    two features. Not registered."""

    info = MethodInfo(category="modality-composition", fusion="early", recovers_missing=True,
                      needs_complete_train=False, paper="test toy", summary="copy", recovery_space="input")

    def recover(self, batch):
        a, b = batch.inputs["a"], batch.inputs["b"]
        ma, mb = batch.mask[:, :1], batch.mask[:, 1:]
        zero = torch.zeros((), dtype=a.dtype)
        fa = torch.where(ma, a, torch.where(mb, b, zero))
        fb = torch.where(mb, b, torch.where(ma, a, zero))
        if self.plain_fill:  # the training mean is 0 in standardised space
            fa, fb = torch.where(ma, a, zero), torch.where(mb, b, zero)
        return {"a": fa, "b": fb}

    def forward(self, batch) -> Output:
        return Output(self.recover(batch)["b"])


def _copy_data(n: int = 200) -> tuple[FittedModel, MultimodalDataset, MultimodalDataset]:
    spec = DatasetSpec("copies", (ModalitySpec("a", "vector", (2,)), ModalitySpec("b", "vector", (2,))),
                       TaskSpec("classification", n_classes=2))
    x = np.random.default_rng(0).normal(size=(n, 2)).astype(np.float32)
    x -= x.mean(0)
    x /= x.std(0)
    y = x.argmax(1)
    full = MultimodalDataset(spec, {"a": x, "b": x.copy()}, y)
    mask = torch.ones(n, 2, dtype=torch.bool)
    mask[::2, 1] = False  # b held out on half the samples, a on a quarter
    mask[1::4, 0] = False
    model = FittedModel(Standardizer(spec).fit(full.as_batch()), CopyRecovery(spec))
    return model, full, full.with_mask(mask)


def test_perfect_recovery_has_cosine_one_and_zero_error() -> None:
    model, full, masked = _copy_data()
    fid = recovery_fidelity(model, full, masked)
    assert fid["space"] == "input" and fid["n_slots"] == 150
    assert fid["cosine"] == pytest.approx(1.0, abs=1e-5)
    assert fid["mse"] == pytest.approx(0.0, abs=1e-6)
    assert fid["mse_plain"] > 0.5  # the plain fill (0) is far from the truth
    assert fid["per_modality"]["b"]["n_slots"] == 100


def test_plain_fill_changes_predictions_of_a_method_that_relies_on_recovery() -> None:
    model, _, masked = _copy_data()
    rel = recovery_reliance(model, masked)
    assert model.method.plain_fill is False  # restored
    assert rel["accuracy_recovered"] == pytest.approx(1.0)
    assert rel["changed_fraction"] > 0.2 and rel["accuracy_gain"] > 0.15  # ~half of the 100 slots of b flip
    assert verdict([rel["accuracy_gain"]], [rel["changed_fraction"]])["verdict"] == "helps"


def test_verdict_rule() -> None:
    assert verdict([0.10, 0.12], [0.01, 0.015])["verdict"] == "ignored"
    assert verdict([0.02, 0.03, 0.025], [0.1, 0.1, 0.1])["verdict"] == "helps"
    assert verdict([-0.02, -0.03], [0.1, 0.1])["verdict"] == "hurts"
    assert verdict([0.002, -0.001], [0.1, 0.1])["verdict"] == "dominated"
    assert verdict([0.03, -0.02], [0.1, 0.1])["verdict"] == "dominated"  # gain within 2 SE over seeds


def test_non_recovering_method_is_refused_by_name() -> None:
    data = make_synthetic(n_samples=30, n_modalities=2, dims=2)
    model = FittedModel(Standardizer(data.spec).fit(data.as_batch()), build_method("masked-mean", data.spec))
    with pytest.raises(ValueError, match="does not recover"):
        recovery_reliance(model, data)


def test_recovering_methods_lists_the_retrieval_methods() -> None:
    names = recovering_methods()
    assert {"retrieval-fill", "embedding-retrieval"} <= set(names)
    assert "masked-mean" not in names


@pytest.fixture(scope="module")
def trained():
    data = make_synthetic(n_samples=120, n_classes=3, n_modalities=3, dims=4, seed=0)
    train, test = data.split("train"), data.split("test")
    models = {}
    for name in ("retrieval-fill", "embedding-retrieval"):
        method = build_method(name, data.spec, seed=0, embed_dim=16, k=3)
        models[name] = Trainer(TrainConfig(max_epochs=2, patience=1)).fit(method, train, train, seed=0).model
    mask = torch.ones(len(test), 3, dtype=torch.bool)
    mask[::2, 0] = False
    return models, test, test.with_mask(mask)


@pytest.mark.parametrize("name,space", [("retrieval-fill", "input"), ("embedding-retrieval", "embedding")])
def test_retrieval_hooks(trained, name: str, space: str) -> None:
    models, test, masked = trained
    model = models[name]
    method = model.method
    assert method.info.recovery_space == space
    batch = model.standardizer(masked.as_batch())
    method.eval()
    with torch.no_grad():
        rec = method.recover(batch)
        out = method(batch).logits
        method.plain_fill = True
        plain_rec = method.recover(batch)
        plain_out = method(batch).logits
        method.plain_fill = False
    m0 = rec["m0"]
    assert m0.shape[0] == len(masked) and torch.isfinite(m0).all()
    missing = ~batch.mask[:, 0]
    assert not torch.allclose(rec["m0"][missing], plain_rec["m0"][missing])
    assert not torch.allclose(out[missing], plain_out[missing])
    torch.testing.assert_close(out[~missing], plain_out[~missing])  # complete samples unaffected
    if space == "input":  # plain fill = the training mean, a present modality = its input
        torch.testing.assert_close(plain_rec["m0"][missing], method.fill_m0.expand_as(m0)[missing])
        torch.testing.assert_close(rec["m1"], batch.inputs["m1"])
    else:  # plain fill = zeros; a present modality = the encoder's embedding
        assert float(plain_rec["m0"][missing].abs().max()) == 0.0
        torch.testing.assert_close(rec["m1"], method.encoders(batch)[:, 1])
    fid = recovery_fidelity(model, test, masked)
    assert fid["n_slots"] == int(missing.sum()) and -1.0 <= fid["cosine"] <= 1.0
    assert fid["mse"] < fid["mse_plain"] + 1.0


def test_cli_recover_json(capsys) -> None:
    rc = main(["recover", "--dataset", "basicmotions", "--method", "embedding-retrieval", "--rates", "0.5",
               "--epochs", "1", "--param", "embed_dim=8", "--json"])
    assert rc == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["method"] == "embedding-retrieval" and rows[0]["space"] == "embedding"
    assert rows[0]["verdict"] in ("helps", "hurts", "ignored", "dominated")
    assert rows[0]["n_slots"] > 0


def test_cli_recover_rejects_a_method_without_hooks(capsys) -> None:
    assert main(["recover", "--dataset", "handwritten", "--method", "masked-mean"]) == 2
    assert "no recovery hooks" in capsys.readouterr().err


def test_a_cell_that_cannot_train_is_skipped_with_its_reason(monkeypatch) -> None:
    from mlmm.diagnostics import runs
    from mlmm.diagnostics.fitting import CellConfig

    def refuse(config, seed):
        raise ValueError(f"method {config.method!r} needs complete training samples")

    monkeypatch.setattr(runs, "fit_cell", refuse)
    rows = runs.recover_runs(CellConfig("synthetic", "mmin"), ["mmin"], [0.5], [0])
    assert rows == [{"method": "mmin", "rate": 0.5, "seeds": [0],
                     "skipped": "method 'mmin' needs complete training samples"}]
