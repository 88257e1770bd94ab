"""Mechanism tests of the attention, distillation and dedicated methods (issue 4).

The conformance suite (test_conformance.py) covers their generic contract with default
parameters; these tests check what each method is *for*, with known answers.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from mlmm.components.distillation_losses import kd_per_sample
from mlmm.components.pooling import masked_mean
from mlmm.components.subpatterns import drop_present, pattern_ids, uniform_subpattern
from mlmm.data.batch import Batch
from mlmm.data.datasets import make_synthetic
from mlmm.data.spec import DatasetSpec, ModalitySpec, TaskSpec
from mlmm.methods.base import Capability
from mlmm.methods.representation_composition.masked_mean import MaskedMeanFusion
from mlmm.missing import EntryRate, Scenario
from mlmm.missing.functional import entry_rate_mask
from mlmm.testing import run_conformance
from mlmm.train.loop import TrainConfig, Trainer, build_method, effective_batch_size, seeded
from mlmm.train.parts import PartSelection

NEW = {
    "modality-transformer": ("attention", False),
    "teacher-student": ("distillation", True),
    "mean-teacher": ("distillation", False),
    "shaspec": ("distillation", False),
    "pattern-adapters": ("dedicated", False),
    "pattern-oracle": ("dedicated", False),
}


def _data(n: int = 60, seed: int = 0):
    return make_synthetic(n_samples=n, n_classes=3, n_modalities=3, dims=(3, 4, 5), seed=seed)


def _masked(batch: Batch, rate: float = 0.5, seed: int = 0) -> Batch:
    mask = torch.as_tensor(entry_rate_mask(batch.size, batch.mask.shape[1], rate, np.random.default_rng(seed)))
    return batch.with_mask(mask)


# ----------------------------------------------------------------- helpers


def test_uniform_subpattern_is_uniform_non_empty_and_within_mask() -> None:
    mask = torch.tensor([[True, True, False]] * 3000 + [[False, False, False]])
    with seeded(0):
        sub = uniform_subpattern(mask)
    assert not (sub & ~mask).any() and not sub[-1].any() and sub[:-1].any(dim=1).all()
    counts = torch.bincount(pattern_ids(sub[:-1]), minlength=4)[1:]  # {0}, {1}, {0, 1}
    assert (counts - 1000).abs().max() < 100
    dropped = drop_present(mask[:-1], 0.9)
    assert dropped.any(dim=1).all() and not (dropped & ~mask[:-1]).any()


# --------------------------------------------------------- modality-transformer


@pytest.mark.parametrize("missing", ["token", "padding"])
def test_transformer_modes_pass_the_masking_checks(missing: str) -> None:
    checks = ["poisoned_masked_slots_ignored", "empty_sample_finite", "batch_composition_invariance"]
    assert run_conformance("modality-transformer", checks, setups=["vector"],
                           params={"missing": missing, "pool": "mean"}) == dict.fromkeys(checks, "passed")


def test_transformer_miss_token_stands_in_for_exactly_the_missing_modality() -> None:
    data = _data()
    method = build_method("modality-transformer", data.spec, 0, missing="token").eval()
    batch = _masked(data.as_batch())
    with torch.no_grad():
        before = method(batch).logits
        # Not a constant shift: the pre-norm LayerNorm would remove it before attention reads the token.
        method.miss[1].add_(torch.linspace(-1.0, 1.0, method.miss.shape[1]))
        after = method(batch).logits
    changed = (before - after).abs().amax(dim=1) > 1e-6
    assert torch.equal(changed, ~batch.mask[:, 1])


def test_transformer_padding_mode_ignores_missing_tokens_entirely() -> None:
    data = _data()
    method = build_method("modality-transformer", data.spec, 0, missing="padding").eval()
    assert not hasattr(method, "miss")
    batch = _masked(data.as_batch())
    with torch.no_grad():
        empty = method(batch.with_mask(torch.zeros_like(batch.mask))).logits
    assert torch.isfinite(empty).all()  # CLS alone: finite, and the same for every empty sample
    torch.testing.assert_close(empty, empty[:1].expand_as(empty))


@pytest.mark.slow
@pytest.mark.parametrize("missing", ["token", "padding"])
def test_transformer_both_missing_modes_train_above_chance(missing: str) -> None:
    data = make_synthetic(n_samples=300, n_classes=3, dims=8, informativeness=1.0, noise=0.5, seed=1)
    scenario = Scenario.same(EntryRate(0.5))
    train, _ = scenario.apply(data.split("train"), "train", 0)
    test, _ = scenario.apply(data.split("test"), "test", 0)
    method = build_method("modality-transformer", data.spec, 0, missing=missing)
    fit = Trainer(TrainConfig(max_epochs=15, batch_size=32, patience=15)).fit(method, train, test, seed=0)
    accuracy = float((fit.model.predict_logits(test).argmax(dim=1) == torch.as_tensor(test.labels)).float().mean())
    assert accuracy > 1 / 3 + 0.25


# ------------------------------------------------------------------ distillation


def test_kd_is_zero_for_equal_logits_and_matches_the_formula() -> None:
    s = torch.tensor([[1.0, 2.0, -1.0], [0.5, 0.0, 0.0]])
    torch.testing.assert_close(kd_per_sample(s, s.clone(), 3.0), torch.zeros(2))
    t = torch.tensor([[0.0, 1.0, 1.0], [2.0, -1.0, 0.0]])
    tau = 2.0
    p_t, p_s = torch.softmax(t / tau, 1), torch.softmax(s / tau, 1)
    expected = tau ** 2 * (p_t * (p_t.log() - p_s.log())).sum(1)
    torch.testing.assert_close(kd_per_sample(s, t, tau), expected)
    assert (kd_per_sample(s, t, tau) > 0).all()


def test_teacher_student_distillation_terms_vanish_when_student_equals_teacher() -> None:
    data = _data()
    method = build_method("teacher-student", data.spec, 0, student_drop=0.0)
    method.student.load_state_dict(method.teacher.state_dict())
    batch = _masked(data.as_batch())
    with torch.no_grad():
        method.train()  # the distillation path; the frozen teacher runs in eval mode
        method.student.eval()  # no dropout either, so the two nets compute the same function
        out = method(batch)
        terms = method.loss(batch, out)
    assert float(terms["kd"]) == 0.0 and float(terms["feature"]) == 0.0
    assert float(terms["task"]) > 0.0


def test_teacher_student_freezes_the_teacher_and_refuses_incomplete_training_data() -> None:
    data = _data()
    method = build_method("teacher-student", data.spec, 0)
    assert method.stages() == ("teacher", "student") and method.stage == "student"
    assert not any(p.requires_grad for p in method.teacher.parameters())
    method.set_stage("teacher")
    assert all(p.requires_grad for p in method.teacher.parameters())
    train = data.split("train")
    fit = Trainer(TrainConfig(max_epochs=2, batch_size=16, patience=2)).fit(method, train, data.split("test"))
    assert [r["stage"] for r in fit.history] == ["teacher"] * 2 + ["student"] * 2
    # In the student stage the teacher does not move: its weights equal the end of stage 1.
    teacher = {k: v.clone() for k, v in method.teacher.state_dict().items()}
    method.set_stage("student")
    method.train()
    params = [p for p in method.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=0.1)
    batch = fit.model.standardizer(train.as_batch())
    sum(method.loss(batch, method(batch)).values()).backward()
    optimiser.step()
    for k, v in method.teacher.state_dict().items():
        assert torch.equal(v, teacher[k]), k
    with pytest.raises(ValueError, match="needs complete training samples"):
        incomplete = train.with_mask(torch.as_tensor(entry_rate_mask(len(train), 3, 0.3, np.random.default_rng(0))))
        Trainer(TrainConfig(max_epochs=1)).fit(build_method("teacher-student", data.spec, 0), incomplete, train)


def test_trainer_calls_after_step_once_per_optimiser_step() -> None:
    data = _data()
    calls = []

    class Counting(MaskedMeanFusion):  # a method that declares AFTER_STEP (the loop reads the declaration)
        info = dataclasses.replace(MaskedMeanFusion.info, capabilities=frozenset({Capability.AFTER_STEP,
                                                                                  Capability.FACTORISED}))

        def after_step(self) -> None:
            calls.append(1)

    method = Counting(data.spec)
    config = TrainConfig(max_epochs=3, batch_size=16, patience=5)
    train = data.split("train")
    Trainer(config).fit(method, train, data.split("test"))
    per_epoch = math.ceil(len(train) / effective_batch_size(len(train), config))
    assert len(calls) == 3 * per_epoch


def test_mean_teacher_follows_the_analytic_ema_of_the_student() -> None:
    data = _data()
    decay = 0.9
    method = build_method("mean-teacher", data.spec, 0, decay=decay)
    batch = _masked(data.as_batch(), 0.3)
    optimiser = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-2)
    students = []
    method.train()
    for _ in range(5):
        optimiser.zero_grad()
        sum(method.loss(batch, method(batch)).values()).backward()
        optimiser.step()
        method.after_step()
        students.append({k: v.detach().clone() for k, v in method.student.named_parameters()})
    # AveragedModel copies θ_1 at the first update, then T_k = d T_{k-1} + (1 - d) θ_k.
    for name, value in method.teacher.named_parameters():
        expected = students[0][name]
        for step in students[1:]:
            expected = decay * expected + (1 - decay) * step[name]
        torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)
        assert not value.requires_grad
    assert int(method.ema.n_averaged) == 5


def test_mean_teacher_consistency_only_where_the_student_lost_a_modality() -> None:
    data = _data()
    method = build_method("mean-teacher", data.spec, 0, student_drop=0.0).train()
    batch = _masked(data.as_batch(), 0.3)
    out = method(batch)
    assert not out.aux["dropped"].any() and float(method.loss(batch, out)["consistency"].detach()) == 0.0
    method = build_method("mean-teacher", data.spec, 0, student_drop=0.5).train()
    with seeded(0):
        out = method(batch)
    dropped = out.aux["dropped"]
    assert dropped.any() and not dropped.all()
    assert not dropped[batch.mask.sum(dim=1) == 1].any()  # a lone modality is never dropped
    # The teacher saw the batch's own mask: its logits are the teacher's eval prediction.
    with torch.no_grad():
        torch.testing.assert_close(out.aux["teacher_logits"], method.teacher(batch)[0])
    assert float(method.loss(batch, out)["consistency"].detach()) > 0.0


def test_shaspec_fills_missing_specific_features_with_the_mean_of_present_shared_ones() -> None:
    data = _data()
    method = build_method("shaspec", data.spec, 0).eval()
    batch = _masked(data.as_batch())
    with torch.no_grad():
        s, _, f = method.features(batch)
        fill = masked_mean(s, batch.mask)
        for j in range(3):
            missing = ~batch.mask[:, j]
            torch.testing.assert_close(f[missing, j], fill[missing])
            assert not torch.allclose(f[~missing, j], fill[~missing])
        recovered = method.recover(batch)
        for j, name in enumerate(data.spec.modality_names):
            torch.testing.assert_close(recovered[name], f[:, j])
        method.plain_fill = True  # the recover-or-not diagnostics' plain fill: zeros at missing slots
        _, _, plain = method.features(batch)
        assert (plain[~batch.mask] == 0).all()
        torch.testing.assert_close(plain[batch.mask], f[batch.mask])


def test_shaspec_auxiliary_losses_use_present_entries_only() -> None:
    data = _data()
    method = build_method("shaspec", data.spec, 0, align_weight=1.0, domain_weight=1.0).eval()
    batch = data.as_batch()
    single = torch.zeros_like(batch.mask)
    single[torch.arange(batch.size), torch.arange(batch.size) % 3] = True
    one_each = batch.with_mask(single)
    with torch.no_grad():
        out = method(one_each)
        terms = method.loss(one_each, out)
        assert float(terms["align"]) == 0.0  # no sample holds two modalities: nothing to align
        p = out.aux["specific"]
        j = torch.arange(batch.size) % 3
        ce = torch.nn.functional.cross_entropy(method.domain(p[torch.arange(batch.size), j]), j)
        torch.testing.assert_close(terms["domain"], ce)
        both = batch.with_mask(batch.mask.clone().index_fill_(1, torch.tensor([2]), False))
        out = method(both)
        s = out.aux["shared"]
        torch.testing.assert_close(method.loss(both, out)["align"], (s[:, 0] - s[:, 1]).abs().mean())
        # Every modality present: the official cyclic pairs (0,1), (1,2), (2,0), summed.
        out = method(batch)
        s = out.aux["shared"]
        cyclic = sum((s[:, i] - s[:, (i + 1) % 3]).abs().mean() for i in range(3))
        torch.testing.assert_close(method.loss(batch, out)["align"], cyclic)


def test_shaspec_shared_encoder_is_one_network_over_every_modality() -> None:
    data = _data()
    method = build_method("shaspec", data.spec, 0).eval()
    batch = data.as_batch()
    with torch.no_grad():
        before = method.shared(batch)
        method.shared.project["m0"].weight.add_(0.5)  # a modality's own input projection: only its s moves
        after_projection = method.shared(batch)
        assert (after_projection[:, 0] - before[:, 0]).abs().max() > 1e-4
        torch.testing.assert_close(after_projection[:, 1:], before[:, 1:])
        method.shared.shared[-1].weight.add_(0.5)  # the shared network: every modality's s moves
        after_shared = method.shared(batch)
        assert all(float((after_shared[:, j] - after_projection[:, j]).abs().max()) > 1e-4 for j in range(3))
    assert method.stages() == ("warmup", "main")
    assert method.training_control("warmup").modality_dropout == "off"
    assert method.training_control("main").modality_dropout == "inputs"


# --------------------------------------------------------------------- dedicated


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_pattern_adapters_update_only_the_adapter_of_the_pattern_used() -> None:
    data = _data()
    method = build_method("pattern-adapters", data.spec, 0, subpattern_prob=0.0).train()
    batch = data.as_batch()
    pattern = torch.tensor([True, False, True])  # id 1 + 4 = 5 -> slot 4
    batch = batch.with_mask(pattern.expand(batch.size, -1).clone())
    assert method.slots(batch.mask).unique().tolist() == [4]
    before = [_snapshot(a) for a in method.adapters]
    optimiser = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-2)
    optimiser.zero_grad(set_to_none=True)
    sum(method.loss(batch, method(batch)).values()).backward()
    optimiser.step()
    for k, adapter in enumerate(method.adapters):
        after = _snapshot(adapter)
        same = all(torch.equal(after[n], before[k][n]) for n in after)
        assert same is (k != 4), k


def test_pattern_adapters_limit_large_m_to_seen_patterns_with_a_shared_fallback() -> None:
    spec = DatasetSpec(name="wide", modalities=tuple(ModalitySpec(f"m{j}", "vector", (2,)) for j in range(9)),
                       task=TaskSpec("classification", n_classes=2))
    method = build_method("pattern-adapters", spec, 0, max_patterns=3)
    assert len(method.adapters) == 3 and not method.every_pattern
    mask = torch.zeros(10, 9, dtype=torch.bool)
    mask[:5, 0] = True          # pattern {0}: 5 samples
    mask[5:8, :2] = True        # pattern {0, 1}: 3 samples
    mask[8:, 8] = True          # pattern {8}: 2 samples
    train = Batch({m.name: torch.randn(10, 2) for m in spec.modalities}, mask, torch.zeros(10, dtype=torch.long))
    method.prepare(train, None)
    assert method.slot_pattern.tolist() == [1, 3, 256]
    method.eval()
    unseen = Batch(train.inputs, torch.ones(10, 9, dtype=torch.bool), train.target)
    assert (method.slots(unseen.mask) == -1).all()
    with torch.no_grad():
        h = method.backbone.embed(unseen)
        torch.testing.assert_close(method(unseen).logits, method.backbone.head(h))


def test_pattern_oracle_routes_each_sample_to_its_own_patterns_model() -> None:
    data = _data()
    method = build_method("pattern-oracle", data.spec, 0).eval()
    batch = _masked(data.as_batch())
    with torch.no_grad():
        logits = method(batch).logits
        ids = pattern_ids(batch.mask)
        for k, model in enumerate(method.models):
            rows = ids == method.slot_id[k]
            if rows.any():
                expected = model([batch.inputs[n][rows] for n in model.names])
                torch.testing.assert_close(logits[rows], expected)
        # Changing one pattern's model changes exactly that pattern's samples.
        target = int(ids[0])
        k = int((method.slot_id == target).nonzero())
        for p in method.models[k].parameters():
            p.add_(0.5)
        changed = (method(batch).logits - logits).abs().amax(dim=1) > 1e-6
    assert torch.equal(changed, ids == target)


def test_pattern_oracle_models_each_train_on_every_row_holding_their_modalities() -> None:
    data = _data(n=90)
    train, val = data.split("train"), data.split("test")
    mask = torch.as_tensor(entry_rate_mask(len(train), 3, 0.4, np.random.default_rng(0)))
    train = train.with_mask(mask & train.mask)
    method = build_method("pattern-oracle", data.spec, 0)
    seen = torch.zeros(len(method.models), dtype=torch.long)

    def count(module, args, output):
        if module.training:
            seen.add_(output.aux["rows_per_model"])

    method.register_forward_hook(count)
    # High loop dropout: it must not apply to this method (it would hide rows from the models).
    fit = Trainer(TrainConfig(max_epochs=3, patience=5, modality_dropout=0.9)).fit(method, train, val, seed=0)
    epochs = len(fit.history)
    for k, model in enumerate(method.models):
        holding = int(mask[:, list(model.members)].all(dim=1).sum())  # rows that hold pattern k's views
        assert int(seen[k]) == epochs * holding, (model.names, int(seen[k]), epochs * holding)


def test_pattern_oracle_loss_is_the_sum_of_each_models_own_mean_loss() -> None:
    data = _data(n=40)
    batch = _masked(data.as_batch(), rate=0.3)
    method = build_method("pattern-oracle", data.spec, 0, dropout=0.0).train()
    out = method(batch)
    expected = sum(
        torch.nn.functional.cross_entropy(model([batch.inputs[n][rows] for n in model.names]), batch.target[rows])
        for model in method.models
        for rows in [batch.mask[:, list(model.members)].all(dim=1)] if rows.any())
    torch.testing.assert_close(method.loss(batch, out)["task"], expected)


def test_pattern_oracle_selects_each_model_alone_on_validation_rows_holding_its_views() -> None:
    data = _data(n=60)
    method = build_method("pattern-oracle", data.spec, 0).eval()
    val = _masked(data.as_batch(), rate=0.2)
    mask = val.mask.clone()
    mask[:, 2] &= ~(mask[:, 0] & mask[:, 1])  # no row holds modalities 0, 1 and 2 together
    val = val.with_mask(mask)
    parts = method.training_control("main").parts
    PartSelection(method, parts, min_epochs=1, patience=1)  # every parameter falls in exactly one part
    assert len(parts) == len(method.models)
    with torch.no_grad():
        losses = method.part_losses(val)
        for k, model in enumerate(method.models):
            rows = mask[:, list(model.members)].all(dim=1)
            if model.members == (0, 1, 2):
                assert not rows.any() and torch.isnan(losses[k])
                continue
            expected = torch.nn.functional.cross_entropy(model([val.inputs[n][rows] for n in model.names]),
                                                         val.target[rows])
            torch.testing.assert_close(losses[k], expected)


@pytest.mark.parametrize("name", ["teacher-student", "mean-teacher"])
def test_the_teacher_sees_every_present_modality_in_every_stage(name: str) -> None:
    data = _data(n=60)
    train, val = data.split("train"), data.split("test")
    method = build_method(name, data.spec, 0)
    teacher_masks, student_masks = [], []
    method.teacher.register_forward_pre_hook(lambda m, args: teacher_masks.append(args[0].mask.clone())
                                             if method.training else None)
    method.student.register_forward_pre_hook(lambda m, args: student_masks.append(args[0].mask.clone())
                                             if method.training else None)
    # The loop would drop 90% of entries: the teacher must never see that.
    Trainer(TrainConfig(max_epochs=2, patience=5, modality_dropout=0.9)).fit(method, train, val, seed=0)
    assert teacher_masks, "the teacher never ran in training"
    assert all(bool(m.all()) for m in teacher_masks), "the teacher was handed a dropped modality"
    assert any(not bool(m.all()) for m in student_masks), "the student never lost a modality"


def test_pattern_oracle_refuses_too_many_patterns_with_a_clear_error() -> None:
    spec = DatasetSpec(name="wide", modalities=tuple(ModalitySpec(f"m{j}", "vector", (2,)) for j in range(7)),
                       task=TaskSpec("classification", n_classes=2))
    with pytest.raises(ValueError, match="7 modalities give 127 patterns, more than max_patterns=63"):
        build_method("pattern-oracle", spec, 0)
