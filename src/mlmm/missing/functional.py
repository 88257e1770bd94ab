"""Pure missingness functions: (n, M, parameters, generator) -> a new bool mask (n, M).

``mask[i, m]`` is True when modality ``m`` of sample ``i`` is present. Every
function returns a freshly allocated array, never mutates its arguments and
draws randomness only from the ``numpy.random.Generator`` it is given.

The rate words follow ``PROTOCOLS.md`` exactly:

- *entry rate*: fraction of missing (sample, modality) entries (CPM-Nets, UIMC);
- *sample rate*: fraction of incomplete samples (COMPLETER, DCP);
- *per-modality rates*: modality ``m`` is missing with its own probability.

Counts are rounded half up (``floor(x + 0.5)``), so an entry rate ``r`` on
``n`` samples and ``M`` modalities removes exactly ``floor(r*n*M + 0.5)``
entries.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from collections.abc import Sequence
from itertools import combinations

import numpy as np

__all__ = [
    "all_subsets",
    "entry_rate_mask",
    "fixed_subset_mask",
    "label_mnar_class_rates",
    "label_mnar_mask",
    "mask_checksum",
    "max_entry_rate",
    "per_modality_mask",
    "realised_missingness",
    "sample_rate_mask",
    "subset_name",
]

# Slack for float round-off when a rate sits exactly on a bound (e.g. 1 - 1/6).
_EPS = 1e-12


# ----------------------------------------------------------------- validation


def check_rate(value: object, name: str, *, upper: float = 1.0, upper_inclusive: bool = True) -> float:
    """``value`` as a float in [0, upper] (or [0, upper)); ValueError naming ``name`` otherwise."""
    closing = "]" if upper_inclusive else ")"
    allowed = f"[0, {upper:g}{closing}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number in {allowed}, got {value!r}")
    v = float(value)
    too_high = v > upper if upper_inclusive else v >= upper
    if v < 0.0 or too_high:
        raise ValueError(f"{name} must be in {allowed}, got {v:g}")
    return v


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_rng(rng: object) -> np.random.Generator:
    # An int seed here would hide where randomness comes from; insist on a Generator.
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def _round_count(x: float) -> int:
    """Round half up, with a little slack so 0.1*2000*6 = 1200.0000000000002 gives 1200."""
    return int(math.floor(x + 0.5 + _EPS))


def max_entry_rate(n_modalities: int) -> float:
    """Largest feasible entry rate when every sample keeps >= 1 of ``n_modalities``: 1 - 1/M."""
    return 1.0 - 1.0 / _check_int(n_modalities, "n_modalities", 1)


def _check_entry_rate(rate: object, n_modalities: int, name: str = "rate") -> float:
    rate = check_rate(rate, name, upper=1.0, upper_inclusive=False)
    bound = max_entry_rate(n_modalities)
    if rate > bound + _EPS:
        noun = "modality" if n_modalities == 1 else "modalities"
        raise ValueError(
            f"entry rate {rate:g} is impossible with {n_modalities} {noun} when every sample "
            f"keeps at least one: the maximum is {bound:.3g} (= 1 - 1/{n_modalities})"
        )
    return rate


# ------------------------------------------------------------------ generators


def entry_rate_mask(n: int, n_modalities: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Entry-rate (CPM-Nets / UIMC) mask: exactly ``floor(rate*n*M + 0.5)`` missing entries.

    Construction: each sample first gets one *protected* modality drawn
    uniformly from its M; the missing entries are then drawn uniformly without
    replacement among the n*(M-1) unprotected entries. So every sample keeps
    >= 1 modality and the realised entry rate is exact (up to rounding to a
    whole number of entries). The resulting distribution over masks is not
    uniform over all valid masks (rows with more present modalities have more
    ways to arise), but it is exchangeable over samples and over modalities,
    hence MCAR.

    Valid range: 0 <= rate <= 1 - 1/M.

    Returns: (n, M) bool, True = present.

    >>> mask = entry_rate_mask(100, 3, 0.5, np.random.default_rng(0))
    >>> mask.shape, int((~mask).sum()), bool(mask.any(axis=1).all())  # 150 of 300 entries missing
    ((100, 3), 150, True)
    """
    n = _check_int(n, "n", 0)
    m = _check_int(n_modalities, "n_modalities", 1)
    rate = _check_entry_rate(rate, m)
    rng = _check_rng(rng)
    mask = np.ones((n, m), dtype=bool)
    protected = rng.integers(0, m, size=n)
    free = n * (m - 1)
    k = min(_round_count(rate * n * m), free)
    if k == 0:
        return mask
    chosen = rng.choice(free, size=k, replace=False)
    rows = chosen // (m - 1)
    slot = chosen % (m - 1)  # index among the row's M-1 unprotected modalities
    cols = slot + (slot >= protected[rows])  # skip over the protected column
    mask[rows, cols] = False
    return mask


