"""Grouped splits: no group (subject) on two sides of train / validation / test, leave-one-group-out and group
k-fold folds, the default split of a dataset with group ids, the systematic protocol on the same ids, and the
per-fold + pooled summary of `mlmm run`'s leave-one-group-out."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from mlmm.data.datasets import make_synthetic, make_synthetic_subjects
from mlmm.data.registry import load_dataset
from mlmm.data.splits import GroupLeakWarning, default_split, fold_splits, make_splits, n_folds
from mlmm.missing import Scenario, make_protocol


@pytest.fixture(scope="module")
def subjects():
    return make_synthetic_subjects()


def _groups(*parts) -> list[set]:
    return [set(p.groups.tolist()) for p in parts]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_group_split_keeps_every_subject_on_one_side(subjects, seed) -> None:
    train, val, test = make_splits(subjects, "group", seed)
    g_train, g_val, g_test = _groups(train, val, test)
    assert not (g_train & g_val) and not (g_train & g_test) and not (g_val & g_test)
    assert len(train) + len(val) + len(test) == len(subjects) and len(val) > 0 and len(test) > 0
    assert set(np.unique(test.labels)) == {0, 1, 2}  # stratified: every class is tested
    again = make_splits(subjects, "group", seed)
    assert np.array_equal(again[2].groups, test.groups)  # seeded


def test_a_random_split_puts_subjects_on_both_sides_and_warns(subjects) -> None:
    with pytest.warns(GroupLeakWarning, match="synthetic-subjects"):
        train, _, test = make_splits(subjects, "random", 0)
    assert _groups(train)[0] & _groups(test)[0]


def test_leave_one_group_out_folds(subjects) -> None:
    ids = sorted(set(subjects.groups.tolist()))
    assert n_folds(subjects, "logo") == len(ids) == 12
    assert fold_splits(subjects, "logo") == [f"logo:{i}" for i in range(12)]
    seen = []
    for i in range(12):
        train, val, test = make_splits(subjects, f"logo:{i}", 0)
        assert _groups(test)[0] == {ids[i]} and ids[i] not in _groups(train)[0] | _groups(val)[0]
        assert not (_groups(train)[0] & _groups(val)[0])  # the validation carve-out is grouped too
        seen.append(len(test))
    assert sum(seen) == len(subjects)
    with pytest.raises(ValueError, match="fold 12 does not exist; this data has 12 folds"):
        make_splits(subjects, "logo:12", 0)


def test_group_kfold_folds_cover_every_row_once(subjects) -> None:
    assert n_folds(subjects, "group-kfold") == 5
    tests = [make_splits(subjects, f"group-kfold:{i}", 3)[2] for i in range(5)]
    assert sum(len(t) for t in tests) == len(subjects)
    all_groups = [g for t in tests for g in set(t.groups.tolist())]
    assert len(all_groups) == len(set(all_groups)) == 12  # each subject tested in exactly one fold


def test_bad_grouped_splits_are_named() -> None:
    plain = make_synthetic()
    with pytest.raises(ValueError, match="split 'group' needs group ids but dataset 'synthetic' has none"):
        make_splits(plain, "group", 0)
    with pytest.raises(ValueError, match="only logo, group-kfold have folds"):
        make_splits(plain, "random:1", 0)
    with pytest.raises(ValueError, match="unknown split 'grouped'"):
        make_splits(plain, "grouped", 0)
    with pytest.raises(ValueError, match="fold must be an integer"):
        make_splits(plain, "logo:x", 0)


def test_a_dataset_with_group_ids_defaults_to_a_grouped_split(subjects) -> None:
    assert default_split(subjects) == "group" and default_split(make_synthetic()) == "fixed"
    train, _, test = make_splits(subjects, "fixed", 0)  # the shipped split is grouped too
    assert not (_groups(train)[0] & _groups(test)[0])
    no_shipped = subjects.subset(np.arange(len(subjects)))  # same rows and ids, no shipped split
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no leak warning
        train, val, test = make_splits(no_shipped, "fixed", 0)
    assert not (_groups(train)[0] & _groups(test)[0]) and not (_groups(train)[0] & _groups(val)[0])


def test_subjects_leave_the_plain_generator_unchanged_and_carry_through_masks(subjects) -> None:
    a, b = make_synthetic(), make_synthetic(n_subjects=0)
    assert all(torch.equal(a.inputs[k], b.inputs[k]) for k in a.inputs) and a.groups is None
    assert load_dataset("synthetic-subjects").groups.tolist() == subjects.groups.tolist()
    masked = subjects.with_mask(torch.ones_like(subjects.mask))
    assert masked.groups is subjects.groups
    assert subjects.subset([3, 1]).groups.tolist() == subjects.groups[[3, 1]].tolist()
    with pytest.raises(ValueError, match="one id per row"):
        type(subjects)(subjects.spec, subjects.inputs, subjects.target, groups=[0, 1])


def test_systematic_protocol_draws_per_subject_of_the_data(subjects) -> None:
    """Without ids of its own, systematic uses the data's subjects: all rows of a subject share one pattern."""
    proto = make_protocol("systematic", rate=1.0)
    masked, info = Scenario(train=proto, val=proto, test=proto).apply(subjects, "test", 0)
    mask = masked.mask.numpy()
    for g in np.unique(subjects.groups):
        rows = mask[subjects.groups == g]
        assert (rows == rows[0]).all() and rows[0].sum() == 2  # one modality gone for the whole subject
    assert info["params"]["groups"] is None  # the record stays small


