"""Train / validation / test splits of a dataset.

``fixed`` uses the dataset's shipped train/test split (for ``handwritten``
that is the TMC-style 1600/400 split, so ``tmc`` is an alias); ``random`` is
a seeded stratified 80/20 split. In both, the validation split is carved out
of the training rows (stratified, seeded), never out of the test rows:
model selection never sees the test split.

Grouped splits, for data whose rows come in groups (several recordings of one
subject, several visits of one patient; ``MultimodalDataset.groups``). A
random split of such data puts rows of one subject on both sides, and the
test score then measures recognising a subject seen in training, not
generalising to a new one (a leak). In a grouped split no group is on two
sides, and the validation carve-out is grouped too:

- ``group``: a seeded, stratified grouped 80/20 train/test split
  (``sklearn.model_selection.StratifiedGroupKFold``, first of 5 folds) and a
  grouped validation carve-out from the training groups.
- ``logo``: leave one group out: fold ``i`` (``logo:i``) tests on the i-th
  group (sorted ids) and trains on the others (``LeaveOneGroupOut``);
  ``mlmm run --split logo`` runs every fold and reports each and pooled.
- ``group-kfold``: 5 stratified grouped folds (``StratifiedGroupKFold``,
  shuffled with the seed); ``group-kfold:i`` is fold i.

A dataset that ships group ids takes ``group`` as its default split
(``default_split``): ``fixed`` on such a dataset without a shipped train/test
split is ``group``, and a dataset that ships both ships a grouped one
(``synthetic-subjects``). ``random`` on a dataset with group ids warns
(``GroupLeakWarning``).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.model_selection import LeaveOneGroupOut, StratifiedGroupKFold

from ..errors import MlmmWarning
from .base import MultimodalDataset, stratified_split

SPLIT_KINDS = ("fixed", "tmc", "random", "group", "logo", "group-kfold")
#: Split kinds that never put one group on two sides (they need ``MultimodalDataset.groups``).
GROUP_KINDS = ("group", "logo", "group-kfold")
#: Split kinds made of folds: ``kind:i`` is fold i; the bare kind means "every fold" to ``mlmm run``.
FOLD_KINDS = ("logo", "group-kfold")
GROUP_KFOLD_SPLITS = 5


class GroupLeakWarning(MlmmWarning):
    """A split that ignores the dataset's group ids: one group's rows land in training and test."""


def parse_split(split: str) -> tuple[str, int | None]:
    """``"logo:3"`` -> ``("logo", 3)``; ``"random"`` -> ``("random", None)``. Unknown kinds, a fold on a kind
    without folds, or a fold that is not a non-negative integer are errors naming the split."""
    if not isinstance(split, str):
        raise ValueError(f"split must be a string, got {split!r}")
    kind, sep, fold = split.partition(":")
    if kind not in SPLIT_KINDS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLIT_KINDS)} "
                         f"({', '.join(k + ':i' for k in FOLD_KINDS)} for fold i)")
    if not sep:
        return kind, None
    if kind not in FOLD_KINDS:
        raise ValueError(f"split {split!r}: only {', '.join(FOLD_KINDS)} have folds")
    if not fold.isdigit():
        raise ValueError(f"split {split!r}: the fold must be an integer >= 0")
    return kind, int(fold)


def check_split(split: str) -> str:
    """``split`` if it names a split kind (``parse_split``), else ``ValueError``."""
    parse_split(split)
    return split


def default_split(data: MultimodalDataset) -> str:
    """``group`` for a dataset that ships group ids (a random split would leak), else ``fixed`` where the
    dataset ships a train/test split, else ``random``."""
    if data.groups is not None:
        return "group"
    return "fixed" if "train" in data.splits and "test" in data.splits else "random"


def n_folds(data: MultimodalDataset, split: str) -> int:
    """How many folds ``split``'s kind has on ``data`` (1 for kinds without folds)."""
    kind, _ = parse_split(split)
    if kind not in FOLD_KINDS:
        return 1
    groups = _require_groups(data, kind)
    n_groups = len(np.unique(groups))
    return n_groups if kind == "logo" else min(GROUP_KFOLD_SPLITS, n_groups)


def fold_splits(data: MultimodalDataset, split: str) -> list[str]:
    """``split`` as the list of its folds (``logo`` -> ``["logo:0", ..., "logo:G-1"]``); a split that is not
    a bare fold kind is returned alone. A grouped kind on data without group ids is an error."""
    kind, fold = parse_split(split)
    if kind in GROUP_KINDS:
        _require_groups(data, kind)
    if kind not in FOLD_KINDS or fold is not None:
        return [split]
    return [f"{kind}:{i}" for i in range(n_folds(data, kind))]


