"""Tables (CSV / Parquet) and NumPy arrays -> MultimodalDataset: the path for the user's own data.

A table has one row per sample; each modality is a group of numeric columns,
named as a list or by a common prefix. A modality is missing for a row when
every cell of its group is empty (NaN), or when its availability column says
so. Parquet needs ``pyarrow`` (``pip install mlmm[parquet]``); CSV needs only pandas.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..base import MultimodalDataset
from ._build import build_dataset, encode_labels, nan_mask, normalise_split_names
from ._files import check_known, user_file

_TRUE = {"1", "true", "yes", "y", "t", "present", "available"}
_FALSE = {"0", "false", "no", "n", "f", "missing", "absent", ""}


def parse_columns(spec: str | Sequence[str], columns: Sequence[str], modality: str, source: str) -> list[str]:
    """A modality's column group: a list of names, ``"prefix:b_"`` (every column starting with b_,
    in file order) or ``"c1,c2"``. Unknown columns and empty groups are errors naming ``source``."""
    if isinstance(spec, str) and spec.startswith("prefix:"):
        prefix = spec[len("prefix:"):]
        cols = [c for c in columns if str(c).startswith(prefix)]
        if not cols:
            raise ValueError(f"{source}: no column starts with {prefix!r} (modality {modality!r})")
        return cols
    cols = [c.strip() for c in spec.split(",") if c.strip()] if isinstance(spec, str) else list(spec)
    missing = [c for c in cols if c not in columns]
    if missing:
        raise ValueError(f"{source}: modality {modality!r} names unknown column {missing[0]!r}; "
                         f"columns: {', '.join(map(str, columns))}")
    if not cols:
        raise ValueError(f"{source}: modality {modality!r} has no column")
    return cols


def read_table(path: str | Path) -> Any:
    """A pandas DataFrame from a .csv/.tsv/.parquet file; unreadable files raise naming the file."""
    import pandas as pd

    p = user_file(path, "table")
    suffix = p.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise ImportError(f"{p}: reading Parquet needs pyarrow (pip install 'mlmm[parquet]')") from None
            return pd.read_parquet(p)
        return pd.read_csv(p, sep="\t" if suffix == ".tsv" else ",")
    except ImportError:
        raise
    except Exception as err:  # pandas / pyarrow parser errors carry no file name
        kind = "Parquet" if suffix in (".parquet", ".pq") else "CSV"
        raise ValueError(f"{p}: cannot read as a {kind} table: {err}") from None


def _availability(values: np.ndarray, column: str, source: str) -> np.ndarray:
    if values.dtype == bool:
        return values
    out = []
    for i, v in enumerate(values):
        s = "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip().lower()
        if s in ("1.0",):
            s = "1"
        if s in ("0.0",):
            s = "0"
        if s not in _TRUE | _FALSE:
            raise ValueError(f"{source}: availability column {column!r} row {i} has {v!r}; use 1/0 or true/false")
        out.append(s in _TRUE)
    return np.asarray(out, dtype=bool)


def load_table(path: str | Path, modalities: Mapping[str, str | Sequence[str]], label: str,
               split: str | None = None, availability: Mapping[str, str] | None = None,
               task: str = "classification", name: str | None = None, partial: str = "error",
               kinds: Mapping[str, str] | None = None, vocab_size: Mapping[str, int] | None = None,
               pad_id: Mapping[str, int] | None = None, groups: str | None = None) -> MultimodalDataset:
    """A CSV / TSV / Parquet table as a dataset of ``vector`` (or ``text``) modalities.

    modalities:   modality -> its columns: a list, ``"c1,c2"`` or ``"prefix:b_"``. Mask column j
                  is the j-th modality of this mapping.
    label:        the target column (classification: any values, coded 0..K-1 in sorted order,
                  names in ``data.class_names``; regression: numbers).
    split:        optional column of per-row split names (train / test / valid; val, validation
                  and dev are read as valid) -> ``data.splits``.
    availability: optional modality -> column of 1/0 (true/false); 0 marks the modality missing
                  even where its cells are filled. Without it, an all-empty group is missing.
    partial:      a present group with some empty cells: ``"error"`` (default) or ``"missing"``.
    kinds:        modality -> ``"vector"`` (numbers, standardised) or ``"text"`` (columns of token ids,
                  e.g. ``tok_0 ... tok_15``). Unstated, a group with a float column is a vector; a group
                  of integer columns only is refused (token ids or counts? say which).
    vocab_size, pad_id: text modality -> the tokenizer's vocabulary size / padding id (see
                  ``build_dataset``).
    groups:       optional column of group ids (subject, patient, device) -> ``data.groups``: the
                  grouped splits keep each group on one side (``mlmm.data.splits``), and such data
                  then splits by group by default. An empty id is an error.

    Returns inputs modality -> (N, D) float32 (text: (N, L) int64), mask (N, M) bool, target (N,).
    """
    import pandas as pd

    p = user_file(path, "table")
    check_known(p)
    df = read_table(p)
    source = str(p)
    columns = list(df.columns)
    if len(df) == 0:
        raise ValueError(f"{source}: the table has a header ({len(columns)} columns) but no rows")
    for col, role in ((label, "label"), (split, "split"), (groups, "group")):
        if col is not None and col not in columns:
            raise ValueError(f"{source}: no {role} column {col!r}; columns: {', '.join(map(str, columns))}")
    if not modalities:
        raise ValueError(f"{source}: map at least one modality to columns")
    arrays = {}
    for mod, cols_spec in modalities.items():
        cols = parse_columns(cols_spec, columns, mod, source)
        block = df[cols]
        bad = [c for c in cols if not pd.api.types.is_numeric_dtype(block[c].dtype)]
        if bad:
            raise ValueError(f"{source}: column {bad[0]!r} of modality {mod!r} is not numeric "
                             f"(first value {block[bad[0]].dropna().iloc[0]!r})")
        values = block.to_numpy(copy=True)  # writable: torch warns on read-only arrays
        arrays[mod] = values if values.dtype.kind in "iu" else values.astype(np.float32)
    kinds = dict(kinds or {})
    for mod, kind in kinds.items():
        if kind not in ("vector", "text"):
            raise ValueError(f"{source}: modality {mod!r}: table columns make 'vector' or 'text' modalities, "
                             f"not {kind!r} (store images or sequences in an .npz)")
    # A group with a float column is numbers: a vector, as the table format says (no guess).
    kinds.update({m: "vector" for m, a in arrays.items() if m not in kinds and a.dtype.kind == "f"})
    mask = nan_mask(arrays, source, partial)
    for mod, col in (availability or {}).items():
        if mod not in arrays:
            raise ValueError(f"{source}: availability given for unknown modality {mod!r}")
        if col not in columns:
            raise ValueError(f"{source}: no availability column {col!r} (modality {mod!r})")
        avail = _availability(df[col].to_numpy(), col, source)
        j = list(arrays).index(mod)
        empty = avail & ~mask[:, j]
        if empty.any():
            raise ValueError(f"{source}: column {col!r} marks modality {mod!r} available in row "
                             f"{int(np.flatnonzero(empty)[0])} but its cells are empty")
        mask[:, j] &= avail
    target, class_names = encode_labels(df[label].to_numpy(), task, f"{source} column {label!r}")
    splits = normalise_split_names(df[split].to_numpy()) if split else None
    group_ids = None
    if groups:
        empty = df[groups].isna().to_numpy()
        if empty.any():
            raise ValueError(f"{source}: group column {groups!r} is empty in row {int(np.flatnonzero(empty)[0])}")
        group_ids = df[groups].astype(str).to_numpy()
    return build_dataset(name or p.stem, arrays, target, mask, task, class_names, splits, kinds,
                         vocab_size=vocab_size, pad_id=pad_id, source=source, groups=group_ids)


def _check_rows(arrays: Mapping[str, Any], keys: Sequence[str], source: str) -> None:
    """Every array in ``keys`` has a first axis, all of one length N (one row per sample)."""
    rows = {}
    for key in keys:
        shape = np.shape(arrays[key])
        if len(shape) == 0:
            raise ValueError(f"{source}: array {key!r} is a scalar (shape ()); each array needs one row per sample")
        rows[key] = shape[0]
    if len(set(rows.values())) > 1:
        detail = ", ".join(f"{k!r} has {n}" for k, n in rows.items())
        raise ValueError(f"{source}: arrays of unequal length (rows: {detail}); each needs one row per sample")


def load_arrays(arrays: Mapping[str, np.ndarray] | str | Path, label: str = "y",
                modalities: Sequence[str] | None = None, mask: str | np.ndarray | None = None,
                split: str | None = None, task: str = "classification", name: str = "arrays",
                kinds: Mapping[str, str] | None = None, partial: str = "error",
                vocab_size: Mapping[str, int] | None = None, pad_id: Mapping[str, int] | None = None,
                groups: str | None = None) -> MultimodalDataset:
    """NumPy arrays (a dict, or an ``.npz`` path read without pickle) as a dataset.

    arrays:     key -> array with N rows; modality arrays are (N, D) vector, (N, T, C) sequence,
                (N, C, H, W) image (float, or uint8 0..255) or (N, L) text token ids.
    kinds:      modality -> ``vector`` / ``sequence`` / ``image`` / ``text``. State them: unstated
                kinds are inferred from float arrays' ranks with a ``KindInferredWarning``, and an
                integer array (other than a (N, C, H, W) uint8 image) is refused. An ``image`` of
                shape (N, H, W) gets one channel: (N, 1, H, W).
    vocab_size, pad_id: text modality -> the tokenizer's vocabulary size and padding id (default
                0); a text row of padding only is missing. Unstated vocab_size: largest id + 1, warned.
    label:      key of the (N,) target.
    modalities: keys used as modalities, in mask order (default: every key but label, mask, split
                and ``avail_*``).
    mask:       (N, M) bool availability, or the key holding it (default: the key ``"mask"`` if
                present); per-modality ``avail_<name>`` (N,) keys are honoured too. A sample whose
                modality is all NaN counts as missing either way.
    split:      key of an (N,) array of split names (default: ``"split"`` if present).
    groups:     key of an (N,) array of group ids (subject, patient; default: ``"groups"`` if
                present) -> ``data.groups`` (grouped splits; see ``mlmm.data.splits``).
    """
    if isinstance(arrays, (str, Path)):
        p = user_file(arrays, "array file")
        check_known(p)
        source = str(p)
        try:
            # Our own handle: numpy leaks the one it opens when the archive is not a valid zip.
            with open(p, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except Exception as err:  # zipfile.BadZipFile, ValueError (pickled arrays), EOFError ...
            raise ValueError(f"{source}: cannot read as a NumPy .npz archive: {err}") from None
        name = name if name != "arrays" else p.stem
    else:
        source = f"arrays {name!r}"
        arrays = dict(arrays)
    if label not in arrays:
        raise ValueError(f"{source}: no label key {label!r}; keys: {', '.join(arrays)}")
    mask_key = mask if isinstance(mask, str) else ("mask" if mask is None and "mask" in arrays else None)
    split_key = split if split is not None else ("split" if "split" in arrays else None)
    group_key = groups if groups is not None else ("groups" if "groups" in arrays else None)
    if group_key is not None and group_key not in arrays:
        raise ValueError(f"{source}: no groups key {group_key!r}; keys: {', '.join(arrays)}")
    reserved = {label, mask_key, split_key, group_key}
    if modalities is None:
        modalities = [k for k in arrays if k not in reserved and not k.startswith("avail_")]
    unknown = [m for m in modalities if m not in arrays]
    if unknown:
        raise ValueError(f"{source}: no array {unknown[0]!r}; keys: {', '.join(arrays)}")
    _check_rows(arrays, [*modalities, label, *(k for k in (mask_key, split_key, group_key) if k),
                         *(f"avail_{m}" for m in modalities if f"avail_{m}" in arrays)], source)
    inputs = {}
    for m in modalities:
        x = np.asarray(arrays[m])
        if x.dtype.kind not in "fiub":
            raise ValueError(f"{source}: array {m!r} is not numeric ({x.dtype})")
        inputs[m] = x.astype(np.float32) if x.dtype == bool else x  # storage per kind: build_dataset
    avail = nan_mask(inputs, source, partial)
    given = arrays[mask_key] if mask_key else mask
    if given is not None:
        given = np.asarray(given)
        if given.shape != avail.shape or given.dtype != bool:
            raise ValueError(f"{source}: mask must be bool of shape {avail.shape}, got {given.dtype} {given.shape}")
        avail &= given
    for j, m in enumerate(modalities):
        if f"avail_{m}" in arrays:
            avail[:, j] &= np.asarray(arrays[f"avail_{m}"]).astype(bool)
    target, class_names = encode_labels(arrays[label], task, f"{source} key {label!r}")
    splits = normalise_split_names(arrays[split_key]) if split_key else None
    return build_dataset(name, inputs, target, avail, task, class_names, splits, kinds,
                         vocab_size=vocab_size, pad_id=pad_id, source=source,
                         groups=np.asarray(arrays[group_key]) if group_key else None)
