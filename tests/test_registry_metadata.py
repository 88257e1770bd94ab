"""One registry-wide check of every method's metadata (it replaces the per-file copies).

Rules, not restated values: what a method declares must be complete and consistent with
itself, so a new method cannot land with a blank paper, an undocumented output shape, or a
``recovers_missing`` that disagrees with its capabilities. (Where each method's module lives
is tests/test_layout.py; that declarations match behaviour is the conformance suite.)
"""

from __future__ import annotations

import pytest

from mlmm.methods import CATEGORIES, METHODS
from mlmm.methods.base import FUSION_STAGES, Capability

NAMES = sorted(METHODS.names())


@pytest.mark.parametrize("name", NAMES)
def test_metadata_is_complete(name: str) -> None:
    cls = METHODS.get(name)
    info = cls.info
    assert info.category in CATEGORIES and info.fusion in FUSION_STAGES
    assert info.paper.strip() and info.summary.strip(), f"{name}: paper and summary must be given"
    assert cls.__doc__ and len(cls.__doc__.split()) >= 20, f"{name}: the class docstring explains the method"
    for check, reason in info.deviations.items():
        assert reason.strip(), f"{name}: deviation {check!r} has no reason"
    for kind, reason in info.unsupported_kinds.items():
        assert reason.strip(), f"{name}: unsupported kind {kind!r} has no reason"


@pytest.mark.parametrize("name", NAMES)
def test_recovery_and_complete_data_declarations_agree(name: str) -> None:
    info = METHODS.get(name).info
    recovers = Capability.RECOVERS in info.capabilities
    assert info.recovers_missing is recovers
    assert (info.recovery_space is not None) is recovers, f"{name}: a recovering method says where it recovers"
    assert info.needs_complete_train is (Capability.NEEDS_COMPLETE_TRAIN in info.capabilities)


def test_every_category_of_the_survey_has_a_method() -> None:
    assert {METHODS.get(n).info.category for n in NAMES} == set(CATEGORIES)
