"""Evaluation on streamed data: every evaluation-side consumer (metrics, all-subsets, cell figures,
explain, recover, uncertainty, stream) gives the in-memory figures on the same data saved as a
MemmapDataset or wrapped in a plain torch Dataset, and reads it batch by batch, never whole."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.utils.data

from mlmm.data import MemmapDataset, MultimodalDataset, Standardizer, open_memmap_dataset, save_memmap_dataset
from mlmm.data.batches import iter_batches, paired_batches
from mlmm.data.datasets.synthetic import make_synthetic
from mlmm.data.spec import DatasetSpec, ModalitySpec, TaskSpec
from mlmm.diagnostics.recovery import recovery_fidelity, recovery_reliance
from mlmm.diagnostics.uncertainty import subset_uncertainty, uncertainty_report
from mlmm.explain import modality_contributions
from mlmm.metrics.evaluate import evaluate, evaluate_subsets, predict_all
from mlmm.metrics.figures import cell_figures
from mlmm.streaming import stream_curves
from mlmm.train.loop import FittedModel, TrainConfig, Trainer, build_method

B = 16  # rows per batch of the streamed reads: the 60 test rows take 4 batches, the last one short


def _close(a, b) -> None:
    """Nested dicts / lists / arrays of figures equal within float tolerance (NaN equals NaN)."""
    if isinstance(a, dict):
        assert set(a) == set(b)
        for key in a:
            _close(a[key], b[key])
    elif isinstance(a, (list, tuple)) and any(isinstance(x, (dict, str)) for x in a):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _close(x, y)
    elif isinstance(a, (list, tuple, np.ndarray, torch.Tensor)):
        np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=1e-5, atol=1e-6)
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6, nan_ok=True)
    else:
        assert a == b


def _partial(data: MultimodalDataset, seed: int = 0) -> MultimodalDataset:
    rng = np.random.default_rng(seed)
    mask = rng.random(tuple(data.mask.shape)) > 0.35
    mask[~mask.any(axis=1), 0] = True
    return data.with_mask(torch.as_tensor(mask))


class _Guarded(MemmapDataset):
    """A MemmapDataset that records the largest read and refuses to be read whole."""

    largest = 0

    def __getitems__(self, positions):
        _Guarded.largest = max(_Guarded.largest, len(positions))
        return super().__getitems__(positions)

    def with_mask(self, mask):
        out = super().with_mask(mask)
        out.__class__ = _Guarded
        return out

    def as_batch(self):
        raise AssertionError("the whole split was read into memory")


def _guarded(mm: MemmapDataset) -> _Guarded:
    return _Guarded(mm.spec, mm.arrays, mm.target, mm.mask, rows=mm.rows, splits=mm.splits, source=mm.source)


class _UserDataset(torch.utils.data.Dataset):
    """A user's map-style dataset that knows nothing of mlmm's datasets: ``__getitem__`` gives the
    sample dicts ``collate`` stacks (no ``mask`` / ``labels`` / ``as_batch`` attributes)."""

    def __init__(self, data: MultimodalDataset) -> None:
        self._data = data

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, i: int) -> dict:
        return self._data[i]


@pytest.fixture(scope="module")
def vectors(tmp_path_factory):
    """(model, in-memory test split, the same rows memory-mapped): masked-mean (factorised) trained
    one epoch on 3 vector modalities with a partial natural mask."""
    data = _partial(make_synthetic(n_samples=180, n_modalities=3, dims=5, seed=4))
    folder = save_memmap_dataset(data, tmp_path_factory.mktemp("vec") / "d", chunk_rows=50)
    train, test = data.subset(np.arange(120)), data.subset(np.arange(120, 180))
    fit = Trainer(TrainConfig(max_epochs=1, batch_size=32)).fit(build_method("masked-mean", data.spec, seed=0),
                                                                train, train)
    return fit.model, test, open_memmap_dataset(folder).subset(np.arange(120, 180))


def test_iter_batches_cover_every_row_in_order(vectors):
    _, test, mm = vectors
    for source in (test, mm, _UserDataset(test)):
        batches = list(iter_batches(source, B))
        assert [b.size for b in batches] == [16, 16, 16, 12]
        assert torch.equal(torch.cat([b.mask for b in batches]), test.mask)
        assert torch.equal(torch.cat([b.inputs["m1"] for b in batches]), test.inputs["m1"])
    with pytest.raises(ValueError, match="same rows"):
        list(paired_batches(test, mm.subset(np.arange(10))))


@pytest.mark.parametrize("wrap", ["memmap", "user"])
def test_metrics_and_figures_equal_the_in_memory_pass(vectors, wrap):
    model, test, mm = vectors
    streamed = mm if wrap == "memmap" else _UserDataset(test)
    ref = predict_all(model, test)
    got = predict_all(model, streamed, batch_size=B)
    torch.testing.assert_close(got.logits, ref.logits, rtol=1e-5, atol=1e-6)
    assert np.array_equal(got.target, ref.target) and torch.equal(got.mask, ref.mask)
    _close(evaluate(model, streamed, batch_size=B), evaluate(model, test))
    reference = evaluate_subsets(model, test)
    _close(evaluate_subsets(model, streamed, batch_size=B), reference)  # fast path
    _close(evaluate_subsets(model, streamed, fast=False, batch_size=B), reference)
    assert len(reference) == 7 and sum(v["n"] for k, v in reference.items() if "+" not in k) == int(test.mask.sum())
    a = cell_figures(model, test, test, 0.0, latency_repeats=1)
    b = cell_figures(model, streamed, streamed, 0.0, latency_repeats=1)
    _close(b["metrics"], a["metrics"])
    _close(b["calibration"], a["calibration"])
    assert set(b["efficiency"]["latency_per_subset_size_s"]) == {"1", "2", "3"}


def test_explain_and_uncertainty_equal_the_in_memory_pass(vectors):
    model, test, mm = vectors
    for target in ("predicted", "true"):
        ref = modality_contributions(model, test, target=target)
        got = modality_contributions(model, mm, target=target, batch_size=B)
        _close(got.values, ref.values)
        _close(got.phi, ref.phi)
        _close(got.summary(), ref.summary())
        slow = modality_contributions(model, mm, target=target, batch_size=B, fast=False)  # 2^M passes per batch
        _close(slow.values, ref.values)  # masked-mean's encode-once path gives the same values
    # the sampled estimate draws batch after batch from one generator: equal for equal batch sizes
    ref = modality_contributions(model, test, max_exact=2, n_permutations=4, batch_size=B)
    got = modality_contributions(model, mm, max_exact=2, n_permutations=4, batch_size=B)
    assert not ref.exact
    _close(got.phi, ref.phi)
    _close(got.se, ref.se)
    np.testing.assert_allclose(ref.phi.sum(1), ref.v_full - ref.v_empty, atol=1e-9)  # efficiency holds per batch
    _close(uncertainty_report(model, mm, batch_size=B), uncertainty_report(model, test))
    _close(subset_uncertainty(model, mm, batch_size=B), subset_uncertainty(model, test))


@pytest.mark.parametrize("method", ["zero-fill", "masked-modality-ae"])
def test_recovery_equals_the_in_memory_pass(tmp_path, method):
    data = make_synthetic(n_samples=90, n_modalities=2, dims=4, seed=2)
    masked = _partial(data, seed=1)
    model = Trainer(TrainConfig(max_epochs=1, batch_size=32)).fit(build_method(method, data.spec, seed=0),
                                                                  data, data).model
    full_mm = open_memmap_dataset(save_memmap_dataset(data, tmp_path / "d"))
    masked_mm = full_mm.with_mask(masked.mask)
    ref = recovery_fidelity(model, data, masked)
    assert ref["n_slots"] == int((data.mask & ~masked.mask).sum()) > 0
    _close(recovery_fidelity(model, full_mm, masked_mm, batch_size=B), ref)
    _close(recovery_reliance(model, masked_mm, batch_size=B), recovery_reliance(model, masked))


def test_stream_curves_equal_the_in_memory_pass(tmp_path):
    t = 6
    spec = DatasetSpec("sensors", (ModalitySpec("acc", "sequence", (t, 3)), ModalitySpec("gyr", "sequence", (t, 2)),
                                   ModalitySpec("profile", "vector", (4,))), TaskSpec("classification", n_classes=3))
    rng = np.random.default_rng(0)
    n = 40
    data = _partial(MultimodalDataset(spec, {m.name: rng.normal(size=(n, *m.shape)) for m in spec.modalities},
                                      rng.integers(0, 3, n)))
    method = build_method("streaming-gru", spec, seed=0, embed_dim=8, hidden=6)
    model = FittedModel(Standardizer(spec).fit(data.as_batch()), method).eval()
    mm = open_memmap_dataset(save_memmap_dataset(data, tmp_path / "seq"))
    for failures in (None, {"gyr": 2}):
        ref = stream_curves(model, data, failures, latency_samples=3)
        got = stream_curves(model, mm, failures, latency_samples=3, batch_size=7)
        _close(got["accuracy"], ref["accuracy"])
        _close(got["uncertainty"], ref["uncertainty"])
        assert got["latency_ms"]["steps_timed"] == ref["latency_ms"]["steps_timed"] == 3 * t


def test_evaluation_never_materialises_the_split(vectors):
    """Every consumer reads the memory-mapped split in batches of at most B rows (``as_batch`` raises)."""
    model, test, mm = vectors
    guarded = _guarded(mm)
    keep = torch.as_tensor(np.random.default_rng(5).random(tuple(mm.mask.shape)) > 0.3)
    keep[~(keep & guarded.mask).any(dim=1)] = True  # no row left empty
    masked = guarded.with_mask(keep)
    _Guarded.largest = 0
    evaluate(model, guarded, batch_size=B)
    evaluate_subsets(model, guarded, batch_size=B)
    evaluate_subsets(model, guarded, fast=False, batch_size=B)
    modality_contributions(model, guarded, batch_size=B)
    uncertainty_report(model, guarded, batch_size=B)
    subset_uncertainty(model, guarded, batch_size=B)
    assert 0 < _Guarded.largest <= B
    reads = guarded.reads
    evaluate_subsets(model, guarded, batch_size=B)
    assert guarded.reads - reads == len(guarded)  # the all-subsets evaluation reads each row once
    fill = Trainer(TrainConfig(max_epochs=1, batch_size=32)).fit(build_method("zero-fill", test.spec, seed=0),
                                                                 test, test).model
    recovery_fidelity(fill, guarded, masked, batch_size=B)
    recovery_reliance(fill, masked, batch_size=B)
    assert _Guarded.largest <= B
