"""Time-level masks: the data contract, the structured protocols and the methods that read time masks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mlmm.components.time_pool import masked_time_mean_max
from mlmm.data.base import MultimodalDataset
from mlmm.data.batch import Batch, validate_batch
from mlmm.data.preprocess import Standardizer
from mlmm.data.spec import DatasetSpec, ModalitySpec, TaskSpec
from mlmm.missing import Asynchronous, Burst, Catastrophic, Scenario, Systematic, make_protocol
from mlmm.missing.time_masks import async_steps, burst_steps, catastrophic_steps, systematic_mask
from mlmm.train.loop import TrainConfig, Trainer, build_method, seeded

T = 12
SPEC = DatasetSpec(
    "toy-seq",
    (ModalitySpec("acc", "sequence", (T, 2)), ModalitySpec("gyr", "sequence", (T, 3)),
     ModalitySpec("v", "vector", (4,))),
    TaskSpec("classification", n_classes=2),
)


def _data(n: int = 16, seed: int = 0) -> MultimodalDataset:
    rng = np.random.default_rng(seed)
    inputs = {"acc": rng.normal(size=(n, T, 2)) + 1.0, "gyr": rng.normal(size=(n, T, 3)), "v": rng.normal(size=(n, 4))}
    return MultimodalDataset(SPEC, inputs, np.arange(n) % 2)


def _runs(row: np.ndarray) -> list[int]:
    """Lengths of the runs of False (lost steps) in a 1-D bool row."""
    runs, count = [], 0
    for v in row:
        if not v:
            count += 1
        elif count:
            runs.append(count)
            count = 0
    return runs + ([count] if count else [])


# ------------------------------------------------------------------ data contract


def test_time_mask_zeroes_unobserved_steps_and_empties_silent_modalities():
    data = _data()
    steps = np.ones((16, T), dtype=bool)
    steps[0, 3:6] = False
    steps[1] = False  # no observed step: the modality counts as missing
    masked = data.with_time_mask({"acc": steps})
    assert masked.inputs["acc"][0, 3:6].eq(0).all() and masked.inputs["acc"][0, 2].ne(0).all()
    assert not masked.mask[1, 0] and masked.mask[1, 1:].all() and masked.mask[0].all()
    assert masked.inputs["acc"][1].eq(0).all()
    assert data.time_mask is None and data.inputs["acc"][0, 3].ne(0).all()  # nothing mutated
    # narrowing twice ANDs the time masks
    again = masked.with_time_mask({"acc": np.roll(steps, 1, axis=1)})
    assert torch.equal(again.time_mask["acc"], torch.as_tensor(steps & np.roll(steps, 1, axis=1)))


def test_time_mask_travels_through_subset_select_with_mask_to_and_as_batch():
    steps = np.random.default_rng(1).random((16, T)) > 0.3
    steps[:, 0] = True
    data = _data().with_time_mask({"gyr": steps})
    sub = data.subset(np.array([3, 5]))
    assert torch.equal(sub.time_mask["gyr"], torch.as_tensor(steps[[3, 5]]))
    batch = data.as_batch()
    assert torch.equal(batch.select(torch.tensor([2])).time_mask["gyr"], torch.as_tensor(steps[[2]]))
    assert batch.to("cpu").time_mask is not None
    mask = batch.mask.clone()
    mask[:, 2] = False
    assert batch.with_mask(mask).time_mask is batch.time_mask
    assert torch.equal(data.with_mask(mask.numpy()).time_mask["gyr"], data.time_mask["gyr"])


def test_time_mask_validation_names_the_modality():
    data = _data()
    with pytest.raises(ValueError, match=r"time_mask\['acc'\] must have shape \(16, 12\)"):
        data.with_time_mask({"acc": np.ones((16, T - 1), dtype=bool)})
    with pytest.raises(ValueError, match="modality 'v' is a vector"):
        data.with_time_mask({"v": np.ones((16, 4), dtype=bool)})
    with pytest.raises(ValueError, match="unknown modality 'x'"):
        data.with_time_mask({"x": np.ones((16, T), dtype=bool)})
    with pytest.raises(ValueError, match=r"time_mask\['gyr'\] must be a bool tensor"):
        data.with_time_mask({"gyr": np.ones((16, T))})
    silent = torch.ones(16, T, dtype=torch.bool)
    silent[4] = False
    with pytest.raises(ValueError, match="modality 'acc': sample 4 is present in the mask but has no observed step"):
        validate_batch(Batch(data.inputs, data.mask, data.target, {"acc": silent}), SPEC)
    gaps = torch.ones(16, T, dtype=torch.bool)
    gaps[2, 5] = False
    with pytest.raises(ValueError, match="modality 'acc': sample 2 holds non-zero values at unobserved time steps"):
        validate_batch(Batch(data.inputs, data.mask, data.target, {"acc": gaps}), SPEC)


def test_dataset_accepts_nan_at_unobserved_steps():
    data = _data()
    x = data.inputs["acc"].numpy().copy()
    x[0, 4] = np.nan
    steps = np.ones((16, T), dtype=bool)
    steps[0, 4] = False
    built = MultimodalDataset(SPEC, {**data.inputs, "acc": x}, data.target, time_mask={"acc": steps})
    assert built.inputs["acc"][0, 4].eq(0).all()


def test_standardizer_fits_on_observed_steps_and_keeps_unobserved_zero():
    data = _data()
    steps = np.zeros((16, T), dtype=bool)
    steps[:, :4] = True
    masked = data.with_time_mask({"acc": steps})
    std = Standardizer(SPEC).fit(masked.as_batch())
    observed = data.inputs["acc"][:, :4].reshape(-1, 2).double()
    assert torch.allclose(std.mean_acc[0].double(), observed.mean(0), atol=1e-5)
    out = std(masked.as_batch())
    assert out.time_mask is masked.time_mask
    assert out.inputs["acc"][:, 4:].eq(0).all() and out.inputs["acc"][:, :4].ne(0).any()


def test_training_loop_carries_time_masks():
    data = _data(24)
    steps = burst_steps(24, T, 0.5, 2, np.random.default_rng(0))
    masked = data.with_time_mask({"acc": steps})
    seen = []

    method = build_method("masked-temporal-pool", SPEC, seed=0, embed_dim=8)
    original = method.forward

    def spy(batch):
        seen.append(batch.time_mask)
        return original(batch)

    method.forward = spy
    Trainer(TrainConfig(max_epochs=1, batch_size=8, min_steps_per_epoch=1)).fit(method, masked, masked)
    assert seen and all(tm is not None and tm["acc"].shape[1] == T for tm in seen)


# ------------------------------------------------------------------ protocols


@pytest.mark.parametrize("rate, block", [(0.3, 10), (0.5, 7), (0.25, 1), (0.9, 10), (0.99, 3)])
def test_burst_loses_exactly_round_rate_T_steps_in_blocks(rate, block):
    steps = burst_steps(200, 100, rate, block, np.random.default_rng(0))
    lost = int(np.floor(rate * 100 + 0.5))
    assert ((~steps).sum(axis=1) == lost).all()
    n_blocks = -(-lost // block)
    if n_blocks <= 100 - lost + 1:  # room to keep the blocks apart: exactly the planned runs
        expected = sorted([block] * (n_blocks - 1) + [lost - block * (n_blocks - 1)])
        assert all(sorted(_runs(row)) == expected for row in steps)


def test_burst_is_seeded_and_spreads_over_time():
    a = burst_steps(2000, 50, 0.2, 5, np.random.default_rng(3))
    assert np.array_equal(a, burst_steps(2000, 50, 0.2, 5, np.random.default_rng(3)))
    assert not np.array_equal(a, burst_steps(2000, 50, 0.2, 5, np.random.default_rng(4)))
    per_step = 1 - a.mean(axis=0)
    # Every step can be lost; bursts lie inside the sequence, so the first and last
    # block - 1 steps are lost less often, and the interior about at the rate.
    assert per_step.min() > 0.03 and np.abs(per_step[5:-5] - 0.2).max() < 0.05


def test_burst_rejects_losing_every_step():
    with pytest.raises(ValueError, match="at most 9"):
        burst_steps(3, 10, 0.96, 2, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\)"):
        Burst(rate=1.0)


def test_catastrophic_fails_exact_fraction_once_and_for_good():
    data = _data(40)
    masked, info = Scenario.same(Catastrophic(rate=0.25, onset_min=0.25, onset_max=0.75)).apply(data, "test", 0)
    failed = np.zeros(40, dtype=int)
    for name in ("acc", "gyr"):
        steps = masked.time_mask[name].numpy()
        for row in steps:
            k = row.sum()
            assert row[:k].all() and not row[k:].any()  # observed prefix, then dead
        dead = ~steps.all(axis=1)
        onset = steps.sum(axis=1)[dead]
        assert ((onset >= 3) & (onset <= 9)).all()
        failed += dead
    assert failed.sum() == 10 and failed.max() == 1  # exactly round(0.25 * 40) samples, one sensor each
    assert masked.mask.all()  # a failure keeps >= 1 step: no modality is lost as a whole
    assert info["missing_step_fraction"]["acc"] > 0


def test_catastrophic_steps_onset_bounds():
    steps = catastrophic_steps(500, 10, np.ones(500, dtype=bool), 0.0, 1.0, np.random.default_rng(0))
    kept = steps.sum(axis=1)
    assert kept.min() == 1 and kept.max() == 9


def test_asynchronous_keeps_every_kth_step_and_shifts_values():
    data = _data(8)
    protocol = Asynchronous(every=3, shift=2, random_phase=False)
    masked, _ = Scenario.same(protocol).apply(data, "test", 0)
    assert masked.time_mask is not None and set(masked.time_mask) == {"gyr"}  # the first sequence is the clock
    steps = masked.time_mask["gyr"][0].numpy()
    assert np.flatnonzero(steps).tolist() == [2, 5, 8, 11]
    assert torch.equal(masked.inputs["gyr"][:, 5], data.inputs["gyr"][:, 3])  # lag of 2 steps
    assert masked.inputs["gyr"][:, 3].eq(0).all()
    phases = async_steps(1000, 12, 4, 0, True, np.random.default_rng(0)).argmax(axis=1)
    assert set(phases.tolist()) == {0, 1, 2, 3}


def test_systematic_drops_modalities_for_whole_groups_exactly():
    groups = np.repeat(np.arange(10), 7)
    mask = systematic_mask(groups, 3, [0, 1, 2], 0.3, np.random.default_rng(0))
    lacking = [g for g in range(10) if not mask[groups == g].all()]
    assert len(lacking) == 3
    for g in range(10):
        rows = mask[groups == g]
        assert (rows == rows[0]).all() and rows[0].sum() >= 2  # one modality for the whole group
    protocol = Systematic(rate=0.5, groups=groups.tolist(), modalities=["b"])
    m = protocol.sample(3, np.zeros(70), np.random.default_rng(1), modality_names=("a", "b", "c"))
    assert m[:, [0, 2]].all() and (~m[:, 1]).sum() == 35
    with pytest.raises(ValueError, match="groups gives 70 ids but the data has 5 samples"):
        protocol.sample(3, np.zeros(5), np.random.default_rng(1), modality_names=("a", "b", "c"))


@pytest.mark.parametrize("name, params", [
    ("burst", {"rate": 0.3, "block": 4}),
    ("catastrophic", {"rate": 0.5, "onset_min": 0.2}),
    ("asynchronous", {"every": 2, "shift": 1}),
    ("systematic", {"rate": 0.5, "n_groups": 4, "modalities": ["gyr"]}),
])
def test_protocols_are_seeded_json_ready_and_leave_the_dataset_alone(name, params):
    protocol = make_protocol(name, **params)
    assert make_protocol(name, **json.loads(json.dumps(protocol.params()))) == protocol
    data = _data(32)
    before = {k: v.clone() for k, v in data.inputs.items()}
    scenario = Scenario.same(protocol)
    a, info_a = scenario.apply(data, "test", 7)
    b, _ = scenario.apply(data, "test", 7)
    assert torch.equal(a.mask, b.mask) and all(torch.equal(a.inputs[k], b.inputs[k]) for k in a.inputs)
    assert all(torch.equal(before[k], data.inputs[k]) for k in before) and data.time_mask is None
    validate_batch(a.as_batch(), SPEC)
    assert a.mask.any(dim=1).all()
    json.dumps(info_a)


def test_time_protocols_name_a_bad_modality():
    data = _data(8)
    with pytest.raises(ValueError, match="modality 'v' is a vector, not a sequence"):
        Scenario.same(Burst(rate=0.2, modalities=["v"])).apply(data, "test", 0)
    with pytest.raises(ValueError, match="unknown modality 'zzz'"):
        Burst(rate=0.2, modalities=["zzz"]).sample(3, np.zeros(4), np.random.default_rng(0), ("acc", "gyr", "v"))


def test_burst_through_the_cli_on_basicmotions(capsys):
    from mlmm.cli import main

    code = main(["run", "--dataset", "basicmotions", "--method", "masked-temporal-pool", "--protocol", "burst",
                 "--rate", "0.3", "--epochs", "1", "--no-subsets", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["protocol"] == "burst"
    assert result["realised"]["test"]["missing_entry_fraction"] == 0.0
    assert result["realised"]["test"]["missing_step_fraction"] == {"accelerometer": 0.3, "gyroscope": 0.3}


# ------------------------------------------------------------------ methods


def test_masked_time_mean_max_ignores_unobserved_steps():
    h = torch.tensor([[[1.0], [float("nan")], [3.0], [100.0]]])
    steps = torch.tensor([[True, False, True, False]])
    assert torch.equal(masked_time_mean_max(h, steps), torch.tensor([[2.0, 3.0]]))
    assert torch.equal(masked_time_mean_max(h, torch.zeros(1, 4, dtype=torch.bool)), torch.zeros(1, 2))


@pytest.mark.parametrize("name", ["masked-temporal-pool", "frame-repeat", "streaming-gru"])
def test_time_mask_methods_never_read_unobserved_steps(name):
    data = _data(10)
    steps = burst_steps(10, T, 0.4, 2, np.random.default_rng(0))
    batch = data.with_time_mask({"acc": steps, "gyr": steps[::-1].copy()}).as_batch()
    with seeded(0):
        method = build_method(name, SPEC, seed=0).eval()
    clean = method(batch).logits
    for poison in (float("nan"), 1e6):
        inputs = {k: v.clone() for k, v in batch.inputs.items()}
        for key in ("acc", "gyr"):
            inputs[key][~batch.time_mask[key]] = poison
        poisoned = method(Batch(inputs, batch.mask, batch.target, batch.time_mask)).logits
        assert torch.allclose(poisoned, clean, atol=1e-6), name


def test_frame_repeat_fills_a_hand_example():
    spec = DatasetSpec("one", (ModalitySpec("s", "sequence", (6, 1)),), TaskSpec("classification", n_classes=2))
    method = build_method("frame-repeat", spec, seed=0)
    x = torch.tensor([[0.0, 2.0, 0.0, 0.0, 5.0, 0.0]]).unsqueeze(-1)
    steps = torch.tensor([[False, True, False, False, True, False]])
    batch = Batch({"s": x}, torch.ones(1, 1, dtype=torch.bool), torch.tensor([0]), {"s": steps})
    filled = method.fill(batch).inputs["s"][0, :, 0]
    assert filled.tolist() == [2.0, 2.0, 2.0, 2.0, 5.0, 5.0]


def test_without_time_masks_the_methods_see_full_sequences():
    data = _data(6)
    full = data.as_batch()
    for name in ("masked-temporal-pool", "frame-repeat"):
        method = build_method(name, SPEC, seed=0).eval()
        every_step = {k: torch.ones(6, T, dtype=torch.bool) for k in ("acc", "gyr")}
        stepped = Batch(full.inputs, full.mask, full.target, every_step)
        assert torch.allclose(method(full).logits, method(stepped).logits)


@pytest.mark.slow
def test_time_mask_methods_beat_zeros_at_unobserved_steps_under_heavy_burst():
    # benchmarks/temporal_burst.py, rate 0.9, seed 0 measured: masked-temporal-pool 0.975,
    # frame-repeat 0.975, masked-mean 0.875, zero-fill 0.75 (40 test recordings).
    from mlmm.experiment import ExperimentConfig, run_experiment

    def accuracy(method: str) -> float:
        config = ExperimentConfig(dataset="basicmotions", method=method, protocol="burst", rate=0.9, subsets=False)
        return run_experiment(config)["metrics"]["accuracy"]["mean"]

    baseline = max(accuracy("masked-mean"), accuracy("zero-fill"))
    assert accuracy("masked-temporal-pool") > baseline
    assert accuracy("frame-repeat") > baseline
