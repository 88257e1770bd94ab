"""Per-cell figures (calibration, efficiency), robustness summaries, and the fast all-subsets path."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mlmm.components.factorised import FactorisedFusion, is_factorised
from mlmm.data.datasets import make_synthetic
from mlmm.experiment import ExperimentConfig, run_seed
from mlmm.methods import METHODS
from mlmm.methods.base import Output
from mlmm.methods.representation_composition.masked_mean import MaskedMeanFusion
from mlmm.metrics.calibration import expected_calibration_error, softmax
from mlmm.metrics.efficiency import PeakMemory, latency_per_subset_size, parameter_counts, timed_predict
from mlmm.metrics.evaluate import evaluate_subsets
from mlmm.metrics.figures import calibration_figures
from mlmm.metrics.robustness import (
    area_under_rate_curve,
    normalise_cell,
    relative_drop,
    robustness_summaries,
    subset_summaries,
)
from mlmm.metrics.task import classification_metrics, confusion_metrics
from mlmm.missing.functional import entry_rate_mask
from mlmm.testing import run_conformance
from mlmm.train.loop import TrainConfig, Trainer, build_method

FACTORISED = ("masked-mean", "masked-max", "sign-max", "late-ensemble", "infonce-align")
#: Every registered method with the capability (methods added later are covered automatically).
ALL_FACTORISED = tuple(n for n in METHODS.names() if is_factorised(METHODS.get(n)))


# ------------------------------------------------------------------ task metrics


@pytest.mark.parametrize("seed", range(5))
def test_confusion_metrics_equal_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(1, 60)), int(rng.integers(2, 7))
    logits = rng.normal(size=(n, c))
    logits[:, c - 1] -= 100  # the last class is never predicted: its F1 counts as 0
    target = rng.integers(0, c, size=n)
    fast, ref = confusion_metrics(logits, target, c), classification_metrics(logits, target, c)
    assert fast.keys() == ref.keys()
    for k in ref:
        assert fast[k] == pytest.approx(ref[k], abs=1e-12)


# ------------------------------------------------------------------ calibration


def test_calibration_figures_match_ece_and_are_json() -> None:
    rng = np.random.default_rng(0)
    logits, target = rng.normal(size=(50, 4)) * 3, rng.integers(0, 4, size=50)
    fig = calibration_figures(logits, target)
    assert fig["ece"] == pytest.approx(expected_calibration_error(softmax(logits), target, 15))
    rel = fig["reliability"]
    assert len(rel["edges"]) == 16 and len(rel["count"]) == 15 and sum(rel["count"]) == 50
    assert None in rel["accuracy"]  # an empty bin (confidence < 1/4 is impossible) is null, not NaN
    json.dumps(fig, allow_nan=False)


# ------------------------------------------------------------------ efficiency


def test_parameter_counts_separate_frozen_parameters() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    model[0].weight.requires_grad_(False)
    assert parameter_counts(model) == {"total": 6 + 2 + 2 + 1, "trainable": 2 + 2 + 1}


def test_peak_memory_sees_a_large_tensor() -> None:
    with PeakMemory("cpu") as memory:
        x = torch.ones(64 * 2 ** 20 // 4)  # 64 MiB, touched
        del x
    fig = memory.figures
    assert fig["cpu_method"] in ("vmhwm-reset", "ru_maxrss-delta")
    assert fig["cpu_peak_rss_bytes"] > 0
    if fig["cpu_method"] == "vmhwm-reset":  # per-block peak: the tensor must show
        assert fig["cpu_peak_growth_bytes"] >= 48 * 2 ** 20
    assert "gpu_peak_allocated_bytes" not in fig


@pytest.fixture(scope="module")
def data():
    return make_synthetic(n_samples=240, n_modalities=3, dims=6, seed=0)


def _fit(name: str, data, seed: int = 0, epochs: int = 2, **params):
    train, test = data.split("train"), data.split("test")
    train, val = train.subset(np.arange(0, 140)), train.subset(np.arange(140, len(train)))
    mask = torch.as_tensor(entry_rate_mask(len(train), 3, 0.3, np.random.default_rng(seed)))
    fit = Trainer(TrainConfig(max_epochs=epochs)).fit(build_method(name, data.spec, seed=seed, **params),
                                                      train.with_mask(mask), val, seed=seed)
    return fit.model, test


def test_latency_figures(data) -> None:
    model, test = _fit("masked-mean", data, embed_dim=16)
    logits, per_sample = timed_predict(model, test, repeats=2)
    assert logits.shape == (len(test), 3) and 0 < per_sample < 1
    sizes = latency_per_subset_size(model, test)
    assert list(sizes) == ["1", "2", "3"] and all(v > 0 for v in sizes.values())


def test_run_seed_record_carries_calibration_and_efficiency() -> None:
    config = ExperimentConfig(dataset="basicmotions", method="late-ensemble", rate=0.3,
                              train=TrainConfig(max_epochs=1, precision="bf16"))  # CPU autocast
    record = run_seed(config, 0)
    json.dumps(record, allow_nan=False)  # JSON as is (null for empty bins)
    eff = record["efficiency"]
    assert eff["parameters"]["trainable"] == record["n_parameters"] > 0
    assert eff["train_seconds"] == record["train_seconds"] and eff["latency_per_sample_s"] > 0
    assert eff["train_precision"] == "bf16" and eff["latency_precision"] == "fp32"  # what each was measured at
    assert set(eff["latency_per_subset_size_s"]) == {"1", "2"}
    assert eff["peak_memory"]["cpu_peak_rss_bytes"] > 0 and eff["subsets_path"] == "fast"
    assert 0 <= record["calibration"]["ece"] <= 1 and len(record["calibration"]["reliability"]["count"]) == 15
    assert set(record["subsets"]) == {"accelerometer", "gyroscope", "accelerometer+gyroscope"}


# ------------------------------------------------------------------ fast all-subsets path


def test_factorised_capability_is_declared_where_expected() -> None:
    assert set(FACTORISED) <= set(ALL_FACTORISED)
    for name in FACTORISED:
        assert issubclass(METHODS.get(name), FactorisedFusion)
    assert not issubclass(METHODS.get("zero-fill"), FactorisedFusion)

    class OwnForward(MaskedMeanFusion):  # a forward that is no longer encode-then-fuse breaks the declaration
        def forward(self, batch):
            return Output(super().forward(batch).logits + 1.0)

    assert is_factorised(OwnForward(make_synthetic(n_samples=30, seed=0).spec))  # inherited, so declared...
    with pytest.raises(AssertionError, match="declares Capability.FACTORISED, but fuse_embeddings"):
        run_conformance(OwnForward, ["declared_capabilities"], setups=["vector"])  # ... and the suite catches it


@pytest.mark.parametrize("name", ALL_FACTORISED)
def test_fast_subsets_equal_the_slow_path(name: str, data) -> None:
    model, test = _fit(name, data)  # default hyper-parameters: every method builds with them
    # some test samples lack a modality naturally: the subset mask is intersected with theirs
    natural = torch.as_tensor(entry_rate_mask(len(test), 3, 0.2, np.random.default_rng(1)))
    test = test.with_mask(natural)
    assert is_factorised(model.method)
    slow = evaluate_subsets(model, test, fast=False)
    fast = evaluate_subsets(model, test)
    assert fast == slow  # exactly the same figures
    assert len(fast) == 7 and all(v["n"] <= len(test) for v in fast.values())


@pytest.mark.parametrize("stack_bytes, fuse_bytes", [(1, 2 ** 27), (2 ** 30, 2 ** 27), (2 ** 30, 1)])
def test_fast_subsets_equal_the_slow_path_one_or_all_subsets_per_call(stack_bytes: int, fuse_bytes: int, data,
                                                                       monkeypatch) -> None:
    from mlmm.components import factorised
    from mlmm.metrics import evaluate as evaluate_module

    # row slices of z / every subset in one fusion call; all rows per fuse_subsets call / one row per call
    monkeypatch.setattr(factorised, "_STACK_BYTES", stack_bytes)
    monkeypatch.setattr(evaluate_module, "_FUSE_BYTES", fuse_bytes)
    model, test = _fit("late-ensemble", data, embed_dim=16)
    test = test.with_mask(torch.as_tensor(entry_rate_mask(len(test), 3, 0.3, np.random.default_rng(2))))
    assert evaluate_subsets(model, test, batch_size=16) == evaluate_subsets(model, test, fast=False, batch_size=16)


def test_masked_mean_projects_before_pooling_with_the_same_logits(data) -> None:
    """masked-mean's fuse_subsets moves the head's first (affine) layer before the mean: the
    logits of every row holding a modality match fuse_embeddings mask by mask."""
    model, test = _fit("masked-mean", data, epochs=2)
    method = model.method
    with torch.no_grad():
        z = method.encode_modalities(model.standardizer(test.as_batch()))
        masks = torch.stack([torch.as_tensor(entry_rate_mask(len(test), 3, 0.5, np.random.default_rng(s)))
                             for s in range(5)])
        masks[0, :3] = False  # rows with no modality: any finite value, dropped by the caller
        fast = method.fuse_subsets(z, masks)
        for s, mask in enumerate(masks):
            keep = mask.any(dim=1)
            slow = method.fuse_embeddings(z, mask).logits
            torch.testing.assert_close(fast[s][keep], slow[keep], rtol=1e-5, atol=1e-5)
        assert torch.isfinite(fast).all()


def test_fast_path_refused_for_a_method_without_the_capability(data) -> None:
    model, test = _fit("zero-fill", data, epochs=1)
    with pytest.raises(ValueError, match="FactorisedFusion"):
        evaluate_subsets(model, test, fast=True)
    assert evaluate_subsets(model, test) == evaluate_subsets(model, test, fast=False)


# ------------------------------------------------------------------ robustness


def test_area_under_rate_curve_hand_values() -> None:
    assert area_under_rate_curve([0.0, 0.5], [1.0, 0.5]) == pytest.approx(0.75)
    # unordered input, uneven spacing: (0.1 * (0.9 + 0.8) / 2 + 0.3 * (0.8 + 0.4) / 2) / 0.4
    assert area_under_rate_curve([0.4, 0.0, 0.1], [0.4, 0.9, 0.8]) == pytest.approx((0.085 + 0.18) / 0.4)
    with pytest.raises(ValueError, match="two distinct rates"):
        area_under_rate_curve([0.3], [0.9])
    assert relative_drop(0.8, 0.6) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        relative_drop(0.0, 0.5)


def _cell(method: str, rate: float, seed: int, acc: float, spec: str = "s", train_rate: float | None = None) -> dict:
    return {"spec": spec, "dataset": "d", "method": method, "protocol": "entry", "split": "fixed", "seed": seed,
            "train_rate": rate if train_rate is None else train_rate, "test_rate": rate,
            "metrics": {"accuracy": acc, "macro_f1": acc},
            "subsets": {"a": {"accuracy": acc - 0.1, "macro_f1": 0, "n": 5},
                        "b": {"accuracy": acc - 0.3, "macro_f1": 0, "n": 5}}}


def test_robustness_summaries_auc_drop_and_gap_paired_by_seed() -> None:
    cells = [_cell("good", 0.0, s, 1.0) for s in (0, 1)] + [_cell("good", 0.5, s, 0.8 - 0.1 * s) for s in (0, 1)]
    cells += [_cell("ref", 0.0, s, 0.9) for s in (0, 1)] + [_cell("ref", 0.5, s, 0.5) for s in (0, 1)]
    cells += [_cell("good", 0.5, 0, 0.1, train_rate=0.0)]  # a different regime: complete train, test 0.5
    out = {(e["regime"], e["method_label"]): e for e in robustness_summaries(cells, reference={"s": "ref"})}
    good = out[("train = test", "good")]
    assert good["rates"] == [0.0, 0.5]
    assert good["auc"]["per_seed"] == pytest.approx([0.9, 0.85])  # (1 + 0.8) / 2, (1 + 0.7) / 2
    assert good["relative_drop"][0.5]["per_seed"] == pytest.approx([0.2, 0.3])
    assert good["reference"] == "ref" and good["gap"][0.5]["per_seed"] == pytest.approx([0.3, 0.2])
    assert good["gap_auc"]["per_seed"] == pytest.approx([0.9 - 0.7, 0.85 - 0.7])
    assert out[("train = test", "ref")]["gap"] is None  # no gap of the reference to itself
    fixed = out[("train 0", "good")]  # the tied rate-0 cells join the complete-train curve
    assert fixed["rates"] == [0.0, 0.5] and fixed["per_rate"][0.5]["per_seed"] == [0.1]
    # a reference the grid did not run gives no gap, never an invented baseline
    assert all(e["gap"] is None for e in robustness_summaries(cells, reference="absent"))


def test_subset_summaries_worst_subset_and_cell_errors() -> None:
    cells = [_cell("m", 0.0, s, 0.9) for s in (0, 1, 2)]
    (entry,) = subset_summaries(cells)
    assert entry["worst_subset"] == "b" and entry["subsets"]["b"]["mean"] == pytest.approx(0.6)
    assert entry["subsets"]["a"]["n"] == 5 and len(entry["subsets"]["a"]["per_seed"]) == 3
    with pytest.raises(ValueError, match="'dataset'"):
        normalise_cell({"method": "m", "seed": 0, "metrics": {}})
    assert normalise_cell({"dataset": "d", "method": "m", "seed": 0, "metrics": {}, "rate": 0.3})["test_rate"] == 0.3
    assert not math.isnan(area_under_rate_curve([0, 1], [0.5, 0.5]))


def test_a_factorised_class_missing_a_part_cannot_be_built() -> None:
    from mlmm.components.factorised import FactorisedFusion
    from mlmm.methods.base import MissingModalityModel

    class EncodeOnly(FactorisedFusion, MissingModalityModel):
        def encode_modalities(self, batch):
            return batch.mask

    with pytest.raises(TypeError, match="fuse_embeddings"):
        EncodeOnly(make_synthetic(n_samples=30, seed=0).spec)
