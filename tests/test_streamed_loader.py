"""The streamed training loader: DataLoader workers, pickling a memory-mapped dataset, faster row reads."""

import pickle

import numpy as np
import pytest
import torch

from mlmm.data import MemmapDataset, open_memmap_dataset, write_synthetic_memmap
from mlmm.train import TrainConfig, Trainer, build_method


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    folder = write_synthetic_memmap(tmp_path_factory.mktemp("mm") / "syn", n=300, n_modalities=3, features=8, seed=1)
    return open_memmap_dataset(folder)


def _fit(data, **loader):
    config = TrainConfig(max_epochs=2, patience=2, batch_size=32, **loader)
    method = build_method("masked-mean", data.spec, seed=0)
    return Trainer(config).fit(method, data.split("train"), data.split("val"), seed=0)


def test_workers_give_the_same_fitted_weights(small):
    """Rows are read (and standardised) in two worker processes; the sampler and modality dropout stay in
    the training process, so the fit is the one without workers, bit for bit."""
    ref = _fit(small)
    got = _fit(small, num_workers=2, prefetch=1)
    assert [r["train_loss"] for r in got.history] == [r["train_loss"] for r in ref.history]
    for key, value in ref.model.state_dict().items():
        assert torch.equal(got.model.state_dict()[key], value), key


def test_pickled_dataset_reopens_its_files_instead_of_copying_rows(small):
    view = small.split("val")
    blob = pickle.dumps(view)
    assert len(blob) < small.arrays["m0"].nbytes  # the rows travel as file references
    back = pickle.loads(blob)
    assert isinstance(back.arrays["m0"], np.memmap) and back.arrays["m0"].filename == small.arrays["m0"].filename
    a, b = view.__getitems__([3, 0, 7]), back.__getitems__([3, 0, 7])
    assert all(torch.equal(a.inputs[k], b.inputs[k]) for k in a.inputs) and torch.equal(a.mask, b.mask)


def test_reads_match_a_fancy_index_for_any_row_order(small):
    """Runs of consecutive rows (in the file and in the batch) are coalesced; repeated, reversed and
    scattered rows still land where asked, and masked-out slots read as zeros."""
    positions = [5, 6, 7, 8, 3, 2, 1, 200, 201, 7, 299, 0]
    batch = small.__getitems__(positions)
    for j, name in enumerate(small.spec.modality_names):
        want = torch.from_numpy(np.asarray(small.arrays[name])[small.rows[positions]])
        want[~small.mask[positions, j]] = 0
        assert torch.equal(batch.inputs[name], want), name


def test_a_nonfinite_present_entry_names_modality_and_row(small, tmp_path):
    arrays = {k: np.array(v) for k, v in small.arrays.items()}
    row = int(np.flatnonzero(small.mask[:, 1].numpy())[4])
    arrays["m1"][row, 2] = np.nan
    poisoned = MemmapDataset(small.spec, arrays, small.target, small.mask)
    poisoned.__getitems__([i for i in range(len(poisoned)) if i != row][:50])  # other rows read fine
    with pytest.raises(ValueError, match=f"modality 'm1' holds NaN or inf in a present entry \\(row {row} of m1"):
        poisoned.__getitems__([0, row])


def test_synthetic_images_of_any_resolution_beside_vectors(tmp_path):
    folder = write_synthetic_memmap(tmp_path / "img", n=120, n_modalities=1, features=4, image_shape=(3, 12, 20),
                                    chunk_rows=50)
    data = open_memmap_dataset(folder)
    assert data.spec.modality_names == ("m0", "image") and data.spec.modalities[1].kind == "image"
    batch = data.as_batch()
    images = batch.inputs["image"]
    assert images.dtype == torch.uint8 and tuple(images.shape) == (120, 3, 12, 20)
    present = data.mask[:, 1]
    assert torch.count_nonzero(images[~present]) == 0 and bool((images[present] > 0).any())
    # the class shows in the pixels: per-class mean images differ far more than the noise of a mean
    means = torch.stack([images[present & (data.target == k)].float().mean(0) for k in range(2)])
    assert float((means[0] - means[1]).abs().mean()) > 10
    with pytest.raises(ValueError, match="image_shape must be"):
        write_synthetic_memmap(tmp_path / "bad", n=10, image_shape=(12, 20))
