"""One entry point for the user's file, by format, and its registration as a dataset name.

``load_data_file(path, **options)`` picks the loader from the path: a folder is
AV-MNIST; ``.csv``/``.tsv``/``.parquet`` a table; ``.npz`` arrays; ``.ts`` a
UEA file; ``.pkl``/``.pickle`` an MMSA pickle; ``.yaml``/``.yml``/``.json`` a
mapping file naming one of them, e.g.::

    path: my.csv            # relative to the mapping file
    modalities: {a: [col1, col2], b: "prefix:b_"}
    label: y
    split: split            # optional
    availability: {b: b_present}   # optional
    task: classification
    kinds: {a: vector, b: text}    # optional (else inferred where unambiguous, with a warning)
    vocab_size: {b: 30522}         # text only: the tokenizer's vocabulary size and padding id
    pad_id: {b: 0}

``register_data_file`` registers the loaded data under ``file:<stem>`` so that
everything that takes a dataset name (``mlmm run``, ``run_experiment``) can use it.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from ..base import MultimodalDataset
from ..registry import DATASETS, DatasetEntry
from .avmnist import load_avmnist
from .mmsa import load_mmsa
from .table import load_arrays, load_table
from .ts import load_ts

_TABLE = (".csv", ".tsv", ".parquet", ".pq")


def read_mapping(path: Path) -> dict[str, Any]:
    import yaml

    from ...errors import UnsafeFileError
    from ...safe_yaml import load_yaml, read_text_file

    text = read_text_file(path, "data mapping")  # a folder, a binary or oversized file: named there
    try:
        mapping = json.loads(text) if path.suffix.lower() == ".json" else load_yaml(text, str(path))
    except UnsafeFileError:
        raise
    except (OSError, ValueError, yaml.YAMLError) as err:
        detail = " ".join(str(err).split())
        raise ValueError(f"{path}: cannot read the data mapping file: {detail}") from None
    if not isinstance(mapping, dict) or "path" not in mapping:
        raise ValueError(f"{path}: a data mapping file is a mapping with at least 'path' (the data file)")
    return mapping


#: The `mlmm run` flag that gives a loader option.
_FLAGS = {"label": "--label COLUMN", "modalities": "--modality NAME=COLS per modality"}


def _call(loader, path: Path, options: dict[str, Any]) -> MultimodalDataset:
    """``loader(path, **options)``; an option the format does not take is a clear error (not a TypeError)."""
    parameters = list(inspect.signature(loader).parameters.values())[1:]
    accepted = [q.name for q in parameters]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"{path}: option {unknown[0]!r} does not apply to {loader.__name__} "
                         f"(it takes {', '.join(accepted)})")
    missing = [q.name for q in parameters if q.default is inspect.Parameter.empty and q.name not in options]
    if missing:
        flag = _FLAGS.get(missing[0], missing[0])
        raise ValueError(f"{path}: {loader.__name__} needs {missing[0]!r} (give {flag}, or '{missing[0]}' "
                         "in a mapping file)")
    return loader(path, **options)


def load_data_file(path: str | Path, **options: Any) -> MultimodalDataset:
    """The user's data file (see the module docstring for the formats); ``options`` go to its loader."""
    p = Path(path).expanduser()
    suffix = p.suffix.lower()
    if suffix in (".yaml", ".yml", ".json"):
        if not p.is_file():
            raise FileNotFoundError(f"data mapping file {str(p)!r} does not exist")
        mapping = read_mapping(p)
        data_path = Path(str(mapping.pop("path"))).expanduser()
        base = p.parent
        if data_path.suffix.lower() in (".yaml", ".yml", ".json"):  # (a file naming itself recursed forever)
            raise ValueError(f"{p}: 'path' names another mapping file ({data_path}); it must name the data file")
        for key in ("test",):  # a .ts test file, relative like the data path
            if key in mapping:
                mapping[key] = str(Path(mapping[key]) if Path(mapping[key]).is_absolute() else base / mapping[key])
        return load_data_file(data_path if data_path.is_absolute() else base / data_path, **{**mapping, **options})
    if p.is_dir():
        if suffix in (*_TABLE, ".npz", ".ts", ".pkl", ".pickle"):
            raise IsADirectoryError(f"{p}: is a folder, not a {suffix} file")
        return _call(load_avmnist, p, options)
    if suffix in _TABLE:
        return _call(load_table, p, options)
    if suffix == ".npz":
        return _call(load_arrays, p, options)
    if suffix == ".ts":
        if "test" not in options and p.stem.endswith("_TRAIN"):
            sibling = p.with_name(p.stem[:-6] + "_TEST.ts")
            if sibling.is_file():
                options["test"] = sibling
        return _call(load_ts, p, options)
    if suffix in (".pkl", ".pickle"):
        return _call(load_mmsa, p, options)
    if not p.exists():
        raise FileNotFoundError(f"data file {str(p)!r} does not exist")
    raise ValueError(f"{p}: unknown data format {suffix or '(no suffix)'}; use .csv, .tsv, .parquet, .npz, .ts, "
                     ".pkl, an AV-MNIST folder, or a .yaml/.json mapping file")


