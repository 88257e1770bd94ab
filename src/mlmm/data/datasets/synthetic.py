"""A synthetic multimodal classification task whose answer is known by construction.

Generative model (all draws from ``numpy.random.default_rng(seed)``)
----------------------------------------------------------------------
Labels are balanced: ``y`` is ``arange(n) % C`` in a random order.

Each sample carries a latent *class evidence* vector in R^C per modality::

    e_m(i) = 2 * onehot(y_i) + noise * ( sqrt(r) * z_i + sqrt(1 - r) * z_{m,i} )

with ``z_i`` ~ N(0, I_C) drawn once per sample and **shared by every modality**
and ``z_{m,i}`` ~ N(0, I_C) drawn independently per modality. So the class
means are the scaled simplex corners (pairwise distance 2*sqrt(2)), and
``r = redundancy`` is the fraction of the within-class variation of the
evidence that is common to all modalities (the correlation between two
modalities' evidence perturbations):

* ``redundancy=0``: modalities give independent evidence; combining them
  beats any single one (losing a modality costs accuracy).
* ``redundancy=1``: every modality sees the *same* noisy evidence; beyond
  its own sensor noise a second modality adds nothing (losing one is cheap).

Modality m observes its evidence through a fixed random linear map
``A_m`` (d_m x C; orthonormal columns when d_m >= C so class geometry is
kept, a random orthogonal projection otherwise), scaled by its
informativeness ``a_m``, plus independent sensor noise::

    x_m(i) = a_m * A_m e_m(i) + noise * eps_{m,i},    eps ~ N(0, I_{d_m})

``a_m = 0`` makes modality m pure noise, independent of the label and of the
other modalities (the evidence, shared part included, is multiplied by
``a_m``), so e.g. ``informativeness=[2, 0, 0]`` means only ``m0`` predicts y.
Larger ``a_m`` raises m's signal-to-sensor-noise ratio.

``kind="sequence"`` spreads the same vector over T=16 steps with a fixed
temporal profile ``phi`` (a half-sine bump of unit L2 norm) and draws fresh
sensor noise per step: ``X_m(i)[t] = a_m * phi[t] * A_m e_m(i) + noise * eps``,
shape (16, d_m). The matched filter ``sum_t phi[t] X[t]`` recovers the vector
model exactly, so both kinds are equally hard for a model that finds it.

Subjects (``n_subjects > 0``): row i belongs to subject ``s_i`` (balanced,
independent of the label), and each subject has its own way of showing each
class: an offset ``o[s, c]`` ~ N(0, subject_effect^2 I_C) added to the class
evidence of every modality, ``e_m(i) += o[s_i, y_i]``. A model that has seen a
subject's rows has learnt where that subject puts each class; on a subject it
has never seen, the offset is just more noise. So a random split (the same
subjects in train and test) scores higher than a grouped one: the leak
``make_synthetic_subjects`` exists to show. The subject draws come from a
second generator (``default_rng([seed, 1])``), so ``n_subjects=0`` gives the
very same data as before subjects existed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..base import MultimodalDataset, stratified_split
from ..spec import DatasetSpec, ModalitySpec, TaskSpec

SEQUENCE_LENGTH = 16
CLASS_SEPARATION = 2.0  # class means sit at CLASS_SEPARATION * onehot(y)
TEST_FRACTION = 0.25


def _per_modality(value, n_modalities: int, name: str, cast) -> list:
    """Broadcast a scalar to one value per modality, or check a list's length."""
    if isinstance(value, (list, tuple, np.ndarray)):
        values = [cast(v) for v in value]
        if len(values) != n_modalities:
            raise ValueError(f"{name} has {len(values)} entries for {n_modalities} modalities")
        return values
    return [cast(value)] * n_modalities


def _embedding(rng: np.random.Generator, dim: int, n_classes: int) -> np.ndarray:
    """(dim, n_classes) random map: orthonormal columns if dim >= C, orthonormal rows otherwise."""
    if dim >= n_classes:
        q, _ = np.linalg.qr(rng.standard_normal((dim, n_classes)))
        return q
    q, _ = np.linalg.qr(rng.standard_normal((n_classes, dim)))
    return q.T


