"""An on-disk, content-addressed cache of frozen-backbone features, read memory-mapped.

A frozen backbone (B, *shape) -> (B, W) gives the same features for the same input every
time, so a grid of methods x seeds x cells over one dataset needs them once. ``FeatureCache``
stores them once per (backbone, preprocessing, input values):

    key = sha256(format version, the backbone's class and every tensor of its state_dict
                 (names, dtypes, shapes, bytes), its preprocessing config (JSON), the
                 modality's kind, dtype and shape, the presence vector and the bytes of
                 every input row)

so a changed weight, a changed preprocessing setting or one changed input value gives another
key, and the stale entry is simply never read again (nothing is invalidated in place).

Layout of the directory the caller chooses (library code never picks one)::

    <dir>/<key>/features.npy     (N, W) float32, row i = features of input row i (zeros where absent)
    <dir>/<key>/meta.json        key, backbone, preprocessing, modality, shape, sha256 of features.npy
    <dir>/.tmp-<key>-<random>/   an entry being written (never read; see ``remove_partial``)
    <dir>/.lock-<key>            the lock its writer holds (``fcntl.flock``): other processes wait for it

Writes are atomic: an entry is computed batch by batch into a temporary directory inside
``<dir>``, its files are flushed and fsynced, and the directory is renamed to ``<key>`` in one
``os.rename`` (atomic on POSIX within one file system). A run killed mid-write leaves only a
``.tmp-`` directory, which no lookup reads. Two processes asking for the same missing entry at once
(grid workers) compute it once: the first holds a per-key lock while it computes, the second waits
and then reads the entry (without ``fcntl``, both compute and the second rename keeps the first entry).

Every read checks the entry: meta.json parses and names this key, features.npy has the recorded
shape and dtype, and its sha256 matches the recorded one (reading N x W floats: small next to
hashing the inputs). A corrupt entry is rebuilt (``on_corrupt="rebuild"``, the default; counted
in ``stats["rebuilt"]``) or reported (``on_corrupt="error"``: ``CorruptCacheEntry`` naming the
path and the fault).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["FORMAT_VERSION", "CorruptCacheEntry", "FeatureCache", "FeatureWriter", "ArrayRows", "backbone_digest",
           "input_digest", "row_chunks"]

#: Bumped when the key or the entry layout changes (old entries are then never read).
FORMAT_VERSION = 1
#: Inputs are hashed (and features written) in chunks of about this many bytes: bounded memory.
CHUNK_BYTES = 64 << 20
_ON_CORRUPT = ("rebuild", "error")


class CorruptCacheEntry(ValueError):
    """A cache entry on disk does not match its own record (truncated, edited, half copied)."""


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def backbone_digest(module: nn.Module, preprocessing: Mapping[str, Any] | None = None) -> str:
    """sha256 (hex) of a backbone: its class, every tensor of its ``state_dict`` (name, dtype,
    shape, bytes; buffers such as BatchNorm statistics included) and its ``preprocessing`` config
    (JSON, keys sorted). Changing one weight by one ulp changes the digest."""
    h = hashlib.sha256()
    h.update(f"{type(module).__module__}.{type(module).__qualname__}".encode())
    h.update(_json(dict(preprocessing or {})).encode())
    for name, tensor in module.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        # bytes of any dtype (bfloat16 has no numpy view): reinterpret as uint8
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def row_chunks(values: np.ndarray, size: int) -> Iterator[tuple[int, np.ndarray]]:
    """(start, rows) chunks of ``size`` rows of ``values`` (N, *shape), in order; a file-backed memmap is read
    with plain file reads (pages touched through a mapping would stay resident in this process)."""
    n = len(values)
    filename, offset = getattr(values, "filename", None), getattr(values, "offset", None)
    if filename is not None and offset is not None and values.flags.c_contiguous:
        row_bytes = values.itemsize * int(np.prod(values.shape[1:], dtype=np.int64))
        with open(filename, "rb") as f:
            for start in range(0, n, size):
                out = np.empty((min(size, n - start), *values.shape[1:]), dtype=values.dtype)
                f.seek(int(offset) + start * row_bytes)
                if f.readinto(memoryview(out.reshape(-1).view(np.uint8))) != out.nbytes:
                    raise ValueError(f"{filename} is shorter than its .npy header says")
                yield start, out
        return
    for start in range(0, n, size):
        yield start, np.ascontiguousarray(values[start:start + size])


class ArrayRows:
    """The rows of an (N, *shape) array (in memory or a memmap), read in chunks: what ``input_digest`` and
    the feature computation read. Streamed datasets provide the same three members (``shape``,
    ``row_bytes``, ``chunks``)."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values
        self.shape = tuple(values.shape)
        self.row_bytes = max(values.itemsize * int(np.prod(values.shape[1:], dtype=np.int64)), 1)

    def chunks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        """(start, (b, *shape) array) for consecutive blocks of ``size`` rows."""
        return row_chunks(self.values, size)


