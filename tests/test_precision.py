"""TrainConfig.precision: autocast (and gradient scaling for fp16) in the training steps only."""

import math

import pytest
import torch

from mlmm.data.datasets.synthetic import make_synthetic
from mlmm.data.splits import make_splits
from mlmm.train import TrainConfig, Trainer, build_method
from mlmm.train.precision import MixedPrecision


@pytest.fixture(scope="module")
def splits():
    data = make_synthetic(n_samples=200, n_modalities=2, dims=6, seed=0)
    return data, make_splits(data, "random", 0)


def _fit(splits, device="cpu", **config):
    data, (train, val, _) = splits
    method = build_method("masked-mean", data.spec, seed=0)
    dtypes = {True: set(), False: set()}  # training mode -> dtypes of the first linear layer's output
    linear = next(m for m in method.modules() if isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda mod, args, out: dtypes[torch.is_grad_enabled()].add(out.dtype))
    fit = Trainer(TrainConfig(max_epochs=2, patience=2, batch_size=32, **config), device=device).fit(
        method, train, val, seed=0)
    return fit, dtypes


def test_bf16_on_the_cpu_autocasts_training_only(splits):
    fit, dtypes = _fit(splits, precision="bf16")
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"]) for r in fit.history)
    assert dtypes[True] == {torch.bfloat16}  # training steps ran under CPU autocast
    assert dtypes[False] == {torch.float32}  # validation (no grad) stayed float32
    assert all(p.dtype == torch.float32 for p in fit.model.parameters())  # weights stay float32
    ref, ref_dtypes = _fit(splits)
    assert ref_dtypes[True] == {torch.float32}
    assert fit.history[-1]["train_loss"] == pytest.approx(ref.history[-1]["train_loss"], rel=0.1)  # close, not equal


def test_fp16_on_the_cpu_is_refused_before_any_work(splits):
    with pytest.raises(ValueError, match="precision 'fp16' needs a CUDA device .* use 'bf16' .* or 'fp32'"):
        _fit(splits, precision="fp16")
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16"):
        MixedPrecision("fp8", "cpu")


def test_only_fp16_scales_gradients():
    optimiser = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    assert MixedPrecision("bf16", "cpu").scaler(optimiser) is None
    assert MixedPrecision("fp32", "cpu").scaler(optimiser) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_trains_on_cuda(splits, precision):
    fit, dtypes = _fit(splits, device="cuda", precision=precision)
    assert all(math.isfinite(r["train_loss"]) for r in fit.history)
    assert dtypes[True] == {torch.bfloat16 if precision == "bf16" else torch.float16}
    assert dtypes[False] == {torch.float32}
