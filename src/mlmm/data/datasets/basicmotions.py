"""UEA BasicMotions: smart-watch accelerometer + gyroscope, 4 activities, 80 recordings.

Bundled from the copy shipped in the aeon 1.6.0 wheel (UEA multivariate time
series classification archive). The six .ts dimensions split into two sensor
modalities: channels 0-2 are the accelerometer, 3-5 the gyroscope. See
``mlmm/data/_files/DATA.md`` for provenance, licence and checksums.
"""

from __future__ import annotations

import numpy as np

from ..base import MultimodalDataset
from ..spec import DatasetSpec, ModalitySpec, TaskSpec
from ._vendored import FILES_DIR, read_vendored_npz

FILE = FILES_DIR / "basicmotions.npz"
SHA256 = "45baf8bfb2f6ac18c1e4d3ee7b2b6642dba31aa8b8a0a80bb34addc67e15cb8e"

SERIES_LENGTH = 100
# Modality -> slice of the original .ts dimensions.
CHANNELS = {"accelerometer": slice(0, 3), "gyroscope": slice(3, 6)}
# Label i is CLASS_NAMES[i]: the order of the .ts "@classLabel" header.
CLASS_NAMES = ("Standing", "Running", "Walking", "Badminton")

SPEC = DatasetSpec(
    name="basicmotions",
    modalities=tuple(ModalitySpec(name, "sequence", (SERIES_LENGTH, 3)) for name in CHANNELS),
    task=TaskSpec("classification", n_classes=len(CLASS_NAMES)),
)


def load_basicmotions() -> MultimodalDataset:
    """The 80 recordings with the fixed UEA train/test split.

    Modalities (``sequence``, per sample (T=100, C=3), raw sensor values):
    accelerometer = .ts dimensions 0-2, gyroscope = dimensions 3-5.
    Target: (80,) labels indexing ``CLASS_NAMES`` (Standing, Running, Walking,
    Badminton), 20 per class. Every modality is present.

    Splits: ``{"train": rows 0..39, "test": rows 40..79}``, the archive's own
    TRAIN/TEST files in their original order (10 per class in each).

    Each call returns a fresh dataset (the file is read and sha256-checked once
    per process); raises ``ChecksumError`` if the bundled file was altered.
    """
    arrays = read_vendored_npz(FILE, SHA256)
    if tuple(str(c) for c in arrays["class_names"]) != CLASS_NAMES:
        raise ValueError(f"{FILE}: class names {arrays['class_names']} != {CLASS_NAMES}")
    x = np.concatenate([arrays["x_train"], arrays["x_test"]])  # (80, 100, 6), a new array
    y = np.concatenate([arrays["y_train"], arrays["y_test"]])
    n_train = len(arrays["y_train"])
    return MultimodalDataset(
        SPEC,
        {name: np.ascontiguousarray(x[:, :, channels]) for name, channels in CHANNELS.items()},
        y,
        splits={"train": np.arange(n_train), "test": np.arange(n_train, len(y))},
    )
