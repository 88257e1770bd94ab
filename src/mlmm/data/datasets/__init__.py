"""Dataset loaders: two real benchmarks bundled with the package and a synthetic generator.

Each loader returns a fresh ``MultimodalDataset`` with ``train``/``test`` splits.
Use ``mlmm.data.registry.load_dataset(name, **params)`` to load one by name.
"""

from ._vendored import ChecksumError
from .basicmotions import load_basicmotions
from .digits_captions import digits_captions, load_digits_captions, save_digits_captions
from .handwritten import load_handwritten
from .synthetic import make_synthetic, make_synthetic_subjects

__all__ = ["ChecksumError", "digits_captions", "load_basicmotions", "load_digits_captions", "load_handwritten",
           "make_synthetic", "make_synthetic_subjects",
           "save_digits_captions"]
