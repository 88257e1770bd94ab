"""Dataset loaders: real benchmarks built from files bundled with the package, and synthetic generators.

Each loader returns a fresh ``MultimodalDataset`` with ``train``/``test`` splits.
Use ``mlmm.data.registry.load_dataset(name, **params)`` to load one by name.
"""

from ._vendored import ChecksumError
from .basicmotions import load_basicmotions
from .digits_captions import digits_captions, load_digits_captions, save_digits_captions
from .digits_captions_10k import (
    digits_captions_10k,
    load_digits_captions_10k,
    load_digits_captions_10k_minilm,
    save_digits_captions_10k,
)
from .handwritten import load_handwritten
from .synthetic import make_synthetic, make_synthetic_subjects

__all__ = ["ChecksumError", "digits_captions", "digits_captions_10k", "load_basicmotions", "load_digits_captions",
           "load_digits_captions_10k", "load_digits_captions_10k_minilm", "load_handwritten", "make_synthetic",
           "make_synthetic_subjects", "save_digits_captions", "save_digits_captions_10k"]
