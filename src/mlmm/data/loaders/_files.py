"""Opening the user's files: existence checks, and known published files checked by sha256.

The user brings every file; nothing is downloaded. When a file's *name* is in
``KNOWN_SHA256`` its digest is compared with the published copy we know; a
mismatch only **warns** (``UnknownFileVersionWarning``), because a re-exported or
newer release of the same file is legitimate, and a file not in the table (the
user's own data) is never checked at all.

What is known (verified here, not copied from hearsay): the UEA ``.ts`` files
below as shipped inside the ``aeon==1.6.0`` wheel (aeon/datasets/data/...),
which aeon copies from timeseriesclassification.com; the archive's own zip
may hold byte-different copies (line endings), which then warn. No checksum of
the MMSA pickles or MultiBench AV-MNIST arrays is listed: their publishers
give none that could be verified offline, so those files are not checked.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

from ...errors import MlmmWarning

#: file name -> (sha256, where this copy comes from).
KNOWN_SHA256: dict[str, tuple[str, str]] = {
    "BasicMotions_TRAIN.ts": ("8dc43cc6306cb679c888c01e26f91772ac4441a916da43bac8b79734a538b9d6", "aeon 1.6.0 wheel"),
    "BasicMotions_TEST.ts": ("79213102bc6fca1a398ad98ce1185dff0208fa3d1465e687f48288946b0ff8dc", "aeon 1.6.0 wheel"),
    "JapaneseVowels_TRAIN.ts": ("68a430eabd919cc77f40b1f5f3bc0dcafacc1486bca9260785aeb7d262cc78cd", "aeon 1.6.0 wheel"),
    "JapaneseVowels_TEST.ts": ("b3d41d6a0ca3bcad3afb9ca7d4365382aa51341e2e58bae2a574babdda5b9462", "aeon 1.6.0 wheel"),
}


class UnknownFileVersionWarning(MlmmWarning):
    """A file named like a known published file has a different sha256."""


def user_file(path: str | Path, what: str = "data file") -> Path:
    """``path`` as a Path after checking it is an existing file (error names it)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{what} {str(p)!r} does not exist or is not a file")
    return p


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_known(path: Path, table: dict[str, tuple[str, str]] | None = None) -> bool | None:
    """Compare ``path`` with the known published copy of the same name.

    Returns True (matches), False (differs: warned) or None (not a known file name).
    """
    entry = (KNOWN_SHA256 if table is None else table).get(path.name)
    if entry is None:
        return None
    expected, source = entry
    actual = sha256_of(path)
    if actual != expected:
        warnings.warn(
            f"{path}: sha256 {actual} differs from the known copy of {path.name} ({source}: {expected}); "
            "loading it anyway (a re-export can differ byte-wise), but results may not match published ones",
            UnknownFileVersionWarning, stacklevel=3,
        )
        return False
    return True
