"""The conformance suite over every registered method, and proof that it can fail.

Parametrized over ``METHODS.names()`` x every check x both synthetic kinds,
so a newly registered method is covered without touching this file. Declared
deviations (``info.deviations``) skip with their reason. Protocol conformance
lives in ``test_missing.py``.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from mlmm.components.pretrained_backbone import MissingExtraError
from mlmm.data.batch import Batch
from mlmm.data.preprocess import Standardizer
from mlmm.data.spec import DatasetSpec
from mlmm.methods import METHODS, MethodInfo, MissingModalityModel, Output, register_method
from mlmm.methods.base import masked_fill_rows
from mlmm.testing import CHECKS, SLOW_CHECKS, check_deviations, conformance_data, run_conformance

KINDS = ("vector", "sequence")
METHOD_NAMES = METHODS.names()  # taken at import, before any toy below is registered
FAST_CHECKS = [c for c in CHECKS if c not in SLOW_CHECKS]


def _cases(checks: list[str]) -> list:
    return [pytest.param(m, c, id=f"{m}-{c}") for m in METHOD_NAMES for c in checks]


def _run(method: str, check: str, kind: str) -> None:
    reason = METHODS.get(method).info.deviations.get(check)
    if reason is not None:
        pytest.skip(f"{method} declares a deviation from {check}: {reason}")
    try:
        CHECKS[check](method, conformance_data(kind))
    except MissingExtraError as err:  # e.g. the pretrained-transformer methods without mlmm[pretrained]
        pytest.skip(f"{method} needs an optional extra that is not installed: {err}")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method, check", _cases(FAST_CHECKS))
def test_conformance(method: str, check: str, kind: str) -> None:
    _run(method, check, kind)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method, check", _cases(sorted(SLOW_CHECKS)))
def test_conformance_slow(method: str, check: str, kind: str) -> None:
    _run(method, check, kind)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_deviations_name_known_checks(method: str) -> None:
    check_deviations(method)


def test_check_names() -> None:
    # Deviations refer to checks by these names: renaming one is a breaking change.
    assert list(CHECKS) == [
        "builds_from_spec",
        "all_subsets_finite",
        "empty_sample_finite",
        "modality_missing_for_whole_batch",
        "poisoned_masked_slots_ignored",
        "batch_composition_invariance",
        "seed_determinism",
        "gradients_reach_parameters",
        "state_dict_round_trip",
        "inputs_not_mutated",
        "loss_finite_all_subsets",
        "beats_chance_under_missingness",
    ]
    assert SLOW_CHECKS == {"beats_chance_under_missingness"}


def test_checks_leave_global_rng_alone_and_do_not_print(capsys) -> None:
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    run_conformance(METHOD_NAMES[0], ["poisoned_masked_slots_ignored", "seed_determinism"], kinds=("vector",))
    assert torch.equal(torch.get_rng_state(), torch_state)
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]) and after[2:] == np_state[2:]
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_unknown_check_name_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown conformance check"):
        run_conformance(METHOD_NAMES[0], ["no_such_check"])


# ----------------------------------------------------------- toy methods
#
# A correct early-fusion toy, and broken variants each breaking one rule.
# They are registered only inside ``registered`` and removed afterwards, so
# they never leak into METHODS for the other tests.


class ToyEarlyFusion(MissingModalityModel):
    """Correct: present modalities flattened (masked-out rows zeroed), plus the mask, into an MLP."""

    info = MethodInfo(
        category="modality-composition",
        fusion="early",
        recovers_missing=False,
        needs_complete_train=False,
        paper="(test toy)",
        summary="flattened present modalities and mask indicators, small MLP",
    )

    def __init__(self, spec: DatasetSpec, hidden: int = 16) -> None:
        super().__init__(spec)
        width = sum(m.size for m in spec.modalities) + spec.n_modalities
        self.net = nn.Sequential(nn.Linear(width, hidden), nn.Tanh(), nn.Linear(hidden, spec.task.output_dim))

    def modality(self, batch: Batch, j: int) -> Tensor:
        x = batch.inputs[self.spec.modalities[j].name]
        return masked_fill_rows(x, batch.mask[:, j], 0.0)

    def features(self, batch: Batch) -> Tensor:
        parts = [self.modality(batch, j).flatten(1) for j in range(self.spec.n_modalities)]
        return torch.cat(parts + [batch.mask.to(parts[0].dtype)], dim=1)

    def forward(self, batch: Batch) -> Output:
        return Output(self.net(self.features(batch)))


class ReadsMaskedSlots(ToyEarlyFusion):
    """Broken: uses the stored values of masked-out slots."""

    def modality(self, batch: Batch, j: int) -> Tensor:
        return batch.inputs[self.spec.modalities[j].name]


class BatchStatistics(ToyEarlyFusion):
    """Broken: centres features on the batch mean, so batch-mates change a sample's output."""

    def features(self, batch: Batch) -> Tensor:
        f = super().features(batch)
        return f - f.mean(dim=0, keepdim=True)


class EmptyModalityMean(ToyEarlyFusion):
    """Broken: adds each modality's mean over the batch's present rows (NaN when none is present)."""

    def forward(self, batch: Batch) -> Output:
        logits = super().forward(batch).logits
        for j, m in enumerate(self.spec.modalities):
            logits = logits + batch.inputs[m.name][batch.mask[:, j]].mean()
        return Output(logits)


