"""Train / validation / test splits of a dataset.

``fixed`` uses the dataset's shipped train/test split (for ``handwritten``
that is the TMC-style 1600/400 split, so ``tmc`` is an alias); ``random`` is
a seeded stratified 80/20 split. In both, the validation split is carved out
of the training rows (stratified, seeded), never out of the test rows:
model selection never sees the test split.
"""

from __future__ import annotations

import numpy as np

from .base import MultimodalDataset, stratified_split

SPLIT_KINDS = ("fixed", "tmc", "random")


def make_splits(data: MultimodalDataset, kind: str = "fixed", seed: int = 0, test_fraction: float = 0.2,
                val_fraction: float = 0.15) -> tuple[MultimodalDataset, MultimodalDataset, MultimodalDataset]:
    """(train, val, test) datasets.

    kind: ``fixed``/``tmc`` — the shipped ``train``/``test`` split (the seed
    only moves the validation carve-out; a shipped ``valid`` split, as in files loaded by
    ``mlmm.data.loaders``, is used as is); ``random`` — stratified
    ``test_fraction`` test split drawn with ``seed``.
    """
    if kind not in SPLIT_KINDS:
        raise ValueError(f"unknown split {kind!r}; known: {', '.join(SPLIT_KINDS)}")
    labels = data.labels
    if data.spec.task.kind == "regression":  # stratify on quintiles of the (first) target: a float is no class
        first = labels.reshape(len(labels), -1)[:, 0]
        labels = np.searchsorted(np.quantile(first, [0.2, 0.4, 0.6, 0.8]), first, side="right")
    if kind in ("fixed", "tmc"):
        if "train" not in data.splits or "test" not in data.splits:
            raise ValueError(f"dataset {data.spec.name!r} ships no fixed train/test split; use --split random")
        train_idx, test_idx = data.splits["train"], data.splits["test"]
    else:
        train_idx, test_idx = stratified_split(labels, test_fraction, seed)
    if kind in ("fixed", "tmc") and len(data.splits.get("valid", ())):  # the file's own validation split (MMSA, AV-MNIST)
        return data.subset(train_idx), data.subset(data.splits["valid"]), data.subset(np.asarray(test_idx))
    # Seed offset so the validation carve-out differs from the test draw of the same seed.
    fit_pos, val_pos = stratified_split(labels[train_idx], val_fraction, seed + 10_007)
    return (data.subset(train_idx[fit_pos]), data.subset(train_idx[val_pos]), data.subset(np.asarray(test_idx)))
