"""Parameter constraints checked at one place, before any work (after scikit-learn's
``_parameter_constraints`` / ``validate_parameter_constraints``).

A constraint list per parameter; a value is valid if it satisfies any of them::

    {"lr": [Interval("real", 0, None, closed="neither")],
     "grad_clip": [None, Interval("real", 0, None, closed="neither")]}

``None`` in a list allows ``None``. Numbers must be finite, ints must be real ints (not
``2.5``, not ``True``, not the string ``'3'``). A failed check raises
:class:`mlmm.errors.InvalidParameterError` naming the owner, the parameter, the value and
what is allowed.
"""

from __future__ import annotations

import abc
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import InvalidParameterError


class Constraint(abc.ABC):
    """One allowed kind of value; ``str()`` says what, for the error message."""

    @abc.abstractmethod
    def ok(self, value: Any) -> bool:
        """Whether ``value`` is allowed."""


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class Interval(Constraint):
    """An int (``kind="int"``) or finite real (``kind="real"``) in [low, high] with the
    ends ``closed`` ("both", "left", "right", "neither"); ``None`` ends are unbounded."""

    kind: str
    low: float | None = None
    high: float | None = None
    closed: str = "both"

    def ok(self, value: Any) -> bool:
        if not (_is_int(value) if self.kind == "int" else _is_real(value)):
            return False
        if self.low is not None and (value < self.low or (value == self.low and self.closed in ("right", "neither"))):
            return False
        if self.high is not None and (value > self.high or (value == self.high and self.closed in ("left", "neither"))):
            return False
        return True

    def __str__(self) -> str:
        what = "an int" if self.kind == "int" else "a finite number"
        if self.low is None and self.high is None:
            return what
        left = "[" if self.closed in ("both", "left") and self.low is not None else "("
        right = "]" if self.closed in ("both", "right") and self.high is not None else ")"
        low = "-inf" if self.low is None else _number(self.low)
        high = "inf" if self.high is None else _number(self.high)
        return f"{what} in {left}{low}, {high}{right}"


@dataclass(frozen=True)
class Options(Constraint):
    """One of a fixed set of values (e.g. strings)."""

    values: tuple

    def ok(self, value: Any) -> bool:
        return isinstance(value, (str, bool, int, float)) and value in self.values

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


@dataclass(frozen=True)
class InstanceOf(Constraint):
    """An instance of ``types`` (described as ``what``)."""

    types: tuple
    what: str

    def ok(self, value: Any) -> bool:
        return isinstance(value, self.types) and not (isinstance(value, bool) and bool not in self.types)

    def __str__(self) -> str:
        return self.what


@dataclass(frozen=True)
class SequenceOf(Constraint):
    """A non-empty list or tuple whose every item satisfies ``item``."""

    item: Constraint

    def ok(self, value: Any) -> bool:
        return isinstance(value, (list, tuple)) and len(value) > 0 and all(self.item.ok(v) for v in value)

    def __str__(self) -> str:
        return f"a non-empty list of {self.item}"


BOOLEAN = InstanceOf((bool,), "true or false")
STRING = InstanceOf((str,), "a string")
#: Layer widths and counts: a cap keeps a typo (1e8) from allocating gigabytes before failing.
MAX_WIDTH = 65536
WIDTH = Interval("int", 1, MAX_WIDTH)
COUNT = Interval("int", 1, 1_000_000)
NONNEG_COUNT = Interval("int", 0, 1_000_000)
PROBABILITY = Interval("real", 0, 1, closed="left")  # [0, 1): a drop rate of 1 drops everything
UNIT = Interval("real", 0, 1)
NONNEG = Interval("real", 0, None)
POSITIVE = Interval("real", 0, None, closed="neither")


def describe(constraints: Sequence[Any]) -> str:
    parts = ["None" if c is None else str(c) for c in constraints]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


def check_value(owner: str, name: str, value: Any, constraints: Sequence[Any]) -> None:
    """Raise :class:`InvalidParameterError` unless ``value`` satisfies one of ``constraints``."""
    for c in constraints:
        if (c is None and value is None) or (c is not None and c.ok(value)):
            return
    shown = f"{type(value).__name__} {value!r}" if isinstance(value, str) else repr(value)
    raise InvalidParameterError(f"{owner}: {name}={shown} is not allowed; {name} must be {describe(constraints)}")


def check_names(owner: str, given: Iterable[str], allowed: Iterable[str]) -> None:
    """Raise :class:`InvalidParameterError` for a name not in ``allowed``, listing the allowed ones."""
    allowed = sorted(allowed)
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        known = ", ".join(allowed) or "none"
        raise InvalidParameterError(f"{owner}: unknown parameter {', '.join(map(repr, unknown))}; allowed: {known}")


def validate_params(owner: str, params: Mapping[str, Any], constraints: Mapping[str, Sequence[Any]],
                    strict: bool = True) -> None:
    """Check every ``params`` entry against ``constraints`` (``strict``: unknown names are refused)."""
    if strict:
        check_names(owner, params, constraints)
    for name, value in params.items():
        if name in constraints:
            check_value(owner, name, value, constraints[name])
