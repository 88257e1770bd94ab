"""The conformance suite over every registered method, and proof that it can fail.

Parametrised over ``METHODS.names()`` x each method's setups (vector, sequence,
vector + image + text; regression where declared), one test per (method, setup) that
runs every fast check on one shared ``Case``, so a newly registered method is covered
without touching this file. Declared deviations (``info.deviations``) skip with their
reason. Protocol conformance lives in ``test_missing.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from mlmm.components.factorised import FactorisedFusion
from mlmm.components.pretrained_backbone import MissingExtraError
from mlmm.data.batch import Batch
from mlmm.data.preprocess import Standardizer
from mlmm.data.spec import DatasetSpec
from mlmm.methods import METHODS, MethodInfo, MissingModalityModel, Output, register_method
from mlmm.methods.base import Capability, masked_fill_rows
from mlmm.testing import CHECKS, SLOW_CHECKS, cases, check_deviations, run_conformance

METHOD_NAMES = METHODS.names()  # taken at import, before any toy below is registered
FAST_CHECKS = [c for c in CHECKS if c not in SLOW_CHECKS]


def _registry_cases() -> list:
    out = []
    for name in METHOD_NAMES:
        for case in cases(name)[0]:
            out.append(pytest.param(name, case.setup, id=f"{name}-{case.setup}"))
    return out


REGISTRY_CASES = _registry_cases()


def _run(method: str, setup: str, checks: list[str]) -> None:
    try:
        results = run_conformance(method, checks, setups=[setup])
    except MissingExtraError as err:  # e.g. the pretrained-transformer methods without mlmm[pretrained]
        pytest.skip(f"{method} needs an optional extra that is not installed: {err}")
    skipped = {k: v for k, v in results.items() if v != "passed" and not k.startswith("kind ")}
    assert all(v.startswith("skipped: ") for v in skipped.values()), skipped


@pytest.mark.parametrize("method, setup", REGISTRY_CASES)
def test_conformance(method: str, setup: str) -> None:
    _run(method, setup, FAST_CHECKS)


@pytest.mark.slow
@pytest.mark.parametrize("method, setup", REGISTRY_CASES)
def test_conformance_slow(method: str, setup: str) -> None:
    _run(method, setup, sorted(SLOW_CHECKS))


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_deviations_name_known_checks(method: str) -> None:
    check_deviations(method)


def test_every_method_is_checked_on_image_and_text_unless_it_declares_why_not() -> None:
    for name in METHOD_NAMES:
        info = METHODS.get(name).info
        labels = {case.setup for case in cases(name)[0]}
        for kind in ("image", "text"):
            assert kind in info.unsupported_kinds or any(kind in label for label in labels), (name, kind, labels)
        assert "regression" in info.unsupported_kinds or any("regression" in label for label in labels), name


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
        "declared_capabilities",
        "accepts_user_encoders",
        "beats_chance_under_missingness",
    ]
    assert SLOW_CHECKS == {"beats_chance_under_missingness"}


def test_checks_leave_global_rng_alone_and_do_not_print(capsys) -> None:
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    run_conformance("masked-mean", ["poisoned_masked_slots_ignored", "seed_determinism"], setups=["vector"])
    assert torch.equal(torch.get_rng_state(), torch_state)
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]) and after[2:] == np_state[2:]
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_unknown_check_name_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown conformance check"):
        run_conformance("masked-mean", ["no_such_check"])


# ----------------------------------------------------------- toy methods
#
# A correct early-fusion toy, and broken variants each breaking one rule. None is
# registered: the suite takes classes and instances directly.


class ToyEarlyFusion(MissingModalityModel):
    """Correct: present modalities flattened (masked-out rows zeroed), plus the mask, into an MLP."""

    info = MethodInfo(
        category="modality-composition",
        fusion="early",
        recovers_missing=False,
        needs_complete_train=False,
        paper="(test toy)",
        summary="flattened present modalities and mask indicators, small MLP",
        fixed_encoders={"*": "early fusion of the flattened inputs: there is no per-modality encoder"},
    )

    def __init__(self, spec: DatasetSpec, hidden: int = 16, **components) -> None:
        super().__init__(spec, **components)
        width = sum(m.size for m in spec.modalities) + spec.n_modalities
        self.net = nn.Sequential(nn.Linear(width, hidden), nn.Tanh(), nn.Linear(hidden, spec.task.output_dim))

    def modality(self, batch: Batch, j: int) -> Tensor:
        x = batch.inputs[self.spec.modalities[j].name].float()
        return masked_fill_rows(x, batch.mask[:, j], 0.0)

    def features(self, batch: Batch) -> Tensor:
        parts = [self.modality(batch, j).flatten(1) for j in range(self.spec.n_modalities)]
        return torch.cat(parts + [batch.mask.to(parts[0].dtype)], dim=1)

    def forward(self, batch: Batch) -> Output:
        return Output(self.net(self.features(batch)))


def _info(base: type = ToyEarlyFusion, **changes) -> MethodInfo:
    import dataclasses

    return dataclasses.replace(base.info, **changes)


class ReadsMaskedSlots(ToyEarlyFusion):
    """Broken: uses the stored values of masked-out slots."""

    def modality(self, batch: Batch, j: int) -> Tensor:
        return batch.inputs[self.spec.modalities[j].name].float()


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
            logits = logits + batch.inputs[m.name][batch.mask[:, j]].float().mean()
        return Output(logits)


class NaNWithoutFirstModality(ToyEarlyFusion):
    """Broken: divides by the first modality's indicator, inf/NaN whenever it is missing."""

    def forward(self, batch: Batch) -> Output:
        return Output(super().forward(batch).logits / batch.mask[:, :1].float())


