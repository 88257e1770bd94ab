"""Memory-mapped datasets (mlmm.data.memmap) and the streamed training path (mlmm.train.streamed)."""

import numpy as np
import pytest
import torch

from mlmm.data import MemmapDataset, Standardizer, open_memmap_dataset, save_memmap_dataset, write_synthetic_memmap
from mlmm.data.datasets.synthetic import make_synthetic
from mlmm.metrics.evaluate import evaluate
from mlmm.missing import Scenario, make_protocol
from mlmm.train import TrainConfig, Trainer, build_method

CFG = TrainConfig(max_epochs=3, patience=3, batch_size=32)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The same data in memory and memory-mapped (with a partial natural mask and train/val/test splits)."""
    data = make_synthetic(n_samples=240, n_modalities=3, dims=6, seed=3)
    rng = np.random.default_rng(0)
    mask = rng.random((240, 3)) > 0.3
    mask[~mask.any(axis=1), 0] = True
    data = data.with_mask(torch.as_tensor(mask))
    order = rng.permutation(240)
    data.splits = {"train": np.sort(order[:160]), "val": np.sort(order[160:200]), "test": np.sort(order[200:])}
    folder = save_memmap_dataset(data, tmp_path_factory.mktemp("mm") / "data", chunk_rows=50)
    return data, open_memmap_dataset(folder)


def test_roundtrip_reads_the_same_rows(pair):
    data, mm = pair
    assert isinstance(mm.arrays["m0"], np.memmap)
    assert torch.equal(mm.mask, data.mask) and torch.equal(mm.target, data.target)
    batch = mm.__getitems__([5, 0, 17])
    ref = data.as_batch().select(torch.tensor([5, 0, 17]))
    for name in data.spec.modality_names:
        assert torch.equal(batch.inputs[name], ref.inputs[name])
    sub = mm.split("test")
    assert np.array_equal(sub.rows, data.splits["test"]) and len(sub) == 40
    assert torch.equal(sub.as_batch().inputs["m1"], data.split("test").as_batch().inputs["m1"])


def test_with_mask_zeroes_without_touching_the_files(pair):
    data, mm = pair
    drop = torch.ones_like(mm.mask)
    drop[:, 1] = ~(mm.mask[:, 0] | mm.mask[:, 2])  # m1 kept only where it is a row's last modality
    narrowed = mm.with_mask(drop)
    assert narrowed.arrays["m1"] is mm.arrays["m1"]  # same memmap: nothing copied
    assert int(narrowed.mask[:, 1].sum()) < int(mm.mask[:, 1].sum())
    values = narrowed.as_batch().inputs["m1"]
    assert torch.count_nonzero(values[~narrowed.mask[:, 1]]) == 0
    assert torch.count_nonzero(mm.as_batch().inputs["m1"]) > 0


def test_scenario_applies_the_same_mask_to_both(pair):
    data, mm = pair
    scenario = Scenario.same(make_protocol("entry", rate=0.4))
    a, info_a = scenario.apply(data.split("train"), "train", seed=1)
    b, info_b = scenario.apply(mm.split("train"), "train", seed=1)
    assert isinstance(b, MemmapDataset) and info_a["mask_sha256"] == info_b["mask_sha256"]
    assert torch.equal(a.mask, b.mask)
    assert torch.equal(a.as_batch().inputs["m2"], b.as_batch().inputs["m2"])


def test_streamed_standardizer_matches_the_in_memory_fit(pair):
    data, mm = pair
    train = data.split("train")
    ref = Standardizer(data.spec).fit(train.as_batch())
    streamed = Standardizer(data.spec).fit_batches(mm.split("train").loader(batch_size=7))
    for key, value in ref.state_dict().items():
        torch.testing.assert_close(streamed.state_dict()[key], value, rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore::mlmm.train.FitNeverImproved")
def test_statistics_come_from_training_rows_only(pair):
    """A huge value planted in a validation row must not move the standardiser."""
    data, mm = pair
    arrays = {k: np.array(v) for k, v in mm.arrays.items()}
    val_row = int(data.splits["val"][0])
    arrays["m0"][val_row] = 1e6
    mask = mm.mask.clone()
    mask[val_row, 0] = True
    poisoned = MemmapDataset(mm.spec, arrays, mm.target, mask, splits=mm.splits)
    trainer = Trainer(TrainConfig(max_epochs=1, batch_size=32))
    fit = trainer.fit(build_method("masked-mean", mm.spec, seed=0), poisoned.split("train"), poisoned.split("val"))
    assert float(fit.model.standardizer.mean_m0.abs().max()) < 10


def _fit_and_score(train, val, test, streamed=None):
    result = Trainer(CFG, streamed=streamed).fit(build_method("masked-mean", train.spec, seed=0), train, val, seed=0)
    return result, evaluate(result.model, test)


def test_memmap_training_matches_in_memory(pair):
    data, mm = pair
    ref, ref_metrics = _fit_and_score(data.split("train"), data.split("val"), data.split("test"))
    got, got_metrics = _fit_and_score(mm.split("train"), mm.split("val"), mm.split("test"))
    for a, b in zip(ref.history, got.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
    assert ref.best_epoch == got.best_epoch
    for key, value in ref.model.state_dict().items():
        torch.testing.assert_close(got.model.state_dict()[key], value, rtol=1e-4, atol=1e-5)
    for key, value in ref_metrics.items():
        assert got_metrics[key] == pytest.approx(value, rel=1e-4, abs=1e-6)
    logits = got.model.predict_logits(mm.split("test"), batch_size=16)
    torch.testing.assert_close(logits, ref.model.predict_logits(data.split("test")), rtol=1e-4, atol=1e-5)


class _CountingReads(MemmapDataset):
    """Records the largest number of rows read at once; ``as_batch`` (the whole split) is forbidden."""

    largest = 0

    def __getitems__(self, positions):
        _CountingReads.largest = max(_CountingReads.largest, len(positions))
        return super().__getitems__(positions)

    def subset(self, index):
        sub = super().subset(index)
        sub.__class__ = _CountingReads
        return sub

    def as_batch(self):
        raise AssertionError("the whole split was read into memory")


def test_streamed_training_reads_only_batches(pair, monkeypatch):
    import mlmm.train.streamed as streamed

    monkeypatch.setattr(streamed, "STREAM_BATCH_ROWS", 16)  # statistics pass and validation: 16 rows at a time
    data, mm = pair
    counting = _CountingReads(mm.spec, mm.arrays, mm.target, mm.mask, splits=mm.splits)
    _CountingReads.largest = 0
    train, val = counting.split("train"), counting.split("val")
    result = Trainer(TrainConfig(max_epochs=2, batch_size=32)).fit(build_method("masked-mean", mm.spec, seed=0),
                                                                   train, val)
    assert 0 < _CountingReads.largest <= 32 < len(train)  # never more than a training batch at once
    _CountingReads.largest = 0
    result.model.predict_logits(counting.split("test"), batch_size=8)
    assert _CountingReads.largest == 8
    assert train.reads >= 2 * len(train)  # two epochs of training were read, batch by batch


def test_whole_split_methods_refuse_beyond_the_limit(pair, monkeypatch):
    import mlmm.data.memmap as memmap

    data, mm = pair
    monkeypatch.setattr(memmap, "MATERIALISE_LIMIT_BYTES", 100)
    method = build_method("cpm-nets", mm.spec, seed=0)  # full batch, one latent per row: cannot stream
    with pytest.raises(MemoryError, match="method 'cpm-nets': prepare needs the whole split"):
        Trainer(CFG).fit(method, mm.split("train"), mm.split("val"))


def test_synthetic_writer(tmp_path):
    folder = write_synthetic_memmap(tmp_path / "syn", n=1000, n_modalities=2, features=5, chunk_rows=300)
    mm = open_memmap_dataset(folder)
    assert len(mm) == 1000 and mm.mask.any(dim=1).all()
    assert sum(len(mm.splits[s]) for s in ("train", "val", "test")) == 1000
    batch = mm.as_batch()
    assert torch.count_nonzero(batch.inputs["m1"][~mm.mask[:, 1]]) == 0
    assert batch.inputs["m0"][mm.mask[:, 0]].abs().sum() > 0


def test_open_names_the_missing_file(tmp_path):
    folder = write_synthetic_memmap(tmp_path / "syn", n=50, n_modalities=2, features=3)
    (folder / "m1.npy").unlink()
    with pytest.raises(ValueError, match="m1.npy for modality 'm1'"):
        open_memmap_dataset(folder)


def test_released_pages_read_back_the_same_values(pair, monkeypatch):
    """Dropping mapped pages (bounded resident memory) must not change what is read afterwards."""
    import mlmm.data.memmap as memmap

    data, mm = pair
    monkeypatch.setattr(memmap, "RELEASE_EVERY_BYTES", 1)  # release after every read
    fresh = open_memmap_dataset(mm.source)
    first = [b.inputs["m0"].clone() for b in fresh.loader(batch_size=50)]
    assert fresh._unreleased == 0
    again = torch.cat([b.inputs["m0"] for b in fresh.loader(batch_size=50)])
    assert torch.equal(torch.cat(first), again)
    assert torch.equal(again, data.as_batch().inputs["m0"])
