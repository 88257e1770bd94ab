"""Pure structured-missingness functions for sequences and groups.

Time-level functions return a new (n, T) bool array of *observed steps*
(True = observed) for one sequence modality; ``systematic_mask`` returns an
(n, M) modality mask. All draw randomness only from the given
``numpy.random.Generator`` and never mutate their arguments. Counts are
rounded half up, as in ``functional``.

Every time-level function here keeps at least one observed step per row, so
it never removes a whole modality (a modality with no observed step would
count as missing; see ``mlmm.data.timemask``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .functional import _check_int, _check_rng, _round_count, check_rate

__all__ = [
    "async_steps",
    "burst_steps",
    "catastrophic_steps",
    "group_partition",
    "onset_range",
    "shift_sequences",
    "systematic_mask",
]


def burst_steps(n: int, n_steps: int, rate: float, block: int, rng: np.random.Generator) -> np.ndarray:
    """Intermittent bursts: every row loses exactly ``L = round(rate * T)`` steps, in
    ``ceil(L / block)`` blocks of ``block`` steps (the last one shorter when ``block``
    does not divide L), placed uniformly at random and apart (at least one observed
    step between two blocks) whenever the observed steps allow it, else possibly
    touching (so the rate stays exact). Needs L <= T - 1 (one step kept).

    Returns (n, T) bool, True = observed; every row has exactly T - L observed steps.
    """
    rng = _check_rng(rng)
    n, n_steps, block = _check_int(n, "n", 0), _check_int(n_steps, "n_steps", 1), _check_int(block, "block", 1)
    lost = _round_count(check_rate(rate, "rate") * n_steps)
    if lost > n_steps - 1:
        raise ValueError(f"burst rate {rate:g} loses {lost} of {n_steps} steps; "
                         f"at most {n_steps - 1} (one step is kept)")
    observed = np.ones((n, n_steps), dtype=bool)
    if lost == 0 or n == 0:
        return observed
    n_blocks = -(-lost // block)
    lengths = np.full(n_blocks, block)
    lengths[-1] = lost - block * (n_blocks - 1)
    kept = n_steps - lost
    # Stars and bars: block j goes after ``gap[j]`` of the kept steps (sorted gaps);
    # distinct gaps keep the blocks apart.
    if n_blocks <= kept + 1:
        gaps = np.sort(np.argsort(rng.random((n, kept + 1)), axis=1)[:, :n_blocks], axis=1)
    else:
        gaps = np.sort(rng.integers(0, kept + 1, size=(n, n_blocks)), axis=1)
    starts = gaps + np.concatenate([[0], np.cumsum(lengths)[:-1]])  # (n, n_blocks)
    t = np.arange(n_steps)
    inside = (t >= starts[:, :, None]) & (t < (starts + lengths)[:, :, None])  # (n, n_blocks, T)
    observed &= ~inside.any(axis=1)
    return observed


def catastrophic_steps(
    n: int, n_steps: int, fails: np.ndarray, onset_min: float, onset_max: float, rng: np.random.Generator
) -> np.ndarray:
    """A sensor that dies and stays dead: row i with ``fails[i]`` is observed at steps
    t < t_i only, t_i uniform on the integers of [max(1, ceil(onset_min*T)),
    min(T-1, floor(onset_max*T))] (so at least one step is observed and one lost);
    other rows are fully observed. Returns (n, T) bool, True = observed."""
    rng = _check_rng(rng)
    fails = np.asarray(fails, dtype=bool)
    if fails.shape != (n,):
        raise ValueError(f"fails must have shape ({n},), got {fails.shape}")
    lo, hi = onset_range(n_steps, onset_min, onset_max)
    onset = rng.integers(lo, hi + 1, size=n)
    t = np.arange(n_steps)
    return ~fails[:, None] | (t[None, :] < onset[:, None])


def onset_range(n_steps: int, onset_min: float, onset_max: float) -> tuple[int, int]:
    """The integer failure steps [lo, hi] allowed by the onset fractions (see ``catastrophic_steps``)."""
    onset_min, onset_max = check_rate(onset_min, "onset_min"), check_rate(onset_max, "onset_max")
    if onset_min > onset_max:
        raise ValueError(f"onset_min {onset_min:g} must be <= onset_max {onset_max:g}")
    if n_steps < 2:
        raise ValueError(f"a sensor failure needs sequences of at least 2 steps, got T = {n_steps}")
    lo = max(1, int(np.ceil(onset_min * n_steps - 1e-9)))
    hi = min(n_steps - 1, int(np.floor(onset_max * n_steps + 1e-9)))
    if lo > hi:
        raise ValueError(f"onset range [{onset_min:g}, {onset_max:g}] of T = {n_steps} holds no step in [1, T-1]")
    return lo, hi


def async_steps(n: int, n_steps: int, every: int, shift: int, random_phase: bool,
                rng: np.random.Generator) -> np.ndarray:
    """A slower or lagging sensor: steps t >= ``shift`` with (t - shift - phase_i) % every == 0
    are observed, phase_i uniform in [0, every) per row when ``random_phase`` (else 0),
    capped at the last step so that a row keeps at least one observed step.
    Returns (n, T) bool, True = observed. (The value shift itself is ``shift_sequences``.)"""
    rng = _check_rng(rng)
    every, shift = _check_int(every, "every", 1), _check_int(shift, "shift", 0)
    if shift >= n_steps:
        raise ValueError(f"shift {shift} must be < the sequence length {n_steps}")
    span = n_steps - shift
    phase = rng.integers(0, min(every, span), size=n) if random_phase and every > 1 else np.zeros(n, dtype=np.int64)
    t = np.arange(n_steps)
    return (t[None, :] >= shift) & ((t[None, :] - shift - phase[:, None]) % every == 0)


def shift_sequences(x: np.ndarray, shift: int) -> np.ndarray:
    """(n, T, C) -> new (n, T, C) lagged by ``shift`` steps: y[:, t] = x[:, t - shift] for
    t >= shift, zeros before (steps a lagging sensor has not delivered yet)."""
    y = np.zeros_like(x)
    if shift == 0:
        y[...] = x
    else:
        y[:, shift:] = x[:, :-shift]
    return y


def group_partition(n: int, n_groups: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) group ids 0..n_groups-1: a seeded random partition into groups whose sizes differ by at most one."""
    rng = _check_rng(rng)
    n_groups = _check_int(n_groups, "n_groups", 1)
    ids = np.arange(n) % n_groups
    return ids[rng.permutation(n)]