@pytest.mark.slow  # 4 folds x 1 seed of a tiny fit: ~15 s on the loaded machine
def test_run_experiment_leave_one_group_out_reports_each_fold_and_pooled(monkeypatch) -> None:
    from mlmm import experiment
    from mlmm.train.loop import TrainConfig

    small = make_synthetic_subjects(n_samples=240, n_subjects=4)
    monkeypatch.setattr(experiment, "load_dataset", lambda name: small)
    config = experiment.ExperimentConfig(dataset="synthetic-subjects", method="zero-fill", split="logo", seeds=(0,),
                                         train=TrainConfig(max_epochs=2, patience=2), subsets=False)
    result = experiment.run_experiment(config)
    assert [f["split"] for f in result["folds"]] == ["logo:0", "logo:1", "logo:2", "logo:3"]
    assert [f["held_out_groups"] for f in result["folds"]] == [["0"], ["1"], ["2"], ["3"]]
    n = [f["n_test"] for f in result["folds"]]
    acc = [f["metrics"]["accuracy"]["mean"] for f in result["folds"]]
    assert sum(n) == 240
    assert result["pooled"]["accuracy"]["mean"] == pytest.approx(np.dot(acc, n) / sum(n))


def test_a_bench_spec_with_a_fold_split_has_a_cell_per_fold_and_seed() -> None:
    from mlmm.bench import expand, parse_spec

    spec = parse_spec("name: g\ndatasets: [synthetic-subjects]\nmethods: [zero-fill]\nsplit: logo\n"
                      "scenarios: [{protocol: entry, rates: [0.2]}]\nseeds: [0, 1]\n", "g.yaml")
    cells = expand(spec)
    assert len(cells) == 12 * 2 and {c.split for c in cells} == {f"logo:{i}" for i in range(12)}
    assert len({(c.config_hash, c.seed) for c in cells}) == 24  # each fold is its own cell in the store
    plain = parse_spec("name: g\ndatasets: [synthetic]\nmethods: [zero-fill]\nsplit: group\n"
                       "scenarios: [{protocol: entry, rates: [0.2]}]\nseeds: [0]\n", "g.yaml")
    with pytest.raises(ValueError, match="needs group ids but dataset 'synthetic' has none"):
        expand(plain)


@pytest.mark.slow  # 3 folds of a tiny fit from a CSV: ~15 s on the loaded machine
def test_cli_leave_one_group_out_from_a_csv_prints_each_fold_and_pooled(tmp_path, capsys) -> None:
    import pandas as pd

    from mlmm.cli import main

    data = make_synthetic_subjects(n_samples=180, n_subjects=3)
    frame = pd.DataFrame({f"{m}_{j}": data.inputs[m][:, j].numpy() for m in data.inputs for j in range(8)})
    frame["y"], frame["subject"] = data.labels, [f"s{g}" for g in data.groups]
    csv = tmp_path / "subjects.csv"
    frame.to_csv(csv, index=False)
    argv = ["run", "--data-file", str(csv), "--label", "y", "--group-column", "subject", "--modality", "a=prefix:m0_",
            "--modality", "b=prefix:m1_", "--method", "zero-fill", "--split", "logo", "--no-subsets",
            "--epochs", "2", "--patience", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "every fold of split logo" in out and "pooled" in out
    for i, subject in enumerate(["s0", "s1", "s2"]):
        assert f"logo:{i}" in out and subject in out
    assert main([*argv[:-9], "--group-column", "nope", "--method", "zero-fill"]) == 2
    assert "no group column 'nope'" in capsys.readouterr().err


def test_loaders_take_group_ids(tmp_path) -> None:
    import pandas as pd

    from mlmm.data.loaders.table import load_arrays, load_table

    rng = np.random.default_rng(0)
    x, y, subject = rng.standard_normal((40, 3)), np.arange(40) % 2, np.repeat(["p1", "p2", "p3", "p4"], 10)
    data = load_arrays({"a": x, "y": y, "groups": subject}, kinds={"a": "vector"})
    assert data.groups.tolist() == subject.tolist() and set(data.inputs) == {"a"}
    frame = pd.DataFrame({"a1": x[:, 0], "a2": x[:, 1], "y": y, "patient": subject})
    frame.to_csv(tmp_path / "t.csv", index=False)
    table = load_table(tmp_path / "t.csv", {"a": "a1,a2"}, label="y", groups="patient")
    assert table.groups.tolist() == subject.tolist()
    train, _, test = make_splits(table, "fixed", 0)  # no split column + group ids: grouped by default
    assert not (set(train.groups) & set(test.groups))
    frame.loc[5, "patient"] = None
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValueError, match="group column 'patient' is empty in row 5"):
        load_table(tmp_path / "t.csv", {"a": "a1,a2"}, label="y", groups="patient")