def input_digest(values: np.ndarray | ArrayRows, present: np.ndarray) -> str:
    """sha256 (hex) of a modality's inputs: their shape, the (N,) presence vector and the dtype and bytes
    of every row (absent rows included: they are stored as zeros), read in chunks of ``CHUNK_BYTES``."""
    rows = values if not isinstance(values, np.ndarray) else ArrayRows(values)
    present = np.asarray(present, dtype=bool)
    if present.shape != (rows.shape[0],):
        raise ValueError(f"presence vector of shape {present.shape} for {rows.shape[0]} input rows")
    h = hashlib.sha256()
    h.update(f"{rows.shape}".encode())
    h.update(np.packbits(present).tobytes())
    for _, chunk in rows.chunks(max(CHUNK_BYTES // rows.row_bytes, 1)):
        h.update(np.dtype(chunk.dtype).str.encode())
        h.update(np.ascontiguousarray(chunk).tobytes())
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # a platform without directory descriptors
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class FeatureCache:
    """Features of frozen backbones, one entry per (backbone, preprocessing, input values), on disk.

    directory: where entries live; chosen by the caller (created if absent). Safe to share between
        processes, runs and grid cells: entries are immutable once written.
    on_corrupt: "rebuild" (a corrupt entry is removed and computed again) or "error" (``CorruptCacheEntry``).

    ``stats`` counts this object's ``hits``, ``misses`` (computed and stored) and ``rebuilt`` entries.
    """

    def __init__(self, directory: str | os.PathLike, *, on_corrupt: str = "rebuild") -> None:
        if on_corrupt not in _ON_CORRUPT:
            raise ValueError(f"on_corrupt must be one of {_ON_CORRUPT}, got {on_corrupt!r}")
        self.directory = Path(directory).expanduser()
        if self.directory.exists() and not self.directory.is_dir():
            raise ValueError(f"feature cache {str(self.directory)!r} exists and is not a directory")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.on_corrupt = on_corrupt
        self.stats = {"hits": 0, "misses": 0, "rebuilt": 0}

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.directory)!r})"

    # ------------------------------------------------------------ keys and entries

    @staticmethod
    def key(backbone: str, inputs: str, kind: str) -> str:
        """The entry key (hex sha256) of a backbone digest, an input digest and the modality kind."""
        return hashlib.sha256(f"mlmm-features/{FORMAT_VERSION}/{kind}/{backbone}/{inputs}".encode()).hexdigest()

    def path(self, key: str) -> Path:
        """Directory of entry ``key`` (it may not exist)."""
        return self.directory / key

    def keys(self) -> list[str]:
        """Keys of the complete entries on disk (sorted)."""
        return sorted(p.name for p in self.directory.iterdir() if p.is_dir() and not p.name.startswith("."))

    def remove_partial(self) -> list[Path]:
        """Delete the temporary directories of writes that never finished (a killed run) and the lock
        files; returns them. Only call it while no other process uses this cache."""
        removed = [p for p in self.directory.iterdir() if p.name.startswith((".tmp-", ".corrupt-", ".lock-"))]
        for p in removed:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        return removed

    def check(self, key: str) -> dict:
        """The metadata of entry ``key`` after checking it; ``CorruptCacheEntry`` names what is wrong."""
        entry = self.path(key)
        meta_path, features_path = entry / "meta.json", entry / "features.npy"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as err:
            raise CorruptCacheEntry(f"feature cache entry {str(entry)!r}: meta.json unreadable "
                                    f"({type(err).__name__}: {err})") from err
        if not isinstance(meta, dict) or meta.get("key") != key or meta.get("format") != FORMAT_VERSION:
            raise CorruptCacheEntry(f"feature cache entry {str(entry)!r}: meta.json does not describe this entry")
        try:
            array = np.load(features_path, mmap_mode="r")
        except (OSError, ValueError) as err:
            raise CorruptCacheEntry(f"feature cache entry {str(entry)!r}: features.npy unreadable "
                                    f"({type(err).__name__}: {err})") from err
        shape = (int(meta["n_rows"]), int(meta["width"]))
        if tuple(array.shape) != shape or array.dtype != np.float32:
            raise CorruptCacheEntry(f"feature cache entry {str(entry)!r}: features.npy holds {array.dtype} "
                                    f"{tuple(array.shape)}, its record says float32 {shape}")
        del array
        if _file_sha256(features_path) != meta.get("sha256"):
            raise CorruptCacheEntry(f"feature cache entry {str(entry)!r}: features.npy does not match its "
                                    "recorded sha256 (changed or damaged on disk)")
        return meta

    def load(self, key: str) -> np.memmap | None:
        """Entry ``key``'s (N, W) float32 features, memory-mapped read-only; ``None`` when there is no
        entry. A corrupt entry is removed (``on_corrupt="rebuild"``: then ``None``) or raised."""
        if not self.path(key).is_dir():
            return None
        try:
            self.check(key)
        except CorruptCacheEntry:
            if self.on_corrupt == "error":
                raise
            self._discard(key)
            self.stats["rebuilt"] += 1
            return None
        return np.load(self.path(key) / "features.npy", mmap_mode="r")

    def _discard(self, key: str) -> None:
        """Move entry ``key`` aside (one rename, so a reader never sees half of it), then delete it."""
        aside = self.directory / f".corrupt-{key}-{uuid.uuid4().hex}"
        try:
            os.rename(self.path(key), aside)
        except OSError:  # another process discarded it first
            return
        shutil.rmtree(aside, ignore_errors=True)

    # ------------------------------------------------------------ computing

    def get_or_compute(self, key: str, n_rows: int, compute: Callable[[FeatureWriter], int],
                       meta: Mapping[str, Any] | None = None) -> np.memmap:
        """Entry ``key``'s (n_rows, W) features, memory-mapped read-only; when there is no (sound)
        entry, ``compute(writer)`` writes them block by block (``writer.write(rows, (b, W) block)``;
        rows never written stay zero) and returns W, and the entry is stored atomically with
        ``meta`` (JSON-safe: backbone, preprocessing, modality) in its record."""
        found = self.load(key)
        if found is None:
            with self._key_lock(key):  # one process computes; the others wait, then read its entry
                found = self.load(key)
                if found is None:
                    return self._compute(key, n_rows, compute, meta)
        self.stats["hits"] += 1
        return found

    @contextlib.contextmanager
    def _key_lock(self, key: str) -> Iterator[None]:
        """An exclusive advisory lock on ``key`` across processes (``fcntl.flock`` on ``.lock-<key>``: the
        kernel releases it when its holder dies, so a killed run never blocks the cache). Where ``fcntl``
        does not exist, no lock: two processes may then both compute, and one's entry is kept."""
        try:
            import fcntl
        except ImportError:
            yield
            return
        with open(self.directory / f".lock-{key}", "a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _compute(self, key: str, n_rows: int, compute: Callable[[FeatureWriter], int],
                 meta: Mapping[str, Any] | None) -> np.memmap:
        tmp = self.directory / f".tmp-{key}-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            writer = FeatureWriter(tmp / "features.npy", n_rows)
            width = compute(writer)
            array = writer.close(width)
            digest = _file_sha256(tmp / "features.npy")
            record = {**dict(meta or {}), "format": FORMAT_VERSION, "key": key, "n_rows": int(n_rows),
                      "width": int(width), "dtype": "float32", "sha256": digest,
                      "versions": {"torch": torch.__version__, "numpy": np.__version__}}
            with open(tmp / "meta.json", "w") as f:
                f.write(json.dumps(record, indent=1, sort_keys=True, default=str))
                f.flush()
                os.fsync(f.fileno())
            del array
            _fsync_dir(tmp)
            try:
                os.rename(tmp, self.path(key))  # atomic: the entry appears whole or not at all
            except OSError:
                if not self.path(key).is_dir():
                    raise
                # another process wrote the same entry meanwhile: identical content, keep theirs
            else:
                _fsync_dir(self.directory)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.stats["misses"] += 1
        result = self.load(key)
        if result is None:  # written and immediately unreadable: the disk, not the data
            raise CorruptCacheEntry(f"feature cache entry {str(self.path(key))!r} was written but fails its check")
        return result