class NaNWithoutFirstModality(ToyEarlyFusion):
    """Broken: divides by the first modality's indicator, inf/NaN whenever it is missing."""

    def forward(self, batch: Batch) -> Output:
        return Output(super().forward(batch).logits / batch.mask[:, :1].float())


class MinusInfWhenEmpty(ToyEarlyFusion):
    """Broken: log of the mean of per-modality votes, -inf for a sample with no modality."""

    def forward(self, batch: Batch) -> Output:
        logits = super().forward(batch).logits
        votes = batch.mask.float().sum(dim=1, keepdim=True)
        return Output(logits + torch.log(votes / batch.mask.shape[1]))


class RandomAtEval(ToyEarlyFusion):
    """Broken: unseeded noise in every forward, eval mode included."""

    def forward(self, batch: Batch) -> Output:
        logits = super().forward(batch).logits
        return Output(logits + 0.1 * torch.randn_like(logits))


class UnusedParameter(ToyEarlyFusion):
    """Broken: a trainable parameter that no loss reaches."""

    def __init__(self, spec: DatasetSpec, hidden: int = 16) -> None:
        super().__init__(spec, hidden)
        self.unused = nn.Linear(2, 2)


class StateOutsideBuffers(ToyEarlyFusion):
    """Broken: ``prepare`` stores a data-dependent tensor in a plain attribute, not a buffer."""

    def __init__(self, spec: DatasetSpec, hidden: int = 16) -> None:
        super().__init__(spec, hidden)
        self.rates = torch.zeros(spec.n_modalities)

    def prepare(self, train: Batch, standardizer: Standardizer) -> None:
        self.rates = train.mask.float().mean(dim=0) + 1.0

    def forward(self, batch: Batch) -> Output:
        logits = super().forward(batch).logits
        return Output(logits + (batch.mask.float() * self.rates).sum(dim=1, keepdim=True))


class MutatesInputs(ToyEarlyFusion):
    """Broken: clips its inputs in place."""

    def modality(self, batch: Batch, j: int) -> Tensor:
        batch.inputs[self.spec.modalities[j].name].clamp_(-0.5, 0.5)
        return super().modality(batch, j)


def _toy_info(**deviations: str) -> MethodInfo:
    base = ToyEarlyFusion.info
    return MethodInfo(base.category, base.fusion, base.recovers_missing, base.needs_complete_train,
                      base.paper, base.summary, deviations=deviations)


@contextlib.contextmanager
def registered(cls: type[MissingModalityModel], name: str = "toy-under-test"):
    """Register ``cls`` as ``name`` for the block only."""
    register_method(name)(cls)
    try:
        yield name
    finally:
        METHODS.unregister(name)
        assert name not in METHODS


@pytest.mark.parametrize(
    "toy, check",
    [
        (ReadsMaskedSlots, "poisoned_masked_slots_ignored"),
        (BatchStatistics, "batch_composition_invariance"),
        (EmptyModalityMean, "modality_missing_for_whole_batch"),
        (NaNWithoutFirstModality, "all_subsets_finite"),
        (NaNWithoutFirstModality, "loss_finite_all_subsets"),
        (MinusInfWhenEmpty, "empty_sample_finite"),
        (RandomAtEval, "seed_determinism"),
        (UnusedParameter, "gradients_reach_parameters"),
        (StateOutsideBuffers, "state_dict_round_trip"),
        (MutatesInputs, "inputs_not_mutated"),
    ],
    ids=lambda v: v if isinstance(v, str) else v.__name__,
)
def test_broken_toy_fails_its_check(toy: type[MissingModalityModel], check: str) -> None:
    with registered(toy) as name:
        with pytest.raises(AssertionError, match=rf"'{name}' on vector data, check {check}"):
            CHECKS[check](name, conformance_data("vector"))


@pytest.mark.parametrize("kind", KINDS)
def test_correct_toy_passes_every_fast_check(kind: str) -> None:
    # The broken toys above fail because of their one defect, not because of the toy itself.
    with registered(ToyEarlyFusion) as name:
        assert run_conformance(name, kinds=(kind,)) == {c: "passed" for c in FAST_CHECKS}


def test_declared_deviation_is_skipped_with_its_reason() -> None:
    reason = "centres on the batch mean on purpose"
    toy = type("DeviatingToy", (BatchStatistics,), {"info": _toy_info(batch_composition_invariance=reason)})
    with registered(toy) as name:
        results = run_conformance(name, ["batch_composition_invariance", "poisoned_masked_slots_ignored"],
                                  kinds=("vector",))
    assert results == {"batch_composition_invariance": f"skipped: {reason}", "poisoned_masked_slots_ignored": "passed"}


def test_deviation_from_an_unknown_check_is_an_error() -> None:
    toy = type("MisnamedDeviation", (ToyEarlyFusion,), {"info": _toy_info(batch_invariance="typo")})
    with registered(toy) as name:
        with pytest.raises(ValueError, match="unknown conformance check.*'batch_invariance'"):
            run_conformance(name)
        with pytest.raises(AssertionError, match="unknown conformance check"):
            CHECKS["builds_from_spec"](name, conformance_data("vector"))
    assert "toy-under-test" not in METHODS
