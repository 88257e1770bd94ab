"""UEA / UCR ``.ts`` time-series files (sktime / aeon format) with channel groups as modalities.

Written here rather than taken from aeon (``aeon.datasets.load_from_tsfile``):
aeon pulls numba, scipy, pandas and scikit-learn pins in for one text parser,
and the format is small. Supported: ``@problemName``, ``@univariate``,
``@dimensions``, ``@equalLength``, ``@seriesLength``, ``@classLabel true ...``
(labels coded in header order) or ``@targetLabel true`` (regression),
``@missing``; ``#`` comments; data lines of ``:``-separated dimensions of
``,``-separated values with ``?`` for a missing value. ``@timeStamps true``
files are refused with a clear error.

Missing values, per modality (a group of channels) and sample:
- every value ``?`` -> the modality is missing for that sample (mask False);
- whole time steps ``?`` across the group -> those steps are unobserved
  (``data.time_mask``; stored as zeros);
- some channels ``?`` at a step where others have values -> an error naming the
  file, line and modality (``scattered="error"``), or with ``scattered="step"``
  that step is treated as unobserved for the modality.
Unequal lengths are padded at the end to the longest series; padded steps are
unobserved in ``data.time_mask`` (so methods that read time masks skip them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..base import MultimodalDataset
from ._build import build_dataset, encode_labels
from ._files import check_known, user_file


@dataclass
class TsFile:
    """A parsed .ts file: ``series[i]`` is (C, T_i) float64 with NaN for '?';
    ``labels`` raw label strings; ``class_names`` from @classLabel (None for regression)."""

    path: Path
    series: list[np.ndarray]
    labels: list[str]
    class_names: tuple[str, ...] | None
    header: dict[str, str] = field(default_factory=dict)


def _flag(header: dict[str, str], key: str, path: Path) -> bool | None:
    value = header.get(key)
    if value is None:
        return None
    word = value.split()[0].lower() if value.split() else ""
    if word not in ("true", "false"):
        raise ValueError(f"{path}: @{key} must be true or false, got {value!r}")
    return word == "true"


def read_ts(path: str | Path) -> TsFile:
    """Parse a .ts file; a malformed or truncated file raises ``ValueError`` naming file and line."""
    p = user_file(path, ".ts file")
    header: dict[str, str] = {}
    series: list[np.ndarray] = []
    labels: list[str] = []
    in_data = False
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{p}: not a text .ts file ({err})") from None
    has_label = None
    n_dims = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            if not line.startswith("@"):
                raise ValueError(f"{p}:{lineno}: expected a @header line before @data, got {line[:40]!r}")
            key, _, value = line[1:].partition(" ")
            key = key.lower()
            if key == "data":
                in_data = True
                if _flag(header, "timestamps", p):
                    raise ValueError(f"{p}: @timeStamps true files are not supported; export without time stamps")
                cls, tgt = _flag(header, "classlabel", p), _flag(header, "targetlabel", p)
                has_label = bool(cls) or bool(tgt)
                if "dimensions" in header:
                    try:
                        n_dims = int(header["dimensions"])
                    except ValueError:
                        raise ValueError(f"{p}: @dimensions is not an integer: {header['dimensions']!r}") from None
                elif _flag(header, "univariate", p):
                    n_dims = 1
                continue
            header[key] = value.strip()
            continue
        parts = line.split(":")
        if has_label:
            labels.append(parts[-1].strip())
            parts = parts[:-1]
        if n_dims is not None and len(parts) != n_dims:
            raise ValueError(f"{p}:{lineno}: {len(parts)} dimensions, header says {n_dims} "
                             "(a truncated or corrupt line?)")
        dims = []
        for d, part in enumerate(parts):
            try:
                dims.append(np.array([np.nan if v.strip() == "?" else float(v) for v in part.split(",")]))
            except ValueError:
                raise ValueError(f"{p}:{lineno}: dimension {d} has a value that is not a number or '?'") from None
        lengths = {len(v) for v in dims}
        if len(lengths) > 1:
            raise ValueError(f"{p}:{lineno}: dimensions of one series have different lengths {sorted(lengths)}")
        series.append(np.stack(dims))
    if not in_data:
        raise ValueError(f"{p}: no @data section (truncated or not a .ts file)")
    if not series:
        raise ValueError(f"{p}: @data section is empty")
    if len({s.shape[0] for s in series}) > 1:
        raise ValueError(f"{p}: series have different numbers of dimensions")
    class_names = None
    if _flag(header, "classlabel", p):
        class_names = tuple(header["classlabel"].split()[1:])
        unknown = sorted(set(labels) - set(class_names))
        if unknown:
            raise ValueError(f"{p}: label {unknown[0]!r} is not in @classLabel {list(class_names)}")
    if _flag(header, "equallength", p) and len({s.shape[1] for s in series}) > 1:
        raise ValueError(f"{p}: @equalLength true but series lengths differ")
    return TsFile(p, series, labels, class_names, header)


def load_ts(train: str | Path, test: str | Path | None = None,
            channels: Mapping[str, Sequence[int]] | None = None, name: str | None = None,
            scattered: str = "error") -> MultimodalDataset:
    """One or two .ts files (the archive's ``_TRAIN`` / ``_TEST``) as a dataset of sequence modalities.

    channels: modality -> .ts dimension indices, e.g. ``{"acc": [0, 1, 2], "gyro": [3, 4, 5]}``
              (default: one modality per dimension, ``dim0``, ``dim1``, ...). Unlisted dimensions
              are dropped.
    Returns inputs modality -> (N, T, C) float32 (T the longest series), splits
    ``{"train", "test"}`` when ``test`` is given, ``data.class_names`` in @classLabel order,
    and ``data.time_mask`` where steps are padded or '?' (see the module docstring).
    """
    if scattered not in ("error", "step"):
        raise ValueError(f"scattered must be 'error' or 'step', got {scattered!r}")
    files = [read_ts(train)] + ([read_ts(test)] if test is not None else [])
    for f in files:
        check_known(f.path)
    first = files[0]
    n_dims = first.series[0].shape[0]
    for f in files[1:]:
        if f.series[0].shape[0] != n_dims or f.class_names != first.class_names:
            raise ValueError(f"{f.path}: dimensions or @classLabel differ from {first.path}")
    if channels is None:
        channels = {f"dim{d}": [d] for d in range(n_dims)}
    else:
        channels = {k: list(v) for k, v in channels.items()}
    for mod, chans in channels.items():
        bad = [c for c in chans if not 0 <= int(c) < n_dims]
        if bad or not chans:
            raise ValueError(f"{first.path}: modality {mod!r} names dimension {bad[0] if bad else None}; "
                             f"the file has dimensions 0..{n_dims - 1}")
    series = [s for f in files for s in f.series]
    raw_labels = [lab for f in files for lab in f.labels]
    if len(raw_labels) != len(series):
        raise ValueError(f"{first.path}: the files carry no labels (@classLabel / @targetLabel false)")
    length = max(s.shape[1] for s in series)
    n = len(series)
    full = np.full((n, n_dims, length), np.nan)
    for i, s in enumerate(series):
        full[i, :, : s.shape[1]] = s
    inputs, mask, time_mask = {}, np.ones((n, len(channels)), bool), {}
    for j, (mod, chans) in enumerate(channels.items()):
        x = full[:, chans, :].transpose(0, 2, 1)  # (N, T, C)
        nan = np.isnan(x)
        step_missing = nan.all(2)  # (N, T): whole step absent (padding or '?' in every channel)
        partial = nan.any(2) & ~step_missing
        if partial.any():
            if scattered == "error":
                i, t = (int(v) for v in np.argwhere(partial)[0])
                path = files[0].path if i < len(files[0].series) else files[1].path
                row = i if i < len(files[0].series) else i - len(files[0].series)
                raise ValueError(f"{path}: series {row}, modality {mod!r}: some channels are '?' at step {t} "
                                 "while others have values; pass scattered='step' to treat such steps as unobserved")
            step_missing = step_missing | partial
        mask[:, j] = ~step_missing.all(1)
        if step_missing.any():
            time_mask[mod] = ~step_missing
        inputs[mod] = np.where(step_missing[:, :, None], 0.0, np.nan_to_num(x)).astype(np.float32)
    if first.class_names is not None:
        index = {c: k for k, c in enumerate(first.class_names)}
        target = np.array([index[v] for v in raw_labels], np.int64)
        class_names, task = first.class_names, "classification"
    else:
        target, class_names = encode_labels(np.array(raw_labels), "regression", str(first.path))
        task = "regression"
    n_train = len(files[0].series)
    splits = {"train": np.arange(n_train), "test": np.arange(n_train, n)} if test is not None else None
    stem = first.path.stem
    data = build_dataset(name or (stem[:-6] if stem.endswith("_TRAIN") else stem), inputs, target, mask,
                         task, class_names, splits, {m: "sequence" for m in inputs}, time_mask)
    return data
