"""Tools for testing methods: the conformance suite every registered method must pass.

Third-party methods run it too, like scikit-learn's ``check_estimator``::

    from mlmm.testing import run_conformance
    run_conformance("my-method")            # raises AssertionError on the first failure
"""

from .conformance import (
    CHECKS,
    SLOW_CHECKS,
    check_all_subsets_finite,
    check_batch_composition_invariance,
    check_beats_chance_under_missingness,
    check_builds_from_spec,
    check_deviations,
    check_gradients_reach_parameters,
    check_inputs_not_mutated,
    check_loss_finite_all_subsets,
    check_modality_missing_for_whole_batch,
    check_poisoned_masked_slots_ignored,
    check_seed_determinism,
    check_state_dict_round_trip,
    conformance_data,
    easy_task,
    run_conformance,
)

__all__ = [
    "CHECKS",
    "SLOW_CHECKS",
    "check_all_subsets_finite",
    "check_batch_composition_invariance",
    "check_beats_chance_under_missingness",
    "check_builds_from_spec",
    "check_deviations",
    "check_gradients_reach_parameters",
    "check_inputs_not_mutated",
    "check_loss_finite_all_subsets",
    "check_modality_missing_for_whole_batch",
    "check_poisoned_masked_slots_ignored",
    "check_seed_determinism",
    "check_state_dict_round_trip",
    "conformance_data",
    "easy_task",
    "run_conformance",
]
