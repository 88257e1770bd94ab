"""Replace image / text modalities by the features of a frozen backbone, computed once and cached.

    from mlmm.data.feature_cache import FeatureCache
    from mlmm.data.frozen_features import frozen_features

    data = load_digits_captions()
    feats = frozen_features(data, {"caption": "hf:minilm"}, cache=FeatureCache("~/.cache/my-features"))
    # feats.spec: image (1, 8, 8) image, caption (384,) vector; same rows, mask, labels, splits

Why a dataset transform (and not a caching encoder): a frozen backbone's output depends on the
sample only, never on the method, the seed, the split or the missingness scenario, so computing
it once per dataset *before* anything else runs is exact, and afterwards every method of the zoo
sees an ordinary vector modality (its default encoder, standardisation fitted on the training
split, masks drawn by protocols, all-subsets evaluation) with nothing to know about backbones.
Rows keep their positions, so splits, groups, the natural mask and protocol masks apply
unchanged; a sample whose modality is absent gets zeros (the mask says it is absent, as always).

Backbones are given per modality as an ``nn.Module`` ((B, *shape) -> (B, W), deterministic in
eval mode) or a name: ``"hf:<local dir>"`` / ``"hf:minilm"`` (text), ``"torchvision:<arch>[:<weights
file>]"`` / ``"timm:<arch>[:<weights file>]"`` (images; ``mlmm.components.image_backbones``). A
module may state what it does to its input before its weights in a ``feature_config`` dict
attribute (resize, normalisation, pooling); that dict is part of the cache key. The input a
backbone sees is what an encoder sees with ``preprocess="none"``: uint8 images scaled to [0, 1]
float32, token ids as int64, other values float32.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from .base import MultimodalDataset
from .batch import float_values
from .feature_cache import CHUNK_BYTES, ArrayRows, FeatureCache, FeatureWriter, backbone_digest, input_digest
from .memmap import MemmapDataset, _MappedFile
from .rows import RowDataset
from .spec import DatasetSpec, ModalitySpec

__all__ = ["CACHE_ENV", "FeatureRows", "frozen_features", "register_frozen_dataset", "resolve_frozen_backbone"]

#: Environment variable naming the feature cache directory used when a caller passes no cache.
CACHE_ENV = "MLMM_FEATURE_CACHE"

#: What a caller may give per modality: a module or a backbone name.
BackboneChoice = nn.Module | str


def resolve_frozen_backbone(choice: BackboneChoice, spec: ModalitySpec) -> nn.Module:
    """The module that ``choice`` names for modality ``spec`` (a module is returned as it is)."""
    if isinstance(choice, nn.Module):
        return choice
    if not isinstance(choice, str):
        raise TypeError(f"backbone for modality {spec.name!r} must be an nn.Module or a name "
                        f"('hf:<dir>', 'torchvision:<arch>[:<weights>]', 'timm:<arch>[:<weights>]'), "
                        f"got {type(choice).__name__}")
    from ..components.injection import frozen_backbone_by_name  # components import data: resolve lazily

    return frozen_backbone_by_name(choice, spec)


def _model_input(values: np.ndarray, kind: str) -> torch.Tensor:
    """Stored values -> what the backbone reads (encoder input under preprocess="none")."""
    x = torch.from_numpy(np.ascontiguousarray(values))
    if kind == "text":
        return x.to(torch.int64)
    return float_values(x) if x.dtype == torch.uint8 else x.to(torch.float32)


def _compute(module: nn.Module, values: ArrayRows, present: np.ndarray, spec: ModalitySpec, batch_size: int,
             device: torch.device, writer: FeatureWriter) -> int:
    """Run ``module`` over the present rows of ``values`` (read in chunks), writing (b, W) blocks; returns W."""
    width = None
    with torch.no_grad(), torch.random.fork_rng(devices=[]):  # a frozen backbone must not move the caller's RNG
        for start, chunk in values.chunks(max(CHUNK_BYTES // values.row_bytes, batch_size)):
            keep = np.flatnonzero(present[start:start + len(chunk)])
            for b in range(0, len(keep), batch_size):
                local = keep[b:b + batch_size]
                out = module(_model_input(chunk[local], spec.kind).to(device))
                if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != len(local):
                    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                    raise ValueError(f"modality {spec.name!r}: backbone {type(module).__name__} must map "
                                     f"(B, {', '.join(map(str, spec.shape))}) to (B, W); it returned {shape} "
                                     f"for B = {len(local)}")
                finite = torch.isfinite(out).all(dim=1)
                if not bool(finite.all()):
                    row = start + int(local[int((~finite).nonzero()[0])])
                    raise ValueError(f"modality {spec.name!r}: backbone {type(module).__name__} gave NaN or inf "
                                     f"features for row {row}")
                width = int(out.shape[1])
                writer.write(start + local, out)
    if width is None:  # no present row: the width from one dry forward of a zero sample
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            dummy = torch.zeros(1, *spec.shape, dtype=torch.long if spec.kind == "text" else torch.float32)
            width = int(module(dummy.to(device)).shape[1])
    return width


def modality_features(module: nn.Module, values: np.ndarray | ArrayRows, present: np.ndarray, spec: ModalitySpec,
                      cache: FeatureCache | None, *, batch_size: int = 256, name: str | None = None) -> np.ndarray:
    """(N, W) float32 features of ``module`` for the rows of ``values`` (N, *spec.shape; an array or
    ``ArrayRows``-like chunked rows) where ``present`` (N,) holds (zeros elsewhere): from ``cache`` when
    it holds them, else computed (and stored there). Without a cache, computed in memory."""
    if isinstance(values, np.ndarray):
        values = ArrayRows(values)
    if tuple(values.shape[1:]) != tuple(spec.shape):
        raise ValueError(f"modality {spec.name!r}: values of shape {tuple(values.shape)}, spec says "
                         f"(N, {', '.join(map(str, spec.shape))})")
    present = np.asarray(present, dtype=bool)
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    config = dict(getattr(module, "feature_config", None) or {})  # a stated config (an attribute, not a capability)
    was_training = module.training
    module.eval()
    try:
        if cache is None:
            writer = FeatureWriter(None, values.shape[0])
            return writer.close(_compute(module, values, present, spec, batch_size, device, writer))
        backbone = backbone_digest(module, config)
        key = FeatureCache.key(backbone, input_digest(values, present), spec.kind)
        meta: dict[str, Any] = {"backbone": name or type(module).__name__, "backbone_sha256": backbone,
                                "preprocessing": config, "modality": spec.to_dict(), "n_present": int(present.sum())}
        def compute(writer: FeatureWriter) -> int:
            return _compute(module, values, present, spec, batch_size, device, writer)

        return cache.get_or_compute(key, values.shape[0], compute, meta)
    finally:
        module.train(was_training)


class _ViewRows:
    """One modality of a streamed dataset (``RowDataset``: tables, folders of files, adapted torch
    Datasets), read batch by batch with only that modality asked for (the others are not read)."""

    def __init__(self, data: RowDataset, j: int) -> None:
        m = data.spec.modalities[j]
        only = torch.zeros_like(data.mask)
        only[:, j] = data.mask[:, j]
        self.data, self.name = data.with_mask(only), m.name
        self.shape = (len(data), *m.shape)
        self.row_bytes = m.size * (8 if m.kind == "text" else 4)

    def chunks(self, size: int):
        for start in range(0, self.shape[0], size):
            batch = self.data.__getitems__(np.arange(start, min(start + size, self.shape[0])))
            yield start, batch.inputs[self.name].numpy()


class FeatureRows(RowDataset):
    """A streamed dataset ``base`` (n rows) whose modalities in ``features`` (name -> (n, W) array, in
    memory or memory-mapped) are read from those arrays, the others from ``base`` as before."""

    def __init__(self, spec: DatasetSpec, base: RowDataset, features: Mapping[str, np.ndarray]) -> None:
        super().__init__(spec, base.target, base.mask, len(base), splits=base.splits, class_names=base.class_names,
                         groups=base.groups, source=base.source)
        self.base, self.features = base, dict(features)
        self._keep = torch.tensor([m.name not in self.features for m in spec.modalities])

    def _read(self, rows: np.ndarray, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.base._read(self.base.rows[rows], mask & self._keep) if bool(self._keep.any()) else {}
        for name, array in self.features.items():  # a copy of the rows (the base writes zeros into it)
            out[name] = torch.from_numpy(np.asarray(array[np.asarray(rows)], dtype=np.float32))
        return out

    def row_bytes(self) -> int:
        return sum(m.size * (8 if m.kind == "text" else 4) for m in self.spec.modalities)

    def __getstate__(self) -> dict:
        """Pickled (a DataLoader worker) with memory-mapped features by file reference, never copied."""
        state = dict(self.__dict__)
        state["features"] = {k: _MappedFile.of(a) for k, a in self.features.items()}
        return state

    def __setstate__(self, state: dict) -> None:
        state["features"] = {k: a.open() if isinstance(a, _MappedFile) else a for k, a in state["features"].items()}
        self.__dict__.update(state)


def _feature_spec(spec: DatasetSpec, widths: Mapping[str, int]) -> DatasetSpec:
    mods = tuple(ModalitySpec(m.name, "vector", (widths[m.name],)) if m.name in widths else m
                 for m in spec.modalities)
    return DatasetSpec(spec.name, mods, spec.task)


def frozen_features(data: MultimodalDataset | MemmapDataset, backbones: Mapping[str, BackboneChoice],
                    cache: FeatureCache | str | os.PathLike | None = None, *, batch_size: int = 256
                    ) -> MultimodalDataset | MemmapDataset:
    """``data`` with each modality of ``backbones`` replaced by its frozen features, a (W,) vector modality
    of the same name (same rows, mask, labels, splits, groups and class names).

    cache: a ``FeatureCache`` or its directory (chosen by the caller); ``None``: the directory in the
    environment variable ``MLMM_FEATURE_CACHE`` when it is set (``mlmm run/bench --feature-cache DIR``
    sets it, so pool workers of a grid share one cache), else the features are computed in memory, every call.
    An in-memory dataset gets the features in memory; a memory-mapped one (``MemmapDataset``) reads them
    memory-mapped from the cache entry, batch by batch, like its other arrays (its whole arrays are
    featurised, rows outside the view as absent, so call it on the opened dataset before taking subsets);
    another streamed dataset (``RowDataset``: a table, a folder of files, an adapted torch Dataset) is read
    batch by batch, the featurised modality alone, once to hash its values and once more to compute them
    on a miss, and becomes a ``FeatureRows`` view that reads the features from the entry and the other
    modalities from the original store.
    Run the backbone where its parameters are (move it to a GPU first to featurise there).
    """
    spec = data.spec
    unknown = sorted(set(backbones) - set(spec.modality_names))
    if unknown:
        raise ValueError(f"backbone for unknown modality {', '.join(map(repr, unknown))}; dataset {spec.name!r} "
                         f"has {', '.join(spec.modality_names)}")
    if cache is None and os.environ.get(CACHE_ENV):
        cache = os.environ[CACHE_ENV]
    if cache is not None and not isinstance(cache, FeatureCache):
        cache = FeatureCache(cache)
    features: dict[str, np.ndarray] = {}
    for name, choice in backbones.items():
        j = spec.modality_names.index(name)
        m = spec.modalities[j]
        module = resolve_frozen_backbone(choice, m)
        label = choice if isinstance(choice, str) else None
        if isinstance(data, MemmapDataset):
            values = data.arrays[name]
            present = np.zeros(len(values), dtype=bool)
            present[data.rows] = data.mask[:, j].numpy()
        elif isinstance(data, RowDataset):
            values, present = _ViewRows(data, j), data.mask[:, j].numpy()
        else:
            values = data.inputs[name].numpy()
            present = data.mask[:, j].numpy()
        features[name] = modality_features(module, values, present, m, cache, batch_size=batch_size, name=label)
    new_spec = _feature_spec(spec, {k: int(v.shape[1]) for k, v in features.items()})
    if isinstance(data, MemmapDataset):
        arrays = {**data.arrays, **features}
        return MemmapDataset(new_spec, arrays, data.target, data.mask, rows=data.rows, splits=data.splits,
                             class_names=data.class_names, source=data.source)
    if isinstance(data, RowDataset):
        return FeatureRows(new_spec, data, features)
    inputs = {**data.inputs, **{k: torch.from_numpy(np.array(v)) for k, v in features.items()}}  # own copy
    time_mask = None if data.time_mask is None else {k: v for k, v in data.time_mask.items() if k not in features}
    return MultimodalDataset(new_spec, inputs, data.target, data.mask, splits=data.splits, _validated=True,
                             time_mask=time_mask or None, groups=data.groups, class_names=data.class_names)


def register_frozen_dataset(base: str, backbones: Mapping[str, str], name: str | None = None, *,
                            replace: bool = False) -> str:
    """Register dataset ``name`` (default ``"<base>+frozen"``): registered dataset ``base`` with the modalities
    of ``backbones`` (modality -> backbone *name*, e.g. ``{"caption": "hf:minilm"}``) replaced by their
    frozen features. Each load goes through ``frozen_features(..., cache=None)``, i.e. the cache directory
    of ``MLMM_FEATURE_CACHE``, so every cell of a grid, in any worker process, reuses one entry. Returns the
    name. ``replace``: re-register a name already taken (else a duplicate name is an error)."""
    from .registry import DATASETS, DatasetEntry, load_dataset

    for modality, choice in backbones.items():
        if not isinstance(choice, str):
            raise TypeError(f"register_frozen_dataset takes backbone names (a registered dataset is rebuilt by name "
                            f"in every worker); modality {modality!r} got {type(choice).__name__}")
    entry = DATASETS.get(base)
    name = name or f"{base}+frozen"
    backbones = dict(backbones)

    def loader(**params: Any) -> MultimodalDataset | MemmapDataset:
        return frozen_features(load_dataset(base, **params), backbones)

    described = ", ".join(f"{k} by {v}" for k, v in backbones.items())
    if replace and name in DATASETS:
        DATASETS.unregister(name)
    DATASETS.register(name)(DatasetEntry(
        name=name, loader=loader, description=f"{entry.description}; frozen features: {described}",
        n_samples=entry.n_samples, modalities=f"{entry.modalities}; {described} -> (W,) vector",
        task=entry.task, source=entry.source, licence=entry.licence))
    return name
