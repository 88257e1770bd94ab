"""A dataset backed by memory-mapped ``.npy`` files: data that need not fit in memory.

Folder layout (written by ``save_memmap_dataset`` / ``write_synthetic_memmap``)::

    spec.json            DatasetSpec.to_dict() plus "class_names" (or null)
    <modality>.npy       (N, *shape) per modality, opened with numpy mmap_mode="r"
    mask.npy             (N, M) bool natural availability (column j = spec.modalities[j])
    target.npy           (N,) labels (classification) / (N,) or (N, K) floats (regression)
    split_<name>.npy     optional row indices of a named split

Only the mask (N x M bools) and the labels are held in memory; modality values are read
per batch (``__getitems__``), so a ``DataLoader`` over the dataset holds one batch at a time.
Row subsets (``subset``, ``split``) and mask replacements (``with_mask``, which is what
``Scenario.apply`` calls) are index arrays and a new (n, M) mask: the arrays are never copied.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.utils.data
from torch import Tensor

from .base import MultimodalDataset
from .batch import Batch, collate
from .spec import DatasetSpec

__all__ = ["MemmapDataset", "open_memmap_dataset", "save_memmap_dataset", "write_synthetic_memmap"]

#: ``as_batch`` reads at most this many bytes of modality values at once (1 GiB): beyond it, read
#: the data batch by batch (``loader``). Whole-split steps (a method's ``prepare`` / ``calibrate``)
#: go through ``as_batch`` and so share this limit.
MATERIALISE_LIMIT_BYTES = 1 << 30

#: After this many bytes of pages touched by reads (a row counts ``_FAULT_AROUND_BYTES`` per file), the
#: pages mapped so far are released from the process (madvise MADV_DONTNEED; they stay in the OS page
#: cache). Pages of a file mapping touched by a read count in the process's resident memory until
#: released, so without this an epoch over a 4 GiB file would leave 4 GiB resident although only one
#: batch is in use.
RELEASE_EVERY_BYTES = 32 << 20
#: Linux maps this much of a file around each page fault (``fault_around_bytes``'s default), so a
#: random row of 1 KiB makes 64 KiB resident (measured: counting 4 KiB pages left 457 MiB of a
#: 390 MiB file resident over an epoch; counting 64 KiB keeps it near one batch).
_FAULT_AROUND_BYTES = 64 << 10


def _collate_any(items) -> Batch:
    """``collate_fn`` for a dataset whose ``__getitems__`` already returns a ``Batch`` (or a list of samples)."""
    return items if isinstance(items, Batch) else collate(items)


class MemmapDataset(torch.utils.data.Dataset):
    """Rows ``rows`` of memory-mapped arrays, with an in-memory (n, M) availability mask and labels.

    arrays: modality -> (N, *shape) numpy array (a read-only memmap, typically) holding every row;
    target: (n,) labels of the selected rows (in memory), or None;
    mask:   (n, M) bool availability of the selected rows (in memory);
    rows:   (n,) int64 indices into the arrays (None: all N rows, in order).
    splits: split name -> positions in this view.

    ``data[i]`` is sample ``i`` as ``MultimodalDataset[i]`` gives it, and ``data.__getitems__``
    reads a whole batch of rows with one fancy index per modality (what ``DataLoader`` calls).
    Values are stored as ``MultimodalDataset`` stores them (float32; uint8 images; int64 token
    ids); a masked-out slot is returned as zeros whatever the file holds; a NaN/inf in a present
    entry is a ``ValueError`` naming the modality and row when its batch is read (the files are
    not scanned at open). ``reads`` counts rows read from the arrays (tests and benchmarks use it).
    """

    in_memory = False
    time_mask = None
    groups = None

    def __init__(self, spec: DatasetSpec, arrays: Mapping[str, np.ndarray], target, mask,
                 rows: np.ndarray | None = None, splits: Mapping[str, np.ndarray] | None = None,
                 class_names: Sequence[str] | None = None, source: str | None = None) -> None:
        self.spec = spec
        self.source = source or spec.name
        names = spec.modality_names
        missing = [n for n in names if n not in arrays]
        if missing:
            raise ValueError(f"memory-mapped dataset {self.source!r}: no array for modality {missing[0]!r}")
        total = len(arrays[names[0]])
        for m in spec.modalities:
            a = arrays[m.name]
            if tuple(a.shape[1:]) != tuple(m.shape) or len(a) != total:
                raise ValueError(f"memory-mapped dataset {self.source!r}: modality {m.name!r} has shape {a.shape}, "
                                 f"expected ({total}, {', '.join(map(str, m.shape))})")
        self.arrays = dict(arrays)
        self.rows = np.arange(total, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        n = len(self.rows)
        if n and (self.rows.min() < 0 or self.rows.max() >= total):
            raise ValueError(f"memory-mapped dataset {self.source!r}: row indices outside [0, {total})")
        mask_t = torch.as_tensor(np.asarray(mask))
        if mask_t.dtype != torch.bool or tuple(mask_t.shape) != (n, len(names)):
            raise ValueError(f"memory-mapped dataset {self.source!r}: mask must be bool of shape ({n}, {len(names)}), "
                             f"got {mask_t.dtype} {tuple(mask_t.shape)}")
        empty = ~mask_t.any(dim=1)
        if bool(empty.any()):
            raise ValueError(f"memory-mapped dataset {self.source!r}: {int(empty.sum())} sample(s) have no modality "
                             f"(first: sample {int(empty.nonzero()[0])})")
        self.mask: Tensor = mask_t
        self.target: Tensor | None = None
        if target is not None:
            from .base import _as_target
            from .batch import validate_target

            self.target = _as_target(np.asarray(target), spec)
            validate_target(self.target, spec, n)
        self.class_names = None if class_names is None else tuple(str(c) for c in class_names)
        self.splits = {k: np.asarray(v, dtype=np.int64) for k, v in (splits or {}).items()}
        self.reads = 0
        self._unreleased = 0
        self._fds: dict[tuple[str, int], int] = {}

    def release_pages(self) -> None:
        """Drop the mapped pages of every array from this process (they stay in the page cache, so
        reading them again is cheap); arrays that are not memory-mapped are left alone."""
        self._unreleased = 0
        for a in self.arrays.values():
            _release(a)

    # ------------------------------------------------------------ Dataset

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def has_labels(self) -> bool:
        return self.target is not None

    @property
    def labels(self) -> np.ndarray:
        if self.target is None:
            raise ValueError(f"dataset {self.spec.name!r} has no labels")
        return self.target.numpy()

    @property
    def inputs(self) -> dict[str, np.ndarray]:
        """Modality -> the (N, *shape) memory-mapped array of *all* rows (shapes only: read via the loader)."""
        return self.arrays

    def __getitem__(self, i: int) -> dict:
        batch = self.__getitems__([int(i)])
        item = {"inputs": {k: v[0] for k, v in batch.inputs.items()}, "mask": batch.mask[0], "index": int(i)}
        if batch.target is not None:
            item["target"] = batch.target[0]
        return item

    def __getitems__(self, positions: Sequence[int]) -> Batch:
        """Positions (B,) of this view -> one raw ``Batch`` (B rows read from the arrays).

        Only present entries are read (a masked-out slot is zeros without touching its file); rows
        are read in file order, consecutive rows in one ``os.preadv`` (see ``_read_rows``)."""
        pos = np.asarray(positions, dtype=np.int64)
        if pos.size and (pos.min() < -len(self) or pos.max() >= len(self)):
            raise IndexError(f"sample {int(pos.max())} is out of range for {len(self)} samples")
        pos %= max(len(self), 1)
        rows = self.rows[pos]
        pos_t = torch.from_numpy(pos)
        mask = self.mask[pos_t]
        mask_np = mask.numpy()
        inputs = {}
        touched = 0
        for j, m in enumerate(self.spec.modalities):
            a = self.arrays[m.name]
            keep = mask_np[:, j]
            x = self._read_rows(a, rows, keep)  # a new (B, *shape) array: B rows only, zeros where masked out
            if x.dtype.kind == "f" and not np.isfinite(x.sum()):
                # (slow path only when the fast sum says so: masked-out slots are already zeros)
                bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1) & keep
                if bad.any():
                    row = int(rows[int(np.flatnonzero(bad)[0])])
                    raise ValueError(f"memory-mapped dataset {self.source!r}: modality {m.name!r} holds NaN or inf "
                                     f"in a present entry (row {row} of {m.name}.npy); mark it missing in mask.npy")
            inputs[m.name] = _stored(m.kind, x)
            if len(x):
                touched += max(x[0].nbytes, _FAULT_AROUND_BYTES)
        self.reads += len(rows)
        # A row read through a mapping maps at least Linux's fault-around window (64 KiB) of each file:
        # count that, not bytes (a no-op for rows read with preadv, which map nothing).
        self._unreleased += len(rows) * touched
        if self._unreleased > RELEASE_EVERY_BYTES:
            self.release_pages()
        target = None if self.target is None else self.target[pos_t]
        return Batch(inputs, mask, target, index=pos_t)

    def _read_rows(self, a: np.ndarray, rows: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (B,) of array ``a`` as a new (B, *shape) array, rows where ``keep`` is False left as zeros.

        For a file-backed memmap the kept rows are read with ``os.preadv`` straight into the output
        (sorted by file offset; a run of rows consecutive both in the file and in the batch is one
        call) instead of through the mapping: pages of a mapping touched by a read stay resident in
        the process (whole large folios of the page cache, ~600 KiB per random 1 KiB row measured),
        reads do not map anything. One call per random row costs ~1.5 us (page cache hot)."""
        filename, offset = getattr(a, "filename", None), getattr(a, "offset", None)
        if filename is None or offset is None or not hasattr(os, "preadv") or not a.flags.c_contiguous:
            out = np.asarray(a[rows])  # a new array (fancy index)
            out[~keep] = 0
            return out
        key = (filename, os.getpid())  # a DataLoader worker opens its own descriptor
        fd = self._fds.get(key)
        if fd is None:
            fd = self._fds[key] = os.open(filename, os.O_RDONLY)
        row_bytes = a.itemsize * int(np.prod(a.shape[1:], dtype=np.int64))
        out = np.empty((len(rows), *a.shape[1:]), dtype=a.dtype)
        if not keep.all():
            out[~keep] = 0
        wanted = np.flatnonzero(keep)  # batch positions to read
        order = wanted[np.argsort(rows[wanted], kind="stable")]
        file_rows = rows[order]
        # a new segment wherever the file row or the batch position does not follow the previous one
        starts = np.flatnonzero((np.diff(file_rows, prepend=-2) != 1) | (np.diff(order, prepend=-2) != 1))
        lengths = np.diff(starts, append=len(order)) * row_bytes
        file_at = (int(offset) + file_rows[starts] * row_bytes).tolist()
        out_at = (order[starts] * row_bytes).tolist()
        view = memoryview(out.reshape(-1).view(np.uint8)) if out.size else memoryview(b"")
        read, got = os.preadv, 0
        for o, b, n in zip(file_at, out_at, lengths.tolist()):
            got += read(fd, [view[b:b + n]], o)
        if got != int(lengths.sum()):
            raise ValueError(f"memory-mapped dataset {self.source!r}: {filename} is shorter than its header says")
        return out

    def __getstate__(self) -> dict:
        """Pickled (e.g. for a DataLoader worker started by spawn / forkserver) with each read-only memmap
        as its file, offset, dtype and shape, reopened on unpickling: the rows are never copied."""
        state = dict(self.__dict__)
        state["_fds"] = {}
        state["arrays"] = {k: _MappedFile.of(a) for k, a in self.arrays.items()}
        return state

    def __setstate__(self, state: dict) -> None:
        state["arrays"] = {k: a.open() if isinstance(a, _MappedFile) else a for k, a in state["arrays"].items()}
        self.__dict__.update(state)

    def __del__(self) -> None:
        for fd in getattr(self, "_fds", {}).values():
            with contextlib.suppress(OSError):
                os.close(fd)

    collate = staticmethod(_collate_any)

    def loader(self, batch_size: int = 128, shuffle: bool = False, **kwargs) -> torch.utils.data.DataLoader:
        """``DataLoader`` yielding raw ``Batch`` objects of ``batch_size`` rows (``kwargs`` as for DataLoader)."""
        return torch.utils.data.DataLoader(self, batch_size=batch_size, shuffle=shuffle, collate_fn=_collate_any,
                                           **kwargs)

    # ------------------------------------------------------------ views

    def nbytes(self) -> int:
        """Bytes of modality values in this view once read into memory."""
        per_row = sum(int(np.prod(m.shape)) * (1 if m.kind == "image" and self.arrays[m.name].dtype == np.uint8
                                                else 8 if m.kind == "text" else 4) for m in self.spec.modalities)
        return per_row * len(self)

    def as_batch(self) -> Batch:
        """Every row of this view in memory, as one ``Batch`` — refused above ``MATERIALISE_LIMIT_BYTES``."""
        if self.nbytes() > MATERIALISE_LIMIT_BYTES:
            raise MemoryError(
                f"memory-mapped dataset {self.source!r}: reading all {len(self)} rows at once needs "
                f"{self.nbytes() / 2**30:.2f} GiB, above the {MATERIALISE_LIMIT_BYTES / 2**30:.2f} GiB limit "
                "(mlmm.data.memmap.MATERIALISE_LIMIT_BYTES); iterate over data.loader() instead")
        return self.__getitems__(np.arange(len(self)))

    def subset(self, index) -> MemmapDataset:
        """Positions ``index`` of this view as a new view (an index array; nothing is read or copied)."""
        idx = np.asarray(index.numpy() if isinstance(index, Tensor) else index, dtype=np.int64)
        return MemmapDataset(self.spec, self.arrays, None if self.target is None else self.target[idx],
                             self.mask[torch.from_numpy(idx)], rows=self.rows[idx], class_names=self.class_names,
                             source=self.source)

    def split(self, name: str) -> MemmapDataset:
        if name not in self.splits:
            known = ", ".join(self.splits) or "none"
            raise ValueError(f"dataset {self.spec.name!r} has no split {name!r}; known: {known}")
        return self.subset(self.splits[name])

    def with_mask(self, mask) -> MemmapDataset:
        """Same rows with availability ``mask & self.mask`` ((n, M) bool); the arrays are untouched
        (masked-out slots read as zeros)."""
        mask_t = torch.as_tensor(np.asarray(mask) if not isinstance(mask, Tensor) else mask)
        if tuple(mask_t.shape) != tuple(self.mask.shape) or mask_t.dtype != torch.bool:
            raise ValueError(f"mask must be bool of shape {tuple(self.mask.shape)}, got {mask_t.dtype} "
                             f"{tuple(mask_t.shape)}")
        out = MemmapDataset(self.spec, self.arrays, self.target, mask_t & self.mask, rows=self.rows,
                            splits=self.splits, class_names=self.class_names, source=self.source)
        return out

    def to_memory(self) -> MultimodalDataset:
        """This view as an in-memory ``MultimodalDataset`` (validated), within ``MATERIALISE_LIMIT_BYTES``."""
        batch = self.as_batch()
        return MultimodalDataset(self.spec, batch.inputs, self.target, batch.mask, splits=self.splits,
                                 class_names=self.class_names)