class NaNLossWithoutFirstModality(ToyEarlyFusion):
    """Broken: finite logits, but a loss term that is NaN when the first modality is missing."""

    def loss(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        return {"task": self.task_loss(output.logits, batch.target),
                "odd": (batch.mask[:, 0].float().mean() / batch.mask[:, 0].float().min()) * 0.0}


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

    def __init__(self, spec: DatasetSpec, hidden: int = 16, **components) -> None:
        super().__init__(spec, hidden, **components)
        self.unused = nn.Linear(2, 2)


class StateOutsideBuffers(ToyEarlyFusion):
    """Broken: ``prepare`` stores a data-dependent tensor in a plain attribute, not a buffer."""

    info = _info(capabilities=frozenset({Capability.PREPARES}))

    def __init__(self, spec: DatasetSpec, hidden: int = 16, **components) -> None:
        super().__init__(spec, hidden, **components)
        self.rates = torch.zeros(spec.n_modalities)

    def prepare(self, train: Batch, standardizer: Standardizer) -> None:
        self.rates = train.mask.float().mean(dim=0) + 1.0

    def forward(self, batch: Batch) -> Output:
        logits = super().forward(batch).logits
        return Output(logits + (batch.mask.float() * self.rates).sum(dim=1, keepdim=True))


class MutatesInputs(ToyEarlyFusion):
    """Broken: clips its inputs in place."""

    def modality(self, batch: Batch, j: int) -> Tensor:
        x = batch.inputs[self.spec.modalities[j].name]
        if x.dtype.is_floating_point:
            x.clamp_(-0.5, 0.5)
        return super().modality(batch, j)


# --- capability toys: a declaration that disagrees with behaviour, in each direction


class DeclaresRecoveryWithoutRecover(ToyEarlyFusion):
    """Broken (zero-fill's old bug): declares it recovers, implements no ``recover``."""

    info = _info(recovers_missing=True, recovery_space="input")


class PreparesUndeclared(ToyEarlyFusion):
    """Broken: ``prepare`` fits a buffer, but PREPARES is not declared (the loop would skip it)."""

    def __init__(self, spec: DatasetSpec, hidden: int = 16, **components) -> None:
        super().__init__(spec, hidden, **components)
        self.register_buffer("rates", torch.zeros(spec.n_modalities))

    def prepare(self, train: Batch, standardizer: Standardizer) -> None:
        self.rates.copy_(train.mask.float().mean(dim=0))


class CalibratesUndeclared(ToyEarlyFusion):
    """Broken: ``calibrate`` writes a buffer, CALIBRATES is not declared."""

    def __init__(self, spec: DatasetSpec, hidden: int = 16, **components) -> None:
        super().__init__(spec, hidden, **components)
        self.register_buffer("table", torch.zeros(3))

    def calibrate(self, val: Batch) -> None:
        self.table.fill_(1.0)


class DeclaresCalibrationWithoutCalibrate(ToyEarlyFusion):
    """Broken: declares CALIBRATES and never implements ``calibrate``."""

    info = _info(capabilities=frozenset({Capability.CALIBRATES}))


class DeclaresStagesWithOneStage(ToyEarlyFusion):
    """Broken: declares MULTI_STAGE with one stage."""

    info = _info(capabilities=frozenset({Capability.MULTI_STAGE}))


class AfterStepUndeclared(ToyEarlyFusion):
    """Broken: ``after_step`` moves a shadow copy of the weights, AFTER_STEP is not declared."""

    def __init__(self, spec: DatasetSpec, hidden: int = 16, **components) -> None:
        super().__init__(spec, hidden, **components)
        self.register_buffer("shadow", torch.zeros_like(self.net[0].weight))

    def after_step(self) -> None:
        self.shadow.mul_(0.9).add_(0.1 * self.net[0].weight.detach())


class DeclaresFactorisedWithoutIt(ToyEarlyFusion):
    """Broken: declares FACTORISED without encode_modalities / fuse_embeddings."""

    info = _info(capabilities=frozenset({Capability.FACTORISED}))


class FactorisedUndeclared(FactorisedFusion, MissingModalityModel):
    """Broken: encode-then-fuse by FactorisedFusion's forward, FACTORISED not declared."""

    info = ToyEarlyFusion.info

    def __init__(self, spec: DatasetSpec, **components) -> None:
        super().__init__(spec, **components)
        self.proj = nn.ModuleList(nn.Linear(m.size, 4) for m in spec.modalities)
        self.head = nn.Linear(4, spec.task.output_dim)

    def encode_modalities(self, batch: Batch) -> Tensor:
        return torch.stack([p(masked_fill_rows(batch.inputs[m.name].float(), batch.mask[:, j], 0.0).flatten(1))
                            for j, (m, p) in enumerate(zip(self.spec.modalities, self.proj))], dim=1)

    def fuse_embeddings(self, z: Tensor, mask: Tensor) -> Output:
        w = mask.unsqueeze(-1).float()
        return Output(self.head((z * w).sum(1) / w.sum(1).clamp_min(1)))


class IgnoresUserEncoders(FactorisedUndeclared):
    """Broken: takes ``encoders=`` but builds its own projections regardless (and declares it honestly factorised)."""

    info = _info(fixed_encoders={}, capabilities=frozenset({Capability.FACTORISED}))


@pytest.mark.parametrize(
    "toy, check",
    [
        (ReadsMaskedSlots, "poisoned_masked_slots_ignored"),
        (BatchStatistics, "batch_composition_invariance"),
        (EmptyModalityMean, "modality_missing_for_whole_batch"),
        (NaNWithoutFirstModality, "all_subsets_finite"),
        (NaNLossWithoutFirstModality, "loss_finite_all_subsets"),
        (MinusInfWhenEmpty, "empty_sample_finite"),
        (RandomAtEval, "seed_determinism"),
        (UnusedParameter, "gradients_reach_parameters"),
        (StateOutsideBuffers, "state_dict_round_trip"),
        (MutatesInputs, "inputs_not_mutated"),
        (DeclaresRecoveryWithoutRecover, "declared_capabilities"),
        (PreparesUndeclared, "declared_capabilities"),
        (CalibratesUndeclared, "declared_capabilities"),
        (DeclaresCalibrationWithoutCalibrate, "declared_capabilities"),
        (DeclaresStagesWithOneStage, "declared_capabilities"),
        (AfterStepUndeclared, "declared_capabilities"),
        (DeclaresFactorisedWithoutIt, "declared_capabilities"),
        (FactorisedUndeclared, "declared_capabilities"),
        (IgnoresUserEncoders, "accepts_user_encoders"),
    ],
    ids=lambda v: v if isinstance(v, str) else v.__name__,
)
def test_broken_toy_fails_its_check(toy: type[MissingModalityModel], check: str) -> None:
    case = cases(toy)[0][0]  # the vector setup, built from the class: nothing is registered
    with pytest.raises(AssertionError, match=rf"'{toy.__qualname__}' on vector data, check {check}"):
        CHECKS[check](case)
    assert toy.__qualname__ not in METHODS


@pytest.mark.parametrize("setup", ["vector", "sequence/regression", "vector+image+text"])
def test_correct_toy_passes_every_fast_check_as_a_class(setup: str) -> None:
    # The broken toys above fail because of their one defect, not because of the toy itself.
    results = run_conformance(ToyEarlyFusion, setups=[setup])
    assert results == {c: "passed" for c in FAST_CHECKS}


def test_an_instance_is_checked_on_data_of_its_own_spec() -> None:
    spec = cases("masked-mean")[0][2].spec  # vector + image + text
    method = METHODS.get("masked-mean")(spec, embed_dim=16, encoders={"m1": "conv"})
    results = run_conformance(method, ["all_subsets_finite", "seed_determinism", "declared_capabilities"])
    assert results == {"all_subsets_finite": "passed", "seed_determinism": "passed", "declared_capabilities": "passed"}
    assert cases(method)[0][0].spec == spec


def test_a_class_that_declares_a_kind_unsupported_is_not_built_on_it_and_says_why() -> None:
    toy = type("NoText", (ToyEarlyFusion,), {"info": _info(unsupported_kinds={"text": "flattens floats only"})})
    checked, skipped = cases(toy)
    assert all(m.kind != "text" for case in checked for m in case.spec.modalities)
    assert skipped == {"kind text": "skipped: flattens floats only"}


def test_declared_deviation_is_skipped_with_its_reason() -> None:
    reason = "centres on the batch mean on purpose"
    toy = type("DeviatingToy", (BatchStatistics,), {"info": _info(deviations={"batch_composition_invariance": reason})})
    results = run_conformance(toy, ["batch_composition_invariance", "poisoned_masked_slots_ignored"], setups=["vector"])
    assert results == {"batch_composition_invariance": f"skipped: {reason}", "poisoned_masked_slots_ignored": "passed"}


def test_deviation_from_an_unknown_check_is_an_error() -> None:
    toy = type("MisnamedDeviation", (ToyEarlyFusion,), {"info": _info(deviations={"batch_invariance": "typo"})})
    with pytest.raises(ValueError, match="unknown conformance check.*'batch_invariance'"):
        run_conformance(toy)
    with pytest.raises(AssertionError, match="unknown conformance check"):
        CHECKS["builds_from_spec"](cases(toy)[0][0])


def test_registering_a_redefined_class_again_replaces_it() -> None:
    # A notebook cell that defines and registers a class, run twice.
    def cell():
        class CellMethod(ToyEarlyFusion):
            pass

        return register_method("toy-cell")(CellMethod)

    try:
        first, second = cell(), cell()
        assert METHODS.get("toy-cell") is second and first is not second
        with pytest.raises(ValueError, match="registered twice"):
            register_method("toy-cell")(ToyEarlyFusion)
    finally:
        METHODS.unregister("toy-cell")
