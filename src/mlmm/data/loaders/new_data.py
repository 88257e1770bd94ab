"""New, unlabelled samples for a model whose spec is known: what ``mlmm predict`` reads.

``data_file_mapping`` records, at training, how a data file's columns make the modalities
(the resolved column list of each modality, availability columns, kinds); it is stored in
the saved model's manifest. ``load_new_data`` reads a file of new samples with that mapping
(or, for ``.npz``, one array per modality name) into a label-less ``MultimodalDataset`` of the
model's spec: a modality whose columns are all empty in a row is missing there, a modality
whose columns are absent from the file is missing everywhere only if ``allow_absent``; a
missing column or a wrong width is a ``ValueError`` naming the file and the modality.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..arrays import arrays_to_dataset
from ..base import MultimodalDataset
from ..spec import DatasetSpec
from ._files import user_file
from .table import _availability, parse_columns, read_table
from .user_data import read_mapping

_TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")
_ARRAYS = (".npz",)


def data_file_mapping(path: str | Path, **options: Any) -> dict[str, Any]:
    """JSON-safe record of how ``path`` (a table, an ``.npz`` or a mapping file naming one) was
    read with ``options``: ``{"format", "modalities": {name: [columns]}, "availability", ...}``."""
    p = Path(path).expanduser()
    if p.suffix.lower() in (".yaml", ".yml", ".json"):
        mapping = read_mapping(p)
        data_path = Path(mapping.pop("path")).expanduser()
        merged = {**mapping, **{k: v for k, v in options.items() if v}}
        return data_file_mapping(data_path if data_path.is_absolute() else p.parent / data_path, **merged)
    suffix = p.suffix.lower()
    record: dict[str, Any] = {"source": str(p)}
    if suffix in _TABLE_SUFFIXES:
        columns = [str(c) for c in read_table(p).columns]
        modalities = options.get("modalities") or {}
        record.update(format="table", modalities={m: [str(c) for c in parse_columns(spec, columns, m, str(p))]
                                                  for m, spec in modalities.items()},
                      availability=dict(options.get("availability") or {}))
    elif suffix in _ARRAYS:
        record.update(format="arrays", mask=options.get("mask") if isinstance(options.get("mask"), str) else None)
    else:
        record.update(format=suffix.lstrip(".") or "folder")
    return record


def load_new_data(path: str | Path, spec: DatasetSpec, mapping: Mapping[str, Any] | None = None,
                  nonfinite: str = "error") -> MultimodalDataset:
    """Unlabelled samples of ``spec`` from a table (columns by ``mapping["modalities"]``) or an
    ``.npz`` (one array per modality name, optional ``mask`` / ``avail_<name>`` keys)."""
    p = user_file(path, "data file")
    suffix = p.suffix.lower()
    source = str(p)
    if suffix in _TABLE_SUFFIXES:
        return _from_table(p, spec, mapping or {}, nonfinite)
    if suffix in _ARRAYS:
        try:
            with np.load(p, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except Exception as err:  # noqa: BLE001 - zipfile.BadZipFile, ValueError (pickled arrays), EOFError ...
            raise ValueError(f"{source}: cannot read as a NumPy .npz archive: {err}") from None
        missing = [m for m in spec.modality_names if m not in arrays]
        if len(missing) == spec.n_modalities:
            raise ValueError(f"{source}: no array named after a modality of the model "
                             f"({', '.join(spec.modality_names)})")
        inputs = {m: arrays[m] for m in spec.modality_names if m in arrays}
        mask = arrays.get("mask")
        for j, m in enumerate(spec.modality_names):
            if f"avail_{m}" in arrays:
                mask = np.ones((len(next(iter(inputs.values()))), spec.n_modalities), bool) if mask is None else mask
                mask[:, j] &= np.asarray(arrays[f"avail_{m}"]).astype(bool)
        return _dataset(spec, inputs, mask, nonfinite, source)
    raise ValueError(f"{source}: predict reads tables (.csv, .tsv, .parquet) and .npz arrays, not {suffix or 'this'}")


def _from_table(p: Path, spec: DatasetSpec, mapping: Mapping[str, Any], nonfinite: str) -> MultimodalDataset:
    import pandas as pd

    source = str(p)
    df = read_table(p)
    if len(df) == 0:
        raise ValueError(f"{source}: the table has a header but no rows")
    columns = [str(c) for c in df.columns]
    groups = dict(mapping.get("modalities") or {})
    unknown = sorted(set(groups) - set(spec.modality_names))
    if unknown:
        raise ValueError(f"{source}: the column mapping names modality {unknown[0]!r}, which the model does not have")
    inputs = {}
    for m in spec.modalities:
        if m.name not in groups:
            raise ValueError(f"{source}: no columns for modality {m.name!r} (give --modality {m.name}=COLS)")
        cols = parse_columns(groups[m.name], columns, m.name, source)
        if len(cols) != m.size:
            raise ValueError(f"{source}: modality {m.name!r} has {len(cols)} columns; the model expects {m.size}")
        block = df[cols]
        bad = [c for c in cols if not pd.api.types.is_numeric_dtype(block[c].dtype)]
        if bad:
            raise ValueError(f"{source}: column {bad[0]!r} of modality {m.name!r} is not numeric")
        values = block.to_numpy(dtype=np.float64, copy=True)
        if m.kind == "text":  # token ids; an empty group is all padding, which counts as missing
            values = np.where(np.isnan(values), m.pad_id, values).astype(np.int64)
        else:  # an all-empty group is missing; a partly empty one is an error (or missing, by choice)
            values = values.astype(np.float32)
        inputs[m.name] = values.reshape(len(df), *m.shape)
    mask = None
    for name, col in (mapping.get("availability") or {}).items():
        if col not in columns:
            raise ValueError(f"{source}: no availability column {col!r} (modality {name!r})")
        mask = np.ones((len(df), spec.n_modalities), bool) if mask is None else mask
        mask[:, spec.index(name)] &= _availability(df[col].to_numpy(), col, source)
    return _dataset(spec, inputs, mask, nonfinite, source)


def _dataset(spec: DatasetSpec, inputs: Mapping[str, np.ndarray], mask, nonfinite: str,
             source: str) -> MultimodalDataset:
    try:
        return arrays_to_dataset(spec, inputs, mask=mask, nonfinite=nonfinite)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None