def register_data_file(path: str | Path, **options: Any) -> str:
    """Load the file once and register it as dataset ``file:<stem>`` (replacing an earlier one of
    that name); returns the name. Each ``load_dataset`` of it returns the same loaded dataset."""
    data = load_data_file(path, **options)
    name = f"file:{Path(path).stem}"
    if name in DATASETS:
        DATASETS.unregister(name)
    spec = data.spec
    DATASETS.register(name)(DatasetEntry(
        name=name, loader=lambda: data, description=f"user data from {path}", n_samples=len(data),
        modalities=", ".join(f"{m.name} {m.shape}" for m in spec.modalities),
        task=spec.task.kind, source=str(path), licence="the user's"))
    return name


def parse_modality_flags(items: list[str]) -> dict[str, str]:
    """``["a=col1,col2", "b=prefix:b_"]`` -> ``{"a": "col1,col2", "b": "prefix:b_"}`` (CLI ``--modality``)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"--modality expects NAME=COLUMNS or NAME=prefix:PREFIX, got {item!r}")
        if key.strip() in out:
            raise ValueError(f"--modality {key.strip()!r} given twice")
        out[key.strip()] = value.strip()
    return out


def parse_kind_flags(items: list[str], flag: str = "--kind", cast: Any = None) -> dict[str, Any]:
    """``["image=image", "caption=text"]`` -> ``{"image": "image", "caption": "text"}`` (CLI ``--kind``;
    ``--vocab-size`` / ``--pad-id`` with ``cast=int``). A kind must be one of ``MODALITY_KINDS``."""
    from ..spec import MODALITY_KINDS

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not key or not value:
            raise ValueError(f"{flag} expects NAME=VALUE, got {item!r}")
        if key in out:
            raise ValueError(f"{flag} {key!r} given twice")
        if cast is None and value not in MODALITY_KINDS:
            raise ValueError(f"{flag} {item!r}: the kind must be one of {', '.join(MODALITY_KINDS)}")
        if cast is not None:
            try:
                value = cast(value)
            except ValueError:
                raise ValueError(f"{flag} {item!r}: {value!r} is not an integer") from None
        out[key] = value
    return out


def resolve_dataset(dataset: str | None = None, data_file: str | Path | None = None, **options: Any) -> str:
    """A registered dataset name: ``dataset`` as is, or ``data_file`` registered as ``file:<stem>``
    with ``options`` (``modalities``, ``label``, ``split``, ``task``, ``kinds``, ``vocab_size``, ``groups``,
    ``pad_id``: see ``load_data_file``; empty ones are left out, so a mapping file's keys stay).
    Exactly one of ``dataset`` and ``data_file`` must be given."""
    if not data_file:
        if not dataset:
            raise ValueError("give --dataset NAME (see `mlmm datasets`) or --data-file PATH")
        return dataset
    if dataset:
        raise ValueError("give either --dataset or --data-file, not both")
    return register_data_file(data_file, **{k: v for k, v in options.items() if v})
