"""Every registered method trains and predicts on a CUDA device (skipped where there is none).

CI has no GPU; this runs on a user's GPU machine or the project's lent one
(``pytest tests/test_cuda.py``; ``MLMM_TEST_BACKBONE=DIR`` gives the pretrained
methods a local model directory where the ``pretrained`` extra is not installed). It catches tensors created on the CPU
inside a
method (a buffer, a fill value, a random draw) that only a real second device exposes.
"""

import inspect
import os

import pytest
import torch

from mlmm import load_dataset
from mlmm.components.pretrained_backbone import MissingExtraError
from mlmm.data.splits import make_splits
from mlmm.methods import METHODS
from mlmm.missing import Scenario, make_protocol
from mlmm.train.loop import TrainConfig, Trainer, build_method

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("name", METHODS.names())
def test_method_fits_and_predicts_on_cuda(name):
    data = load_dataset("handwritten")
    train, val, test = make_splits(data, "random", 0)
    rate = 0.0 if METHODS.get(name).info.needs_complete_train else 0.5
    fit_protocol, test_protocol = make_protocol("entry", rate=rate), make_protocol("entry", rate=0.5)
    scenario = Scenario(train=fit_protocol, val=fit_protocol, test=test_protocol)
    train, val, test = (scenario.apply(d, role, 0)[0] for d, role in ((train, "train"), (val, "val"), (test, "test")))
    params = {}
    if "backbone" in inspect.signature(METHODS.get(name).__init__).parameters and os.environ.get("MLMM_TEST_BACKBONE"):
        params["backbone"] = os.environ["MLMM_TEST_BACKBONE"]
    try:
        method = build_method(name, data.spec, seed=0, **params)
    except MissingExtraError as err:
        pytest.skip(str(err))
    fit = Trainer(TrainConfig(max_epochs=1), device="cuda").fit(method, train, val, seed=0)
    assert all(p.device.type == "cuda" for p in fit.model.parameters())
    logits = fit.model.predict_logits(test)
    assert logits.shape == (len(test), data.spec.task.output_dim)
    assert torch.isfinite(logits).all()
    # the same model on the CPU predicts the same classes (discrete choices may flip on last bits)
    cpu = fit.model.to("cpu").predict_logits(test)
    assert (cpu.argmax(1) == logits.argmax(1)).float().mean() >= 0.99
