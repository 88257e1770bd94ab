"""The guarantees of training on a streamed (memory-mapped) dataset (issue 12, the training side).

- whole-split steps by batch: ``prepare_split`` / ``calibrate_split`` over small batches give what
  ``prepare`` / ``calibrate`` give on the whole split, for every method that declares them;
  every other whole-split step declares a row limit and refuses beyond it naming the method;
- identical results in memory and streamed, for masked-mean and every method with a whole-split step;
- train-only statistics, validation-only model selection, bounded reads;
- a bench grid over a memory-mapped dataset, interrupted and resumed, gives the uninterrupted rows;
- every missingness protocol draws its masks without reading a modality row.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mlmm.bench import load_cells, parse_spec, run_bench
from mlmm.components.memory_bank import TrainingBankMixin
from mlmm.data import MemmapDataset, Standardizer, adapt_dataset, open_memmap_dataset, save_memmap_dataset
from mlmm.data.datasets.synthetic import make_synthetic
from mlmm.data.passes import SplitPasses
from mlmm.data.registry import DATASETS, DatasetEntry, register
from mlmm.methods import METHODS
from mlmm.methods.base import Capability
from mlmm.missing import PROTOCOLS, Scenario, make_protocol
from mlmm.train import FitSteps, TrainConfig, Trainer, build_method

CFG = TrainConfig(max_epochs=2, patience=2, batch_size=32)


def _with_splits(data, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = len(data)
    mask = rng.random((n, data.spec.n_modalities)) > 0.3
    mask[~mask.any(axis=1), 0] = True
    data = data.with_mask(torch.as_tensor(mask))
    order = rng.permutation(n)
    a, b = int(0.6 * n), int(0.8 * n)
    data.splits = {"train": np.sort(order[:a]), "val": np.sort(order[a:b]), "test": np.sort(order[b:])}
    return data


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The same 150 rows (3 vector modalities of 5, 3 classes, a partial mask) in memory and memory-mapped."""
    data = _with_splits(make_synthetic(n_samples=150, n_modalities=3, dims=5, seed=2))
    return data, open_memmap_dataset(save_memmap_dataset(data, tmp_path_factory.mktemp("mm") / "d", chunk_rows=40))


@pytest.fixture(scope="module")
def sequences():
    return _with_splits(make_synthetic(n_samples=90, n_modalities=2, dims=4, kind="sequence", seed=1))


@pytest.fixture
def small_stream(monkeypatch):
    """Streamed passes of 16 rows, so a whole-split step really spans several batches."""
    import mlmm.train.streamed as streamed

    monkeypatch.setattr(streamed, "STREAM_BATCH_ROWS", 16)


def _declaring(capability: Capability) -> list[str]:
    return [n for n in METHODS.names() if capability in METHODS.get(n).info.capabilities]


def _standardised(data):
    batch = data.as_batch()
    standardizer = Standardizer(data.spec).fit(batch)
    batch = standardizer(batch)
    return batch.with_index(torch.arange(batch.size)), standardizer


def _assert_same_state(a, b, rtol=1e-5, atol=1e-6):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key, value in sa.items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(sb[key], value, rtol=rtol, atol=atol, msg=key)
        else:  # extra state (e.g. the router's calibration log): equal, floats within tolerance
            _assert_close_tree(sb[key], value, rtol, key)


