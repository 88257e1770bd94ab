"""Every registered method trains on an image + text dataset, or refuses by its declared
``MethodInfo.unsupported_kinds`` with a ValueError quoting the declaration (issue 15).
A raw exception from deep inside (IndexError, RuntimeError, a dtype clash) fails the test."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlmm import METHODS, TrainConfig, Trainer, build_method
from mlmm.data import DatasetSpec, ModalitySpec, MultimodalDataset, TaskSpec

VOCAB = 40


def image_text_data(n: int = 48, seed: int = 0) -> tuple[MultimodalDataset, MultimodalDataset]:
    """Class-dependent 8x8 uint8 images and 6-token captions (ids up to VOCAB - 1, 0 = padding);
    a quarter of images and of captions missing, never both; complete rows for methods that need them."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    image = (rng.integers(0, 60, (n, 1, 8, 8)) + 60 * y[:, None, None, None]).astype(np.uint8)
    caption = rng.integers(1, VOCAB, (n, 6))
    caption[:, 0] = VOCAB - 1 - y  # a class word
    caption[:, 4:] = 0  # padding
    mask = np.ones((n, 2), bool)
    mask[1::4, 0] = False
    caption[3::4] = 0  # all padding: missing
    spec = DatasetSpec("img_txt", (ModalitySpec("image", "image", (1, 8, 8)),
                                   ModalitySpec("caption", "text", (6,), vocab_size=VOCAB, pad_id=0)),
                       TaskSpec("classification", n_classes=3))
    data = MultimodalDataset(spec, {"image": image, "caption": caption}, y, mask)
    return data, data.subset(np.arange(0, n, 4))  # the second is complete: rows 0, 4, 8, ...


def test_fixture_marks_padding_rows_missing():
    data, complete = image_text_data()
    assert not data.mask[3::4, 1].any() and not data.mask[1::4, 0].any() and bool(complete.mask.all())


@pytest.mark.parametrize("name", METHODS.names())
def test_method_trains_on_image_and_text_or_refuses_by_declaration(name):
    data, complete = image_text_data()
    info = METHODS.get(name).info
    if "text" in info.unsupported_kinds or "image" in info.unsupported_kinds:
        with pytest.raises(ValueError, match=r"does not take (text|image) modalities .*unsupported_kinds"):
            build_method(name, data.spec)
        return
    train = complete if info.needs_complete_train else data
    method = build_method(name, data.spec, seed=0)
    fit = Trainer(TrainConfig(max_epochs=1, batch_size=16, min_steps_per_epoch=1, patience=1)).fit(
        method, train, complete, seed=0)
    logits = fit.model.predict_logits(data)
    assert logits.shape == (len(data), 3) and torch.isfinite(logits).all()


def test_declared_reasons_are_shown_with_the_kind():
    declared = {n: METHODS.get(n).info.unsupported_kinds for n in METHODS.names()}
    for name in ("zero-fill", "mean-fill", "retrieval-fill", "individual-generators", "masked-autoencoder-fill",
                 "cpm-nets"):
        assert "text" in declared[name] and len(declared[name]["text"]) > 20
    assert "unsupported_kinds" in METHODS.get("zero-fill").info.as_dict()
