"""Graph, ensemble and scheduler methods: m3care-graph, tmc, dynmm-gate, pattern-router.

The conformance suite (test_conformance.py) covers their generic contract; these
tests check each mechanism against a known answer on small synthetic data.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch
from torch.distributions import Dirichlet, kl_divergence

from mlmm.components.evidential import (
    combine_opinions,
    combine_two,
    dirichlet_kl_to_uniform,
    evidential_loss,
    opinion,
    opinion_to_alpha,
)
from mlmm.components.llm_router import make_llm_router, routing_prompt
from mlmm.data.batch import Batch
from mlmm.data.datasets import make_synthetic
from mlmm.data.preprocess import Standardizer
from mlmm.methods.base import Capability
from mlmm.methods.representation_composition.masked_mean import MaskedMeanFusion
from mlmm.missing.functional import entry_rate_mask
from mlmm.train.loop import TrainConfig, Trainer, build_method

NEW_METHODS = {"m3care-graph": "graph", "tmc": "ensemble", "dynmm-gate": "ensemble", "pattern-router": "scheduler"}


def _data(n: int = 120, seed: int = 0):
    return make_synthetic(n_samples=n, n_classes=3, n_modalities=3, dims=(3, 4, 5), seed=seed)


def _prepared(name: str, data, seed: int = 0, **params):
    """(method prepared on the standardised training split, standardised test batch)."""
    train, test = data.split("train"), data.split("test")
    standardizer = Standardizer(data.spec).fit(train.as_batch())
    method = build_method(name, data.spec, seed, **params)
    with torch.no_grad():
        method.prepare(standardizer(train.as_batch()), standardizer)
        test_batch = standardizer(test.as_batch())
    method.eval()
    return method, test_batch


def _all_masks(n: int, n_modalities: int) -> torch.Tensor:
    """(n, M) mask cycling through every non-empty subset."""
    subsets = [s for s in itertools.product((False, True), repeat=n_modalities) if any(s)]
    return torch.tensor([subsets[i % len(subsets)] for i in range(n)])


# ------------------------------------------------------------------ TMC


def test_combining_with_a_vacuous_opinion_returns_the_other_exactly() -> None:
    evidence = torch.tensor([[3.0, 0.5, 0.0, 7.25], [0.0, 0.0, 0.0, 0.1]])
    b, u = opinion(evidence)
    vb, vu = opinion(torch.zeros_like(evidence))
    assert torch.equal(vb, torch.zeros_like(vb)) and torch.equal(vu, torch.ones_like(vu))
    for cb, cu in (combine_two(b, u, vb, vu), combine_two(vb, vu, b, u)):
        assert torch.equal(cb, b) and torch.equal(cu, u)
    # Folding over modalities: vacuous slots anywhere leave the one real opinion unchanged.
    stacked_b = torch.stack([vb, b, vb], dim=1)
    stacked_u = torch.stack([vu, u, vu], dim=1)
    fb, fu = combine_opinions(stacked_b, stacked_u)
    assert torch.equal(fb, b) and torch.equal(fu, u)
    torch.testing.assert_close(opinion_to_alpha(fb, fu), evidence + 1.0)


def test_dempster_shafer_combination_hand_values() -> None:
    b1, u1 = torch.tensor([[0.5, 0.2]]), torch.tensor([0.3])
    b2, u2 = torch.tensor([[0.1, 0.6]]), torch.tensor([0.3])
    b, u = combine_two(b1, u1, b2, u2)
    # C = 0.5*0.6 + 0.2*0.1 = 0.32; b = (b1 b2 + b1 u2 + b2 u1) / 0.68; u = 0.09 / 0.68
    torch.testing.assert_close(b, torch.tensor([[0.23, 0.36]]) / 0.68)
    torch.testing.assert_close(u, torch.tensor([0.09]) / 0.68)
    torch.testing.assert_close(b.sum(1) + u, torch.ones(1))


def test_evidential_loss_matches_torch_distributions() -> None:
    alpha = torch.tensor([[1.0, 1.0, 1.0], [4.0, 1.5, 2.0], [1.0, 9.0, 1.2]])
    expected_kl = kl_divergence(Dirichlet(alpha), Dirichlet(torch.ones(3)))
    torch.testing.assert_close(dirichlet_kl_to_uniform(alpha), expected_kl)
    assert float(dirichlet_kl_to_uniform(torch.ones(1, 5))[0]) == pytest.approx(0.0, abs=1e-6)
    target = torch.tensor([0, 0, 1])
    ace = torch.digamma(alpha.sum(1)) - torch.digamma(alpha[torch.arange(3), target])
    torch.testing.assert_close(evidential_loss(alpha, target, 0.0), ace)
    tilde = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.5, 2.0], [1.0, 1.0, 1.2]])  # true-class evidence removed
    torch.testing.assert_close(evidential_loss(alpha, target, 0.5),
                               ace + 0.5 * kl_divergence(Dirichlet(tilde), Dirichlet(torch.ones(3))))


def test_tmc_uncertainty_rises_as_modalities_go_missing() -> None:
    method, batch = _prepared("tmc", _data())
    masks = [torch.tensor([True, True, True]), torch.tensor([True, True, False]), torch.tensor([True, False, False])]
    with torch.no_grad():
        outs = [method(batch.with_mask(m.expand(batch.size, -1).clone())) for m in masks]
    u = [o.aux["uncertainty"] for o in outs]
    assert all(x.shape == (batch.size,) for x in u)
    # Dropping a modality never lowers a sample's uncertainty, and lowers the mean strictly.
    assert bool((u[0] <= u[1] + 1e-7).all() and (u[1] <= u[2] + 1e-7).all())
    assert float(u[0].mean()) < float(u[1].mean()) < float(u[2].mean())
    # A sample with no modality is the vacuous opinion: u = 1, uniform logits.
    with torch.no_grad():
        empty = method(batch.with_mask(torch.zeros_like(batch.mask)))
    assert torch.equal(empty.aux["uncertainty"], torch.ones(batch.size))
    assert torch.equal(empty.logits, torch.zeros_like(empty.logits))


def test_tmc_logits_follow_the_combined_belief_and_missing_views_drop_out() -> None:
    method, batch = _prepared("tmc", _data())
    batch = batch.with_mask(_all_masks(batch.size, 3))
    with torch.no_grad():
        out = method(batch)
    b, u = combine_opinions(*opinion(out.aux["evidence"]))
    assert torch.equal(out.logits.argmax(1), b.argmax(1))
    alpha = out.aux["alpha"]
    torch.testing.assert_close(out.logits.softmax(1), alpha / alpha.sum(1, keepdim=True))
    # Only present modalities carry evidence; the fused opinion equals the fold over present ones.
    assert torch.equal(out.aux["evidence"][~batch.mask], torch.zeros_like(out.aux["evidence"][~batch.mask]))
    for i in range(7):
        present = batch.mask[i].nonzero().flatten()
        eb, eu = opinion(out.aux["evidence"][i, present].unsqueeze(0))
        fb, fu = combine_opinions(eb, eu)
        torch.testing.assert_close(fb[0], b[i])
        torch.testing.assert_close(fu[0], u[i])


def test_tmc_kl_weight_anneals_with_optimiser_steps_only() -> None:
    method, batch = _prepared("tmc", _data(), anneal_steps=4)
    method.train()
    optimiser = torch.optim.AdamW(method.parameters(), lr=1e-3)
    weights = []
    for _ in range(6):
        out = method(batch)
        method(batch)  # a second forward on the same parameters is not a new step
        weights.append(method.kl_weight())
        loss = sum(method.loss(batch, out).values())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert weights == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert int(method.train_steps) == 6
    method.eval()
    with torch.no_grad():
        method(batch)
    assert int(method.train_steps) == 6  # evaluation never counts


def test_tmc_loss_weights_each_present_view_like_the_fused_term() -> None:
    # The official weights: per sample, Σ over its (present) views of the view loss, plus the
    # fused loss, each view with weight 1 (M : 1 on complete data), averaged over samples.
    method, batch = _prepared("tmc", _data(), anneal_steps=4)
    batch = batch.with_mask(_all_masks(batch.size, 3))
    with torch.no_grad():
        out = method(batch)
        terms = method.loss(batch, out)
        weight = method.kl_weight()
        per_view = [evidential_loss(out.aux["evidence"][b, j:j + 1] + 1.0, batch.target[b:b + 1], weight)
                    for b in range(batch.size) for j in range(3) if batch.mask[b, j]]
    torch.testing.assert_close(terms["members"], torch.stack(per_view).sum() / batch.size)


# ------------------------------------------------------------------ DynMM


def test_dynmm_gate_never_picks_an_infeasible_expert() -> None:
    method, batch = _prepared("dynmm-gate", _data())
    batch = batch.with_mask(_all_masks(batch.size, 3))
    # Bias the gate hard towards "only:m0": samples lacking m0 must still get a feasible expert.
    with torch.no_grad():
        method.gate[-1].bias.copy_(torch.tensor([50.0, 0.0, 0.0, 0.0]))
    for train in (False, True):
        method.train(train)
        torch.manual_seed(0)
        out = method(batch)
        chosen = out.aux["expert"]
        assert bool(out.aux["feasible"].gather(1, chosen.unsqueeze(1)).all())
        assert bool((chosen[batch.mask[:, 0]] == 0).all())
        assert bool((chosen[~batch.mask[:, 0]] != 0).all())
        # One-hot weights (straight-through in training): logits are exactly the chosen expert's.
        expected = out.aux["expert_logits"][torch.arange(batch.size), chosen]
        torch.testing.assert_close(out.logits, expected)
    assert method.expert_names == ("only:m0", "only:m1", "only:m2", "fusion")


def test_dynmm_compute_penalty_is_the_chosen_experts_cost() -> None:
    method, batch = _prepared("dynmm-gate", _data(), compute_penalty=0.5)
    full = batch.with_mask(torch.ones_like(batch.mask))
    cost = method.expert_cost(full.mask)
    torch.testing.assert_close(cost[:, -1], torch.ones(batch.size))  # fusion on all modalities costs 1
    torch.testing.assert_close(cost[:, :-1].sum(1), torch.ones(batch.size))  # unimodal costs add up to 1
    with torch.no_grad():
        method.gate[-1].bias.copy_(torch.tensor([0.0, 0.0, 0.0, 50.0]))  # always fusion
        out = method(full)
    assert bool((out.aux["expert"] == 3).all())
    terms = method.loss(full, out)
    assert float(terms["compute"]) == pytest.approx(0.5)


def test_dynmm_experts_are_pretrained_then_frozen_while_the_gate_trains() -> None:
    data = _data(n=90, seed=2)
    train, val = data.split("train"), data.split("test")
    method = build_method("dynmm-gate", data.spec, 0, embed_dim=16, gate_dim=4, gate_hidden=8)
    assert method.stages() == ("experts", "gate") and method.has(Capability.MULTI_STAGE)
    snapshots = {}
    set_stage = method.set_stage

    def recording_set_stage(stage: str) -> None:
        snapshots[stage] = {k: v.clone() for k, v in method.state_dict().items()}
        set_stage(stage)

    method.set_stage = recording_set_stage
    init = {k: v.clone() for k, v in method.state_dict().items()}
    fit = Trainer(TrainConfig(max_epochs=3, batch_size=16, patience=3)).fit(method, train, val, seed=0)
    final = fit.model.method.state_dict()
    experts = [k for k in final if not k.startswith(("gate.", "gate_encoders."))]
    gate = [k for k in final if k.startswith(("gate.", "gate_encoders."))]
    # Stage 1 trained the experts and left the gate alone; stage 2 the other way round.
    assert any(not torch.equal(snapshots["gate"][k], init[k]) for k in experts)
    assert all(torch.equal(snapshots["gate"][k], init[k]) for k in gate)
    assert all(torch.equal(final[k], snapshots["gate"][k]) for k in experts), "stage 2 moved an expert"
    assert any(not torch.equal(final[k], snapshots["gate"][k]) for k in gate)
    method.set_stage = set_stage
    method.train()
    assert not method.encoders.training and not method.fusion_head.training  # frozen experts: no dropout


def test_dynmm_gate_learns_through_the_straight_through_softmax_from_its_own_encoders() -> None:
    method, batch = _prepared("dynmm-gate", _data())
    method.train()
    out = method(batch)
    weights = out.aux["weights"]
    assert bool(((weights == 0) | (weights == 1)).all())  # hard routing in the forward pass ...
    method.loss(batch, out)["task"].backward()
    gate_grads = [p.grad for p in [*method.gate.parameters(), *method.gate_encoders.parameters()]]
    assert all(g is not None and float(g.abs().sum()) > 0 for g in gate_grads)  # ... soft gradient backward
    assert all(p.grad is None for p in method.encoders.parameters())  # experts frozen in the gate stage
    # The gate reads the inputs through its own encoders, not the experts' embeddings.
    method.eval()
    with torch.no_grad():
        before = method.gate_logits(batch)
        for p in [*method.encoders.parameters(), *method.fusion_encoders.parameters()]:
            p.add_(1.0)
        torch.testing.assert_close(method.gate_logits(batch), before)


# ------------------------------------------------------------------ pattern router


def _fit_router(router=None, **params):
    data = _data(n=150, seed=3)
    train, test = data.split("train"), data.split("test")
    mask = torch.as_tensor(entry_rate_mask(len(train), 3, 0.3, np.random.default_rng(0)))
    method = build_method("pattern-router", data.spec, 0, **params)
    method.router = router
    fit = Trainer(TrainConfig(max_epochs=2, batch_size=16, patience=2)).fit(method, train.with_mask(mask), test)
    return method, fit, data


def test_trainer_calls_calibrate_once_on_the_validation_split_without_gradients() -> None:
    calls = []

    class Recording(MaskedMeanFusion):  # not registered: the Trainer takes an instance
        info = dataclasses.replace(MaskedMeanFusion.info, capabilities=frozenset({Capability.CALIBRATES,
                                                                                  Capability.FACTORISED}))

        def calibrate(self, val: Batch) -> None:
            calls.append((val.size, self.training, torch.is_grad_enabled(), float(val.inputs["m0"].mean())))

    data = _data(n=60)
    train, val = data.split("train"), data.split("test")
    Trainer(TrainConfig(max_epochs=1, batch_size=16)).fit(Recording(data.spec), train, val)
    assert len(calls) == 1
    size, training, grad, mean = calls[0]
    assert size == len(val) and not training and not grad
    standardizer = Standardizer(data.spec).fit(train.as_batch())
    assert mean == pytest.approx(float(standardizer(val.as_batch()).inputs["m0"].mean()))  # standardised


def test_router_picks_the_best_feasible_expert_per_pattern_with_fallback() -> None:
    method, _, data = _fit_router(min_count=5)
    assert len(method.calibration) == 7 and method.route_codes.numel() == 7
    names = method.expert_names
    assert names == ("fusion", "late-ensemble", "only:m0", "only:m1", "only:m2")
    for record in method.calibration:
        experts = record["experts"]
        scored = [e for e in experts if e["val_accuracy"] is not None]
        assert all(e["feasible"] for e in scored)
        assert record["source"] == "rule"
        if record["count"] < 5:
            assert record["choice"] == "fusion" and not scored
        else:
            best = max(scored, key=lambda e: e["val_accuracy"] - 1e-3 * min(e["val_nll"], 10.0))
            assert record["choice"] == best["name"]
        chosen = next(e for e in experts if e["name"] == record["choice"])
        assert chosen["feasible"]
    # Forward follows the table, and the chosen expert is always feasible.
    _, test_batch = _prepared("pattern-router", data)
    batch = test_batch.with_mask(_all_masks(test_batch.size, 3))
    with torch.no_grad():
        out = method(batch)
    table = {r["pattern"]: names.index(r["choice"]) for r in method.calibration}
    for i in range(batch.size):
        pattern = tuple(m for m, keep in zip(data.spec.modality_names, batch.mask[i].tolist()) if keep)
        assert int(out.aux["expert"][i]) == table[pattern]
    assert bool(method.feasible(batch.mask).gather(1, out.aux["expert"].unsqueeze(1)).all())
    torch.testing.assert_close(out.logits, out.aux["expert_log_probs"][torch.arange(batch.size), out.aux["expert"]])


def test_router_without_calibration_uses_the_fallback() -> None:
    method, batch = _prepared("pattern-router", _data())
    with torch.no_grad():
        out = method(batch.with_mask(_all_masks(batch.size, 3)))
    assert bool((out.aux["expert"] == 0).all())


def test_language_model_router_is_used_when_feasible_and_never_when_not() -> None:
    seen = []

    def fake(pattern, experts):  # asks for m2's classifier whatever the pattern
        seen.append((pattern, [e["name"] for e in experts], experts[0]["rule_choice"]))
        return "only:m2"

    method, _, _ = _fit_router(router=fake)
    assert len(seen) == 7
    for record in method.calibration:
        if "m2" in record["pattern"]:
            assert record["choice"] == "only:m2" and record["source"] == "router"
        else:  # infeasible answer: discarded, the rule decides
            assert record["choice"] != "only:m2" and record["source"].startswith("rule (router answer")
    # An answer naming no expert at all is discarded too.
    method, _, _ = _fit_router(router=lambda pattern, experts: "the best one")
    assert all(r["source"].startswith("rule (router answer") for r in method.calibration)


def test_llm_router_prompt_and_parsing() -> None:
    experts = [{"name": "only:a", "requires": ("a",), "feasible": True, "val_accuracy": 0.9, "val_count": 12,
                "cost": 0.5},
               {"name": "only:ab", "requires": ("ab",), "feasible": False, "val_accuracy": None, "val_count": 0,
                "cost": 0.5}]
    prompt = routing_prompt(("a",), experts)
    assert "only: a." not in prompt and "available: a." in prompt and "0.900 (12)" in prompt
    prompts = []
    route = make_llm_router(lambda p: prompts.append(p) or "I would use only:ab, then only:a.")
    assert route(("a",), experts) == "only:ab" and prompts == [prompt]
    assert make_llm_router(lambda p: "none of them")(("a",), experts) == ""


# ------------------------------------------------------------------ graph


def _m3care_with_one_holder(holder: int = 7, **params):
    """(m3care-graph prepared on a training split where only row ``holder`` holds m1, that bank)."""
    data = _data(n=120, seed=1)
    train = data.split("train")
    mask = torch.ones(len(train), 3, dtype=torch.bool)
    mask[:, 1] = False
    mask[holder, 1] = True
    standardizer = Standardizer(data.spec).fit(train.as_batch())
    method = build_method("m3care-graph", data.spec, 0, embed_dim=16, **params)
    with torch.no_grad():
        bank = standardizer(train.with_mask(mask).as_batch())
        method.prepare(bank, standardizer)
    return method, bank.with_index(torch.arange(bank.size))


def test_m3care_gcn_imputes_a_missing_modality_from_the_neighbours_that_hold_it() -> None:
    # Threshold near 0: every pair is an edge, so row 7 (the only holder of m1) is every sample's neighbour.
    method, bank = _m3care_with_one_holder(threshold=0.01)
    method.eval()
    others = bank.select(torch.tensor([0, 1, 2, 30]))  # rows without m1
    with torch.no_grad():
        recovered = method.recover(others)["m1"]
        _, has = method.graph(others, method.encoders(others))
        assert has[:, 1].all() and not has[:, 1].logical_and(others.mask[:, 1]).any()
        # The imputation is the GCN over neighbours: change the holder's m1 and it changes.
        method.bank_x1[7] += 3.0
        moved = method.recover(others)["m1"]
        assert (moved - recovered).abs().max() > 1e-3
        # Rows that do not hold m1 never feed its imputation: their (zeroed) m1 inputs are not read.
        method.bank_x1[:7] = float("nan")
        torch.testing.assert_close(method.recover(others)["m1"], moved)
        # With the memory's m1 gone, nothing can impute it: the slot stays missing (no token).
        method.bank_mask[7, 1] = False
        _, has = method.graph(others, method.encoders(others))
        assert not has[:, 1].any()


def test_m3care_training_never_imputes_a_sample_from_its_own_memory_copy() -> None:
    method, bank = _m3care_with_one_holder(threshold=0.01, bank_per_step=10_000)
    method.train()
    own = bank.select(torch.tensor([7]))
    own = own.with_mask(own.mask & torch.tensor([True, False, True]))  # m1 dropped, as modality dropout does
    with torch.no_grad():
        _, has = method.graph(own, method.encoders(own))
        assert has.tolist() == [[True, False, True]]
        # Another sample in the same batch does get m1 from row 7's copy.
        pair = bank.select(torch.tensor([7, 3]))
        pair = pair.with_mask(pair.mask & torch.tensor([True, False, True]))
        _, has = method.graph(pair, method.encoders(pair))
        assert has[:, 1].tolist() == [False, True]


def test_m3care_similarity_kernel_is_learned_and_the_threshold_cuts_edges() -> None:
    method, bank = _m3care_with_one_holder()
    method.eval()
    batch = bank.select(torch.arange(10))
    with torch.no_grad():
        z = method.encoders(batch)
        memory = method._memory(batch)
        feats = method._kernel_features(z)
        before = method._adjacency(feats, batch.mask, memory["feats"], memory["mask"], memory["bandwidth"])
        for p in method.kernel_mlp.parameters():  # the learned kernel φ is part of the similarity
            p.add_(0.5)
        after = method._adjacency(method._kernel_features(z), batch.mask, memory["feats"], memory["mask"],
                                  memory["bandwidth"])
        assert (after - before).abs().max() > 1e-4
        # Kept edges keep their similarity (> threshold); the rest are exactly 0.
        threshold = float(torch.sigmoid(method.threshold_logit))
        assert bool(((before == 0) | (before > threshold)).all()) and bool((before == 0).any())
