"""Per-modality arrays of new samples -> a label-less dataset of a known spec (prediction input)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from torch import Tensor

from .base import MultimodalDataset
from .spec import DatasetSpec


def arrays_to_dataset(spec: DatasetSpec, inputs: Mapping[str, object], mask=None,
                      nonfinite: str = "error") -> MultimodalDataset:
    """A label-less dataset for ``spec`` from modality -> (N, *shape) arrays: an absent key is a
    modality missing for every sample; a row all NaN is missing there (without ``mask``);
    ``mask`` (N, M) bool, when given, is the availability (NaN allowed where it is False)."""
    unknown = sorted(set(inputs) - set(spec.modality_names))
    if unknown:
        raise ValueError(f"unknown modality {unknown[0]!r}; "
                         f"the model's modalities are {', '.join(spec.modality_names)}")
    given = [m for m in spec.modalities if m.name in inputs]
    if not given:
        raise ValueError(f"no modality given; the model's modalities are {', '.join(spec.modality_names)}")
    n = len(inputs[given[0].name])
    arrays, cols = {}, []
    for m in spec.modalities:
        if m.name not in inputs:
            dtype = np.int64 if m.kind == "text" else np.float32
            arrays[m.name] = np.full((n, *m.shape), m.pad_id if m.kind == "text" else 0, dtype=dtype)
            cols.append(np.zeros(n, bool))
            continue
        x = inputs[m.name]
        x = x.cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
        if x.shape[1:] != m.shape or len(x) != n:
            raise ValueError(f"modality {m.name!r}: expected shape ({n}, {', '.join(map(str, m.shape))}), "
                             f"got {x.shape}")
        arrays[m.name] = x
        if x.dtype.kind == "f":
            cols.append(~np.isnan(x.reshape(n, -1)).all(axis=1))
        else:
            cols.append(np.ones(n, bool))
    avail = np.stack(cols, axis=1)
    if mask is not None:
        mask = mask.cpu().numpy() if isinstance(mask, Tensor) else np.asarray(mask)
        if mask.shape != avail.shape or mask.dtype != bool:
            raise ValueError(f"mask must be bool of shape {avail.shape}, got {mask.dtype} {mask.shape}")
        avail = mask & avail
    return MultimodalDataset(spec, arrays, None, avail, nonfinite=nonfinite)
