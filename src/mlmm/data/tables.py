"""Streamed datasets over a row table: Parquet read in row groups, an Arrow file memory-mapped, or a
folder of files (images, text) listed by a CSV / Parquet table.

One row per sample. Each modality is read from its columns by a ``mlmm.data.columns`` reader:
number columns, a list column, a string column tokenised by MiniLM, or a column of image file
paths (read with PIL and resized to the declared shape). An empty cell means the modality is
missing for that row; the mask is built from that at open, with the labels and the split column,
in one pass over the table one row group at a time — the values themselves are read only when a
batch asks for its rows. A folder described by a ``dataset.yaml``::

    table: rows.csv                 # .csv / .tsv (held in memory: paths, texts, numbers), .parquet
                                    # (row groups read on demand), .arrow / .feather (memory-mapped)
    modalities:
      photo: {kind: image, column: image_path, shape: [3, 64, 64]}   # paths relative to the folder
      caption: {kind: text, column: caption, max_length: 32}
      vitals: [age, heart_rate]     # number columns (or "prefix:v_")
      embedding: {kind: vector, column: emb, shape: [128]}            # a list column (Parquet / Arrow)
    label: label
    split: split                    # optional: train / val / test per row
    task: classification            # or regression
    group: subject                  # optional: grouped splits

opens with ``open_data_dir(folder)``; ``open_table_dataset(path, modalities, label, ...)`` takes the
same keys as arguments.

Reading cost: rows of a Parquet file are read by row group (each group read for a batch is decoded
whole; the last ``cache_groups`` groups are kept), so random batches over a large file decode many
groups per batch. Write the file with small row groups (``row_group_size`` of a few thousand rows or
less), or convert it once with ``save_memmap_dataset(data, folder)`` for fast random access.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from .columns import ColumnReader, _pa, reader_from_mapping
from .rows import RowDataset
from .spec import DatasetSpec, TaskSpec

__all__ = ["TableDataset", "open_data_dir", "open_table_dataset"]

#: The description of a table folder, read by ``open_data_dir``.
DESCRIPTION_FILE = "dataset.yaml"


class _ArrowRows:
    """A whole ``pyarrow.Table`` (from a CSV, in memory; or an Arrow IPC file, memory-mapped)."""

    def __init__(self, table) -> None:
        self.table = table
        self.num_rows = table.num_rows
        self.schema = table.schema

    def parts(self, columns: Sequence[str]):
        """(first row, table of ``columns``) in pieces of bounded size (for the pass at open)."""
        step = 65536
        for start in range(0, self.num_rows, step):
            yield start, self.table.select(list(columns)).slice(start, step)

    def take(self, rows: np.ndarray, columns: Sequence[str]):
        pa = _pa()
        return self.table.select(list(columns)).take(pa.array(rows))


class _ParquetRows:
    """A Parquet file read one row group at a time (the last ``cache_groups`` groups kept decoded)."""

    def __init__(self, path: Path, cache_groups: int = 4) -> None:
        import pyarrow.parquet as pq

        self.path, self.cache_groups = path, int(cache_groups)
        meta = pq.ParquetFile(path).metadata
        self.schema = meta.schema.to_arrow_schema()
        self.num_rows = meta.num_rows
        sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._file = None
        self._pid = None
        self._cache: OrderedDict = OrderedDict()

    def __getstate__(self) -> dict:  # a DataLoader worker opens its own file
        return {**self.__dict__, "_file": None, "_pid": None, "_cache": OrderedDict()}

    def _parquet(self):
        if self._file is None or self._pid != os.getpid():
            import pyarrow.parquet as pq

            self._file, self._pid, self._cache = pq.ParquetFile(self.path), os.getpid(), OrderedDict()
        return self._file

    def _group(self, g: int, columns: tuple[str, ...]):
        key = (g, columns)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        table = self._parquet().read_row_group(g, columns=list(columns))
        self._cache[key] = table
        while len(self._cache) > self.cache_groups:
            self._cache.popitem(last=False)
        return table

    def parts(self, columns: Sequence[str]):
        for g in range(len(self.starts) - 1):
            yield int(self.starts[g]), self._parquet().read_row_group(g, columns=list(columns))

    def take(self, rows: np.ndarray, columns: Sequence[str]):
        pa = _pa()
        columns = tuple(columns)
        order = np.argsort(rows, kind="stable")
        groups = np.searchsorted(self.starts, rows[order], side="right") - 1
        pieces = []
        for g in np.unique(groups):
            local = rows[order][groups == g] - self.starts[g]
            pieces.append(self._group(int(g), columns).take(pa.array(local)))
        table = pa.concat_tables(pieces) if pieces else self._group(0, columns).slice(0, 0)
        return table.take(pa.array(np.argsort(order, kind="stable")))  # back to the order asked for


def _open_rows(path: Path, cache_groups: int):
    pa = _pa()
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return _ParquetRows(path, cache_groups)
    if suffix in (".arrow", ".feather", ".ipc"):
        return _ArrowRows(pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all())
    if suffix in (".csv", ".tsv"):
        import pyarrow.csv as csv

        # Empty cells are null in every column (text too): an empty cell is a missing modality.
        options = csv.ConvertOptions(strings_can_be_null=True)
        return _ArrowRows(csv.read_csv(path, parse_options=csv.ParseOptions(delimiter="\t" if suffix == ".tsv"
                                                                            else ","), convert_options=options))
    raise ValueError(f"{path}: unknown table format {suffix or '(no suffix)'}; use .csv, .tsv, .parquet, "
                     ".arrow or .feather")


class TableDataset(RowDataset):
    """A streamed dataset over a row table (see the module docstring); build it with
    ``open_table_dataset`` / ``open_data_dir``. ``readers`` (one per modality, in spec order) read
    the values of the rows a batch asks for."""

    def __init__(self, spec: DatasetSpec, store, readers: Sequence[ColumnReader], target, mask, **view) -> None:
        super().__init__(spec, target, mask, store.num_rows, **view)
        self.store = store
        self.readers = tuple(readers)
        self._columns = tuple(dict.fromkeys(c for r in self.readers for c in r.columns))

    def _read(self, rows: np.ndarray, mask: Tensor) -> dict[str, Tensor]:
        table = self.store.take(rows, self._columns)
        return {r.spec.name: r.read(table, rows, mask[:, j].numpy()) for j, r in enumerate(self.readers)}

    def row_bytes(self) -> int:
        return sum(r.bytes_per_row() for r in self.readers)


def _column_values(store, column: str, source: str) -> np.ndarray:
    if column not in store.schema.names:
        raise ValueError(f"{source}: no column {column!r}; columns: {', '.join(store.schema.names)}")
    values = [part.column(column).to_numpy(zero_copy_only=False) for _, part in store.parts([column])]
    return np.concatenate(values) if values else np.zeros(0)


def open_table_dataset(path: str | Path, modalities: Mapping[str, Any], label: str | None = None,
                       split: str | None = None, task: str = "classification", group: str | None = None,
                       root: str | Path | None = None, name: str | None = None, check_files: bool = True,
                       tokenizer_dir: str | Path | None = None, cache_groups: int = 4) -> TableDataset:
    """A ``TableDataset`` over the table at ``path`` (.csv / .tsv / .parquet / .arrow / .feather).

    modalities: name -> its columns (see ``mlmm.data.columns.reader_from_mapping``: number columns,
                ``{kind: image, column, shape}`` for image paths, ``{kind: text, column, max_length}``,
                ``{kind, column, shape}`` for a list column), in the order of the mask's columns;
    label:      the label column (classes are the sorted distinct values; ``class_names`` keeps them);
    split:      optional column of train / val / test per row; group: optional group column;
    root:       the folder image paths are relative to (default: the table's folder);
    check_files: at open, check that every image file named by a present cell exists (one ``stat`` per
                row; an absent one is an error naming the file and the row).

    Only the mask, the labels, the split and the groups are held in memory (for a CSV the table too).
    """
    from .loaders._build import encode_labels, normalise_split_names
    from .loaders._files import user_file

    path = user_file(path, "table")
    source = str(path)
    if not modalities:
        raise ValueError(f"{source}: no modality given")
    if label is None:
        raise ValueError(f"{source}: give the label column (label=..., or 'label:' in {DESCRIPTION_FILE})")
    store = _open_rows(path, cache_groups)
    readers = [reader_from_mapping(str(m), entry, store.schema, Path(root) if root else path.parent, source,
                                   tokenizer_dir) for m, entry in modalities.items()]
    raw = _column_values(store, label, source)
    target, class_names = encode_labels(raw, task, f"{source}: column {label!r}")
    n_classes = len(class_names) if task == "classification" else None
    n_outputs = 1 if task == "classification" else (target.shape[1] if target.ndim == 2 else 1)
    spec = DatasetSpec(name or path.stem, tuple(r.spec for r in readers), TaskSpec(task, n_classes, n_outputs))
    mask = np.zeros((store.num_rows, len(readers)), dtype=bool)
    for j, reader in enumerate(readers):  # one column (group) at a time: memory of one row group
        for start, part in store.parts(reader.columns):
            present = reader.present(part)
            if check_files:
                reader.check(part, np.arange(start, start + part.num_rows), present)
            mask[start:start + part.num_rows, j] = present
    splits = normalise_split_names(_column_values(store, split, source)) if split else None
    groups = _column_values(store, group, source).astype(str) if group else None
    return TableDataset(spec, store, readers, target, mask, splits=splits, class_names=class_names,
                        groups=groups, source=source)


def open_data_dir(folder: str | Path, **options: Any) -> RowDataset:
    """A dataset folder: a memory-mapped folder (``spec.json`` + ``.npy`` files, ``mlmm.data.memmap``)
    or a table folder described by ``dataset.yaml`` (the module docstring; ``options`` override its
    keys). Anything else is an error saying what the folder lacks."""
    from ..safe_yaml import load_yaml, read_text_file
    from .memmap import open_memmap_dataset

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ValueError(f"data folder {str(folder)!r} does not exist or is not a folder")
    if (folder / "spec.json").is_file():
        if options:
            raise ValueError(f"{folder}: a memory-mapped folder takes no options (got {', '.join(options)})")
        return open_memmap_dataset(folder)
    described = folder / DESCRIPTION_FILE
    if not described.is_file():
        raise ValueError(f"{folder}: neither a memory-mapped dataset (spec.json, written by save_memmap_dataset) "
                         f"nor a table folder ({DESCRIPTION_FILE} naming the table, modalities and label)")
    mapping = load_yaml(read_text_file(described, "dataset description"), str(described))
    if not isinstance(mapping, dict) or "table" not in mapping:
        raise ValueError(f"{described}: expected a mapping with at least 'table', 'modalities' and 'label'")
    mapping = {**mapping, **options}
    known = {"table", "modalities", "label", "split", "task", "group", "name", "check_files", "cache_groups"}
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise ValueError(f"{described}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    table = Path(str(mapping.pop("table"))).expanduser()
    mapping.setdefault("name", folder.name)
    return open_table_dataset(table if table.is_absolute() else folder / table, root=folder, **mapping)