def make_splits(data: MultimodalDataset, kind: str = "fixed", seed: int = 0, test_fraction: float = 0.2,
                val_fraction: float = 0.15) -> tuple[MultimodalDataset, MultimodalDataset, MultimodalDataset]:
    """(train, val, test) datasets.

    kind: ``fixed``/``tmc`` — the shipped ``train``/``test`` split (the seed
    only moves the validation carve-out; a shipped ``valid`` split, as in files loaded by
    ``mlmm.data.loaders``, is used as is); ``random`` — stratified
    ``test_fraction`` test split drawn with ``seed``; ``group``, ``logo:i``, ``group-kfold:i`` —
    grouped splits (module docstring). A bare ``logo`` / ``group-kfold`` means fold 0.
    """
    split = kind
    kind, fold = parse_split(split)
    labels = data.labels
    if data.spec.task.kind == "regression":  # stratify on quintiles of the (first) target: a float is no class
        first = labels.reshape(len(labels), -1)[:, 0]
        labels = np.searchsorted(np.quantile(first, [0.2, 0.4, 0.6, 0.8]), first, side="right")
    shipped = "train" in data.splits and "test" in data.splits
    if kind in ("fixed", "tmc") and not shipped and data.groups is not None:
        kind = "group"  # the default split of a dataset with group ids
    if kind == "random" and data.groups is not None:
        warnings.warn(f"split 'random' on dataset {data.spec.name!r}, whose rows carry group ids: rows of one group "
                      "land in training and test, so the test score flatters (use --split group)",
                      GroupLeakWarning, stacklevel=2)
    if kind in GROUP_KINDS:
        groups = _require_groups(data, kind)
        train_idx, test_idx = _grouped_test(labels, groups, kind, fold or 0, seed, test_fraction, split)
        fit_pos, val_pos = _grouped_carve_out(labels[train_idx], groups[train_idx], val_fraction, seed + 10_007,
                                              split)
        return data.subset(train_idx[fit_pos]), data.subset(train_idx[val_pos]), data.subset(test_idx)
    if kind in ("fixed", "tmc"):
        if not shipped:
            raise ValueError(f"dataset {data.spec.name!r} ships no fixed train/test split; use --split random")
        train_idx, test_idx = data.splits["train"], data.splits["test"]
    else:
        train_idx, test_idx = stratified_split(labels, test_fraction, seed)
    # the file's own validation split (MMSA, AV-MNIST)
    if kind in ("fixed", "tmc") and len(data.splits.get("valid", ())):
        return data.subset(train_idx), data.subset(data.splits["valid"]), data.subset(np.asarray(test_idx))
    # Seed offset so the validation carve-out differs from the test draw of the same seed.
    fit_pos, val_pos = stratified_split(labels[train_idx], val_fraction, seed + 10_007)
    return (data.subset(train_idx[fit_pos]), data.subset(train_idx[val_pos]), data.subset(np.asarray(test_idx)))


def _require_groups(data: MultimodalDataset, kind: str) -> np.ndarray:
    if data.groups is None:
        raise ValueError(f"split {kind!r} needs group ids but dataset {data.spec.name!r} has none "
                         "(give --group-column for a table file, or use --split random)")
    return data.groups


def _stratified_group_folds(labels: np.ndarray, groups: np.ndarray, n_splits: int, seed: int):
    # StratifiedGroupKFold warns when a class has fewer members than folds; the groups still never straddle.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed % 2**32)
        return list(folds.split(np.zeros(len(labels)), labels, groups))


def _grouped_test(labels, groups, kind: str, fold: int, seed: int, test_fraction: float,
                  split: str) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows) of the grouped ``kind``, fold ``fold``."""
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise ValueError(f"split {split!r}: {n_groups} group in the data; a grouped split needs at least 2")
    if kind == "logo":
        folds = list(LeaveOneGroupOut().split(np.zeros(len(labels)), labels, groups))
    elif kind == "group-kfold":
        folds = _stratified_group_folds(labels, groups, min(GROUP_KFOLD_SPLITS, n_groups), seed)
    else:
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        folds = _stratified_group_folds(labels, groups, max(2, min(round(1 / test_fraction), n_groups)), seed)
    if fold >= len(folds):
        raise ValueError(f"split {split!r}: fold {fold} does not exist; this data has {len(folds)} folds "
                         f"(0-{len(folds) - 1})")
    train, test = folds[fold]
    return np.sort(train), np.sort(test)


def _grouped_carve_out(labels, groups, val_fraction: float, seed: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(fit positions, validation positions) within the training rows, no group on both sides."""
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise ValueError(f"split {split!r}: the training rows hold {n_groups} group; the grouped validation "
                         "carve-out needs at least 2")
    fit, val = _stratified_group_folds(labels, groups, max(2, min(round(1 / val_fraction), n_groups)), seed)[0]
    return np.sort(fit), np.sort(val)
