"""Tools for testing methods: the conformance suite, pointed at a name, a class or an instance.

Third-party methods run it too, like scikit-learn's ``check_estimator``, without registering::

    from mlmm.testing import run_conformance
    run_conformance("my-method")            # a registered name
    run_conformance(MyMethod)               # a class
    run_conformance(MyMethod(spec, ...))    # an instance, on data of its own spec
"""

from .conformance import (
    CHECKS,
    SETUPS,
    SLOW_CHECKS,
    Case,
    Subject,
    cases,
    check_deviations,
    conformance_data,
    conformance_spec,
    data_for_spec,
    easy_task,
    run_conformance,
    subject,
)

__all__ = [
    "CHECKS",
    "SETUPS",
    "SLOW_CHECKS",
    "Case",
    "Subject",
    "cases",
    "check_deviations",
    "conformance_data",
    "conformance_spec",
    "data_for_spec",
    "easy_task",
    "run_conformance",
    "subject",
]
