"""How the CLI reports a failure: every user error and known runtime condition is one line
``mlmm: error: ...`` on stderr and exit code 2; anything else (a bug) is one line naming it
and exit code 1, with the traceback only under ``MLMM_DEBUG=1``.

Known: bad input (``ValueError`` — ``InvalidParameterError``, ``UnsafeFileError``, ``SpecError``,
``EmptySplitError``, ``DeviceError`` — and ``KeyError``-based unknown names), a fit that
failed (``TrainingDiverged``), file-system conditions (``OSError``: missing file, permission
denied, read-only file system, disk full), an SQLite database that cannot be written, memory
exhaustion, and the CLI's own ``UsageError``.
"""

from __future__ import annotations

import errno
import sqlite3

import torch

from ..errors import TrainingDiverged
from ..registry import UnknownNameError
from .common import UsageError

#: Exceptions the CLI reports as one line with exit code 2.
KNOWN = (UsageError, UnknownNameError, ValueError, OSError, TrainingDiverged, sqlite3.Error, MemoryError,
         torch.cuda.OutOfMemoryError)

_ERRNO = {
    errno.ENOSPC: "no space left on the device (disk full)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or folder",
    errno.EISDIR: "is a folder",
    errno.ENOTDIR: "not a folder",
}


def describe(err: BaseException) -> str:
    """The one line the CLI prints for ``err`` (after ``mlmm: error: ``)."""
    if isinstance(err, OSError) and err.errno in _ERRNO and err.strerror:
        # "[Errno 28] No space left on device: 'x'" -> "x: no space left on the device (disk full)"
        where = err.filename if err.filename is not None else ""
        text = f"{where}: {_ERRNO[err.errno]}" if where else _ERRNO[err.errno]
    elif isinstance(err, sqlite3.Error):
        text = f"results database: {err}" + ("; is the file or its folder read-only?" if "readonly" in str(err) else "")
    elif isinstance(err, torch.cuda.OutOfMemoryError):
        text = "out of GPU memory; use a smaller --batch-size or model, or --device cpu"
    elif isinstance(err, MemoryError):
        text = "out of memory" + (f" ({err})" if str(err) else "") + "; use smaller data, model or batch"
    else:
        text = str(err)
    lines = [line for line in text.splitlines() if line.strip()]
    return " ".join(lines[0].split()) if lines else type(err).__name__
