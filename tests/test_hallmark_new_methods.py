"""Mechanism tests of hemis, multimodn, muse, ragpt and smil: each fails if its mechanism breaks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlmm.data.batch import Batch
from mlmm.data.preprocess import Standardizer
from mlmm.methods.graph.muse import drop_edges
from mlmm.methods.representation_composition.hemis import masked_mean_variance
from mlmm.methods.representation_generation.smil import kmeans, simulate_missing
from mlmm.testing import conformance_data
from mlmm.train.loop import build_method, seeded


def _batch(kind: str = "vector", n: int = 42) -> tuple[Batch, Batch]:
    """(standardised full batch, standardised training batch) of the conformance data."""
    data = conformance_data(kind, n_samples=n)
    std = Standardizer(data.spec).fit(data.split("train").as_batch())
    return std(data.as_batch()), std(data.split("train").as_batch())


def _prepared(name: str, **params):
    full, train = _batch()
    method = build_method(name, full_spec(), 0, **params)
    with seeded(0):
        method.prepare(train, Standardizer(full_spec()))
    method.eval()
    return method, full


def full_spec():
    return conformance_data("vector").spec


# ------------------------------------------------------------------ HeMIS


def test_hemis_moments_over_present_modalities_only() -> None:
    z = torch.tensor([[[1.0, 2.0], [3.0, 6.0], [float("nan"), 7.0]],
                      [[5.0, -1.0], [9.0, 9.0], [0.0, 0.0]]])  # (2, 3, 2)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    out = masked_mean_variance(z, mask)
    # sample 0: mean of (1,2),(3,6); unbiased variance of two points = (a-b)^2/2
    torch.testing.assert_close(out[0], torch.tensor([2.0, 4.0, 2.0, 8.0]))
    # sample 1: one modality -> its embedding and zero variance
    torch.testing.assert_close(out[1], torch.tensor([5.0, -1.0, 0.0, 0.0]))
    # order of modalities does not matter
    perm = torch.tensor([2, 0, 1])
    torch.testing.assert_close(masked_mean_variance(z[:, perm], mask[:, perm]), out)


def test_hemis_head_sees_the_spread_not_only_the_mean() -> None:
    method = build_method("hemis", full_spec(), 0, embed_dim=4)
    method.eval()
    mask = torch.tensor([[True, True, False], [True, True, False]])
    close = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0] * 4])
    spread = torch.tensor([[-3.0, 5.0, -3.0, 5.0], [5.0, -3.0, 5.0, -3.0], [0.0] * 4])  # same mean, variance > 0
    logits = method.fuse_embeddings(torch.stack([close, spread]), mask).logits
    assert not torch.allclose(logits[0], logits[1])


# ------------------------------------------------------------------ MultiModN


def test_multimodn_step_t_reads_only_the_first_t_modalities_and_skips_missing_ones() -> None:
    method = build_method("multimodn", full_spec(), 0)
    method.eval()
    full, _ = _batch()
    batch = full.select(torch.arange(4))
    out = method(batch).aux["step_logits"]  # (B, M+1, C)
    assert out.shape[1] == full_spec().n_modalities + 1
    # changing the last modality's input leaves every earlier step's prediction unchanged
    names = full_spec().modality_names
    changed = Batch({**batch.inputs, names[2]: batch.inputs[names[2]] + 3.0}, batch.mask, batch.target)
    new = method(changed).aux["step_logits"]
    torch.testing.assert_close(new[:, :3], out[:, :3])
    assert not torch.allclose(new[:, 3], out[:, 3])
    # a sample missing modality 1 keeps its state through step 2 (per sample, not per batch)
    mask = batch.mask.clone()
    mask[0, 1] = False
    skipped = method(batch.with_mask(mask))
    torch.testing.assert_close(skipped.aux["step_logits"][0, 2], skipped.aux["step_logits"][0, 1])
    assert not torch.allclose(skipped.aux["step_logits"][1, 2], skipped.aux["step_logits"][1, 1])
    assert skipped.aux["step_applied"][0].tolist() == [True, True, False, True]
    torch.testing.assert_close(skipped.logits, skipped.aux["step_logits"][:, -1])


def test_multimodn_loss_counts_only_applied_steps() -> None:
    method = build_method("multimodn", full_spec(), 0)
    method.eval()
    full, _ = _batch()
    batch = full.select(torch.arange(3))
    mask = torch.tensor([[True, False, False]] * 3)
    out = method(batch.with_mask(mask))
    # only steps 0 and 1 are applied; poisoning the logits of skipped steps must not change the loss
    poisoned = out.aux["step_logits"].clone()
    poisoned[:, 2:] = 1e6
    loss = method.loss(batch.with_mask(mask), out)["steps"].detach()
    out.aux["step_logits"] = poisoned
    assert float(method.loss(batch.with_mask(mask), out)["steps"].detach()) == pytest.approx(float(loss))


# ------------------------------------------------------------------ MUSE


def test_muse_edge_drop_keeps_a_non_empty_strict_subset() -> None:
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(400, 4, generator=g) < 0.7
    mask[~mask.any(dim=1), 0] = True
    with seeded(1):
        view = drop_edges(mask)
    assert bool((view <= mask).all()) and bool(view.any(dim=1).all())
    single = mask.sum(dim=1) == 1
    assert torch.equal(view[single], mask[single])
    changed = (view != mask).any(dim=1)
    multi = mask.sum(dim=1) >= 2
    assert 0.35 < float(changed[multi].float().mean()) < 0.65  # each row with K >= 2 cut w.p. 0.5
    assert bool((view[changed].sum(dim=1) < mask[changed].sum(dim=1)).all())


def test_muse_messages_cross_samples_through_modality_nodes_in_training_only() -> None:
    method = build_method("muse", full_spec(), 0, dropout=0.0)
    full, _ = _batch()
    a, b = full.select(torch.arange(0, 6)), full.select(torch.arange(6, 12))
    first = full.select(torch.tensor([0]))
    def rep(batch):  # sample 0's representation in a batch
        with seeded(0):
            return method(batch).aux["representation"][0]
    method.train()
    together_a = rep(Batch({k: torch.cat([first.inputs[k], a.inputs[k][1:]]) for k in a.inputs},
                           torch.cat([first.mask, a.mask[1:]]), None))
    together_b = rep(Batch({k: torch.cat([first.inputs[k], b.inputs[k][1:]]) for k in b.inputs},
                           torch.cat([first.mask, b.mask[1:]]), None))
    assert not torch.allclose(together_a, together_b)  # batch-mates reach sample 0 via modality nodes
    assert float(method.running_agg.abs().sum()) > 0  # training aggregates are tracked
    method.eval()
    alone = method(first).logits
    torch.testing.assert_close(method(Batch({k: torch.cat([first.inputs[k], b.inputs[k]]) for k in b.inputs},
                                            torch.cat([first.mask, b.mask]), None)).logits[:1], alone)


def test_muse_trains_with_both_contrastive_terms() -> None:
    method = build_method("muse", full_spec(), 0)
    full, _ = _batch()
    method.train()
    with seeded(0):
        out = method(full)
        terms = method.loss(full, out)
    assert set(terms) == {"task", "mutual_consistency", "supervised_contrastive"}
    method.eval()
    assert set(method.loss(full, method(full))) == {"task"}


# ------------------------------------------------------------------ RAGPT


def test_ragpt_fills_a_missing_modality_from_the_neighbours_that_hold_it() -> None:
    method, full = _prepared("ragpt", k=3)
    # Only bank row 0 holds modality 2: every sample missing modality 2 gets the same generated
    # token (the generator of that row's embedding), whatever its own present inputs are.
    method.bank_mask[1:, 2] = False
    method.__dict__.pop("_bank_cache", None)
    mask = full.mask.clone()
    mask[:, 2] = False
    with torch.no_grad():
        rec = method.recover(full.with_mask(mask))[full_spec().modality_names[2]]
        torch.testing.assert_close(rec, rec[:1].expand_as(rec))
        # ... and it follows that row's stored modality-2 input
        method.bank_x2 = method.bank_x2.clone()
        method.bank_x2[0] += 1.0
        moved = method.recover(full.with_mask(mask))[full_spec().modality_names[2]]
    assert not torch.allclose(moved, rec)


def test_ragpt_label_prompt_reads_the_neighbours_labels() -> None:
    method, full = _prepared("ragpt", k=3)
    with torch.no_grad():
        before = method(full).logits
        method.bank_class = (method.bank_class + 1) % full_spec().task.output_dim
        after = method(full).logits
    assert not torch.allclose(before, after)


# ------------------------------------------------------------------ SMIL


def test_kmeans_finds_separated_clusters() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.1 * torch.randn(30, 2, generator=g) for c in centres])
    found = kmeans(x, 3, torch.Generator().manual_seed(1))
    assert torch.cdist(centres, found).min(dim=1).values.max() < 0.2


def test_smil_simulated_view_always_hides_something_when_it_can() -> None:
    mask = torch.tensor([[True, True, True], [True, False, False], [False, True, True]] * 50)
    with seeded(0):
        view = simulate_missing(mask)
    assert bool((view <= mask).all()) and bool(view.any(dim=1).all())
    multi = mask.sum(dim=1) >= 2
    assert bool((view[multi].sum(dim=1) < mask[multi].sum(dim=1)).all())
    assert torch.equal(view[~multi], mask[~multi])


def test_smil_reconstructs_from_prototypes_and_perturbs_only_incomplete_samples() -> None:
    method, full = _prepared("smil")
    assert float(method.prototypes.abs().sum()) == 0  # prototypes come with the meta stage
    method.set_stage("meta")
    assert float(method.prototypes.abs().sum()) > 0
    method.set_stage("main")
    method.eval()
    # A reconstruction is a convex mix of the modality's prototypes: equal prototypes -> that vector.
    method.prototypes[1] = torch.arange(method.prototypes.shape[2], dtype=torch.float32)
    mask = full.mask.clone()
    mask[:, 1] = False
    name = full_spec().modality_names[1]
    with torch.no_grad():
        torch.testing.assert_close(method.recover(full.with_mask(mask))[name],
                                   method.prototypes[1, 0].expand(full.size, -1))
        mixed = full.mask.clone()
        mixed[::2, 0] = False  # even rows incomplete, odd rows complete
        before = method(full.with_mask(mixed)).logits
        method.perturb_fused.bias += 5.0
        after = method(full.with_mask(mixed)).logits
    assert torch.equal(before[1::2], after[1::2])  # complete samples: the clean path
    assert not torch.allclose(before[::2], after[::2])


def test_smil_meta_stage_takes_an_inner_step() -> None:
    method, full = _prepared("smil")
    method.set_stage("meta")
    method.train()
    with seeded(0):
        terms = method.loss(full, method(full))
    assert set(terms) == {"meta_train", "meta_val"}
    # the outer loss depends on the inner learning rate (second-order path through θ')
    method.inner_lr = 10.0
    with seeded(0):
        moved = method.loss(full, method(full))["meta_val"]
    assert not torch.isclose(moved, terms["meta_val"])
    assert np.isfinite(float(moved.detach()))
