"""deep-ensemble (K members, probabilities averaged) and masked-mean-aux (masked unimodal losses)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mlmm.data.datasets import make_synthetic
from mlmm.train.loop import build_method


def _batch(n: int = 16):
    data = make_synthetic(n_samples=n, n_modalities=3, seed=0)
    batch = data.as_batch()
    mask = batch.mask.clone()
    mask[::2, 1] = False  # modality 1 missing on every other sample
    return data.spec, batch.with_mask(mask)


def test_deep_ensemble_averages_member_probabilities() -> None:
    spec, batch = _batch()
    model = build_method("deep-ensemble", spec, seed=0, members=3, embed_dim=16).eval()
    with torch.no_grad():
        out = model(batch)
        member_probs = torch.stack([F.softmax(m(batch).logits, dim=-1) for m in model.members])
    torch.testing.assert_close(out.logits.exp(), member_probs.mean(dim=0))
    # Members are initialised independently, so they disagree somewhere.
    assert not torch.allclose(member_probs[0], member_probs[1])


def test_deep_ensemble_loss_is_the_sum_of_member_losses() -> None:
    spec, batch = _batch()
    model = build_method("deep-ensemble", spec, seed=0, members=2, embed_dim=16).eval()
    terms = model.loss(batch, model(batch))
    assert set(terms) == {"m0.task", "m1.task"}
    expected = sum(F.cross_entropy(m(batch).logits, batch.target) for m in model.members)
    torch.testing.assert_close(sum(terms.values()), expected)


def test_deep_ensemble_refuses_itself_and_bad_sizes() -> None:
    spec, _ = _batch()
    with pytest.raises(ValueError, match="own member"):
        build_method("deep-ensemble", spec, member="deep-ensemble")
    with pytest.raises(ValueError, match=r"members=0 is not allowed; members must be an int in \[1, "):
        build_method("deep-ensemble", spec, members=0)


def test_deep_ensemble_of_one_equals_its_member() -> None:
    spec, batch = _batch()
    single = build_method("deep-ensemble", spec, seed=3, members=1, embed_dim=16).eval()
    member = build_method("masked-mean", spec, seed=3, embed_dim=16).eval()
    with torch.no_grad():
        torch.testing.assert_close(single(batch).logits, F.log_softmax(member(batch).logits, dim=-1))


def test_unimodal_loss_is_masked_by_availability() -> None:
    spec, batch = _batch()
    model = build_method("masked-mean-aux", spec, seed=0, embed_dim=16, aux_weight=1.0).eval()
    out = model(batch)
    unimodal = out.aux["unimodal_logits"]  # (B, M, C)
    assert unimodal.shape == (batch.size, 3, spec.task.output_dim)
    # Hand computation over present (sample, modality) entries only.
    ce = F.cross_entropy(unimodal.reshape(-1, unimodal.shape[-1]), batch.target.repeat_interleave(3),
                         reduction="none").reshape(batch.size, 3)
    expected = (ce * batch.mask).sum() / batch.mask.sum()
    torch.testing.assert_close(model.loss(batch, out)["unimodal"], expected)
    # Garbage logits at missing slots do not change the term.
    poisoned = unimodal.masked_fill(~batch.mask.unsqueeze(-1), 1e4)
    out.aux["unimodal_logits"] = poisoned
    torch.testing.assert_close(model.loss(batch, out)["unimodal"], expected)


def test_aux_weight_zero_is_masked_mean_objective() -> None:
    spec, batch = _batch()
    model = build_method("masked-mean-aux", spec, seed=0, embed_dim=16, aux_weight=0.0).eval()
    with torch.no_grad():
        terms = model.loss(batch, model(batch))
    assert float(terms["unimodal"]) == 0.0 and math.isfinite(float(terms["task"]))
    with pytest.raises(ValueError, match="aux_weight"):
        build_method("masked-mean-aux", spec, aux_weight=-1.0)