class _MappedFile:
    """A read-only ``np.memmap`` by reference (file, offset, dtype, shape), for pickling."""

    def __init__(self, filename: str, offset: int, dtype: np.dtype, shape: tuple) -> None:
        self.filename, self.offset, self.dtype, self.shape = filename, offset, dtype, shape

    @staticmethod
    def of(a: np.ndarray):
        """``a`` by reference when it is a whole read-only file mapping, else ``a`` itself (pickled by value)."""
        filename, offset = getattr(a, "filename", None), getattr(a, "offset", None)
        if filename is None or offset is None or a.flags.writeable or not a.flags.c_contiguous:
            return a
        return _MappedFile(filename, int(offset), a.dtype, tuple(a.shape))

    def open(self) -> np.ndarray:
        a = np.memmap(self.filename, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape)
        _advise_random(a)
        return a


def _advise_random(a: np.ndarray) -> None:
    """Tell the kernel rows are read in random order (MADV_RANDOM): no read-ahead or fault-around, which
    otherwise map large runs of the file (whole large folios) into the process on each row read."""
    handle = getattr(a, "_mmap", None)
    if handle is not None and hasattr(handle, "madvise") and hasattr(mmap, "MADV_RANDOM"):
        handle.madvise(mmap.MADV_RANDOM)