def make_synthetic(
    n_samples: int = 600,
    n_classes: int = 3,
    n_modalities: int = 3,
    dims: int | Sequence[int] = 8,
    informativeness: float | Sequence[float] = 1.0,
    redundancy: float = 0.0,
    noise: float = 1.0,
    kind: str = "vector",
    seed: int = 0,
    n_subjects: int = 0,
    subject_effect: float = 0.0,
) -> MultimodalDataset:
    """A dataset drawn from the generative model in this module's docstring.

    Modalities ``m0, m1, ...``: ``vector`` of shape (d_m,) or ``sequence`` of
    shape (16, d_m), with ``d_m = dims`` (int) or ``dims[m]`` (list).
    ``informativeness`` (>= 0, scalar or per modality) scales modality m's
    class evidence; 0 = pure noise. ``redundancy`` in [0, 1] is the share of
    the evidence perturbation common to all modalities. ``noise`` (>= 0) is the
    standard deviation of both the evidence perturbation and the sensor noise.
    Target: (n_samples,) balanced labels 0..n_classes-1. Every modality is
    present. Splits: ``{"train", "test"}`` = ``stratified_split(y, 0.25, seed)``.
    ``n_subjects`` > 0 adds subject ids (``groups``) and per-subject class offsets of scale
    ``subject_effect`` (module docstring); the shipped train/test split is then grouped.

    Deterministic given the arguments; uses only a generator built from ``seed``.
    """
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    if n_modalities < 1:
        raise ValueError(f"n_modalities must be >= 1, got {n_modalities}")
    if n_samples < 4 * n_classes:
        # Fewer than 4 per class would leave the 25% test split without some class.
        raise ValueError(f"n_samples must be >= 4 * n_classes = {4 * n_classes}, got {n_samples}")
    if kind not in ("vector", "sequence"):
        raise ValueError(f"kind must be 'vector' or 'sequence', got {kind!r}")
    if not 0.0 <= redundancy <= 1.0:
        raise ValueError(f"redundancy must be in [0, 1], got {redundancy}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    dim_list = _per_modality(dims, n_modalities, "dims", int)
    gains = _per_modality(informativeness, n_modalities, "informativeness", float)
    if any(d < 1 for d in dim_list):
        raise ValueError(f"dims must be >= 1, got {dim_list}")
    if any(a < 0 for a in gains):
        raise ValueError(f"informativeness must be >= 0, got {gains}")

    if n_subjects < 0 or (n_subjects and n_samples < 2 * n_subjects):
        raise ValueError(f"n_subjects must be 0 or in [1, n_samples / 2], got {n_subjects}")
    if subject_effect < 0:
        raise ValueError(f"subject_effect must be >= 0, got {subject_effect}")
    subjects, offsets = None, 0.0
    if n_subjects:
        subject_rng = np.random.default_rng([seed, 1])
        subjects = (np.arange(n_samples) % n_subjects)[subject_rng.permutation(n_samples)]
        per_subject = subject_effect * subject_rng.standard_normal((n_subjects, n_classes, n_classes))

    rng = np.random.default_rng(seed)
    # Fixed draw order below: labels, shared perturbation, then per modality.
    y = (np.arange(n_samples) % n_classes)[rng.permutation(n_samples)]
    means = CLASS_SEPARATION * np.eye(n_classes)[y]  # (N, C)
    if subjects is not None:
        offsets = per_subject[subjects, y]  # (N, C): subject s_i's own offset for class y_i
    shared = rng.standard_normal((n_samples, n_classes))  # z_i, common to all modalities
    phi = np.sin(np.pi * (np.arange(SEQUENCE_LENGTH) + 0.5) / SEQUENCE_LENGTH)
    phi /= np.linalg.norm(phi)

    inputs, modalities = {}, []
    for m, (dim, gain) in enumerate(zip(dim_list, gains)):
        name = f"m{m}"
        own = rng.standard_normal((n_samples, n_classes))  # z_{m,i}
        evidence = means + offsets + noise * (np.sqrt(redundancy) * shared + np.sqrt(1.0 - redundancy) * own)
        signal = gain * evidence @ _embedding(rng, dim, n_classes).T  # (N, d_m)
        if kind == "vector":
            x = signal + noise * rng.standard_normal((n_samples, dim))
            shape: tuple[int, ...] = (dim,)
        else:
            x = phi[None, :, None] * signal[:, None, :]
            x = x + noise * rng.standard_normal((n_samples, SEQUENCE_LENGTH, dim))
            shape = (SEQUENCE_LENGTH, dim)
        inputs[name] = x.astype(np.float32)
        modalities.append(ModalitySpec(name, kind, shape))

    spec = DatasetSpec(
        name="synthetic" if subjects is None else "synthetic-subjects",
        modalities=tuple(modalities),
        task=TaskSpec("classification", n_classes=n_classes),
    )
    if subjects is None:
        train, test = stratified_split(y, TEST_FRACTION, seed=seed)
    else:  # no subject on both sides of the shipped split either
        from ..splits import _grouped_test

        train, test = _grouped_test(y, subjects, "group", 0, seed, TEST_FRACTION, "group")
    return MultimodalDataset(spec, inputs, y.astype(np.int64), splits={"train": train, "test": test},
                             groups=subjects)


def make_synthetic_subjects(n_samples: int = 600, n_subjects: int = 12, subject_effect: float = 2.5,
                            noise: float = 0.5, seed: int = 0, **params) -> MultimodalDataset:
    """``make_synthetic`` with subjects: 600 rows of 12 subjects (50 each) whose class evidence carries a
    per-subject, per-class offset of scale 2.5, noise 0.5 (module docstring). Ships group ids, so its default
    split is grouped; ``--split random`` shows the leak of a split that ignores subjects."""
    return make_synthetic(n_samples=n_samples, n_subjects=n_subjects, subject_effect=subject_effect, noise=noise,
                          seed=seed, **params)