class FeatureWriter:
    """Features written block by block into an (n_rows, W) float32 array, created zero-filled once the
    width is known: an .npy file at ``path`` (memory-mapped), or in memory when ``path`` is None."""

    def __init__(self, path: Path | None, n_rows: int) -> None:
        self.path, self.n_rows = path, int(n_rows)
        self.array: np.ndarray | None = None

    def _open(self, width: int) -> None:
        shape = (self.n_rows, int(width))
        self.array = (np.zeros(shape, np.float32) if self.path is None
                      else np.lib.format.open_memmap(self.path, mode="w+", dtype=np.float32, shape=shape))

    def write(self, rows: np.ndarray, features: Tensor | np.ndarray) -> None:
        """Rows ``rows`` (b,) of the (n_rows, W) output get ``features`` (b, W)."""
        block = np.asarray(features.detach().to("cpu", torch.float32) if isinstance(features, Tensor) else features,
                           dtype=np.float32)
        if block.ndim != 2 or len(block) != len(rows):
            raise ValueError(f"features of shape {block.shape} for {len(rows)} rows (expected ({len(rows)}, W))")
        if self.array is None:
            self._open(block.shape[1])
        elif block.shape[1] != self.array.shape[1]:
            raise ValueError(f"features of width {block.shape[1]} after blocks of width {self.array.shape[1]}")
        self.array[np.asarray(rows, dtype=np.int64)] = block

    def close(self, width: int) -> np.ndarray:
        """The finished (n_rows, W) array, flushed and fsynced when on disk."""
        if self.array is None:  # no present row at all: all zeros
            self._open(width)
        if self.path is not None:
            self.array.flush()
            with open(self.path, "rb+") as f:
                os.fsync(f.fileno())
        return self.array
