"""Dataset loaders: two real benchmarks bundled with the package and a synthetic generator.

Each loader returns a fresh ``MultimodalDataset`` with ``train``/``test`` splits.
Use ``mlmm.data.registry.load_dataset(name, **params)`` to load one by name.
"""

from ._vendored import ChecksumError
from .basicmotions import load_basicmotions
from .handwritten import load_handwritten
from .synthetic import make_synthetic

__all__ = ["ChecksumError", "load_basicmotions", "load_handwritten", "make_synthetic"]