def sample_rate_mask(n: int, n_modalities: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Sample-rate (COMPLETER / DCP) mask: exactly ``floor(rate*n + 0.5)`` incomplete samples.

    The incomplete samples are drawn uniformly without replacement; each one
    drops k modalities with k uniform in 1..M-1, the k chosen uniformly, so it
    keeps >= 1. The other samples are complete.

    Valid range: 0 <= rate <= 1; any rate > 0 needs M >= 2.

    Returns: (n, M) bool, True = present.
    """
    n = _check_int(n, "n", 0)
    m = _check_int(n_modalities, "n_modalities", 1)
    rate = check_rate(rate, "rate")
    rng = _check_rng(rng)
    if m == 1 and rate > 0:
        raise ValueError(
            f"sample rate {rate:g} is impossible with 1 modality: an incomplete sample would "
            "have no modality left (the only valid rate is 0)"
        )
    mask = np.ones((n, m), dtype=bool)
    k = _round_count(rate * n)
    if k == 0:
        return mask
    rows = rng.choice(n, size=k, replace=False)
    n_drop = rng.integers(1, m, size=k)  # 1..M-1
    # Rank of each modality in a random permutation per row; drop the n_drop lowest.
    ranks = np.argsort(np.argsort(rng.random((k, m)), axis=1), axis=1)
    mask[rows] = ranks >= n_drop[:, None]
    return mask


def per_modality_mask(
    n: int,
    rates: Sequence[float],
    rng: np.random.Generator,
    keep_at_least_one: bool = True,
) -> np.ndarray:
    """Independent per-modality mask: modality m is missing with probability ``rates[m]``.

    Draws are independent across samples and modalities. With
    ``keep_at_least_one``, a sample left with nothing gets exactly one
    modality back, chosen uniformly among all M (not weighted by the rates,
    so the rule is simple to reason about). Effect on realised rates: the
    expected missing fraction of modality m becomes ``p_m - prod_k(p_k) / M``
    instead of ``p_m``; the correction is negligible unless every rate is high.

    Valid range: each rate in [0, 1]; M = len(rates) >= 1.

    Returns: (n, M) bool, True = present.
    """
    n = _check_int(n, "n", 0)
    if isinstance(rates, (str, bytes, dict)) or not hasattr(rates, "__iter__"):
        raise ValueError(f"rates must be a sequence of M numbers in [0, 1], got {rates!r}")
    p = np.array([check_rate(r, f"rates[{j}]") for j, r in enumerate(rates)], dtype=float)
    if p.size == 0:
        raise ValueError("rates must hold one rate per modality (at least one), got an empty sequence")
    rng = _check_rng(rng)
    mask = rng.random((n, p.size)) >= p  # P(missing) = P(u < p) = p
    if keep_at_least_one:
        empty = np.flatnonzero(~mask.any(axis=1))
        mask[empty, rng.integers(0, p.size, size=empty.size)] = True
    return mask


def fixed_subset_mask(n: int, n_modalities: int, subset: Sequence[int]) -> np.ndarray:
    """Every sample sees exactly the modalities in ``subset`` (indices into 0..M-1).

    ``subset`` must be non-empty, without duplicates, every index in [0, M).

    Returns: (n, M) bool, True = present.
    """
    n = _check_int(n, "n", 0)
    m = _check_int(n_modalities, "n_modalities", 1)
    idx = check_subset(subset, m)
    mask = np.zeros((n, m), dtype=bool)
    mask[:, list(idx)] = True
    return mask


def check_subset(subset: Sequence[int], n_modalities: int) -> tuple[int, ...]:
    """``subset`` as a sorted tuple of valid modality indices; ValueError naming the problem."""
    if isinstance(subset, (str, bytes)) or not hasattr(subset, "__iter__"):
        raise ValueError(f"subset must be a sequence of modality indices, got {subset!r}")
    items = list(subset)
    if not items:
        raise ValueError("subset must name at least one modality, got an empty subset")
    for s in items:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or not 0 <= int(s) < n_modalities:
            raise ValueError(
                f"subset entries must be modality indices in [0, {n_modalities}), got {s!r} in {items!r}"
            )
    if len(set(int(s) for s in items)) != len(items):
        raise ValueError(f"subset has duplicate modality indices: {items!r}")
    return tuple(sorted(int(s) for s in items))


def label_mnar_class_rates(
    labels: np.ndarray, n_modalities: int, rate: float, strength: float = 0.5
) -> dict:
    """Per-class entry rates of the label-dependent MNAR mechanism.

    With classes sorted ``c_0 < ... < c_{K-1}`` and class frequencies ``w_c``:

    - position ``u_c = rank(c) / (K - 1)`` (0 for a single class);
    - centred so the frequency-weighted mean is 0: ``t_c = u_c - sum_c w_c u_c``,
      then scaled by ``1 / max_c |t_c|`` so it lies in [-1, 1];
    - class entry rate ``q_c = rate + strength * d * t_c`` with
      ``d = min(rate, (1 - 1/M) - rate)``, the largest symmetric spread that
      keeps every ``q_c`` feasible (in [0, 1 - 1/M]).

    So higher classes lose more, the frequency-weighted mean of ``q_c`` is
    ``rate`` (the overall entry rate is ``rate`` up to per-class rounding),
    and ``strength`` in [0, 1] sets how far classes differ (0 = MCAR). At
    ``rate`` = 0 or ``rate`` = 1 - 1/M no spread is possible.

    Returns: {class label (python scalar): entry rate}.
    """
    m = _check_int(n_modalities, "n_modalities", 1)
    rate = _check_entry_rate(rate, m)
    strength = check_rate(strength, "strength")
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be a 1-D array of class labels, got shape {labels.shape}")
    classes, counts = np.unique(labels, return_counts=True)
    if classes.size == 0:
        return {}
    u = np.arange(classes.size) / max(classes.size - 1, 1)
    t = u - np.sum(counts * u) / counts.sum()
    scale = np.abs(t).max()
    if scale > 0:
        t = t / scale
    spread = strength * min(rate, max_entry_rate(m) - rate)
    q = np.clip(rate + spread * t, 0.0, max_entry_rate(m))  # clip only guards round-off
    return {c.item(): float(qc) for c, qc in zip(classes, q)}


def label_mnar_mask(
    labels: np.ndarray,
    n_modalities: int,
    rate: float,
    rng: np.random.Generator,
    strength: float = 0.5,
) -> np.ndarray:
    """Label-dependent MNAR mask: the entry rate depends on the class.

    Each class c gets its own entry rate ``q_c`` (see ``label_mnar_class_rates``:
    spread linearly in class rank around ``rate``, frequency-weighted mean
    ``rate``), and its rows get an ``entry_rate_mask`` with that rate, so each
    class's missing-entry count is exact and every sample keeps >= 1 modality.

    labels: (n,) class labels (any sortable discrete values); not mutated.
    Valid range: 0 <= rate <= 1 - 1/M, 0 <= strength <= 1.

    Returns: (n, M) bool, True = present.
    """
    rng = _check_rng(rng)
    rates = label_mnar_class_rates(labels, n_modalities, rate, strength)
    labels = np.asarray(labels)
    m = int(n_modalities)
    mask = np.ones((labels.shape[0], m), dtype=bool)
    for c, q in rates.items():  # sorted class order -> deterministic draws
        rows = np.flatnonzero(labels == c)
        mask[rows] = entry_rate_mask(rows.size, m, q, rng)
    return mask


# -------------------------------------------------------------- bookkeeping


def all_subsets(n_modalities: int) -> list[tuple[int, ...]]:
    """All 2^M - 1 non-empty subsets of range(M), by size then lexicographically.

    >>> all_subsets(3)
    [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]
    """
    m = _check_int(n_modalities, "n_modalities", 1)
    return [c for k in range(1, m + 1) for c in combinations(range(m), k)]


def subset_name(subset: Sequence[int], names: Sequence[str]) -> str:
    """``"fou+kar"``: names of ``subset`` joined by '+' in modality order; ``"none"`` if empty.

    >>> subset_name([2, 0], ["fou", "fac", "kar"]), subset_name([], ["fou"])
    ('fou+kar', 'none')
    """
    idx = sorted(int(i) for i in subset)
    if not idx:
        return "none"
    return "+".join(names[i] for i in idx)


def _as_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.ndim != 2:
        raise ValueError(f"mask must be a 2-D bool array (n, M), got {mask.dtype} {mask.shape}")
    return mask


def realised_missingness(mask: np.ndarray, modality_names: Sequence[str]) -> dict:
    """The figures PROTOCOLS.md asks to record next to any asked rate (JSON-ready).

    mask: (n, M) bool, n >= 1. Keys: ``n_samples``, ``missing_entry_fraction``,
    ``incomplete_sample_fraction``, ``complete_sample_fraction``,
    ``empty_sample_fraction``, ``per_modality_missing`` (name -> fraction) and
    ``subset_counts`` (subset name -> count, non-zero subsets only, ordered by
    size then modality order, the empty subset last as ``"none"``).
    """
    mask = _as_mask(mask)
    names = list(modality_names)
    n, m = mask.shape
    if len(names) != m:
        raise ValueError(f"{len(names)} modality names for a mask with {m} columns")
    if n == 0:
        raise ValueError("mask has no rows: realised rates are undefined for 0 samples")
    present = mask.sum(axis=1)
    # One row pattern -> one count; np.unique avoids a 2^M table for large M.
    patterns, counts = np.unique(mask, axis=0, return_counts=True)
    subsets = []
    for row, count in zip(patterns, counts):
        idx = tuple(np.flatnonzero(row).tolist())
        key = (len(idx) == 0, len(idx), idx)  # empty last, then size, then lexicographic
        subsets.append((key, subset_name(idx, names), int(count)))
    subsets.sort()
    return {
        "n_samples": int(n),
        # Counts over totals (not 1 - mean) so 1200 of 12000 reads 0.1, not 0.09999999999999998.
        "missing_entry_fraction": float(np.count_nonzero(~mask) / mask.size),
        "incomplete_sample_fraction": float(np.mean(present < m)),
        "complete_sample_fraction": float(np.mean(present == m)),
        "empty_sample_fraction": float(np.mean(present == 0)),
        "per_modality_missing": {name: float(np.count_nonzero(~mask[:, j]) / n) for j, name in enumerate(names)},
        "subset_counts": {name: count for _, name, count in subsets},
    }


def mask_checksum(mask: np.ndarray) -> str:
    """sha256 hex of the mask's shape and its bits packed in C order.

    Two masks share a checksum iff they have the same shape and entries, so a
    run can record exactly which mask table it used.
    """
    mask = _as_mask(mask)
    h = hashlib.sha256()
    h.update(f"mlmm-mask:{mask.shape[0]}x{mask.shape[1]}:".encode())
    h.update(np.packbits(np.ascontiguousarray(mask), axis=None).tobytes())
    return h.hexdigest()