def systematic_mask(groups: Sequence, n_modalities: int, candidates: Sequence[int], rate: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Whole groups (subjects, devices) lack a modality: exactly ``round(rate * G)`` of the
    G distinct groups, drawn uniformly, each lose one modality drawn uniformly from
    ``candidates`` for every one of their samples. Returns (n, M) bool, True = present;
    every sample keeps at least one modality whenever some modality is not a candidate
    or there are >= 2 candidates."""
    rng = _check_rng(rng)
    rate = check_rate(rate, "rate")
    candidates = list(candidates)
    if not candidates:
        raise ValueError("systematic missingness needs at least one candidate modality")
    if len(candidates) == 1 and n_modalities == 1:
        raise ValueError("systematic missingness with a single modality would leave samples empty")
    unique, index = np.unique(np.asarray(groups), return_inverse=True)
    n_lacking = _round_count(rate * unique.size)
    lacking = rng.permutation(unique.size)[:n_lacking]
    lost = np.full(unique.size, -1)
    lost[lacking] = np.asarray(candidates)[rng.integers(0, len(candidates), size=n_lacking)]
    mask = np.ones((index.size, n_modalities), dtype=bool)
    rows = np.flatnonzero(lost[index] >= 0)
    mask[rows, lost[index][rows]] = False
    return mask
