"""MultiBench AV-MNIST arrays: MNIST digits (image) + spoken-digit spectrograms (audio).

Layout (MultiBench ``datasets/avmnist/get_data.py``), under one folder::

    image/train_data.npy  (60000, 784)  image/test_data.npy  (10000, 784)   pixels 0..255
    audio/train_data.npy  (60000, 112, 112)  audio/test_data.npy (10000, 112, 112)   0..255
    train_labels.npy (60000,)  test_labels.npy (10000,)

The loader scales both to [0, 1] (as MultiBench does by default), reshapes images to
(1, 28, 28) and spectrograms to (1, 112, 112), and keeps MultiBench's split:
the last 5000 training rows are ``valid``. Every modality is present (the dataset
has no natural missingness). Files are read with ``allow_pickle=False``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..base import MultimodalDataset
from ._build import build_dataset
from ._files import check_known, user_file

N_VALID = 5000  # MultiBench: trainlist[55000:60000] is the validation set


def _load(path: Path, what: str) -> np.ndarray:
    p = user_file(path, f"AV-MNIST {what}")
    check_known(p)
    try:
        return np.load(p, allow_pickle=False)
    except Exception as err:  # truncated header / data, pickled object arrays
        raise ValueError(f"{p}: cannot read as a .npy array ({type(err).__name__}: {err})") from None


def load_avmnist(folder: str | Path, scale: bool = True, n_valid: int = N_VALID,
                 name: str = "avmnist") -> MultimodalDataset:
    """AV-MNIST from ``folder``: modalities image (1, 28, 28) and audio (1, 112, 112), 10 classes,
    splits train / valid (last ``n_valid`` training rows) / test."""
    root = Path(folder)
    parts = {}
    for split in ("train", "test"):
        image = _load(root / "image" / f"{split}_data.npy", f"{split} images")
        audio = _load(root / "audio" / f"{split}_data.npy", f"{split} spectrograms")
        labels = _load(root / f"{split}_labels.npy", f"{split} labels")
        n = len(labels)
        if image.shape[0] != n or image[0].size != 784:
            raise ValueError(f"{root / 'image' / f'{split}_data.npy'}: shape {image.shape}, expected ({n}, 784)")
        if audio.shape[0] != n or audio[0].size != 112 * 112:
            raise ValueError(f"{root / 'audio' / f'{split}_data.npy'}: shape {audio.shape}, expected ({n}, 112, 112)")
        parts[split] = (image.reshape(n, 1, 28, 28), audio.reshape(n, 1, 112, 112), labels.astype(np.int64))
    n_train, n_test = len(parts["train"][2]), len(parts["test"][2])
    if not 0 <= n_valid < n_train:
        raise ValueError(f"n_valid must be in [0, {n_train}), got {n_valid}")
    factor = 1.0 / 255.0 if scale else 1.0
    inputs = {m: np.concatenate([parts["train"][k], parts["test"][k]]).astype(np.float32) * factor
              for k, m in enumerate(("image", "audio"))}
    target = np.concatenate([parts["train"][2], parts["test"][2]])
    k = int(target.max()) + 1
    splits = {"train": np.arange(n_train - n_valid), "valid": np.arange(n_train - n_valid, n_train),
              "test": np.arange(n_train, n_train + n_test)}
    mask = np.ones((n_train + n_test, 2), bool)
    return build_dataset(name, inputs, target, mask, "classification", tuple(str(c) for c in range(max(k, 2))), splits,
                         {"image": "image", "audio": "image"}, source=str(root))
