"""The data contract: specs, Batch validation, MultimodalDataset construction, splits."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from mlmm.data.base import MultimodalDataset, stratified_split
from mlmm.data.batch import Batch, validate_batch
from mlmm.data.spec import DatasetSpec, ModalitySpec, TaskSpec
from mlmm.data.splits import make_splits

N = 6


def _spec(n_classes: int = 3) -> DatasetSpec:
    return DatasetSpec(
        "toy",
        (ModalitySpec("a", "vector", (4,)), ModalitySpec("b", "sequence", (5, 2))),
        TaskSpec("classification", n_classes=n_classes),
    )


def _arrays(n: int = N) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    inputs = {
        "a": rng.standard_normal((n, 4)).astype(np.float32) + 1.0,
        "b": rng.standard_normal((n, 5, 2)).astype(np.float32) + 1.0,
    }
    target = np.arange(n) % 3
    mask = np.ones((n, 2), dtype=bool)
    return inputs, target, mask


def _batch(n: int = N) -> Batch:
    inputs, target, mask = _arrays(n)
    return Batch({k: torch.as_tensor(v) for k, v in inputs.items()}, torch.as_tensor(mask), torch.as_tensor(target))


# --- specs -------------------------------------------------------------------


def test_modality_spec_rejects_unknown_kind():
    with pytest.raises(ValueError, match=r"kind 'audio' is not one of"):
        ModalitySpec("x", "audio", (3,))


@pytest.mark.parametrize(
    "kind, shape",
    [("vector", (3, 2)), ("vector", ()), ("sequence", (5,)), ("image", (3, 8)), ("text", (4, 4)), ("vector", (0,))],
)
def test_modality_spec_rejects_bad_shape(kind, shape):
    with pytest.raises(ValueError, match=rf"modality 'x': a {kind} needs a shape of \d positive sizes"):
        ModalitySpec("x", kind, shape)


def test_modality_spec_size_and_int_shape():
    m = ModalitySpec("img", "image", (np.int64(3), 4, 5))
    assert m.shape == (3, 4, 5) and all(type(s) is int for s in m.shape)
    assert m.size == 60


def test_task_spec_validation():
    with pytest.raises(ValueError, match="task kind 'ranking'"):
        TaskSpec("ranking")
    with pytest.raises(ValueError, match="n_classes >= 2"):
        TaskSpec("classification")
    with pytest.raises(ValueError, match="n_classes >= 2"):
        TaskSpec("classification", n_classes=1)
    assert TaskSpec("classification", n_classes=4).output_dim == 4
    assert TaskSpec("regression", n_outputs=2).output_dim == 2


def test_dataset_spec_rejects_duplicates_and_empty():
    with pytest.raises(ValueError, match="duplicate modality names"):
        DatasetSpec("d", (ModalitySpec("a", "vector", (2,)), ModalitySpec("a", "vector", (3,))),
                     TaskSpec(n_classes=2))
    with pytest.raises(ValueError, match="has no modality"):
        DatasetSpec("d", (), TaskSpec(n_classes=2))


def test_dataset_spec_index_and_unknown_name():
    spec = _spec()
    assert spec.modality_names == ("a", "b")
    assert spec.n_modalities == 2
    assert spec.index("b") == 1
    assert spec.modality("b").shape == (5, 2)
    with pytest.raises(ValueError, match=r"unknown modality 'zz' for dataset 'toy'; known: a, b"):
        spec.index("zz")
    with pytest.raises(ValueError, match=r"known: a, b"):
        spec.modality("zz")


# --- validate_batch ----------------------------------------------------------


def test_valid_batch_passes():
    validate_batch(_batch(), _spec())


def test_validate_batch_unknown_modality():
    b = _batch()
    inputs = dict(b.inputs, c=torch.zeros(N, 4))
    with pytest.raises(ValueError, match=r"unknown modality 'c'; dataset 'toy' has a, b"):
        validate_batch(Batch(inputs, b.mask, b.target), _spec())


def test_validate_batch_absent_modality():
    b = _batch()
    with pytest.raises(ValueError, match=r"modality 'b' is absent from inputs"):
        validate_batch(Batch({"a": b.inputs["a"]}, b.mask, b.target), _spec())


def test_validate_batch_wrong_shape_names_modality_and_both_shapes():
    b = _batch()
    inputs = dict(b.inputs, b=torch.zeros(N, 5, 3))
    with pytest.raises(ValueError, match=re.escape("modality 'b': expected shape (6, 5, 2), got (6, 5, 3)")):
        validate_batch(Batch(inputs, b.mask, b.target), _spec())


def test_validate_batch_non_float_dtype():
    b = _batch()
    inputs = dict(b.inputs, a=torch.ones(N, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"modality 'a': expected a floating dtype, got torch.int64"):
        validate_batch(Batch(inputs, b.mask, b.target), _spec())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_validate_batch_non_finite_present_entry_names_modality_and_sample(bad):
    b = _batch()
    x = b.inputs["b"].clone()
    x[4, 2, 1] = bad
    with pytest.raises(ValueError, match=r"modality 'b': NaN or inf in a present entry \(sample 4\)"):
        validate_batch(Batch(dict(b.inputs, b=x), b.mask, b.target), _spec())


def test_validate_batch_nan_in_present_entry_reports_sample_not_position_among_present():
    # Rows 0 and 1 are masked out (zeros); the NaN sits in sample 3, the 2nd present row.
    b = _batch()
    mask = b.mask.clone()
    mask[:2, 0] = False
    x = b.inputs["a"].clone()
    x[:2] = 0.0
    x[3, 0] = float("nan")
    with pytest.raises(ValueError, match=r"modality 'a': NaN or inf in a present entry \(sample 3\)"):
        validate_batch(Batch(dict(b.inputs, a=x), mask, b.target), _spec())


def test_validate_batch_non_zero_in_masked_out_slot():
    b = _batch()
    mask = b.mask.clone()
    mask[2, 1] = False  # sample 2 loses 'b' but its values are still there
    with pytest.raises(ValueError, match=r"modality 'b': sample 2 is masked out but holds non-zero values"):
        validate_batch(Batch(b.inputs, mask, b.target), _spec())


def test_validate_batch_nan_in_masked_out_slot_is_a_leak_too():
    # validate_batch sees what a method would see: NaN where masked is still non-zero.
    b = _batch()
    mask = b.mask.clone()
    mask[1, 0] = False
    x = b.inputs["a"].clone()
    x[1] = float("nan")
    with pytest.raises(ValueError, match=r"modality 'a': sample 1 is masked out"):
        validate_batch(Batch(dict(b.inputs, a=x), mask, b.target), _spec())


def test_validate_batch_mask_dtype_and_shape():
    b = _batch()
    with pytest.raises(ValueError, match=r"mask must be a bool tensor, got torch.int64"):
        validate_batch(Batch(b.inputs, b.mask.long(), b.target), _spec())
    with pytest.raises(ValueError, match=re.escape("mask must have shape (B, 2), got (6, 3)")):
        validate_batch(Batch(b.inputs, torch.ones(N, 3, dtype=torch.bool), b.target), _spec())
    with pytest.raises(ValueError, match=re.escape("mask must have shape (B, 2), got (6,)")):
        validate_batch(Batch(b.inputs, torch.ones(N, dtype=torch.bool), b.target), _spec())


def test_validate_batch_empty_sample():
    b = _batch()
    mask = b.mask.clone()
    mask[3] = False
    inputs = {k: v.clone() for k, v in b.inputs.items()}
    for v in inputs.values():
        v[3] = 0.0
    with pytest.raises(ValueError, match=r"1 sample\(s\) have no modality at all \(first: sample 3\)"):
        validate_batch(Batch(inputs, mask, b.target), _spec())
    validate_batch(Batch(inputs, mask, b.target), _spec(), allow_empty_samples=True)


def test_validate_batch_labels():
    b = _batch()
    with pytest.raises(ValueError, match=r"labels out of range: found \[0, 3\] for 3 classes"):
        validate_batch(Batch(b.inputs, b.mask, b.target + (b.target == 2).long()), _spec())
    with pytest.raises(ValueError, match=r"labels out of range: found \[-1, 2\]"):
        validate_batch(Batch(b.inputs, b.mask, b.target - (b.target == 0).long()), _spec())
    with pytest.raises(ValueError, match=r"classification labels must be a 1-D integer tensor"):
        validate_batch(Batch(b.inputs, b.mask, b.target.float()), _spec())
    with pytest.raises(ValueError, match=r"target has 5 rows but the batch has 6 samples"):
        validate_batch(Batch(b.inputs, b.mask, b.target[:5]), _spec())


def test_validate_batch_regression_targets():
    spec = DatasetSpec("reg", _spec().modalities, TaskSpec("regression", n_outputs=1))
    b = _batch()
    y = torch.linspace(0, 1, N)
    validate_batch(Batch(b.inputs, b.mask, y), spec)
    y[2] = float("nan")
    with pytest.raises(ValueError, match="regression targets hold NaN or inf"):
        validate_batch(Batch(b.inputs, b.mask, y), spec)


# --- Batch.with_mask ---------------------------------------------------------


def test_batch_with_mask_zeroes_new_rows_and_never_widens():
    b = _batch()
    natural = b.mask.clone()
    natural[0, 1] = False
    inputs = dict(b.inputs, b=b.inputs["b"].clone())
    inputs["b"][0] = 0.0
    b = Batch(inputs, natural, b.target)
    new = torch.ones(N, 2, dtype=torch.bool)
    new[2, 0] = False  # newly masked
    out = b.with_mask(new)
    # Never widens: sample 0 keeps 'b' missing although the new mask says present.
    assert not out.mask[0, 1]
    assert torch.equal(out.mask, new & natural)
    assert torch.all(out.inputs["a"][2] == 0)
    assert torch.all(out.inputs["b"][0] == 0)
    # Untouched rows keep their values; the original batch is not mutated.
    assert torch.equal(out.inputs["a"][3], b.inputs["a"][3])
    assert torch.any(b.inputs["a"][2] != 0)
    validate_batch(out, _spec())
    with pytest.raises(ValueError, match="mask shape"):
        b.with_mask(torch.ones(N, 3, dtype=torch.bool))


def test_batch_select_and_size():
    b = _batch()
    s = b.select(torch.tensor([4, 1]))
    assert s.size == 2
    assert torch.equal(s.inputs["b"][0], b.inputs["b"][4])
    assert torch.equal(s.target, b.target[[4, 1]])


# --- MultimodalDataset construction -----------------------------------------


def test_dataset_construction_ok_and_float32():
    inputs, target, mask = _arrays()
    inputs["a"] = inputs["a"].astype(np.float64)
    ds = MultimodalDataset(_spec(), inputs, target, mask)
    assert len(ds) == N
    assert ds.inputs["a"].dtype == torch.float32
    assert ds.target.dtype == torch.long
    assert ds.mask.dtype == torch.bool and ds.mask.all()
    validate_batch(ds.as_batch(), ds.spec)


def test_dataset_default_mask_all_present():
    inputs, target, _ = _arrays()
    ds = MultimodalDataset(_spec(), inputs, target)
    assert ds.mask.shape == (N, 2) and bool(ds.mask.all())


def test_dataset_unknown_modality():
    inputs, target, mask = _arrays()
    inputs["zz"] = np.zeros((N, 4), dtype=np.float32)
    with pytest.raises(ValueError, match=r"unknown modality 'zz'; dataset 'toy' has a, b"):
        MultimodalDataset(_spec(), inputs, target, mask)


def test_dataset_missing_modality_array():
    inputs, target, mask = _arrays()
    del inputs["b"]
    with pytest.raises(ValueError, match=r"dataset 'toy': no array given for modality 'b'"):
        MultimodalDataset(_spec(), inputs, target, mask)


def test_dataset_wrong_shape_names_modality_and_both_shapes():
    inputs, target, mask = _arrays()
    inputs["a"] = np.zeros((N, 5), dtype=np.float32)
    with pytest.raises(ValueError, match=re.escape("modality 'a': expected shape (6, 4), got (6, 5)")):
        MultimodalDataset(_spec(), inputs, target, mask)


def test_dataset_rows_mismatch():
    inputs, target, mask = _arrays()
    inputs["b"] = inputs["b"][:5]
    with pytest.raises(ValueError, match=r"modality 'b' has 5 rows but there are 6 labels"):
        MultimodalDataset(_spec(), inputs, target, mask)


def test_dataset_text_modality_needs_integer_ids():
    spec = DatasetSpec("t", (ModalitySpec("tok", "text", (3,)),), TaskSpec(n_classes=2))
    MultimodalDataset(spec, {"tok": np.ones((4, 3), dtype=np.int64)}, np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match=r"modality 'tok': text token ids must be int64"):
        MultimodalDataset(spec, {"tok": np.ones((4, 3), dtype=np.float32)}, np.array([0, 1, 0, 1]))


def test_dataset_nan_in_present_entry_names_modality_and_sample():
    inputs, target, mask = _arrays()
    inputs["b"][5, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"modality 'b': NaN or inf in a present entry \(sample 5\)"):
        MultimodalDataset(_spec(), inputs, target, mask)
    inputs, target, mask = _arrays()
    inputs["a"][2, 3] = np.inf
    with pytest.raises(ValueError, match=r"modality 'a': NaN or inf in a present entry \(sample 2\)"):
        MultimodalDataset(_spec(), inputs, target, mask)


def test_dataset_nan_in_masked_out_slot_is_accepted_and_stored_as_zero():
    inputs, target, mask = _arrays()
    mask[1, 0] = False
    mask[4, 1] = False
    inputs["a"][1] = np.nan
    inputs["b"][4, 2] = np.nan
    inputs["b"][4, 3] = 7.0  # garbage next to the NaN in an absent slot
    ds = MultimodalDataset(_spec(), inputs, target, mask)
    assert torch.all(ds.inputs["a"][1] == 0)
    assert torch.all(ds.inputs["b"][4] == 0)
    assert torch.isfinite(ds.inputs["a"]).all() and torch.isfinite(ds.inputs["b"]).all()
    # Present rows are untouched.
    assert torch.equal(ds.inputs["a"][0], torch.as_tensor(inputs["a"][0]))
    validate_batch(ds.as_batch(), ds.spec)


def test_dataset_mask_wrong_shape_or_dtype():
    inputs, target, mask = _arrays()
    with pytest.raises(ValueError, match=r"mask must be boolean, got torch.int64"):
        MultimodalDataset(_spec(), inputs, target, mask.astype(np.int64))
    with pytest.raises(ValueError, match=re.escape("mask must have shape (6, 2), got (6, 3)")):
        MultimodalDataset(_spec(), inputs, target, np.ones((N, 3), dtype=bool))
    with pytest.raises(ValueError, match=re.escape("mask must have shape (6, 2), got (5, 2)")):
        MultimodalDataset(_spec(), inputs, target, mask[:5])


def test_dataset_sample_with_no_modality():
    inputs, target, mask = _arrays()
    mask[2] = False
    with pytest.raises(ValueError, match=r"1 sample\(s\) have no modality at all \(first: sample 2\)"):
        MultimodalDataset(_spec(), inputs, target, mask)


def test_dataset_labels_out_of_range_and_non_integer():
    inputs, target, mask = _arrays()
    with pytest.raises(ValueError, match=r"labels out of range: found \[0, 5\] for 3 classes"):
        MultimodalDataset(_spec(), inputs, np.where(target == 2, 5, target), mask)
    with pytest.raises(ValueError, match=r"labels out of range"):
        MultimodalDataset(_spec(), inputs, target - 1, mask)
    with pytest.raises(ValueError, match="classification labels must be integers"):
        MultimodalDataset(_spec(), inputs, target + 0.5, mask)
    # Integral floats are fine and become int64.
    ds = MultimodalDataset(_spec(), inputs, target.astype(np.float64), mask)
    assert ds.target.dtype == torch.long and ds.labels.tolist() == target.tolist()


def test_dataset_split_indices_out_of_range():
    inputs, target, mask = _arrays()
    with pytest.raises(ValueError, match=r"split 'test' indexes rows outside \[0, 6\)"):
        MultimodalDataset(_spec(), inputs, target, mask, splits={"train": [0, 1], "test": [5, 6]})


# --- subset / split / with_mask ----------------------------------------------


def _dataset() -> MultimodalDataset:
    inputs, target, mask = _arrays()
    mask[0, 1] = False
    return MultimodalDataset(_spec(), inputs, target, mask, splits={"train": [0, 1, 2, 3], "test": [4, 5]})


def test_subset_takes_rows():
    ds = _dataset()
    sub = ds.subset(np.array([5, 0]))
    assert len(sub) == 2
    assert torch.equal(sub.inputs["a"], ds.inputs["a"][[5, 0]])
    assert torch.equal(sub.mask, ds.mask[[5, 0]])
    assert torch.equal(sub.target, ds.target[[5, 0]])
    assert sub.splits == {}


def test_split_by_name_and_unknown_split_lists_known():
    ds = _dataset()
    test = ds.split("test")
    assert torch.equal(test.target, ds.target[[4, 5]])
    with pytest.raises(ValueError, match=r"dataset 'toy' has no split 'val'; known: train, test"):
        ds.split("val")
    inputs, target, mask = _arrays()
    with pytest.raises(ValueError, match=r"known: none"):
        MultimodalDataset(_spec(), inputs, target, mask).split("train")


def test_dataset_with_mask_narrows_and_zeroes():
    ds = _dataset()
    new = np.ones((N, 2), dtype=bool)
    new[3, 0] = False
    out = ds.with_mask(new)
    assert not out.mask[0, 1]  # natural absence survives an all-True request
    assert not out.mask[3, 0]
    assert torch.all(out.inputs["a"][3] == 0)
    assert torch.equal(out.inputs["b"][3], ds.inputs["b"][3])
    assert out.splits.keys() == ds.splits.keys()
    assert ds.mask[3, 0]  # the original is untouched
    validate_batch(out.as_batch(), out.spec, allow_empty_samples=True)
    with pytest.raises(ValueError, match=r"mask must be bool of shape \(6, 2\)"):
        ds.with_mask(new.astype(np.int64))
    with pytest.raises(ValueError, match=r"mask must be bool of shape \(6, 2\)"):
        ds.with_mask(new[:4])


# --- stratified_split --------------------------------------------------------


def test_stratified_split_proportions_disjoint_cover_and_determinism():
    labels = np.repeat([0, 1, 2], [40, 20, 60])
    first, second = stratified_split(labels, 0.25, seed=3)
    assert np.intersect1d(first, second).size == 0
    assert np.array_equal(np.sort(np.concatenate([first, second])), np.arange(labels.size))
    assert np.array_equal(first, np.sort(first)) and np.array_equal(second, np.sort(second))
    assert np.bincount(labels[second], minlength=3).tolist() == [10, 5, 15]
    assert np.bincount(labels[first], minlength=3).tolist() == [30, 15, 45]
    again = stratified_split(labels, 0.25, seed=3)
    assert np.array_equal(again[0], first) and np.array_equal(again[1], second)
    other = stratified_split(labels, 0.25, seed=4)
    assert not np.array_equal(other[1], second)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_stratified_split_bad_fraction(fraction):
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\)"):
        stratified_split(np.array([0, 1, 0, 1]), fraction, seed=0)


# --- make_splits -------------------------------------------------------------

N_ID = 120


def _id_dataset(with_splits: bool = True) -> MultimodalDataset:
    """A dataset whose only feature is the row index, so split membership is readable back."""
    labels = np.arange(N_ID) % 3
    spec = DatasetSpec("ids", (ModalitySpec("id", "vector", (1,)),), TaskSpec(n_classes=3))
    splits = None
    if with_splits:
        train, test = stratified_split(labels, 0.25, seed=99)
        splits = {"train": train, "test": test}
    return MultimodalDataset(spec, {"id": np.arange(N_ID, dtype=np.float32)[:, None]}, labels, splits=splits)


def _ids(ds: MultimodalDataset) -> np.ndarray:
    ids = ds.inputs["id"][:, 0].numpy().astype(np.int64)
    # The feature is the row index: the label must still be row % 3.
    assert np.array_equal(ds.labels, ids % 3)
    return ids


def test_make_splits_fixed_uses_shipped_split_and_carves_val_from_train():
    data = _id_dataset()
    train, val, test = make_splits(data, "fixed", seed=0)
    tr, va, te = _ids(train), _ids(val), _ids(test)
    assert np.array_equal(np.sort(te), data.splits["test"])
    assert np.array_equal(np.sort(np.concatenate([tr, va])), data.splits["train"])
    assert np.intersect1d(tr, va).size == 0
    assert np.intersect1d(va, te).size == 0 and np.intersect1d(tr, te).size == 0
    # Validation is stratified too (90 training rows, 30 per class -> round(0.15 * 30) = 4 or 5).
    counts = np.bincount(va % 3, minlength=3)
    assert counts.max() - counts.min() == 0
    # The seed only moves the validation carve-out under 'fixed'; 'tmc' is an alias.
    train1, val1, test1 = make_splits(data, "fixed", seed=1)
    assert np.array_equal(np.sort(_ids(test1)), np.sort(te))
    assert not np.array_equal(np.sort(_ids(val1)), np.sort(va))
    _, val_tmc, test_tmc = make_splits(data, "tmc", seed=0)
    assert np.array_equal(_ids(val_tmc), va) and np.array_equal(_ids(test_tmc), te)


def test_make_splits_random_is_seeded_disjoint_and_covers():
    data = _id_dataset(with_splits=False)
    train, val, test = make_splits(data, "random", seed=0, test_fraction=0.2, val_fraction=0.25)
    tr, va, te = _ids(train), _ids(val), _ids(test)
    assert len(te) == 24 and len(va) == 24 and len(tr) == 72
    assert np.array_equal(np.sort(np.concatenate([tr, va, te])), np.arange(N_ID))
    assert np.bincount(te % 3).tolist() == [8, 8, 8]
    again = make_splits(data, "random", seed=0, test_fraction=0.2, val_fraction=0.25)
    assert np.array_equal(_ids(again[2]), te) and np.array_equal(_ids(again[1]), va)
    other = make_splits(data, "random", seed=1, test_fraction=0.2, val_fraction=0.25)
    assert not np.array_equal(np.sort(_ids(other[2])), np.sort(te))


def test_make_splits_errors():
    with pytest.raises(ValueError, match=r"unknown split 'kfold'; known: fixed, tmc, random"):
        make_splits(_id_dataset(), "kfold")
    with pytest.raises(ValueError, match=r"dataset 'ids' ships no fixed train/test split"):
        make_splits(_id_dataset(with_splits=False), "fixed")
