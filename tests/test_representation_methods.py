"""Representation methods: max / sign-max pooling, embedding retrieval, InfoNCE alignment.

The conformance suite (test_conformance.py) covers the generic contract of
``masked-max``, ``sign-max``, ``embedding-retrieval`` and ``infonce-align``;
these tests check what each method is *for*, on small synthetic data.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mlmm.components.contrastive import masked_infonce, pairwise_masked_infonce
from mlmm.components.pooling import masked_max, masked_mean, sign_max
from mlmm.data.batch import Batch
from mlmm.data.datasets import make_synthetic
from mlmm.data.preprocess import Standardizer
from mlmm.missing.functional import entry_rate_mask
from mlmm.train.loop import TrainConfig, Trainer, build_method

NEW_METHODS = ("masked-max", "sign-max", "embedding-retrieval", "infonce-align")


# ------------------------------------------------------------------ pooling


def _z_and_mask():
    z = torch.tensor([
        [[1.0, -5.0], [3.0, 2.0], [float("nan"), 100.0]],   # m2 missing (poisoned)
        [[-1.0, -2.0], [float("inf"), 0.0], [-3.0, 1.5]],   # m1 missing (poisoned)
        [[7.0, 7.0], [-1e6, 1e6], [float("nan"), 0.0]],     # no modality at all
    ])
    mask = torch.tensor([[True, True, False], [True, False, True], [False, False, False]])
    return z, mask


def test_pooling_hand_values_ignore_poisoned_slots() -> None:
    z, mask = _z_and_mask()
    torch.testing.assert_close(masked_max(z, mask), torch.tensor([[3.0, 2.0], [-1.0, 1.5], [0.0, 0.0]]))
    torch.testing.assert_close(sign_max(z, mask), torch.tensor([[3.0, -5.0], [-3.0, -2.0], [0.0, 0.0]]))
    torch.testing.assert_close(masked_mean(z, mask), torch.tensor([[2.0, -1.5], [-2.0, -0.25], [0.0, 0.0]]))


def test_sign_max_keeps_sign_and_breaks_ties_by_first_modality() -> None:
    z = torch.tensor([[[3.0, -0.5], [-3.0, 0.4]]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    torch.testing.assert_close(sign_max(z, mask), torch.tensor([[3.0, -0.5]]))
    # Only negative values present: max picks the least negative, sign-max the largest magnitude.
    z = torch.tensor([[[-1.0], [-4.0]]])
    torch.testing.assert_close(masked_max(z, mask), torch.tensor([[-1.0]]))
    torch.testing.assert_close(sign_max(z, mask), torch.tensor([[-4.0]]))


@pytest.mark.parametrize("pool", [masked_max, sign_max], ids=["max", "sign-max"])
def test_pooling_gradients_reach_only_selected_present_entries(pool) -> None:
    z, mask = _z_and_mask()
    z = z.clone().requires_grad_(True)
    pool(z, mask).sum().backward()
    grad = z.grad
    assert torch.isfinite(grad).all()
    assert (grad[~mask] == 0).all()
    assert float(grad.sum()) == 4.0  # one selected entry per output element of the 2 non-empty samples


@pytest.mark.parametrize("name, pool", [("masked-max", masked_max), ("sign-max", sign_max)])
def test_pooling_methods_use_their_pooling(name: str, pool) -> None:
    data = make_synthetic(n_samples=24, dims=(3, 4, 5), seed=0)
    method = build_method(name, data.spec, 0).eval()
    batch = data.as_batch()
    batch = batch.with_mask(torch.as_tensor(entry_rate_mask(batch.size, 3, 0.5, np.random.default_rng(0))))
    with torch.no_grad():
        expected = method.head(pool(method.encoders(batch), batch.mask))
        torch.testing.assert_close(method(batch).logits, expected)


# ---------------------------------------------------------------- retrieval


def _standardised(data, mask=None):
    train, test = data.split("train"), data.split("test")
    if mask is not None:
        train = train.with_mask(mask & train.mask)
    standardizer = Standardizer(data.spec).fit(train.as_batch())
    with torch.no_grad():
        return train, test, standardizer, standardizer(train.as_batch()), standardizer(test.as_batch())


def _drop(batch: Batch, j: int) -> Batch:
    mask = batch.mask.clone()
    mask[:, j] = False
    return batch.with_mask(mask)


def test_retrieval_finds_same_class_neighbours_far_above_chance() -> None:
    data = make_synthetic(n_samples=300, n_classes=3, n_modalities=3, dims=8, redundancy=0.8, seed=0)
    train, test, standardizer, _, test_batch = _standardised(data)
    method = build_method("embedding-retrieval", data.spec, 0)
    Trainer(TrainConfig(max_epochs=3, batch_size=32, patience=3)).fit(method, train, test, seed=0)
    method.eval()
    train_labels = torch.as_tensor(train.labels)
    test_labels = torch.as_tensor(test.labels)
    chance = 1.0 / 3
    for j in range(3):
        with torch.no_grad():
            index, valid = method.retrieve(_drop(test_batch, j))
        assert valid[:, j].all() and index.shape[-1] == 5
        neighbours = train_labels[method.bank_rows[index[:, j]]]  # (B, K) labels of retrieved bank rows
        agreement = float((neighbours == test_labels[:, None]).float().mean())
        assert agreement > chance + 0.25, (j, agreement)


def test_retrieval_uses_only_bank_rows_holding_the_missing_modality() -> None:
    data = make_synthetic(n_samples=120, n_classes=3, n_modalities=3, dims=(3, 4, 5), seed=1)
    n_train = len(data.split("train"))
    mask = torch.as_tensor(entry_rate_mask(n_train, 3, 0.5, np.random.default_rng(0)))
    _, _, standardizer, train_batch, test_batch = _standardised(data, mask)
    method = build_method("embedding-retrieval", data.spec, 0)
    method.prepare(train_batch, standardizer)
    method.eval()
    assert torch.equal(method.bank_mask, train_batch.mask)
    query = test_batch.with_mask(torch.as_tensor(entry_rate_mask(test_batch.size, 3, 0.5, np.random.default_rng(1))))
    with torch.no_grad():
        index, valid = method.retrieve(query)
    for m in range(3):
        holds = method.bank_mask[index[:, m], m]  # (B, K)
        shares = (method.bank_mask[index[:, m]] & query.mask[:, None, :]).any(dim=2)
        assert (holds & shares)[valid[:, m]].all()
    # Filling changes the prediction of a sample that misses a modality, and only then.
    with torch.no_grad():
        out = method(query)
        plain = method.head(masked_mean(method.encoders(query), query.mask))
    filled = out.aux["filled"]
    assert (filled <= ~query.mask).all() and filled.any()
    incomplete = filled.any(dim=1)
    torch.testing.assert_close(out.logits[~incomplete], plain[~incomplete])
    assert not torch.allclose(out.logits[incomplete], plain[incomplete])


def test_retrieval_excludes_the_sample_itself_in_training_only() -> None:
    data = make_synthetic(n_samples=120, n_classes=3, n_modalities=3, dims=(3, 4, 5), seed=2)
    _, _, standardizer, train_batch, _ = _standardised(data)
    method = build_method("embedding-retrieval", data.spec, 0)
    method.prepare(train_batch, standardizer)
    query = _drop(train_batch, 2)  # what modality dropout does to a training row
    own_row = torch.arange(query.size)  # the bank is the whole training split (< bank_size rows)
    with torch.no_grad():
        method.eval()
        index, _ = method.retrieve(query)
        assert float((index[:, 2, 0] == own_row).float().mean()) > 0.95  # its own copy matches perfectly
        method.train()
        index, valid = method.retrieve(query)
    assert valid[:, 2].all()
    assert not (index[:, 2] == own_row[:, None]).any()


def test_bank_is_a_seeded_capped_subsample_and_tracks_the_encoders() -> None:
    data = make_synthetic(n_samples=200, n_classes=3, n_modalities=2, dims=4, seed=0)
    _, _, standardizer, train_batch, test_batch = _standardised(data)
    a = build_method("embedding-retrieval", data.spec, 0, bank_size=40)
    b = build_method("embedding-retrieval", data.spec, 1, bank_size=40)
    a.prepare(train_batch, standardizer)
    b.prepare(train_batch, standardizer)
    assert a.bank_rows.shape == (40,) and torch.equal(a.bank_rows, b.bank_rows)
    assert bool((a.bank_rows[1:] > a.bank_rows[:-1]).all())
    torch.testing.assert_close(a.bank_x0, train_batch.inputs["m0"][a.bank_rows])

    a.eval()
    before = a.bank_embeddings()
    assert a.bank_embeddings() is before  # cached while nothing changed
    optimiser = torch.optim.SGD(a.parameters(), lr=0.1)
    a.train()
    out = a(_drop(test_batch, 1))
    sum(a.loss(_drop(test_batch, 1), out).values()).backward()
    optimiser.step()
    after = a.bank_embeddings()
    assert not torch.allclose(after, before)  # the bank follows the updated encoders
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b.bank_embeddings(), after, rtol=0, atol=0)


# ------------------------------------------------------------------ InfoNCE


def _reference_infonce(u_a, u_b, tau):
    logits = u_a @ u_b.t() / tau
    target = torch.arange(len(u_a))
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def test_masked_infonce_equals_infonce_on_the_samples_holding_both() -> None:
    g = torch.Generator().manual_seed(0)
    u_a = F.normalize(torch.randn(10, 6, generator=g), dim=1)
    u_b = F.normalize(torch.randn(10, 6, generator=g), dim=1)
    both = torch.tensor([1, 0, 1, 1, 0, 1, 1, 0, 0, 1], dtype=torch.bool)
    loss, count = masked_infonce(u_a, u_b, both, 0.07)
    assert int(count) == 6
    torch.testing.assert_close(loss, _reference_infonce(u_a[both], u_b[both], 0.07))
    # Perfectly aligned orthogonal pairs give a near-zero loss.
    eye = torch.eye(4)
    assert float(masked_infonce(eye, eye, torch.ones(4, dtype=torch.bool), 0.07)[0]) < 1e-5


def test_masked_infonce_ignores_samples_missing_either_modality() -> None:
    g = torch.Generator().manual_seed(1)
    u = F.normalize(torch.randn(12, 3, 8, generator=g), dim=-1)
    mask = torch.rand(12, 3, generator=g) < 0.6
    mask[:4] = True
    reference = pairwise_masked_infonce(u, mask, 0.07)
    for value in (float("nan"), float("inf"), 1e6, 0.0):
        poisoned = torch.where(mask.unsqueeze(-1), u, torch.tensor(value)).requires_grad_(True)
        loss = pairwise_masked_infonce(poisoned, mask, 0.07)
        torch.testing.assert_close(loss, reference, rtol=0, atol=0)
        loss.backward()
        assert torch.isfinite(poisoned.grad).all() and (poisoned.grad[~mask] == 0).all()


def test_infonce_pairs_with_fewer_than_two_samples_are_skipped_without_nan() -> None:
    u = F.normalize(torch.randn(5, 3, 4, generator=torch.Generator().manual_seed(2)), dim=-1).requires_grad_(True)
    mask = torch.tensor([[1, 1, 0], [1, 1, 0], [1, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=torch.bool)
    # Pairs (0,2) and (1,2) have 1 and 0 samples: only pair (0,1) counts.
    expected, _ = masked_infonce(u[:, 0], u[:, 1], mask[:, 0] & mask[:, 1], 0.07)
    torch.testing.assert_close(pairwise_masked_infonce(u, mask, 0.07), expected)
    single = torch.zeros(5, 3, dtype=torch.bool)
    single[:, 0] = True
    single[0, 1] = True
    loss = pairwise_masked_infonce(u, single, 0.07)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert u.grad is None or torch.isfinite(u.grad).all()


def test_alignment_loss_ignores_inputs_of_samples_missing_the_pair() -> None:
    data = make_synthetic(n_samples=40, n_classes=3, n_modalities=2, dims=(3, 4), seed=0)
    method = build_method("infonce-align", data.spec, 0)
    method.eval()
    batch = data.as_batch()
    mask = batch.mask.clone()
    mask[::3, 1] = False  # every third sample holds only m0
    batch = batch.with_mask(mask)
    with torch.no_grad():
        reference = method.loss(batch, method(batch))["align"]
        # Change (not just poison) the *present* m0 of the samples missing m1: the pair loss is unchanged.
        x0 = batch.inputs["m0"].clone()
        x0[::3] = torch.randn_like(x0[::3]) * 10
        changed = Batch({"m0": x0, "m1": batch.inputs["m1"]}, batch.mask, batch.target)
        torch.testing.assert_close(method.loss(changed, method(changed))["align"], reference, rtol=0, atol=0)
    assert float(reference) > 0


def _cross_modal_accuracy(weight: float, seed: int = 0) -> float:
    data = make_synthetic(n_samples=480, n_classes=16, n_modalities=2, dims=16, redundancy=1.0, noise=0.5, seed=0)
    train, test = data.split("train"), data.split("test")
    method = build_method("infonce-align", data.spec, seed, weight=weight)
    config = TrainConfig(max_epochs=8, batch_size=32, patience=8, modality_dropout=0.0)
    fit = Trainer(config).fit(method, train, test, seed=seed)
    method.eval()
    with torch.no_grad():
        u = F.normalize(method.embed(fit.model.standardizer(test.as_batch())), dim=-1)
    nearest = (u[:, 0] @ u[:, 1].t()).argmax(dim=1)  # nearest m1 embedding of each m0 embedding
    return float((nearest == torch.arange(len(u))).float().mean())


def test_infonce_training_raises_cross_modal_retrieval_accuracy() -> None:
    unaligned = _cross_modal_accuracy(weight=0.0)
    aligned = _cross_modal_accuracy(weight=0.1)
    chance = 1.0 / 120
    assert math.isfinite(aligned) and aligned > 5 * chance
    assert aligned > unaligned + 0.06, (aligned, unaligned)
