"""Every option of a diagnostics run or a stream demo is checked before any training
(found: `mlmm stream` on a vector dataset and `mlmm uncertainty --bins 0` failed after it)."""

from __future__ import annotations

import pytest

from mlmm.diagnostics.fitting import CellConfig
from mlmm.diagnostics.runs import explain_runs, recover_runs, uncertainty_runs
from mlmm.errors import InvalidParameterError
from mlmm.streaming import stream_demo
from mlmm.train import loop


@pytest.fixture(autouse=True)
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("trained before the options were checked")

    monkeypatch.setattr(loop.Trainer, "fit", refuse)


BASE = CellConfig(dataset="synthetic", method="masked-mean")


@pytest.mark.parametrize("call, error, message", [
    (lambda: uncertainty_runs(BASE, [0.0], [0], n_bins=0), InvalidParameterError, r"n_bins=0 is not allowed"),
    (lambda: uncertainty_runs(BASE, [0.0], [0, 0]), InvalidParameterError, r"seeds repeat 0"),
    (lambda: uncertainty_runs(BASE, [0.0, 2.0], [0]), ValueError, r"rate"),
    (lambda: uncertainty_runs(BASE, [], [0]), InvalidParameterError, r"rates is empty"),
    (lambda: explain_runs(BASE, [0], n_permutations=1), InvalidParameterError, r"n_permutations=1"),
    (lambda: explain_runs(BASE, [0], target="best"), InvalidParameterError, r"target must be"),
    (lambda: explain_runs(BASE, ()), InvalidParameterError, r"seeds is empty"),
    (lambda: recover_runs(BASE, ["zero-fill", "nosuch"], [0.3], [0]), KeyError, r"unknown method 'nosuch'"),
    (lambda: recover_runs(BASE, ["zero-fill"], [0.3, 1.5], [0]), ValueError, r"rate must be in"),
    (lambda: explain_runs(CellConfig("synthetic", "masked-mean", method_params={"embed_dim": 0}), [0]),
     InvalidParameterError, r"embed_dim=0"),
    (lambda: stream_demo("synthetic", {}), ValueError, r"dataset 'synthetic' has no sequence modality"),
    (lambda: stream_demo("basicmotions", {}, method="masked-mean"), ValueError, r"method 'masked-mean' cannot stream"),
])
def test_refused_before_training(call, error, message):
    with pytest.raises(error, match=message):
        call()
