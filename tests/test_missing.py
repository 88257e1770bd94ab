"""Missingness protocols: realised rates, guarantees, determinism, (in)dependence on labels, scenarios."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mlmm.data.base import MultimodalDataset
from mlmm.data.spec import DatasetSpec, ModalitySpec, TaskSpec
from mlmm.missing import (
    PROTOCOLS,
    Complete,
    EntryRate,
    FixedSubset,
    LabelMNAR,
    PerModality,
    SampleRate,
    Scenario,
    TimeMaskProtocol,
    all_subsets,
    entry_rate_mask,
    fixed_subset_mask,
    label_mnar_class_rates,
    label_mnar_mask,
    make_protocol,
    mask_checksum,
    per_modality_mask,
    protocol_infos,
    realised_missingness,
    sample_rate_mask,
    subset_name,
)
from mlmm.registry import UnknownNameError

M = 3
NAMES = ("a", "b", "c")

# One representative configuration per registered protocol (checked to cover the registry).
CASES = {
    "none": {},
    "entry": {"rate": 0.3},
    "sample": {"rate": 0.4},
    "per-modality": {"rates": [0.1, 0.3, 0.5]},
    "fixed-subset": {"subset": [0, 2]},
    "mnar": {"rate": 0.3, "strength": 0.8},
    "systematic": {"rate": 0.5, "n_groups": 6},
}
MCAR = ["none", "entry", "sample", "per-modality", "fixed-subset", "systematic"]


def _labels(n: int, n_classes: int = 5, seed: int = 123) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n_classes, size=n)


def _draw(name: str, n: int = 3000, seed: int = 0, labels: np.ndarray | None = None) -> np.ndarray:
    labels = _labels(n) if labels is None else labels
    return make_protocol(name, **CASES[name]).sample(M, labels, np.random.default_rng(seed), modality_names=NAMES)


def test_cases_cover_the_registry():
    # Time-level protocols (burst, catastrophic, asynchronous) draw time masks, not
    # (n, M) masks; tests/test_temporal.py covers them.
    modality_level = [n for n in PROTOCOLS.names() if not issubclass(PROTOCOLS.get(n), TimeMaskProtocol)]
    assert sorted(CASES) == modality_level


# ---------------------------------------------------------------- protocol-wide


@pytest.mark.parametrize("name", sorted(CASES))
def test_mask_shape_dtype_and_at_least_one_kept(name):
    mask = _draw(name, n=500)
    assert mask.shape == (500, M) and mask.dtype == bool
    assert mask.any(axis=1).all()  # every protocol here promises >= 1 kept


@pytest.mark.parametrize("name", sorted(CASES))
def test_deterministic_for_a_seed_and_different_across_seeds(name):
    a, b = _draw(name, seed=5), _draw(name, seed=5)
    assert np.array_equal(a, b)
    if name not in ("none", "fixed-subset"):  # deterministic protocols have one mask
        assert not np.array_equal(a, _draw(name, seed=6))


@pytest.mark.parametrize("name", sorted(CASES))
def test_inputs_not_mutated(name):
    labels = _labels(400)
    before = labels.copy()
    params = json.loads(json.dumps(CASES[name]))
    protocol = make_protocol(name, **params)
    protocol.sample(M, labels, np.random.default_rng(0), modality_names=NAMES)
    assert np.array_equal(labels, before)
    assert protocol.params() == {**protocol.params(), **CASES[name]}  # stored params unchanged


@pytest.mark.parametrize("name", sorted(CASES))
def test_protocol_round_trips_through_params_and_json(name):
    protocol = make_protocol(name, **CASES[name])
    again = make_protocol(name, **json.loads(json.dumps(protocol.params())))
    assert again == protocol and hash(again) == hash(protocol)
    assert protocol.describe()["definition"]


@pytest.mark.parametrize("name", MCAR)
def test_mcar_masks_do_not_depend_on_labels(name):
    labels = _labels(20000)
    mask = _draw(name, n=20000, labels=labels)
    per_class = [1 - mask[labels == c].mean() for c in range(5)]
    assert max(per_class) - min(per_class) < 0.03


def test_mnar_mask_depends_on_labels():
    labels = _labels(20000)
    mask = _draw("mnar", n=20000, labels=labels)
    per_class = np.array([1 - mask[labels == c].mean() for c in range(5)])
    assert per_class.max() - per_class.min() > 0.3
    assert np.all(np.diff(per_class) > 0)  # higher classes lose more, as documented
    # Chi-square on (class x missing-count-per-sample) rejects independence by a mile.
    missing = (~mask).sum(axis=1)
    table = np.array([[np.sum((labels == c) & (missing == k)) for k in range(M)] for c in range(5)], float)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    chi2 = np.sum((table - expected) ** 2 / np.where(expected > 0, expected, 1))
    assert chi2 > 1000  # the 0.999 quantile of chi2 with 8 dof is ~26
    assert abs(1 - mask.mean() - 0.3) < 0.005  # overall entry rate still the asked one


# ------------------------------------------------------------------ entry rate


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.25, 0.5, 0.6, 5 / 6])
def test_entry_rate_is_exact(rate):
    mask = entry_rate_mask(2000, 6, rate, np.random.default_rng(1))
    assert np.count_nonzero(~mask) == math.floor(rate * 2000 * 6 + 0.5)
    assert mask.any(axis=1).all()


def test_entry_rate_sanity_numbers_from_protocols_md():
    names = [f"v{j}" for j in range(6)]
    low = realised_missingness(entry_rate_mask(2000, 6, 0.1, np.random.default_rng(0)), names)
    assert low["missing_entry_fraction"] == 0.1
    assert 0.40 <= low["incomplete_sample_fraction"] <= 0.56  # ~48 %
    high = realised_missingness(entry_rate_mask(2000, 6, 0.5, np.random.default_rng(0)), names)
    assert 0.002 <= high["complete_sample_fraction"] <= 0.025  # ~1 %


def test_entry_rate_has_no_per_modality_bias():
    mask = entry_rate_mask(20000, 4, 0.5, np.random.default_rng(2))
    assert np.ptp(1 - mask.mean(axis=0)) < 0.03


@pytest.mark.parametrize(
    "rate, m, match",
    [
        (0.9, 6, r"entry rate 0.9 is impossible with 6 modalities.*maximum is 0.833"),
        (0.6, 2, r"maximum is 0.5"),
        (0.1, 1, r"impossible with 1 modality"),
        (-0.1, 3, r"rate must be in \[0, 1\)"),
        (1.0, 3, r"rate must be in \[0, 1\)"),
        (float("nan"), 3, r"rate must be a finite number"),
        ("0.3", 3, r"rate must be a finite number"),
    ],
)
def test_entry_rate_rejects_impossible_requests(rate, m, match):
    with pytest.raises(ValueError, match=match):
        entry_rate_mask(10, m, rate, np.random.default_rng(0))


def test_rng_must_be_a_generator():
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        entry_rate_mask(10, 3, 0.2, 0)


# ----------------------------------------------------------------- sample rate


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_sample_rate_is_exact(rate):
    mask = sample_rate_mask(2000, 6, rate, np.random.default_rng(3))
    info = realised_missingness(mask, [str(j) for j in range(6)])
    assert info["incomplete_sample_fraction"] == pytest.approx(rate)
    assert info["empty_sample_fraction"] == 0.0


def test_sample_rate_sanity_number_from_protocols_md():
    mask = sample_rate_mask(2000, 6, 0.5, np.random.default_rng(0))
    assert np.sum(mask.all(axis=1)) == 1000  # exactly 50 % complete


def test_sample_rate_drops_a_uniform_number_of_modalities():
    mask = sample_rate_mask(20000, 4, 1.0, np.random.default_rng(4))
    dropped = np.bincount((~mask).sum(axis=1), minlength=4)
    assert dropped[0] == 0
    assert np.allclose(dropped[1:] / 20000, 1 / 3, atol=0.02)  # k uniform in 1..M-1


@pytest.mark.parametrize(
    "n_modalities, rate, match",
    [(1, 0.2, r"impossible with 1 modality"), (3, 1.2, r"rate must be in \[0, 1\]"), (3, -0.5, r"rate must be in")],
)
def test_sample_rate_rejects_impossible_requests(n_modalities, rate, match):
    with pytest.raises(ValueError, match=match):
        sample_rate_mask(10, n_modalities, rate, np.random.default_rng(0))


# --------------------------------------------------------- per-modality rates


def test_per_modality_rates_close_to_asked():
    rates = [0.1, 0.3, 0.5]
    mask = per_modality_mask(20000, rates, np.random.default_rng(5), keep_at_least_one=False)
    assert np.allclose(1 - mask.mean(axis=0), rates, atol=0.015)


def test_per_modality_restoration_follows_documented_correction():
    rates = [0.9, 0.9, 0.9]
    mask = per_modality_mask(40000, rates, np.random.default_rng(6))
    assert mask.any(axis=1).all()
    expected = 0.9 - 0.9**3 / 3  # p_m - prod(p) / M
    assert np.allclose(1 - mask.mean(axis=0), expected, atol=0.01)


def test_per_modality_without_keep_can_leave_empty_samples():
    mask = per_modality_mask(100, [1.0, 1.0], np.random.default_rng(0), keep_at_least_one=False)
    assert not mask.any()


def test_per_modality_rates_by_name():
    protocol = PerModality({"c": 1.0})
    mask = protocol.sample(3, np.zeros(50), np.random.default_rng(0), modality_names=NAMES)
    assert mask[:, :2].all() and not mask[:, 2].any()
    with pytest.raises(ValueError, match="unknown modality 'x'"):
        PerModality({"x": 0.2}).sample(3, np.zeros(5), np.random.default_rng(0), modality_names=NAMES)
    with pytest.raises(ValueError, match="need modality_names"):
        protocol.sample(3, np.zeros(5), np.random.default_rng(0))


@pytest.mark.parametrize("rates, match", [([0.1, 1.5], r"rates\[1\] must be in \[0, 1\]"), ([], "at least one")])
def test_per_modality_rejects_bad_rates(rates, match):
    with pytest.raises(ValueError, match=match):
        PerModality(rates)


def test_per_modality_length_must_match():
    with pytest.raises(ValueError, match="2 entries but there are 3 modalities"):
        PerModality([0.1, 0.2]).sample(3, np.zeros(5), np.random.default_rng(0))


# ---------------------------------------------------------------- fixed subset


def test_fixed_subset_mask_and_names():
    mask = fixed_subset_mask(7, 4, [3, 1])
    assert mask.tolist() == [[False, True, False, True]] * 7
    by_name = FixedSubset(["c", "a"]).sample(3, np.zeros(4), np.random.default_rng(0), modality_names=NAMES)
    assert by_name.tolist() == [[True, False, True]] * 4


@pytest.mark.parametrize(
    "subset, match",
    [([], "at least one"), ([0, 3], r"indices in \[0, 3\)"), ([1, 1], "duplicate"), ([-1], r"in \[0, 3\)"),
     ([0.5], "indices")],
)
def test_fixed_subset_rejects_bad_subsets(subset, match):
    with pytest.raises(ValueError, match=match):
        fixed_subset_mask(5, 3, subset)


@pytest.mark.parametrize(
    "subset, match", [([], "at least one"), ([1, 1], "duplicate"), ([0, "a"], "only modality indices"), ([-2], "only")]
)
def test_fixed_subset_protocol_fails_early(subset, match):
    with pytest.raises(ValueError, match=match):
        FixedSubset(subset)


def test_fixed_subset_protocol_checks_range_and_names_at_sample():
    with pytest.raises(ValueError, match=r"indices in \[0, 3\)"):
        FixedSubset([5]).sample(3, np.zeros(2), np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown modality 'z'"):
        FixedSubset(["z"]).sample(3, np.zeros(2), np.random.default_rng(0), modality_names=NAMES)


# ------------------------------------------------------------------------ MNAR


def test_mnar_class_rates_are_a_documented_function():
    labels = np.repeat(np.arange(5), 10)
    rates = label_mnar_class_rates(labels, 3, 0.3, strength=1.0)
    assert list(rates) == [0, 1, 2, 3, 4]
    assert np.allclose(list(rates.values()), [0.0, 0.15, 0.3, 0.45, 0.6])  # d = min(0.3, 2/3-0.3)
    assert np.mean(list(rates.values())) == pytest.approx(0.3)
    flat = label_mnar_class_rates(labels, 3, 0.3, strength=0.0)
    assert set(flat.values()) == {0.3}


def test_mnar_keeps_overall_rate_with_imbalanced_classes():
    labels = np.r_[np.zeros(9000, int), np.ones(1000, int)]
    mask = label_mnar_mask(labels, 4, 0.4, np.random.default_rng(0), strength=1.0)
    assert abs(1 - mask.mean() - 0.4) < 0.002
    assert mask.any(axis=1).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [({"rate": 0.3, "strength": 1.5}, r"strength must be in \[0, 1\]"), ({"rate": 1.0}, r"rate must be in \[0, 1\)")],
)
def test_mnar_rejects_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LabelMNAR(**kwargs)


def test_mnar_rejects_infeasible_rate_at_sample():
    with pytest.raises(ValueError, match="maximum is 0.5"):
        LabelMNAR(0.7).sample(2, np.zeros(5), np.random.default_rng(0))


# ------------------------------------------------------------- factory, infos


def test_make_protocol_errors_are_helpful():
    with pytest.raises(UnknownNameError, match="unknown protocol 'entri'; known: .*entry"):
        make_protocol("entri", rate=0.1)
    with pytest.raises(ValueError, match="no parameter 'rat'; it takes: rate"):
        make_protocol("entry", rat=0.1)
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\)"):
        make_protocol("entry", rate=1.2)  # fails at construction, not mid-run
    assert isinstance(make_protocol("sample", rate=0.2), SampleRate)


def test_protocol_infos_are_json_ready_and_complete():
    infos = json.loads(json.dumps(protocol_infos()))
    assert [i["name"] for i in infos] == PROTOCOLS.names()
    by_name = {i["name"]: i for i in infos}
    assert "fraction of missing (sample, modality) entries" in by_name["entry"]["definition"]
    assert "fraction of incomplete samples" in by_name["sample"]["definition"]
    assert {p["name"] for p in by_name["mnar"]["parameters"]} == {"rate", "strength"}
    assert all(i["definition"].endswith(".") for i in infos)


# ----------------------------------------------------------------- bookkeeping


def test_realised_missingness_fields():
    mask = np.array([[1, 1, 1], [1, 0, 1], [0, 0, 0], [1, 0, 1]], dtype=bool)
    info = realised_missingness(mask, NAMES)
    assert info["n_samples"] == 4
    assert info["missing_entry_fraction"] == 5 / 12
    assert info["incomplete_sample_fraction"] == 0.75
    assert info["complete_sample_fraction"] == 0.25
    assert info["empty_sample_fraction"] == 0.25
    assert info["per_modality_missing"] == {"a": 0.25, "b": 0.75, "c": 0.25}
    assert list(info["subset_counts"].items()) == [("a+c", 2), ("a+b+c", 1), ("none", 1)]
    json.dumps(info)


def test_mask_checksum_tracks_shape_and_content():
    mask = entry_rate_mask(50, 3, 0.3, np.random.default_rng(0))
    same = mask.copy()
    assert mask_checksum(mask) == mask_checksum(same)
    same[0, 0] = not same[0, 0]
    assert mask_checksum(mask) != mask_checksum(same)
    assert mask_checksum(np.ones((2, 3), bool)) != mask_checksum(np.ones((3, 2), bool))
    assert len(mask_checksum(mask)) == 64


def test_all_subsets_and_names():
    subsets = all_subsets(3)
    assert subsets == [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]
    assert len(all_subsets(6)) == 2**6 - 1
    assert subset_name((2, 0), ["fou", "fac", "kar"]) == "fou+kar"
    assert subset_name((), NAMES) == "none"


# -------------------------------------------------------------------- scenario


def _dataset(n: int = 60, natural: np.ndarray | None = None) -> MultimodalDataset:
    spec = DatasetSpec(
        "tiny",
        (ModalitySpec("a", "vector", (2,)), ModalitySpec("b", "vector", (3,)), ModalitySpec("c", "vector", (1,))),
        TaskSpec("classification", n_classes=3),
    )
    rng = np.random.default_rng(0)
    inputs = {m.name: rng.normal(size=(n, *m.shape)) + 1.0 for m in spec.modalities}
    return MultimodalDataset(spec, inputs, target=np.arange(n) % 3, mask=natural)


def test_scenario_constructors_set_roles_apart():
    entry = EntryRate(0.3)
    assert Scenario.same(entry) == Scenario(entry, entry, entry)
    assert Scenario.complete_train(entry) == Scenario(Complete(), Complete(), entry)
    assert Scenario.incomplete_train(entry) == Scenario(entry, entry, Complete())
    described = json.loads(json.dumps(Scenario.complete_train(entry).describe()))
    assert Scenario.from_dict(described) == Scenario.complete_train(entry)
    with pytest.raises(TypeError):
        Scenario(entry, entry, "entry")


def test_scenario_apply_is_seeded_per_role():
    data = _dataset()
    scenario = Scenario.same(EntryRate(0.3))
    train1, info1 = scenario.apply(data, "train", seed=3)
    train2, info2 = scenario.apply(data, "train", seed=3)
    assert info1 == info2 and np.array_equal(train1.mask.numpy(), train2.mask.numpy())
    _, val = scenario.apply(data, "val", seed=3)
    _, other = scenario.apply(data, "train", seed=4)
    assert val["mask_sha256"] != info1["mask_sha256"] != other["mask_sha256"]
    assert info1["protocol"] == "entry" and info1["params"] == {"rate": 0.3}
    assert info1["missing_entry_fraction"] == pytest.approx(0.3, abs=1 / 180)
    assert info1["mask_sha256"] == mask_checksum(train1.mask.numpy())
    with pytest.raises(ValueError, match="unknown role"):
        scenario.apply(data, "dev", seed=0)


def test_scenario_apply_does_not_mutate_dataset_and_zeroes_masked_slots():
    data = _dataset()
    mask_before, a_before, y_before = data.mask.clone(), data.inputs["a"].clone(), data.target.clone()
    out, _ = Scenario.same(EntryRate(0.5)).apply(data, "test", seed=0)
    assert data.mask.equal(mask_before) and data.inputs["a"].equal(a_before) and data.target.equal(y_before)
    assert (out.inputs["a"][~out.mask[:, 0]] == 0).all()


def test_scenario_ands_with_natural_mask():
    natural = np.ones((60, 3), dtype=bool)
    natural[:20, 1] = False
    data = _dataset(natural=natural)
    out, info = Scenario.same(SampleRate(0.5)).apply(data, "train", seed=1)
    final = out.mask.numpy()
    assert not final[:20, 1].any()  # never-recorded stays absent
    assert np.all(final <= natural)
    out_none, _ = Scenario.same(Complete()).apply(data, "train", seed=1)
    assert np.array_equal(out_none.mask.numpy(), natural)
    assert info["empty_sample_fraction"] == 0.0


def test_scenario_restores_a_naturally_present_modality_in_emptied_samples():
    natural = np.ones((60, 3), dtype=bool)
    natural[:10, 0] = False  # rows 0-9: only b and c were recorded
    natural[10:15, [0, 2]] = False  # rows 10-14: only b
    data = _dataset(natural=natural)
    out, info = Scenario.same(FixedSubset(["a"])).apply(data, "test", seed=0)
    final = out.mask.numpy()
    assert final.any(axis=1).all() and np.all(final <= natural)
    assert info["restored_samples"] == 15
    assert (final[:15].sum(axis=1) == 1).all()
    assert final[10:15, 1].all()  # the only natural modality comes back
    assert final[15:].tolist() == [[True, False, False]] * 45


def test_scenario_rejects_naturally_empty_samples():
    natural = np.ones((6, 3), dtype=bool)
    natural[2] = False
    spec = _dataset(6).spec
    # Build past validation to reach the Scenario check (real datasets reject this earlier).
    inputs = {m.name: np.zeros((6, *m.shape)) for m in spec.modalities}
    data = MultimodalDataset(spec, inputs, target=np.zeros(6, int), mask=natural, _validated=True)
    with pytest.raises(ValueError, match="no modality in the dataset's natural mask"):
        Scenario.same(Complete()).apply(data, "train", seed=0)
