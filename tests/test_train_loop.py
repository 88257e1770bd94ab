"""The training loop: modality dropout, determinism, RNG hygiene, early stopping, FittedModel."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch

from mlmm.data.datasets import make_synthetic
from mlmm.data.splits import make_splits
from mlmm.errors import EmptySplitError, InvalidParameterError, TrainingDiverged
from mlmm.methods import METHODS
from mlmm.train.loop import FitNeverImproved, FittedModel, TrainConfig, Trainer, build_method, drop_modalities

SMALL = dict(embed_dim=16, hidden=16)


@pytest.fixture(scope="module")
def splits():
    data = make_synthetic(n_samples=120, n_classes=3, n_modalities=3, dims=4, informativeness=1.0, noise=1.0, seed=0)
    return make_splits(data, "fixed", seed=0)


def _fit(splits, config: TrainConfig, seed: int = 0, method: str = "masked-mean"):
    train, val, _ = splits
    model = build_method(method, train.spec, seed=seed, **SMALL)
    return Trainer(config).fit(model, train, val, seed=seed)


# --- modality dropout --------------------------------------------------------


def _random_masks(n: int, m: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, m, generator=g) < 0.6
    # Plenty of rows with exactly one present modality, and some complete rows.
    single = torch.randint(0, m, (n // 4,), generator=g)
    mask[: n // 4] = False
    mask[torch.arange(n // 4), single] = True
    mask[n // 4: n // 2] = True
    # No empty input rows.
    empty = ~mask.any(dim=1)
    mask[empty, 0] = True
    return mask


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 0.999])
@pytest.mark.parametrize("m", [2, 4])
def test_drop_modalities_never_empties_and_never_adds(p, m):
    gen = torch.Generator().manual_seed(123)
    for trial in range(5):
        mask = _random_masks(400, m, seed=trial)
        before = mask.clone()
        out = drop_modalities(mask, p, gen)
        assert torch.equal(mask, before), "the input mask must not be mutated"
        assert out.dtype == torch.bool and out.shape == mask.shape
        assert not torch.any(out & ~mask), "a missing entry became present"
        assert torch.all(out.any(dim=1)), "a sample lost every modality"
        single = mask.sum(dim=1) == 1
        assert torch.equal(out[single], mask[single]), "a one-modality sample must keep it"
        if p >= 0.5:
            assert (mask & ~out).any(), "dropout dropped nothing"


def test_drop_modalities_p_zero_is_identity():
    mask = _random_masks(50, 3, seed=0)
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    out = drop_modalities(mask, 0.0, gen)
    assert torch.equal(out, mask)
    assert torch.equal(gen.get_state(), state), "p=0 must not consume randomness"


def test_drop_modalities_rescue_is_uniform_over_present():
    mask = torch.ones(3000, 3, dtype=torch.bool)
    out = drop_modalities(mask, 0.9999, torch.Generator().manual_seed(5))
    assert torch.all(out.sum(dim=1) >= 1)
    share = out.float().mean(dim=0)
    assert torch.all((share > 0.25) & (share < 0.42)), share
    # A rescued modality is always one that was present.
    mask[:, 2] = False
    out = drop_modalities(mask, 0.9999, torch.Generator().manual_seed(5))
    assert not out[:, 2].any() and torch.all(out.any(dim=1))


def test_drop_modalities_is_deterministic_per_generator():
    mask = _random_masks(200, 3, seed=1)
    a = drop_modalities(mask, 0.5, torch.Generator().manual_seed(9))
    b = drop_modalities(mask, 0.5, torch.Generator().manual_seed(9))
    assert torch.equal(a, b)


# --- TrainConfig -------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(max_epochs=0), r"max_epochs=0 is not allowed; max_epochs must be an int in \[1,"),
        (dict(max_epochs="3"), r"max_epochs=str '3' is not allowed"),
        (dict(batch_size=0), r"batch_size=0 .* an int in \[1,"),
        (dict(batch_size=2.5), r"batch_size=2.5 .* an int"),
        (dict(patience=0), r"patience=0 .* an int in \[1,"),
        (dict(min_steps_per_epoch=0), r"min_steps_per_epoch=0 .* an int in \[1,"),
        (dict(modality_dropout=1.0), r"modality_dropout must be a finite number in \[0, 1\)"),
        (dict(modality_dropout=-0.1), r"modality_dropout must be a finite number in \[0, 1\)"),
        (dict(lr=0.0), r"lr must be a finite number in \(0, 1000000\]"),
        (dict(lr=-1e-3), r"lr must be a finite number in \(0, 1000000\]"),
        (dict(lr=float("inf")), r"lr=inf is not allowed"),
        (dict(lr=float("nan")), r"lr=nan is not allowed"),
        (dict(weight_decay=-0.1), r"weight_decay=-0.1 .* in \[0, inf\)"),
        (dict(grad_clip=-1.0), r"grad_clip must be None or a finite number in \(0, inf\)"),
        (dict(grad_clip=0.0), r"grad_clip=0.0 is not allowed"),
        (dict(select_on="f1"), r"select_on=str 'f1' .* one of 'loss', 'accuracy'"),
    ],
)
def test_train_config_validation(kwargs, message):
    with pytest.raises(InvalidParameterError, match=message):
        TrainConfig(**kwargs)


def test_train_config_accepts_no_grad_clip():
    assert TrainConfig(grad_clip=None).grad_clip is None


# --- Trainer.fit -------------------------------------------------------------


def test_fit_is_deterministic_and_leaves_global_rngs_alone(splits):
    _, _, test = splits
    config = TrainConfig(max_epochs=3, batch_size=16, modality_dropout=0.3)
    torch.manual_seed(1234)
    np.random.seed(4321)
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()
    first = _fit(splits, config, seed=0)
    assert torch.equal(torch.get_rng_state(), torch_state), "fit changed the caller's torch RNG"
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]) and after[2:] == np_state[2:], \
        "fit changed numpy's global RNG"
    second = _fit(splits, config, seed=0)
    p1, p2 = first.model.predict_logits(test), second.model.predict_logits(test)
    assert torch.equal(p1, p2)
    assert first.history == second.history
    assert first.best_epoch == second.best_epoch
    other = _fit(splits, config, seed=1)
    assert not torch.equal(other.model.predict_logits(test), p1), "the seed is ignored"


def test_fit_history_and_early_stopping_restore_best_epoch(splits):
    _, val, _ = splits
    cfg = TrainConfig(max_epochs=40, batch_size=16, patience=3, lr=1e-2, select_on="accuracy")
    seen = []
    train, _, _ = splits
    model = build_method("masked-mean", train.spec, seed=0, **SMALL)
    fit = Trainer(cfg, on_epoch=seen.append).fit(model, train, val, seed=0)
    history = [r for r in fit.history if r["stage"] == "main"]
    assert seen == fit.history
    assert [r["epoch"] for r in history] == list(range(1, len(history) + 1))
    assert set(fit.best_epoch) == {"main"}
    best = fit.best_epoch["main"]
    scores = [r["val_score"] for r in history]
    # The selected epoch is the first one reaching the best validation score.
    assert best == int(np.argmax(scores)) + 1
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"]) for r in history)
    # Early stopping: training stops `patience` epochs after the best one (or at max_epochs).
    assert len(history) == min(cfg.max_epochs, best + cfg.patience)
    # The returned model holds the best epoch's weights, not the last one's: recompute its validation score.
    assert best < len(history), "setup: restoration is only visible with epochs after the best"
    assert history[-1]["val_loss"] != pytest.approx(history[best - 1]["val_loss"], rel=1e-3)
    assert not fit.model.training
    with torch.no_grad():
        logits = fit.model(val.as_batch()).logits
    accuracy = float((logits.argmax(dim=1) == val.target).float().mean())
    loss = float(torch.nn.functional.cross_entropy(logits, val.target))
    assert accuracy - 1e-3 * min(loss, 10.0) == pytest.approx(history[best - 1]["val_score"], abs=1e-5)
    assert loss == pytest.approx(history[best - 1]["val_loss"], rel=1e-4)


def test_method_needing_complete_train_is_refused_on_incomplete_data(splits):
    train, val, _ = splits
    base = METHODS.get("masked-mean")

    class NeedsComplete(base):
        info = dataclasses.replace(base.info, needs_complete_train=True)

    assert "needs-complete" not in METHODS  # not registered
    mask = train.mask.clone()
    mask[:3, 1] = False
    incomplete = train.with_mask(mask)
    message = r"needs complete training samples, but 3 of \d+ training samples are incomplete"
    with pytest.raises(ValueError, match=message):
        Trainer(TrainConfig(max_epochs=1)).fit(NeedsComplete(train.spec, **SMALL), incomplete, val)
    # Complete training data is accepted (an incomplete validation split is fine).
    fit = Trainer(TrainConfig(max_epochs=1)).fit(NeedsComplete(train.spec, **SMALL), train, val.with_mask(
        torch.cat([torch.ones(len(val), 1, dtype=torch.bool), torch.zeros(len(val), 2, dtype=torch.bool)], 1)))
    assert fit.best_epoch == {"main": 1}


def test_fit_refuses_before_touching_rngs(splits):
    train, val, _ = splits
    base = METHODS.get("masked-mean")

    class NeedsComplete(base):
        info = dataclasses.replace(base.info, needs_complete_train=True)

    mask = train.mask.clone()
    mask[0, 0] = False
    model = NeedsComplete(train.spec, **SMALL)  # built outside: construction draws from the global RNG
    state = torch.get_rng_state()
    with pytest.raises(ValueError):
        Trainer(TrainConfig(max_epochs=1)).fit(model, train.with_mask(mask), val)
    assert torch.equal(torch.get_rng_state(), state)


# --- build_method / FittedModel ---------------------------------------------


def test_build_method_is_seeded_and_leaves_global_rng(splits):
    train, _, _ = splits
    state = torch.get_rng_state()
    a = build_method("masked-mean", train.spec, seed=3, **SMALL)
    b = build_method("masked-mean", train.spec, seed=3, **SMALL)
    c = build_method("masked-mean", train.spec, seed=4, **SMALL)
    assert torch.equal(torch.get_rng_state(), state)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_predict_logits_shape_and_keeps_train_eval_flag(splits):
    _, _, test = splits
    fit = _fit(splits, TrainConfig(max_epochs=1))
    model = fit.model
    assert isinstance(model, FittedModel)
    n, c = len(test), test.spec.task.n_classes
    model.eval()
    logits = model.predict_logits(test)
    assert logits.shape == (n, c) and logits.dtype == torch.float32
    assert not model.training and not model.method.training
    model.train()
    again = model.predict_logits(test, batch_size=7)  # eval mode inside, in chunks
    assert model.training and model.method.training and model.standardizer.training
    assert torch.allclose(again, logits, atol=1e-5)
    # A Batch works too, and validation (when asked) catches a broken batch.
    model.eval()
    assert torch.allclose(model.predict_logits(test.as_batch(), validate=True), logits, atol=1e-5)
    bad = test.as_batch()
    bad_inputs = dict(bad.inputs, m0=bad.inputs["m0"].clone())
    bad_inputs["m0"][0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"modality 'm0': NaN or inf in a present entry \(sample 0\)"):
        model.predict_logits(type(bad)(bad_inputs, bad.mask, bad.target), validate=True)
    empty = model.predict_logits(test.subset(np.array([], dtype=np.int64)))
    assert empty.shape == (0, c)


def test_fitted_model_standardises_with_training_statistics(splits):
    train, _, test = splits
    fit = _fit(splits, TrainConfig(max_epochs=1))
    expected_mean = train.inputs["m0"].double().mean(dim=0).float()
    assert torch.allclose(fit.model.standardizer.mean_m0, expected_mean, atol=1e-5)
    # The preprocessing travels in the state dict: a rebuilt model predicts the same.
    rebuilt = FittedModel(type(fit.model.standardizer)(train.spec),
                          build_method("masked-mean", train.spec, seed=99, **SMALL))
    rebuilt.load_state_dict(fit.model.state_dict())
    rebuilt.eval()
    assert torch.allclose(rebuilt.predict_logits(test), fit.model.predict_logits(test), atol=1e-6)


def test_small_training_splits_get_smaller_batches() -> None:
    from mlmm.train.loop import effective_batch_size

    config = TrainConfig(batch_size=128, min_steps_per_epoch=10)
    assert effective_batch_size(5000, config) == 128
    assert effective_batch_size(320, config) == 32  # 10 steps an epoch
    assert effective_batch_size(32, config) == 8  # never below 8
    assert effective_batch_size(32, TrainConfig(batch_size=4)) == 4  # never above the asked size


@pytest.mark.parametrize("select_on", ["loss", "accuracy"])
def test_selection_criterion_picks_the_best_epoch_of_its_own_score(select_on: str, splits) -> None:
    train, val, _ = splits
    method = build_method("masked-mean", train.spec, seed=0, **SMALL)
    fit = Trainer(TrainConfig(max_epochs=6, patience=6, select_on=select_on)).fit(method, train, val, seed=0)
    history = fit.history
    best = fit.best_epoch["main"]
    if select_on == "loss":
        assert history[best - 1]["val_loss"] == min(h["val_loss"] for h in history)
    else:
        assert history[best - 1]["val_score"] == max(h["val_score"] for h in history)


# --- a failed fit is an error, never a result --------------------------------


def test_non_finite_training_loss_raises_naming_epoch_stage_and_term(splits):
    # lr 1e4 drives masked-mean's weights to inf within the first epoch (found: exit 0 at chance).
    message = r"loss term 'task' is non-finite at epoch 1, step \d+ of stage 'main'"
    with pytest.raises(TrainingDiverged, match=message) as err:
        _fit(splits, TrainConfig(max_epochs=2, lr=1e4, grad_clip=None, modality_dropout=0.0))
    assert (err.value.epoch, err.value.stage, err.value.term) == (1, "main", "task")


def test_non_finite_validation_loss_raises(splits):
    train, val, _ = splits
    bad = val.subset(np.arange(len(val)))
    first = bad.spec.modality_names[0]
    bad.inputs[first][:] = float("nan")  # present NaN entries poison the validation forward
    model = build_method("masked-mean", train.spec, seed=0, **SMALL)
    with pytest.raises(TrainingDiverged, match=r"validation loss is nan at epoch 0 of stage 'main'"):
        Trainer(TrainConfig(max_epochs=1)).fit(model, train, bad)


@pytest.mark.parametrize("role", ["training", "validation"])
def test_empty_split_is_refused_before_training(splits, role):
    train, val, _ = splits
    empty = train.subset(np.arange(0))
    args = (empty, val) if role == "training" else (train, empty)
    model = build_method("masked-mean", train.spec, seed=0, **SMALL)
    with pytest.raises(EmptySplitError, match=f"the {role} split is empty"):
        Trainer(TrainConfig(max_epochs=1)).fit(model, *args)


def test_a_fit_that_never_improves_is_flagged_and_warned(splits):
    # lr so small that one epoch cannot beat the initial validation loss by float resolution
    with pytest.warns(FitNeverImproved, match="stage 'main' never improved on its starting state"):
        fit = _fit(splits, TrainConfig(max_epochs=1, lr=1e-30, modality_dropout=0.0))
    assert fit.never_improved == ["main"] and fit.improved == {"main": False}


def test_a_normal_fit_is_flagged_improved(splits):
    fit = _fit(splits, TrainConfig(max_epochs=3, lr=1e-2))
    assert fit.improved == {"main": True} and fit.never_improved == []


@pytest.mark.parametrize("device, message", [("bogus", "not a torch device"), ("meta", "runs on cpu, cuda or mps")])
def test_trainer_refuses_bad_devices(device, message):
    with pytest.raises(ValueError, match=message):
        Trainer(TrainConfig(), device=device)


def test_predict_logits_refuses_nan_in_a_present_entry(splits):
    # found: NaN present inputs gave NaN logits silently
    fit = _fit(splits, TrainConfig(max_epochs=1))
    _, _, test = splits
    bad = test.subset(np.arange(len(test)))
    first = bad.spec.modality_names[0]
    row = int(bad.mask[:, 0].nonzero()[0, 0])
    bad.inputs[first][row, 0] = float("nan")
    with pytest.raises(ValueError, match=rf"modality '{first}' holds NaN or inf in 1 present rows \(first row {row}\)"):
        fit.model.predict_logits(bad)
    assert torch.isfinite(fit.model.predict_logits(test)).all()


def test_evaluating_on_another_datasets_data_names_the_mismatch(splits):
    # found: KeyError 'm0'
    from mlmm.metrics.evaluate import evaluate, evaluate_subsets

    fit = _fit(splits, TrainConfig(max_epochs=1))
    other = make_synthetic(n_samples=30, n_classes=3, n_modalities=2, dims=4, seed=0)
    message = r"the data has modalities \(m0, m1\) but the model was trained on .*\(m0, m1, m2\)"
    with pytest.raises(ValueError, match=message):
        evaluate(fit.model, other)
    with pytest.raises(ValueError, match="but the model was trained on"):
        evaluate_subsets(fit.model, other)
    wider = make_synthetic(n_samples=30, n_classes=3, n_modalities=3, dims=5, seed=0)
    with pytest.raises(ValueError, match=r"modality 'm0' has per-sample shape \(5,\) in the data but \(4,\)"):
        evaluate(fit.model, wider)


def test_run_experiment_records_stages_that_never_improved(capsys):
    from mlmm import ExperimentConfig, run_experiment
    from mlmm.cli import main

    config = ExperimentConfig(dataset="synthetic", method="masked-mean", subsets=False,
                              train=TrainConfig(max_epochs=1, lr=1e-30, modality_dropout=0.0))
    with pytest.warns(FitNeverImproved):
        result = run_experiment(config)
    assert result["never_improved"] == {"0": ["main"]}
    # the CLI shows the warning as one line and still reports the (flagged) result; the suite's
    # pytest config ignores FitNeverImproved, so show it here as a user's default filters would
    with warnings.catch_warnings():
        warnings.simplefilter("default", FitNeverImproved)
        assert main(["run", "--dataset", "synthetic", "--method", "masked-mean", "--no-subsets", "--epochs", "1",
                     "--lr", "1e-30", "--modality-dropout", "0", "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("mlmm: note: stage 'main' never improved") and captured.err.count("\n") == 1
    assert '"never_improved": {\n    "0": [\n      "main"' in captured.out
