"""Shapley values of modalities and their interactions, from a value function on subsets.

Pure game theory on arrays, independent of torch models: ``v`` is an (N, 2^M)
array where ``v[i, S]`` is sample i's value with the modalities of bitmask S
(bit j = modality j). Formulas (M players, S ⊆ N \\ {i}):

    φ_i      = Σ_S |S|! (M - |S| - 1)! / M! · (v(S ∪ i) - v(S))                 Shapley value
    I_ij     = Σ_{S ⊆ N\\{i,j}} |S|! (M - |S| - 2)! / (M - 1)! · Δ_ij v(S)       Shapley interaction index
               Δ_ij v(S) = v(S ∪ ij) - v(S ∪ i) - v(S ∪ j) + v(S)               (Grabisch, 1997)
    d(S)     = Σ_{T ⊆ S} (-1)^{|S| - |T|} v(T)                                  Harsanyi dividend (Möbius)

Efficiency: Σ_i φ_i = v(N) - v(∅) for every sample, and Σ_{S ≠ ∅} d(S) = v(N) - v(∅).
"""

from __future__ import annotations

from math import factorial

import numpy as np


def popcount(n_modalities: int) -> np.ndarray:
    """(2^M,) number of set bits of every subset bitmask."""
    masks = np.arange(2 ** n_modalities)
    return np.array([bin(s).count("1") for s in masks], dtype=np.int64)


def _check(v: np.ndarray) -> int:
    v = np.asarray(v)
    if v.ndim != 2:
        raise ValueError(f"value table must be (N, 2^M); got shape {v.shape}")
    m = int(np.log2(v.shape[1])) if v.shape[1] > 0 else -1
    if m < 1 or 2 ** m != v.shape[1]:
        raise ValueError(f"value table must have 2^M columns (one per modality subset); got {v.shape[1]}")
    return m


def shapley_values(v: np.ndarray) -> np.ndarray:
    """(N, 2^M) values -> (N, M) exact Shapley values."""
    m = _check(v)
    size = popcount(m)
    phi = np.zeros((v.shape[0], m))
    for i in range(m):
        bit = 1 << i
        without = np.array([s for s in range(2 ** m) if not s & bit])
        k = size[without]
        weights = np.array([factorial(int(kk)) * factorial(m - int(kk) - 1) for kk in k]) / factorial(m)
        phi[:, i] = (v[:, without | bit] - v[:, without]) @ weights
    return phi


def interaction_index(v: np.ndarray) -> np.ndarray:
    """(N, 2^M) values -> (N, M, M) pairwise Shapley interaction index (symmetric, zero diagonal)."""
    m = _check(v)
    size = popcount(m)
    out = np.zeros((v.shape[0], m, m))
    for i in range(m):
        for j in range(i + 1, m):
            both = (1 << i) | (1 << j)
            rest = np.array([s for s in range(2 ** m) if not s & both])
            k = size[rest]
            weights = np.array([factorial(int(kk)) * factorial(m - int(kk) - 2) for kk in k]) / factorial(m - 1)
            delta = v[:, rest | both] - v[:, rest | (1 << i)] - v[:, rest | (1 << j)] + v[:, rest]
            out[:, i, j] = out[:, j, i] = delta @ weights
    return out


def harsanyi_dividends(v: np.ndarray) -> np.ndarray:
    """(N, 2^M) values -> (N, 2^M) Harsanyi dividends d(S) (the fast Möbius transform)."""
    m = _check(v)
    d = np.array(v, dtype=np.float64, copy=True)
    for i in range(m):
        bit = 1 << i
        has = np.array([s for s in range(2 ** m) if s & bit])
        d[:, has] -= d[:, has ^ bit]
    return d


def permutation_shapley(value_of_masks, n_samples: int, n_modalities: int, n_permutations: int,
                        rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sampled-permutation estimate (Castro et al., 2009) for many modalities.

    ``value_of_masks(masks)`` maps an (N, M) bool array (each sample's coalition) to (N,)
    values. Per permutation, M + 1 calls (coalitions grow along each sample's own random
    order), so every permutation satisfies efficiency exactly. Returns (φ (N, M) mean,
    standard error (N, M) = std over permutations / sqrt(P), v(∅) and v(N) as (2, N)).
    """
    if n_permutations < 2:
        raise ValueError(f"n_permutations must be >= 2 to give a standard error, got {n_permutations}")
    total = np.zeros((n_permutations, n_samples, n_modalities))
    rows = np.arange(n_samples)
    ends = None
    for p in range(n_permutations):
        order = np.argsort(rng.random((n_samples, n_modalities)), axis=1)  # (N, M) a permutation per sample
        masks = np.zeros((n_samples, n_modalities), dtype=bool)
        prev = value_of_masks(masks)
        first = prev
        for k in range(n_modalities):
            masks[rows, order[:, k]] = True
            cur = value_of_masks(masks.copy())
            total[p, rows, order[:, k]] = cur - prev
            prev = cur
        ends = np.stack([first, prev])
    phi = total.mean(axis=0)
    se = total.std(axis=0, ddof=1) / np.sqrt(n_permutations)
    return phi, se, ends