def _assert_close_tree(got, want, rtol, where):
    if isinstance(want, dict):
        assert got.keys() == want.keys(), where
        for k in want:
            _assert_close_tree(got[k], want[k], rtol, f"{where}.{k}")
    elif isinstance(want, (list, tuple)) and not isinstance(want, str):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            _assert_close_tree(g, w, rtol, f"{where}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=rtol, abs=1e-6), where
    else:
        assert got == want, where


# ------------------------------------------------------- whole-split steps by batch


@pytest.mark.parametrize("name", _declaring(Capability.PREPARES_BY_BATCH))
def test_prepare_by_batch_matches_the_whole_split(name, pair, sequences):
    data = sequences if name in ("rocket-linear", "summary-linear") else pair[0]
    train, standardizer = _standardised(data.split("train"))
    whole, batched = (build_method(name, data.spec, seed=0) for _ in range(2))
    for method in (whole, batched):
        if isinstance(method, TrainingBankMixin):
            method.bank_size = 25  # fewer than the training rows: the bank is a sample
    whole.prepare(train, standardizer)
    split = SplitPasses.of_batch(train, batch_rows=7)
    batched.prepare_split(split, standardizer)
    _assert_same_state(whole, batched)
    # A bank reads only its own rows; a statistic reads each row once per pass.
    assert split.reads <= 2 * train.size + 25


@pytest.mark.parametrize("name", ["pattern-router", "strongest-default"])
def test_calibrate_by_batch_matches_the_whole_split(name, pair):
    data = pair[0]
    train, standardizer = _standardised(data.split("train"))
    val = standardizer(data.split("val").as_batch())
    method = build_method(name, data.spec, seed=0)
    assert method.has(Capability.CALIBRATES_BY_BATCH)
    if method.has(Capability.PREPARES):
        method.prepare(train, standardizer)
    method.eval()
    batched = copy.deepcopy(method)
    with torch.no_grad():
        method.calibrate(val)
        batched.calibrate_split(SplitPasses.of_batch(val, batch_rows=6))
    _assert_same_state(method, batched)
    if name == "pattern-router":
        assert method.calibration and [c["choice"] for c in method.calibration] == \
            [c["choice"] for c in batched.calibration]
    else:
        assert method.scores.keys() == batched.scores.keys()
        for key, figures in method.scores.items():
            assert batched.scores[key] == pytest.approx(figures, rel=1e-6)


def test_every_whole_split_step_streams_or_declares_a_row_limit():
    for name in METHODS.names():
        info = METHODS.get(name).info
        caps = info.capabilities
        streams = (Capability.PREPARES not in caps or Capability.PREPARES_BY_BATCH in caps) and (
            Capability.CALIBRATES not in caps or name == "strongest-default" or Capability.CALIBRATES_BY_BATCH in caps)
        if not streams:
            assert info.split_row_limit and info.split_limit_reason, name


def test_methods_listing_shows_the_row_limit(capsys):
    from mlmm.cli import main

    main(["methods"])
    out = capsys.readouterr().out
    assert "cpm-nets takes at most 100,000 rows of a streamed" in out


def test_a_declared_row_limit_refuses_with_the_method_and_the_limit(pair, monkeypatch):
    cls = METHODS.get("cpm-nets")
    monkeypatch.setattr(cls, "info", dataclasses.replace(cls.info, split_row_limit=10))
    _, mm = pair
    with pytest.raises(MemoryError, match=r"method 'cpm-nets': prepare .* method's declared limit of 10 rows"):
        Trainer(CFG).fit(build_method("cpm-nets", mm.spec, seed=0), mm.split("train"), mm.split("val"))


def test_a_wrapper_reports_its_members_limit(pair):
    spec = pair[0].spec
    assert build_method("deep-ensemble", spec, member="cpm-nets", members=2).split_limit[0] == 100_000
    assert build_method("strongest-default", spec, candidates=["masked-mean", "cpm-nets"]).split_limit[0] == 100_000
    assert build_method("strongest-default", spec, candidates=["masked-mean", "mean-fill"]).split_limit is None


# ------------------------------------------------------- in memory == streamed

WHOLE_SPLIT = ["masked-mean"] + sorted(set(_declaring(Capability.PREPARES)) | set(_declaring(Capability.CALIBRATES)))


@pytest.mark.filterwarnings("ignore::mlmm.train.FitNeverImproved")
@pytest.mark.parametrize("name", WHOLE_SPLIT + ["deep-ensemble"])
def test_streamed_training_matches_in_memory(name, pair, small_stream):
    data, mm = pair
    params = {"member": "mean-fill", "members": 2} if name == "deep-ensemble" else {}
    params |= {"candidates": ["masked-mean", "mean-fill"]} if name == "strongest-default" else {}
    params |= {"epochs": 2} if name == "cpm-nets" else {}
    fits = []
    for source in (data, mm):
        method = build_method(name, data.spec, seed=0, **params)
        if isinstance(method, TrainingBankMixin):
            method.bank_size = 40  # a sample of the 90 training rows
        fits.append(Trainer(CFG).fit(method, source.split("train"), source.split("val"), seed=0))
    ref, got = fits
    assert [r["epoch"] for r in ref.history] == [r["epoch"] for r in got.history]
    for a, b in zip(ref.history, got.history):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-3, abs=1e-5)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-3, abs=1e-5, nan_ok=True)
    assert ref.best_epoch == got.best_epoch
    _assert_same_state(ref.model, got.model, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(got.model.predict_logits(mm.split("test"), batch_size=16),
                               ref.model.predict_logits(data.split("test")), rtol=1e-3, atol=1e-4)


# ------------------------------------------------------- train-only, validation-only, bounded reads


class _Counting(MemmapDataset):
    """Records the largest read; the whole split at once (``as_batch``) is forbidden."""

    largest = 0

    def __getitems__(self, positions):
        _Counting.largest = max(_Counting.largest, len(positions))
        return super().__getitems__(positions)

    def subset(self, index):
        sub = super().subset(index)
        sub.__class__ = _Counting
        return sub

    def as_batch(self):
        raise AssertionError("the whole split was read into memory")


def test_streamed_prepare_reads_one_pass_and_the_bank_rows(pair, small_stream):
    _, mm = pair
    counting = _Counting(mm.spec, mm.arrays, mm.target, mm.mask, splits=mm.splits)
    _Counting.largest = 0
    train = counting.split("train")
    method = build_method("retrieval-fill", mm.spec, seed=0, bank_size=20)
    FitSteps(method, train, counting.split("val"), config=CFG)
    # the standardiser's pass, the fill values' pass, then the 20 bank rows by index
    assert train.reads == 2 * len(train) + 20
    assert _Counting.largest == 20 and method.bank_rows.numel() == 20


@pytest.mark.filterwarnings("ignore::mlmm.train.FitNeverImproved")
def test_fill_values_come_from_training_rows_only(pair, small_stream):
    """A huge value planted in a validation row moves neither the standardiser nor the fill values."""
    data, mm = pair
    arrays = {k: np.array(v) for k, v in mm.arrays.items()}
    val_row = int(data.splits["val"][0])
    arrays["m0"][val_row] = 1e6
    mask = mm.mask.clone()
    mask[val_row, 0] = True
    poisoned = MemmapDataset(mm.spec, arrays, mm.target, mask, splits=mm.splits)
    one_epoch = TrainConfig(max_epochs=1, batch_size=32)
    got = Trainer(one_epoch).fit(build_method("mean-fill", mm.spec, seed=0), poisoned.split("train"),
                                 poisoned.split("val"))
    ref = Trainer(one_epoch).fit(build_method("mean-fill", mm.spec, seed=0), data.split("train"), data.split("val"))
    for key in ("standardizer.mean_m0", "standardizer.std_m0", "method.fill_m0"):
        torch.testing.assert_close(got.model.state_dict()[key], ref.model.state_dict()[key], rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore::mlmm.train.FitNeverImproved")
def test_streamed_model_selection_keeps_the_best_validation_epoch(pair, small_stream):
    _, mm = pair
    config = TrainConfig(max_epochs=4, patience=4, batch_size=32, lr=0.01)
    fit = Trainer(config).fit(build_method("mean-fill", mm.spec, seed=0), mm.split("train"), mm.split("val"))
    scores = [r["val_score"] for r in fit.history]
    best = fit.best_epoch["main"]
    assert best == 1 + int(np.argmax(scores))
    # The model kept is the one of that epoch: its validation loss is the one recorded then.
    val = mm.split("val")
    loss = float(F.cross_entropy(fit.model.predict_logits(val, batch_size=16), val.target))
    assert loss == pytest.approx(fit.history[best - 1]["val_loss"], rel=1e-5)


# ------------------------------------------------------- resumable grid on memory-mapped data

GRID = """
name: mm-grid
datasets: [tiny-memmap]
split: fixed
methods: [masked-mean, mean-fill]
scenarios:
  - protocol: entry
    rates: [0.3]
seeds: [0]
train: {max_epochs: 1, patience: 1}
subsets: false
"""


class _Interrupt:
    """A progress bar that stops the run (as Ctrl-C would) once ``after`` cells are stored."""

    def __init__(self, after: int) -> None:
        self.after = after

    def __call__(self, total, initial):
        return self

    def update(self, n):
        self.after -= n
        if self.after <= 0:
            raise KeyboardInterrupt

    def set_description(self, text):
        pass

    def close(self):
        pass


@pytest.fixture
def memmap_registered(pair):
    register(DatasetEntry("tiny-memmap", lambda: open_memmap_dataset(pair[1].source), "test data", 150,
                          "m0, m1, m2 (5,)", "classification", "synthetic", "none"))
    yield
    DATASETS.unregister("tiny-memmap")


def test_interrupted_grid_on_memmap_data_resumes_to_the_same_rows(memmap_registered, tmp_path):
    spec = parse_spec(GRID, "mm.yaml")
    whole = run_bench(spec, tmp_path / "whole.sqlite", spec_text=GRID, workers=1)
    assert whole.cells_run == 2
    db = tmp_path / "resumed.sqlite"
    with pytest.raises(KeyboardInterrupt):
        run_bench(spec, db, spec_text=GRID, workers=1, progress=_Interrupt(after=1))
    before = {(c["method"], c["seed"]): c["finished_at"] for c in load_cells(db)}
    assert len(before) == 1
    resumed = run_bench(spec, db, spec_text=GRID, workers=1)  # also re-derives the stored cell's masks
    assert resumed.cells_skipped == 1 and resumed.cells_run == 1
    cells = load_cells(db)
    assert {(c["method"], c["seed"]): c["finished_at"] for c in cells if (c["method"], c["seed"]) in before} == before
    rows = {(c["method"], c["seed"]): (c["metrics"], c["realised"]) for c in cells}
    assert rows == {(c["method"], c["seed"]): (c["metrics"], c["realised"]) for c in load_cells(whole.db)}


# ------------------------------------------------------- protocols draw masks without reading data

PROTOCOL_PARAMS = {
    "entry": {"rate": 0.4}, "sample": {"rate": 0.4}, "mnar": {"rate": 0.4, "strength": 0.8},
    "per-modality": {"rates": [0.2, 0.5, 0.0]}, "fixed-subset": {"subset": ["m0", "m2"]}, "none": {},
    "systematic": {"rate": 0.5, "n_groups": 3},
}
TIME_PROTOCOLS = {"asynchronous": {"every": 2}, "burst": {"rate": 0.3, "block": 2}, "catastrophic": {"rate": 0.3}}


def test_every_protocol_is_covered_here():
    assert set(PROTOCOLS.names()) == set(PROTOCOL_PARAMS) | set(TIME_PROTOCOLS)


@pytest.mark.parametrize("name", sorted(TIME_PROTOCOLS))
def test_time_mask_protocols_refuse_a_streamed_dataset_clearly(name, tmp_path):
    data = make_synthetic(n_samples=30, n_modalities=2, dims=3, kind="sequence", seed=0)
    mm = open_memmap_dataset(save_memmap_dataset(data, tmp_path / "seq"))
    with pytest.raises(ValueError, match=f"protocol '{name}' draws time masks .* streamed dataset"):
        Scenario.same(make_protocol(name, **TIME_PROTOCOLS[name])).apply(mm, "train", seed=0)
    assert mm.reads == 0


class _UserDataset(torch.utils.data.Dataset):
    """A user's map-style dataset over in-memory rows: {modality: tensor or None, "target": y}; counts reads."""

    def __init__(self, data) -> None:
        self.batch, self.names, self.calls = data.as_batch(), data.spec.modality_names, 0

    def __len__(self) -> int:
        return self.batch.size

    def __getitem__(self, i: int) -> dict:
        self.calls += 1
        item = {m: self.batch.inputs[m][i] if bool(self.batch.mask[i, j]) else None for j, m in enumerate(self.names)}
        return {**item, "target": int(self.batch.target[i])}


def _adapted(data, groups=None):
    user = _UserDataset(data)
    return user, adapt_dataset(user, data.spec, targets=data.target.numpy(), mask=data.mask.numpy(),
                               splits=data.splits, groups=groups)


@pytest.mark.parametrize("name", sorted(PROTOCOL_PARAMS))
def test_protocols_draw_masks_without_reading_rows(name, pair):
    data, mm = pair
    fresh = open_memmap_dataset(mm.source)
    train = fresh.split("train")
    scenario = Scenario.same(make_protocol(name, **PROTOCOL_PARAMS[name]))
    masked, info = scenario.apply(train, "train", seed=3)
    assert fresh.reads == train.reads == masked.reads == 0  # no modality row was read
    assert isinstance(masked, MemmapDataset) and masked.mask.shape == train.mask.shape
    assert bool((masked.mask <= train.mask).all()) and bool(masked.mask.any(dim=1).all())
    ref, ref_info = scenario.apply(data.split("train"), "train", seed=3)
    assert info["mask_sha256"] == ref_info["mask_sha256"]  # the same draw as in memory


@pytest.mark.parametrize("name", sorted(PROTOCOL_PARAMS))
def test_protocols_on_a_grouped_user_dataset_read_no_sample(name, pair):
    """Group-level draws (the protocol's ``for_groups``) on a user's torch Dataset: never indexed."""
    data = pair[0]
    groups = np.arange(len(data)) % 5  # rows of 5 subjects
    user, adapted = _adapted(data, groups=groups)
    scenario = Scenario.same(make_protocol(name, **PROTOCOL_PARAMS[name]))
    masked, info = scenario.apply(adapted.split("train"), "train", seed=3)
    assert user.calls == 0 and masked.mask.shape == (len(data.splits["train"]), data.spec.n_modalities)
    in_memory = data.split("train")
    in_memory.groups = groups[data.splits["train"]]
    assert info["mask_sha256"] == scenario.apply(in_memory, "train", seed=3)[1]["mask_sha256"]


@pytest.mark.filterwarnings("ignore::mlmm.train.FitNeverImproved")
@pytest.mark.parametrize("name", ["retrieval-fill", "pattern-router"])
def test_training_on_a_user_torch_dataset_matches_in_memory(name, pair, small_stream):
    data = pair[0]
    _, adapted = _adapted(data)
    fits = []
    for source in (data, adapted):
        method = build_method(name, data.spec, seed=0)
        if isinstance(method, TrainingBankMixin):
            method.bank_size = 40
        fits.append(Trainer(CFG).fit(method, source.split("train"), source.split("val"), seed=0))
    _assert_same_state(fits[0].model, fits[1].model, rtol=1e-3, atol=1e-4)
