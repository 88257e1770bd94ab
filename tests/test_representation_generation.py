"""Representation generation: masked-modality-ae, mmin, cpm-nets.

The conformance suite (test_conformance.py) covers their generic contract; these tests
check what each mechanism is *for*, on small synthetic data with a known answer.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from mlmm.components.subpatterns import random_sub_mask
from mlmm.data.batch import Batch
from mlmm.data.datasets import make_synthetic
from mlmm.data.preprocess import Standardizer
from mlmm.missing.functional import entry_rate_mask
from mlmm.train.loop import TrainConfig, Trainer, build_method, seeded

NAMES = ("masked-modality-ae", "mmin", "cpm-nets")
FAST = TrainConfig(max_epochs=10, batch_size=32, patience=10)


def test_random_sub_mask_strict_and_not() -> None:
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(2000, 4, generator=g) < 0.7
    mask[:, 0] |= ~mask.any(dim=1)
    n = mask.sum(dim=1)
    with seeded(0):
        strict = random_sub_mask(mask, strict=True)
        loose = random_sub_mask(mask, strict=False)
    for kept in (strict, loose):
        assert not (kept & ~mask).any() and kept.any(dim=1).all()
    k = strict.sum(dim=1)
    assert (k[n >= 2] < n[n >= 2]).all() and torch.equal(strict[n == 1], mask[n == 1])
    full = loose.sum(dim=1) == n
    assert 0.15 < float(full[n == 4].float().mean()) < 0.35  # k ~ U{1..4}: the full pattern 1 time in 4
    # every strict sub-size is drawn about equally often for n = 4 (1, 2 or 3 kept)
    counts = torch.bincount(k[n == 4], minlength=4)[1:].float()
    assert float(counts.min() / counts.max()) > 0.8


# -------------------------------------------------------------- helpers


def _data(seed: int = 0, n: int = 240):
    # Redundant modalities: each one's class evidence is largely shared, so a missing
    # modality's embedding is predictable from the others (the known answer).
    return make_synthetic(n_samples=n, n_classes=3, n_modalities=3, dims=8, redundancy=0.9, noise=0.6, seed=seed)


def _batches(data, train_mask=None):
    train, test = data.split("train"), data.split("test")
    if train_mask is not None:
        train = train.with_mask(train_mask & train.mask)
    standardizer = Standardizer(data.spec).fit(train.as_batch())
    with torch.no_grad():
        return train, test, standardizer, standardizer(train.as_batch()), standardizer(test.as_batch())


def _drop(batch: Batch, j: int) -> Batch:
    mask = batch.mask.clone()
    mask[:, j] = False
    return batch.with_mask(mask)


# --------------------------------------------------------- masked-modality-ae


def test_masked_ae_reconstruction_falls_and_beats_the_mean_embedding() -> None:
    data = _data()
    train, test, standardizer, train_batch, test_batch = _batches(data)
    method = build_method("masked-modality-ae", data.spec, 0)

    def recon_term() -> float:
        method.train()
        with seeded(1), torch.no_grad():
            out = method(train_batch)
            return float(method.recon_loss(train_batch, out))

    before = recon_term()
    # Plain optimisation of the method's own loss (this synthetic task is so easy that the
    # loop's model selection keeps epoch 1, before the reconstruction has learnt anything).
    optimiser = torch.optim.AdamW(method.parameters(), lr=1e-3)
    with seeded(0):
        for _ in range(150):
            method.train()
            out = method(train_batch)
            optimiser.zero_grad()
            sum(method.loss(train_batch, out).values()).backward()
            optimiser.step()
    after = recon_term()
    assert after < 0.5 * before, (before, after)

    method.eval()
    with torch.no_grad():
        truth = method.recover(test_batch)  # all present: the normalised embeddings u_m
        train_truth = method.recover(train_batch)
        for j, name in enumerate(data.spec.modality_names):
            guess = method.recover(_drop(test_batch, j))[name]
            mean = train_truth[name].mean(dim=0, keepdim=True)
            err = float((guess - truth[name]).pow(2).mean())
            err_mean = float((mean - truth[name]).pow(2).mean())
            assert err < 0.7 * err_mean, (name, err, err_mean)


def test_masked_ae_masks_like_actionmae_and_smooths_labels() -> None:
    data = _data(n=300)
    _, _, _, train_batch, _ = _batches(data)
    method = build_method("masked-modality-ae", data.spec, 0)
    assert method.training_control("main").modality_dropout == "off"
    method.train()
    with seeded(0):
        out = method(train_batch)
    kept = out.aux["kept"].sum(dim=1)
    # k ~ U{1..3} kept of 3 present: the full set (no drop) about a third of the time.
    shares = torch.bincount(kept, minlength=4)[1:].float() / kept.numel()
    assert bool((shares > 0.2).all()), shares
    terms = method.loss(train_batch, out)
    expected = torch.nn.functional.cross_entropy(out.logits, train_batch.target, label_smoothing=0.1)
    torch.testing.assert_close(terms["task"], expected)


def test_masked_ae_recover_and_plain_fill() -> None:
    data = _data(n=60)
    _, _, standardizer, train_batch, test_batch = _batches(data)
    method = build_method("masked-modality-ae", data.spec, 0).eval()
    mask = torch.as_tensor(entry_rate_mask(test_batch.size, 3, 0.4, np.random.default_rng(0)))
    query = test_batch.with_mask(mask)
    with torch.no_grad():
        rec = method.recover(query)
        full = method.recover(test_batch)
        assert list(rec) == list(data.spec.modality_names) and all(v.shape == (query.size, 128) for v in rec.values())
        for j, name in enumerate(data.spec.modality_names):  # present slots: the sample's own embedding
            torch.testing.assert_close(rec[name][mask[:, j]], full[name][mask[:, j]])
        filled = method(query).logits
        method.plain_fill = True
        plain = method(query).logits
    complete = mask.all(dim=1)
    torch.testing.assert_close(plain[complete], filled[complete])
    assert not torch.allclose(plain[~complete], filled[~complete])


# -------------------------------------------------------------------- mmin


def test_mmin_imagination_moves_towards_the_teacher() -> None:
    data = _data()
    train, test, standardizer, train_batch, test_batch = _batches(data)
    method = build_method("mmin", data.spec, 0)
    untrained = build_method("mmin", data.spec, 1)
    Trainer(FAST).fit(method, train, test, seed=0)
    method.eval()
    with torch.no_grad():
        target, complete = method.teacher_embedding(test_batch)  # test rows are not in the bank
        assert complete.all()
        before = copy.deepcopy(method)
        before.imagine.load_state_dict(untrained.imagine.state_dict())  # the CRA before training
        d = method.embed_dim
        for j in range(3):  # the imagined slice of the dropped modality against the teacher's
            query = _drop(test_batch, j)
            part = slice(j * d, (j + 1) * d)
            h, z_hat, _ = method._imagine(query)
            _, z_init, _ = before._imagine(query)
            err = float((z_hat[:, part] - target[:, part]).pow(2).mean())
            assert err < 0.5 * float((z_init[:, part] - target[:, part]).pow(2).mean()), j
            assert err < 0.5 * float(target[:, part].pow(2).mean()), j  # the zero fill of h there


def test_mmin_teacher_sees_complete_rows_and_student_never_the_full_pattern() -> None:
    data = _data(n=90)
    train, test = data.split("train"), data.split("test")
    method = build_method("mmin", data.spec, 0)
    teacher_masks, student_masks = [], []
    joint = method._joint

    def spy(encoders, batch, mask):  # record what each net is fed in training
        if method.training:
            (teacher_masks if encoders is method.teacher else student_masks).append(mask.clone())
        return joint(encoders, batch, mask)

    method._joint = spy
    config = TrainConfig(max_epochs=2, batch_size=16, patience=5, modality_dropout=0.9)
    Trainer(config).fit(method, train, test, seed=0)
    assert teacher_masks and student_masks
    # The teacher (its own stage and the imagination target) always sees every modality ...
    assert all(bool(m.all()) for m in teacher_masks), "the teacher saw a dropped modality"
    # ... and the student only MMIN's partial patterns, never the full one.
    assert not any(bool(m.all(dim=1).any()) for m in student_masks), "the student trained on the full pattern"
    # Nothing sized by the training set is kept: the checkpoint holds no training rows.
    other = build_method("mmin", data.spec, 0)
    assert {k: v.shape for k, v in method.state_dict().items()} == {k: v.shape for k, v in other.state_dict().items()}


def test_mmin_refused_on_incomplete_training_data() -> None:
    data = _data(n=60)
    train, test = data.split("train"), data.split("test")
    mask = torch.as_tensor(entry_rate_mask(len(train), 3, 0.3, np.random.default_rng(0)))
    method = build_method("mmin", data.spec, 0)
    with pytest.raises(ValueError, match="needs complete training samples"):
        Trainer(FAST).fit(method, train.with_mask(mask), test, seed=0)


def test_mmin_recover_and_plain_fill() -> None:
    data = _data(n=60)
    _, _, standardizer, train_batch, test_batch = _batches(data)
    method = build_method("mmin", data.spec, 0)
    method.prepare(train_batch, standardizer)
    method.eval()
    query = _drop(test_batch, 1)
    with torch.no_grad():
        rec = method.recover(query)
        assert [v.shape for v in rec.values()] == [(query.size, 64)] * 3
        _, z_hat, _ = method._imagine(query)
        torch.testing.assert_close(torch.cat(list(rec.values()), dim=1), z_hat)
        truth = method.recovery_target(test_batch)  # the teacher's embedding, what ẑ imitates
        torch.testing.assert_close(torch.cat(list(truth.values()), dim=1), method.teacher_embedding(test_batch)[0])
        imagined = method(query).logits
        method.plain_fill = True
        assert not torch.allclose(method(query).logits, imagined)


# ---------------------------------------------------------------- cpm-nets


def test_cpm_nets_declares_the_official_schedule() -> None:
    data = _data(n=30)
    method = build_method("cpm-nets", data.spec, 0)
    control = method.training_control("main")
    assert control.full_batch and control.epochs == 30 and control.modality_dropout == "off"
    assert control.groups == (("decoders.", 5), ("latents", 5)) and control.lr == 0.01
    # The test-time fit takes as many steps as a training latent gets, at the same rate.
    assert method.fit_steps == 30 * 5 and method.fit_lr == 0.01


def test_cpm_nets_test_time_fit_lowers_error_and_classifies_with_missing_modalities() -> None:
    data = _data()
    n_train = len(data.split("train"))
    train_mask = torch.as_tensor(entry_rate_mask(n_train, 3, 0.4, np.random.default_rng(0)))
    train, test, standardizer, train_batch, test_batch = _batches(data, train_mask)
    method = build_method("cpm-nets", data.spec, 0, epochs=20)
    Trainer().fit(method, train, test, seed=0)
    method.eval()
    query = test_batch.with_mask(torch.as_tensor(entry_rate_mask(test_batch.size, 3, 0.4,
                                                                 np.random.default_rng(1))))
    targets = method._targets(query)
    with torch.no_grad():
        start = method.reconstruction_error(method.fit_latents(query, steps=0), targets, query.mask).mean()
        fitted_h = method.fit_latents(query)
        fitted = method.reconstruction_error(fitted_h, targets, query.mask).mean()
        accuracy = float((method(query).logits.argmax(dim=1) == query.target).float().mean())
    assert float(fitted) < 0.6 * float(start), (float(start), float(fitted))
    assert accuracy > 1 / 3 + 0.25, accuracy
    # Consistency: test latents land where training latents are (same start, objective, steps).
    ratio = float(fitted_h.norm(dim=1).mean() / method.latents.detach().norm(dim=1).mean())
    assert 0.5 < ratio < 2.0, ratio


def test_cpm_nets_training_latents_found_by_index_even_for_duplicate_rows() -> None:
    data = _data(n=80)
    n_train = len(data.split("train"))
    train_mask = torch.as_tensor(entry_rate_mask(n_train, 3, 0.4, np.random.default_rng(0)))
    _, _, standardizer, train_batch, test_batch = _batches(data, train_mask)
    # Row 1 becomes an exact copy of row 0 (values and mask): looking rows up by value would
    # send both to one latent; by index each keeps its own.
    twin = train_batch.select(torch.tensor([0, 0] + list(range(2, train_batch.size))))
    twin = twin.with_index(torch.arange(twin.size))
    method = build_method("cpm-nets", data.spec, 0)
    method.prepare(twin, standardizer)
    with torch.no_grad():
        method.latents.copy_(torch.randn(method.latents.shape, generator=torch.Generator().manual_seed(0)))
    assert method.latents.shape == (twin.size, 64)
    method.train()
    rows = torch.tensor([1, 0, 7, 1])
    out = method(twin.select(rows))
    torch.testing.assert_close(out.aux["h"], method.latents[rows])
    assert not torch.equal(out.aux["h"][0], out.aux["h"][1])
    out = method(test_batch)  # no training index: fitted latents, no loss
    assert "h" not in out.aux
    terms = method.loss(test_batch, out)
    assert float(terms["reconstruction"].detach()) == 0.0 and float(terms["hinge"].detach()) == 0.0


def test_cpm_nets_paper_normalisation_is_one_scalar_pair_per_view() -> None:
    data = _data(n=80)
    _, _, standardizer, train_batch, _ = _batches(data)
    method = build_method("cpm-nets", data.spec, 0, normalisation="paper")
    method.prepare(train_batch, standardizer)
    raw = data.split("train").as_batch()
    for name, x in zip(data.spec.modality_names, method._targets(train_batch)):
        r = raw.inputs[name]
        expected = (r - r.mean()) / (r.max() - r.min())
        torch.testing.assert_close(x, expected.flatten(1), atol=1e-5, rtol=1e-4)
