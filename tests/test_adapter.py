"""A user's torch Dataset as an mlmm dataset (mlmm.data.adapter.adapt_dataset)."""

import numpy as np
import pytest
import torch

from mlmm.data import DatasetSpec, ModalitySpec, TaskSpec, TorchDatasetAdapter, adapt_dataset
from mlmm.data.splits import make_splits
from mlmm.missing import Scenario, make_protocol
from mlmm.train import TrainConfig, Trainer, build_method

SPEC = DatasetSpec("toy", (ModalitySpec("image", "image", (1, 4, 4)), ModalitySpec("tokens", "text", (5,),
                                                                                     vocab_size=50),
                           ModalitySpec("vitals", "vector", (3,))), TaskSpec("classification", 2))


class Toy(torch.utils.data.Dataset):
    """Sample i: an image (None every 3rd), tokens (None every 4th unless that leaves nothing), vitals,
    as a dict with "target"; counts every item read."""

    def __init__(self, n: int = 40, pair: bool = False) -> None:
        self.n, self.pair, self.calls = n, pair, 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        self.calls += 1
        y = i % 2
        sample = {"image": None if i % 3 == 0 else torch.full((1, 4, 4), float(y + i / 100)),
                  "tokens": None if i % 4 == 0 else torch.tensor([1, 2 + y, 3, 0, 0]),
                  "vitals": torch.tensor([float(i), y * 2.0, 1.0])}
        return (sample, y) if self.pair else {**sample, "target": y}


def test_samples_become_batches_with_the_availability_mask():
    user = Toy()
    data = adapt_dataset(user, SPEC)
    assert isinstance(data, TorchDatasetAdapter) and len(data) == 40 and user.calls == 40  # one pass: mask, labels
    rows = np.arange(40)
    assert torch.equal(data.mask[:, 0], torch.as_tensor(rows % 3 != 0))
    assert torch.equal(data.mask[:, 1], torch.as_tensor(rows % 4 != 0))
    assert data.labels.tolist() == (rows % 2).tolist()
    batch = data.__getitems__([3, 4, 5])
    assert batch.inputs["image"].dtype == torch.float32 and int(batch.inputs["image"][0].count_nonzero()) == 0
    assert batch.inputs["image"][2, 0, 0, 0] == pytest.approx(1.05)
    assert batch.inputs["tokens"].dtype == torch.int64 and batch.inputs["tokens"][1].tolist() == [0] * 5
    assert batch.inputs["vitals"][:, 0].tolist() == [3.0, 4.0, 5.0] and batch.target.tolist() == [1, 0, 1]
    pair = adapt_dataset(Toy(pair=True), SPEC)
    assert torch.equal(pair.__getitems__([3, 4, 5]).inputs["image"], batch.inputs["image"])


def test_protocols_and_splits_never_read_a_sample_when_mask_and_targets_are_given():
    user = Toy()
    mask = np.stack([np.arange(40) % 3 != 0, np.arange(40) % 4 != 0, np.ones(40, bool)], axis=1)
    data = adapt_dataset(user, SPEC, targets=np.arange(40) % 2, mask=mask)
    train, val, test = make_splits(data, "random", seed=0)
    masked, _ = Scenario.same(make_protocol("entry", rate=0.5)).apply(train, "train", seed=0)
    assert user.calls == 0 and masked.mask.sum() < train.mask.sum()
    fit = Trainer(TrainConfig(max_epochs=1, batch_size=8)).fit(build_method("masked-mean", SPEC, seed=0), masked, val)
    assert user.calls >= len(train)  # the streamed fit reads samples batch by batch
    assert fit.model.predict_logits(test).shape == (len(test), 2)


class _Bad(Toy):
    def __init__(self, change) -> None:
        super().__init__()
        self.change = change

    def __getitem__(self, i):
        item = super().__getitem__(i)
        return self.change(item) if i == 7 else item


@pytest.mark.parametrize("change, culprit", [
    (lambda s: {**s, "image": torch.zeros(4, 4)}, r"sample 7: modality 'image' has shape \(4, 4\), expected "
                                                  r"\(1, 4, 4\)"),
    (lambda s: {**s, "audio": torch.zeros(3)}, "sample 7 yields unknown modality 'audio'"),
    (lambda s: {**s, "tokens": torch.zeros(5)}, "sample 7: text modality 'tokens' holds torch.float32"),
    (lambda s: [1, 2, 3], "sample 7 is a list; expected a dict"),
    (lambda s: {k: v for k, v in s.items() if k != "target"}, "sample 7 yields no 'target'"),
])
def test_bad_samples_name_the_sample_and_modality(change, culprit):
    with pytest.raises(ValueError, match=culprit):
        adapt_dataset(_Bad(change), SPEC)


def test_a_sample_missing_what_its_mask_claims_is_an_error_when_read():
    mask = np.ones((40, 3), bool)  # claims every image; sample 0 has none
    data = adapt_dataset(Toy(), SPEC, targets=np.arange(40) % 2, mask=mask)
    with pytest.raises(ValueError, match="sample 0 yields no value for modality 'image', but its mask says present"):
        data.__getitems__([1, 0])


def test_mask_and_targets_of_the_wrong_size_are_refused():
    with pytest.raises(ValueError, match=r"mask must be bool of shape \(40, 3\)"):
        adapt_dataset(Toy(), SPEC, targets=np.zeros(40, int), mask=np.ones((40, 2), bool))
    with pytest.raises(ValueError, match="39 targets for 40 samples"):
        adapt_dataset(Toy(), SPEC, targets=np.zeros(39, int), mask=np.ones((40, 3), bool))


def test_uint8_images_stay_uint8_and_scale_as_in_memory_images():
    """A user's uint8 image reaches the model as the in-memory dataset's does: kept 0..255 in the batch
    and scaled to [0, 1] by float_values (not left as floats 0..255, which a backbone reading raw pixels
    with preprocess="none" would see 255x too bright)."""
    from mlmm.data import MultimodalDataset
    from mlmm.data.batch import float_values

    spec = DatasetSpec("u8", (ModalitySpec("image", "image", (1, 2, 2)),), TaskSpec("classification", 2))
    pixels = torch.tensor([[[[0, 255], [128, 64]]], [[[10, 20], [30, 40]]]], dtype=torch.uint8)

    class Pixels(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return {"image": pixels[i], "target": i}

    streamed = adapt_dataset(Pixels(), spec).__getitems__([0, 1]).inputs["image"]
    in_memory = MultimodalDataset(spec, {"image": pixels}, torch.tensor([0, 1])).inputs["image"]
    assert streamed.dtype == torch.uint8 == in_memory.dtype
    assert torch.equal(float_values(streamed), float_values(in_memory))
    assert float(float_values(streamed).max()) == 1.0