def _release(a: np.ndarray) -> None:
    """Flush a memory-mapped array and drop its pages from this process (no-op for other arrays)."""
    handle = getattr(a, "_mmap", None)  # numpy.memmap keeps its mmap.mmap here
    if handle is not None and hasattr(handle, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        if a.flags.writeable:
            a.flush()
        handle.madvise(mmap.MADV_DONTNEED)


def _stored(kind: str, x: np.ndarray) -> Tensor:
    """As ``MultimodalDataset`` keeps values: token ids int64, uint8 images uint8, the rest float32."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    if kind == "text":
        return t.to(torch.int64)
    if kind == "image" and t.dtype == torch.uint8:
        return t
    return t.to(torch.float32)


# ---------------------------------------------------------------- files


def open_memmap_dataset(folder: str | Path) -> MemmapDataset:
    """Open a folder written by ``save_memmap_dataset`` / ``write_synthetic_memmap`` (arrays memory-mapped
    read-only; the mask and labels read into memory). A missing or inconsistent file is a ValueError naming it."""
    folder = Path(folder)
    spec_file = folder / "spec.json"
    if not spec_file.is_file():
        raise ValueError(f"{folder}: no spec.json (not a memory-mapped mlmm dataset folder)")
    meta = json.loads(spec_file.read_text())
    class_names = meta.pop("class_names", None)
    spec = DatasetSpec.from_dict(meta)
    arrays = {}
    for m in spec.modalities:
        path = folder / f"{m.name}.npy"
        if not path.is_file():
            raise ValueError(f"{folder}: no {path.name} for modality {m.name!r}")
        arrays[m.name] = np.load(path, mmap_mode="r")
        _advise_random(arrays[m.name])
    for name in ("mask.npy", "target.npy"):
        if not (folder / name).is_file():
            raise ValueError(f"{folder}: no {name}")
    mask = np.load(folder / "mask.npy")
    if mask.dtype != bool:
        raise ValueError(f"{folder / 'mask.npy'}: expected bool, got {mask.dtype}")
    target = np.load(folder / "target.npy")
    splits = {p.stem[len("split_"):]: np.load(p) for p in sorted(folder.glob("split_*.npy"))}
    return MemmapDataset(spec, arrays, target, mask, splits=splits, class_names=class_names, source=str(folder))


def _write_meta(folder: Path, spec: DatasetSpec, class_names) -> None:
    meta = spec.to_dict()
    meta["class_names"] = None if class_names is None else list(class_names)
    (folder / "spec.json").write_text(json.dumps(meta, indent=1))


def save_memmap_dataset(data: MultimodalDataset | MemmapDataset, folder: str | Path,
                        chunk_rows: int = 8192) -> Path:
    """Write ``data`` (its mask, labels and splits; rows in order; in memory, or streamed such as a Parquet
    ``mlmm.data.TableDataset``) to ``folder`` in the layout above, ``chunk_rows`` rows at a time, and
    return the folder. Open it with ``open_memmap_dataset``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spec, n = data.spec, len(data)
    if data.target is None:
        raise ValueError("save_memmap_dataset needs labels (target is None)")
    if getattr(data, "time_mask", None) is not None:
        raise ValueError("save_memmap_dataset: time masks are not stored (not supported yet)")
    outs = {}
    first = None if isinstance(data, MultimodalDataset) else data.__getitems__([0]).inputs  # any streamed dataset
    for m in spec.modalities:
        dtype = np.asarray(data.inputs[m.name][:1]).dtype if first is None else first[m.name].numpy().dtype
        dtype = np.int64 if m.kind == "text" else np.uint8 if dtype == np.uint8 and m.kind == "image" else np.float32
        outs[m.name] = np.lib.format.open_memmap(folder / f"{m.name}.npy", mode="w+", dtype=dtype,
                                                 shape=(n, *m.shape))
    for start in range(0, n, chunk_rows):
        batch = data.__getitems__(range(start, min(n, start + chunk_rows))) if first is not None \
            else data.as_batch().select(slice(start, start + chunk_rows))
        for name, out in outs.items():
            out[start:start + batch.size] = batch.inputs[name].numpy()
            _release(out)
    for out in outs.values():
        out.flush()
    np.save(folder / "mask.npy", data.mask.numpy())
    np.save(folder / "target.npy", data.target.numpy())
    for name, idx in data.splits.items():
        np.save(folder / f"split_{name}.npy", np.asarray(idx, dtype=np.int64))
    _write_meta(folder, spec, data.class_names)
    return folder


def write_synthetic_memmap(folder: str | Path, n: int, n_modalities: int = 4, features: int = 256,
                           n_classes: int = 4, seed: int = 0, missing_rate: float = 0.3,
                           val_fraction: float = 0.1, test_fraction: float = 0.1,
                           chunk_rows: int = 16384, image_shape: Sequence[int] | None = None) -> Path:
    """Write a synthetic classification dataset of ``n`` rows to ``folder`` and return the folder.

    Modalities: ``n_modalities`` vectors of ``features`` float32 each (names m0, m1, ...), and, with
    ``image_shape`` = (C, H, W), an image modality "image" of uint8 pixels (any resolution) after them.
    Each modality carries a noisy class-dependent signal (an image: a class template of smooth blobs
    plus pixel noise); every entry is missing with ``missing_rate`` (a row keeps at least one). Splits
    train / val / test are random. Rows are written ``chunk_rows`` at a time (fewer for large rows: a
    chunk's values stay under ~64 MiB), and written pages are released as they go, so any ``n``
    (10^6 and more) fits in bounded memory."""
    from .spec import ModalitySpec, TaskSpec

    if n < 3:
        raise ValueError(f"n must be at least 3, got {n}")
    if image_shape is not None:
        image_shape = tuple(int(d) for d in image_shape)
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(f"image_shape must be (channels, height, width) of positive sizes, got {image_shape}")
    if n_modalities < (0 if image_shape else 1):
        raise ValueError(f"n_modalities must be at least {0 if image_shape else 1}, got {n_modalities}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"m{j}" for j in range(n_modalities)]
    modalities = [ModalitySpec(nm, "vector", (features,)) for nm in names]
    if image_shape:
        modalities.append(ModalitySpec("image", "image", image_shape))
    n_mod = len(modalities)
    spec = DatasetSpec(f"synthetic-memmap-{n}", tuple(modalities), TaskSpec("classification", n_classes))
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_modalities, n_classes, features)).astype(np.float32)
    target = rng.integers(0, n_classes, size=n)
    mask = rng.random((n, n_mod)) >= missing_rate
    empty = np.flatnonzero(~mask.any(axis=1))
    mask[empty, rng.integers(0, n_mod, size=empty.size)] = True
    outs = [np.lib.format.open_memmap(folder / f"{nm}.npy", mode="w+", dtype=np.float32, shape=(n, features))
            for nm in names]
    row_bytes = 4 * features
    if image_shape:
        image_rng = np.random.default_rng([seed, 1])  # its own stream: vector data as without an image
        templates = _image_templates(image_rng, n_classes, image_shape)
        outs.append(np.lib.format.open_memmap(folder / "image.npy", mode="w+", dtype=np.uint8, shape=(n, *image_shape)))
        row_bytes = max(row_bytes, 4 * int(np.prod(image_shape)))
    step = max(1, min(chunk_rows, (64 << 20) // row_bytes))
    for start in range(0, n, step):
        stop = min(n, start + step)
        y = target[start:stop]
        for j, out in enumerate(outs):
            if j < n_modalities:
                x = centres[j, y] + 2.0 * rng.standard_normal((stop - start, features), dtype=np.float32)
            else:  # the image: class template + noise, as uint8 pixels
                noise = image_rng.standard_normal((stop - start, *image_shape), dtype=np.float32)
                x = np.clip(templates[y] + 48.0 * noise, 0, 255).astype(np.uint8)
            x[~mask[start:stop, j]] = 0
            out[start:stop] = x
            _release(out)  # written pages leave this process: memory stays bounded by the chunk
    for out in outs:
        out.flush()
    np.save(folder / "mask.npy", mask)
    np.save(folder / "target.npy", target.astype(np.int64))
    order = rng.permutation(n)
    n_test, n_val = max(1, int(n * test_fraction)), max(1, int(n * val_fraction))
    for name, idx in (("test", order[:n_test]), ("val", order[n_test:n_test + n_val]),
                      ("train", order[n_test + n_val:])):
        np.save(folder / f"split_{name}.npy", np.sort(idx).astype(np.int64))
    _write_meta(folder, spec, None)
    return folder


def _image_templates(rng: np.random.Generator, n_classes: int, shape: tuple[int, int, int]) -> np.ndarray:
    """(n_classes, C, H, W) float32 class templates in [32, 224]: a few Gaussian blobs of random colour,
    place and size per class, so a class is told apart by where its colours are."""
    c, h, w = shape
    yy, xx = np.meshgrid(np.linspace(0, 1, h, dtype=np.float32), np.linspace(0, 1, w, dtype=np.float32),
                         indexing="ij")
    out = np.full((n_classes, c, h, w), 128.0, dtype=np.float32)
    for k in range(n_classes):
        for _ in range(3):
            cy, cx = rng.random(2)
            radius = 0.1 + 0.2 * rng.random()
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius ** 2))
            out[k] += (rng.random(c).astype(np.float32)[:, None, None] - 0.5) * 192.0 * blob
    return np.clip(out, 32.0, 224.0)
