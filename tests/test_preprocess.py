"""Standardizer: statistics over present entries only, per feature / per channel, travels in state_dict."""

from __future__ import annotations

import numpy as np
import torch

from mlmm.data.base import MultimodalDataset
from mlmm.data.batch import Batch
from mlmm.data.preprocess import Standardizer
from mlmm.data.spec import DatasetSpec, ModalitySpec, TaskSpec

N = 40


def _spec() -> DatasetSpec:
    return DatasetSpec(
        "pre",
        (
            ModalitySpec("v", "vector", (3,)),
            ModalitySpec("s", "sequence", (6, 2)),
            ModalitySpec("img", "image", (2, 3, 3)),
            ModalitySpec("tok", "text", (4,)),
        ),
        TaskSpec(n_classes=2),
    )


def _data(seed: int = 0) -> MultimodalDataset:
    """Present values far from 0 (offset 10..), a quarter of each modality masked out."""
    rng = np.random.default_rng(seed)
    v = rng.normal([10.0, -5.0, 3.0], [2.0, 0.5, 1.0], size=(N, 3))
    # Per-channel offsets, plus a per-time-step trend within channel 0, so per-(t, c)
    # and per-channel statistics differ.
    s = rng.normal(0.0, 1.0, size=(N, 6, 2)) + np.array([20.0, -8.0]) + np.linspace(0, 5, 6)[:, None] * [1, 0]
    scale, shift = np.array([3.0, 0.5])[:, None, None], np.array([7.0, -2.0])[:, None, None]
    img = rng.normal(0.0, 1.0, size=(N, 2, 3, 3)) * scale + shift
    tok = rng.integers(0, 50, size=(N, 4))
    mask = np.ones((N, 4), dtype=bool)
    mask[rng.permutation(N)[: N // 4], 0] = False
    mask[rng.permutation(N)[: N // 4], 1] = False
    mask[rng.permutation(N)[: N // 4], 2] = False
    mask[~mask[:, :3].any(axis=1), 0] = True
    return MultimodalDataset(
        _spec(),
        {"v": v.astype(np.float32), "s": s.astype(np.float32), "img": img.astype(np.float32), "tok": tok},
        np.arange(N) % 2,
        mask,
    )


def test_vector_statistics_per_feature_over_present_rows_only():
    data = _data()
    st = Standardizer(data.spec).fit(data.as_batch())
    present = data.inputs["v"][data.mask[:, 0]].double().numpy()
    all_rows = data.inputs["v"].double().numpy()  # includes the zero rows of absent samples
    assert st.mean_v.shape == (3,)
    np.testing.assert_allclose(st.mean_v.numpy(), present.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(st.std_v.numpy(), present.std(axis=0), rtol=1e-5)
    # Counting the zero rows would move the mean noticeably (offsets are ~10, -5, 3).
    assert np.all(np.abs(all_rows.mean(axis=0) - present.mean(axis=0)) > 0.5)
    out = st(data.as_batch()).inputs["v"][data.mask[:, 0]].double().numpy()
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=0), 1.0, rtol=1e-4)


def test_sequence_statistics_per_channel_shared_over_time():
    data = _data()
    st = Standardizer(data.spec).fit(data.as_batch())
    present = data.inputs["s"][data.mask[:, 1]].double().numpy()  # (n, T, C)
    assert st.mean_s.shape == (1, 2)
    np.testing.assert_allclose(st.mean_s.numpy()[0], present.mean(axis=(0, 1)), rtol=1e-5)
    np.testing.assert_allclose(st.std_s.numpy()[0], present.std(axis=(0, 1)), rtol=1e-5)
    out = st(data.as_batch()).inputs["s"][data.mask[:, 1]].double().numpy()
    np.testing.assert_allclose(out.mean(axis=(0, 1)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 1)), 1.0, rtol=1e-4)
    # One statistic per channel, not per (time, channel): the within-channel trend survives.
    per_step = out.mean(axis=0)[:, 0]
    assert per_step[-1] - per_step[0] > 1.0


def test_image_statistics_per_channel_shared_over_space():
    data = _data()
    st = Standardizer(data.spec).fit(data.as_batch())
    present = data.inputs["img"][data.mask[:, 2]].double().numpy()
    assert st.mean_img.shape == (2, 1, 1)
    np.testing.assert_allclose(st.mean_img.numpy().ravel(), present.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(st.std_img.numpy().ravel(), present.std(axis=(0, 2, 3)), rtol=1e-5)


def test_text_passes_through_untouched():
    data = _data()
    st = Standardizer(data.spec).fit(data.as_batch())
    out = st(data.as_batch())
    assert out.inputs["tok"] is data.inputs["tok"] or torch.equal(out.inputs["tok"], data.inputs["tok"])
    assert out.inputs["tok"].dtype == data.inputs["tok"].dtype
    assert not hasattr(st, "mean_tok")


def test_masked_slots_stay_exactly_zero():
    data = _data()
    st = Standardizer(data.spec).fit(data.as_batch())
    out = st(data.as_batch())
    for j, name in enumerate(("v", "s", "img")):
        absent = ~data.mask[:, j]
        assert absent.any()
        assert torch.all(out.inputs[name][absent] == 0), name
        assert torch.isfinite(out.inputs[name]).all()
    assert torch.equal(out.mask, data.mask) and torch.equal(out.target, data.target)


def test_constant_feature_gets_std_one_not_division_by_zero():
    spec = DatasetSpec("c", (ModalitySpec("v", "vector", (2,)), ModalitySpec("s", "sequence", (3, 2))),
                       TaskSpec(n_classes=2))
    x = np.stack([np.full(N, 4.0), np.linspace(-1, 1, N)], axis=1).astype(np.float32)
    s = np.zeros((N, 3, 2), dtype=np.float32)
    s[:, :, 1] = 2.5  # constant channel; channel 0 is all zeros (always-zero pixels)
    data = MultimodalDataset(spec, {"v": x, "s": s}, np.arange(N) % 2)
    st = Standardizer(spec).fit(data.as_batch())
    assert st.std_v[0] == 1.0
    assert st.mean_v[0] == 4.0
    assert torch.all(st.std_s == 1.0)
    out = st(data.as_batch())
    assert torch.isfinite(out.inputs["v"]).all() and torch.isfinite(out.inputs["s"]).all()
    assert torch.all(out.inputs["v"][:, 0] == 0)
    assert torch.all(out.inputs["s"] == 0)


def test_statistics_travel_in_state_dict():
    data = _data()
    st = Standardizer(data.spec).fit(data.as_batch())
    sd = st.state_dict()
    assert {"mean_v", "std_v", "mean_s", "std_s", "mean_img", "std_img"} <= set(sd)
    fresh = Standardizer(data.spec)
    other = _data(seed=1).as_batch()
    assert not torch.equal(fresh(other).inputs["v"], st(other).inputs["v"])
    fresh.load_state_dict(sd)
    for name in ("v", "s", "img", "tok"):
        assert torch.equal(fresh(other).inputs[name], st(other).inputs[name])


def test_modality_never_present_in_training_is_identity():
    spec = DatasetSpec("n", (ModalitySpec("a", "vector", (2,)), ModalitySpec("b", "vector", (2,))),
                       TaskSpec(n_classes=2))
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((N, 2)) + 3).astype(np.float32)
    mask = np.zeros((N, 2), dtype=bool)
    mask[:, 0] = True
    train = MultimodalDataset(spec, {"a": a, "b": np.zeros((N, 2), np.float32)}, np.arange(N) % 2, mask)
    st = Standardizer(spec).fit(train.as_batch())
    assert torch.all(st.mean_b == 0) and torch.all(st.std_b == 1)
    b = torch.tensor([[5.0, -3.0], [0.5, 2.0]])
    test = Batch({"a": torch.zeros(2, 2), "b": b}, torch.tensor([[False, True], [False, True]]))
    assert torch.equal(st(test).inputs["b"], b)
    # Refitting on such data resets statistics from an earlier fit to the identity.
    full = MultimodalDataset(spec, {"a": a, "b": a + 1}, np.arange(N) % 2)
    st2 = Standardizer(spec).fit(full.as_batch())
    assert not torch.all(st2.mean_b == 0)
    st2.fit(train.as_batch())
    assert torch.all(st2.mean_b == 0) and torch.all(st2.std_b == 1)
