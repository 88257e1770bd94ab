"""Modality generation (individual generators, masked autoencoder) and deep CCA alignment.

The conformance suite (test_conformance.py) covers the generic contract of
``individual-generators``, ``masked-autoencoder-fill`` and ``dcca-align``;
these tests check what each method is *for*, on small synthetic data whose
answer is known, and the recovery hooks (``recover``, ``plain_fill``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlmm.components.generated_fill import hide_bernoulli, keep_random_subset, masked_reconstruction
from mlmm.data.batch import Batch
from mlmm.data.datasets import make_synthetic
from mlmm.data.preprocess import Standardizer
from mlmm.data.spec import DatasetSpec, ModalitySpec, TaskSpec
from mlmm.methods.coordinated_representation.dcca_align import masked_cca_correlation, pairwise_masked_dcca
from mlmm.missing.functional import entry_rate_mask
from mlmm.train.loop import TrainConfig, Trainer, build_method, seeded

GENERATORS = ("individual-generators", "masked-autoencoder-fill")


@pytest.mark.parametrize("name", GENERATORS)
def test_text_modality_is_refused_at_build_time_by_name(name: str) -> None:
    spec = DatasetSpec("t", (ModalitySpec("image", "vector", (4,)), ModalitySpec("caption", "text", (6,))),
                       TaskSpec("classification", n_classes=2))
    with pytest.raises(ValueError, match=r"does not take text modalities \(modality 'caption'\).*unsupported_kinds"):
        build_method(name, spec)


# ------------------------------------------------------------ training-time hiding


def test_hiding_policies_keep_a_non_empty_subset_of_the_present_modalities() -> None:
    mask = torch.as_tensor(entry_rate_mask(4000, 4, 0.4, np.random.default_rng(0)))
    mask[0] = False  # an empty sample stays empty
    with seeded(0):
        bern = hide_bernoulli(mask, 0.5)
        sub = keep_random_subset(mask)
    for kept in (bern, sub):
        assert (kept <= mask).all()
        assert torch.equal(kept.any(dim=1), mask.any(dim=1))
    # keep_random_subset: the kept count is uniform on 1..n_present (here for rows holding all 4).
    full = mask.all(dim=1)
    counts = torch.bincount(sub[full].sum(dim=1), minlength=5)[1:].float()
    assert (counts / counts.sum() - 0.25).abs().max() < 0.08, counts
    # hide_bernoulli hides about p of the present entries (a little less: one is always kept).
    hidden = (mask & ~bern).sum() / mask.sum()
    assert 0.35 < float(hidden) < 0.5


def test_masked_reconstruction_reads_only_marked_present_entries() -> None:
    x = torch.tensor([[1.0, 2.0], [float("nan"), 5.0], [3.0, 3.0]])
    y = torch.tensor([[[0.0]], [[2.0]], [[float("inf")]]])
    mask = torch.tensor([[True, True], [False, True], [True, False]])
    batch = Batch({"a": x, "b": y}, mask)
    generated = [torch.zeros(3, 2, requires_grad=True), torch.ones(3, 1, 1, requires_grad=True)]
    targets = torch.tensor([[True, True], [True, True], [False, False]])  # (1, a) is not present: ignored
    loss = masked_reconstruction(generated, batch, targets)
    # entries (0, a): (1 + 4) / 2; (0, b): 1; (1, b): 1 -> mean 1.5
    torch.testing.assert_close(loss, torch.tensor(1.5))
    loss.backward()
    assert all(torch.isfinite(g.grad).all() for g in generated)
    none = masked_reconstruction(generated, batch, torch.zeros_like(mask))
    assert float(none.detach()) == 0.0


# ------------------------------------------------------------ generators: mechanism


def _fit(name: str, data, epochs: int, **params):
    train, test = data.split("train"), data.split("test")
    method = build_method(name, data.spec, 0, **params)
    config = TrainConfig(max_epochs=epochs, batch_size=32, patience=epochs)
    fit = Trainer(config).fit(method, train, test, seed=0)
    with torch.no_grad():
        test_batch = fit.model.standardizer(test.as_batch())
    return fit.model.method.eval(), test_batch, fit.model.standardizer


def _hidden(batch: Batch, j: int) -> Batch:
    mask = batch.mask.clone()
    mask[:, j] = False
    return batch.with_mask(mask)


def _recovery_error(method, batch: Batch, j: int) -> float:
    """Mean squared error of x̂_j against the truth, with modality j hidden (standardised units)."""
    name = method.spec.modality_names[j]
    with torch.no_grad():
        x_hat = method.recover(_hidden(batch, j))[name]
    return float(((x_hat - batch.inputs[name]) ** 2).mean())


def _mean_fill_error(method, batch: Batch, j: int) -> float:
    name = method.spec.modality_names[j]
    return float(((getattr(method, f"fill_{name}") - batch.inputs[name]) ** 2).mean())


@pytest.fixture(scope="module")
def redundant():
    # Every modality sees the same class evidence (redundancy 1): the others predict m0's signal.
    return make_synthetic(n_samples=400, n_classes=3, n_modalities=3, dims=4, informativeness=2.0,
                          redundancy=1.0, noise=0.5, seed=0)


@pytest.fixture(scope="module")
def trained_generators(redundant):
    return _fit("individual-generators", redundant, epochs=15)[:2]


def test_individual_generators_beat_mean_fill_on_a_redundant_modality(trained_generators) -> None:
    method, test_batch = trained_generators
    for j in range(3):
        generated, mean_fill = _recovery_error(method, test_batch, j), _mean_fill_error(method, test_batch, j)
        assert generated < 0.6 * mean_fill, (j, generated, mean_fill)


def test_recover_never_reads_the_target_modality(trained_generators) -> None:
    method, batch = trained_generators
    with torch.no_grad():
        ref = method.recover(batch)
        for j, name in enumerate(method.spec.modality_names):
            changed = dict(batch.inputs)
            changed[name] = torch.randn_like(batch.inputs[name]) * 100
            out = method.recover(Batch(changed, batch.mask, batch.target))
            torch.testing.assert_close(out[name], ref[name])  # x̂_m is a function of the other modalities
            assert out[name].shape == batch.inputs[name].shape
            other = method.spec.modality_names[(j + 1) % 3]
            assert not torch.allclose(out[other], ref[other])  # ... and it does read those


def test_masked_autoencoder_reconstruction_error_falls_with_training(redundant) -> None:
    untrained = build_method("masked-autoencoder-fill", redundant.spec, 0)
    method, test_batch, _ = _fit("masked-autoencoder-fill", redundant, epochs=12)
    untrained.eval()
    for j in range(3):
        before, after = _recovery_error(untrained, test_batch, j), _recovery_error(method, test_batch, j)
        assert after < 0.5 * before, (j, before, after)
        assert after < 0.7 * _mean_fill_error(method, test_batch, j), j


@pytest.mark.parametrize("name", GENERATORS)
def test_plain_fill_swaps_generated_inputs_for_the_training_mean(name: str) -> None:
    data = make_synthetic(n_samples=60, dims=(3, 4, 5), seed=2)
    standardizer = Standardizer(data.spec).fit(data.as_batch())
    batch = standardizer(data.as_batch())
    batch = batch.with_mask(torch.as_tensor(entry_rate_mask(batch.size, 3, 0.5, np.random.default_rng(0))))
    method = build_method(name, data.spec, 0)
    with seeded(0):
        method.prepare(batch, standardizer)
    method.eval()
    assert any(float(getattr(method, f"fill_{m}").abs().sum()) > 0 for m in data.spec.modality_names)
    with torch.no_grad():
        generated = method(batch).logits
        method.plain_fill = True
        plain = method(batch).logits
        # By hand: training means in the missing slots, generated markers as usual.
        filled = {m.name: torch.where(batch.mask[:, j, None], batch.inputs[m.name], getattr(method, f"fill_{m.name}"))
                  for j, m in enumerate(data.spec.modalities)}
        z = method.encoders(Batch(filled, torch.ones_like(batch.mask)))
        z = z + (~batch.mask).unsqueeze(-1).float() * method.generated_marker
        torch.testing.assert_close(plain, method.head(z.mean(dim=1)))
    complete = batch.mask.all(dim=1)
    assert complete.any() and (~complete).any()
    torch.testing.assert_close(plain[complete], generated[complete])
    assert not torch.allclose(plain[~complete], generated[~complete])


# ------------------------------------------------------------ deep CCA


def test_cca_correlation_known_answers_and_masking() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(200, 4, generator=g)
    mix = torch.randn(4, 4, generator=g)
    both = torch.ones(200, dtype=torch.bool)
    linear, n = masked_cca_correlation(a, a @ mix, both, ridge=1e-4)
    assert int(n) == 200 and float(linear) > 0.99  # an invertible linear map: every correlation is 1
    independent, _ = masked_cca_correlation(a, torch.randn(200, 4, generator=g), both, ridge=1e-4)
    assert float(independent) < 0.3
    # Rows outside `both` are never read, even NaN, and change nothing.
    both[::3] = False
    poisoned = a.clone()
    poisoned[~both] = float("nan")
    corr_clean, _ = masked_cca_correlation(a, a @ mix, both, ridge=1e-4)
    corr_poisoned, _ = masked_cca_correlation(poisoned, a @ mix, both, ridge=1e-4)
    torch.testing.assert_close(corr_poisoned, corr_clean)
    # Fewer samples than dimensions: the ridge keeps it finite with finite gradients.
    u = torch.randn(5, 3, 16, generator=g, requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 1], [1, 1, 0], [0, 1, 0]], dtype=torch.bool)
    loss = pairwise_masked_dcca(u, mask, ridge=0.1)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(u.grad).all()
    # No pair held by two samples: zero loss, no NaN.
    single = torch.tensor([[1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    assert float(pairwise_masked_dcca(torch.randn(2, 3, 4), single, ridge=0.1)) == 0.0


def test_dcca_raises_heldout_cross_modal_correlation_above_an_unaligned_model() -> None:
    # Within-class variation mostly shared by the modalities (redundancy 0.9): there is
    # correlated content beyond the class for DCCA to capture.
    data = make_synthetic(n_samples=300, n_classes=6, n_modalities=3, dims=12, redundancy=0.9, seed=1)
    correlation = {}
    for weight in (0.0, 1.0):
        method, test_batch, _ = _fit("dcca-align", data, epochs=30, weight=weight)
        with torch.no_grad():
            # Mean canonical correlation over modality pairs and all P components, on test samples
            # the networks never saw (the same ridge-regularised estimate for both models).
            loss = pairwise_masked_dcca(method.embed(test_batch), test_batch.mask, ridge=0.1)
        correlation[weight] = 1.0 - float(loss)
    assert correlation[1.0] > 1.4 * correlation[0.0], correlation
