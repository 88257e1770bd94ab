"""MultimodalDataset: arrays per modality + a natural availability mask + labels + named splits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.utils.data
from torch import Tensor

from .batch import Batch, collate, nonfinite_as_missing, validate_batch, zero_masked
from .spec import DatasetSpec
from .timemask import apply_time_mask, check_time_mask, select_time_mask


class MultimodalDataset(torch.utils.data.Dataset):
    """An in-memory multimodal dataset, validated once at construction.

    inputs: modality -> array (N, *shape); NaN is allowed only where ``mask`` is False.
            Images may be uint8 (kept as uint8, scaled to [0, 1] by the Standardizer);
            text holds integer token ids (kept as int64) checked against the spec's
            ``vocab_size``; a text row of nothing but ``pad_id`` counts as missing.
    mask:   (N, M) bool, the *natural* availability (real data arrives incomplete);
            ``None`` means every entry is present.
    target: (N,) integer labels (classification) or (N,)/(N, K) floats (regression); ``None``
            for new data to predict (no labels: ``target`` is None, ``len`` counts rows).
    splits: split name -> row indices into this dataset (e.g. ``{"train": ..., "test": ...}``).
    time_mask: optional sequence modality -> (N, T) bool observed time steps (``None``: every
            step observed). A modality with no observed step counts as missing (the mask is
            ANDed with ``time_mask[name].any(1)``); unobserved steps are stored as zeros
            (NaN allowed there). See ``mlmm.data.timemask``.
    groups: optional (N,) group id per row (the subject, patient or device a row comes from; ints
            or strings). Rows of one group are not independent: the grouped splits of
            ``mlmm.data.splits`` never put one group on both sides, and the ``systematic``
            protocol draws its missingness per group from the same ids.

    nonfinite: NaN/inf in a *present* entry is an error naming the sample and modality
            (``"error"``, the default) or makes that entry missing (``"missing"``).
    class_names: optional names of the classes (label i is ``class_names[i]``), set by the
            file loaders; ``FittedModel.predict`` returns these names.

    Masked-out slots are stored as zeros, so every batch drawn from here honours
    the ``Batch`` contract without further checks.

    It is a map-style ``torch.utils.data.Dataset``: ``data[i]`` is one sample as a dict
    (``inputs``: modality -> (*shape) tensor, ``mask``: (M,) bool, ``target``: label or
    absent, ``index``: int), and ``collate`` (or ``mlmm.data.collate``) stacks a list of
    them into a ``Batch``, so ``DataLoader(data, batch_size=64, shuffle=True,
    collate_fn=data.collate)`` works without copying the data.
    """

    def __init__(
        self,
        spec: DatasetSpec,
        inputs: Mapping[str, np.ndarray | Tensor],
        target: np.ndarray | Tensor | None,
        mask: np.ndarray | Tensor | None = None,
        splits: Mapping[str, np.ndarray] | None = None,
        _validated: bool = False,
        time_mask: Mapping[str, np.ndarray | Tensor] | None = None,
        groups: np.ndarray | Tensor | list | None = None,
        class_names: Sequence[str] | None = None,
        nonfinite: str = "error",
    ) -> None:
        self.spec = spec
        names = spec.modality_names
        unknown = sorted(set(inputs) - set(names))
        if unknown:
            raise ValueError(f"unknown modality {unknown[0]!r}; dataset {spec.name!r} has {', '.join(names)}")
        for name in names:
            if name not in inputs:
                raise ValueError(f"dataset {spec.name!r}: no array given for modality {name!r}")
        n = self._n_rows(spec, inputs, target)
        tensors = {m.name: _stored(m, inputs[m.name]) for m in spec.modalities}
        if mask is None:
            mask_t = torch.ones(n, len(names), dtype=torch.bool)
        else:
            mask_t = torch.as_tensor(np.asarray(mask) if not isinstance(mask, Tensor) else mask)
        if mask_t.dtype != torch.bool:
            raise ValueError(f"mask must be boolean, got {mask_t.dtype}")
        if tuple(mask_t.shape) != (n, len(names)):
            raise ValueError(f"mask must have shape ({n}, {len(names)}), got {tuple(mask_t.shape)}")
        for m in spec.modalities:
            if tensors[m.name].shape[0] != n:
                raise ValueError(
                    f"modality {m.name!r} has {tensors[m.name].shape[0]} rows but there are {n} "
                    + ("labels" if target is not None else f"rows of modality {names[0]!r}")
                )
        target_t = None if target is None else _as_target(target, spec)
        time_t = None
        if time_mask is not None:
            time_t = {k: torch.as_tensor(np.asarray(v) if not isinstance(v, Tensor) else v)
                      for k, v in time_mask.items()}
            check_time_mask(time_t, spec, n)
        if not _validated:
            if time_t is not None:
                tensors, mask_t = apply_time_mask(tensors, mask_t, time_t, spec)
            mask_t = padding_as_missing(tensors, mask_t, spec)
            if nonfinite == "missing":
                mask_t = nonfinite_as_missing(Batch(tensors, mask_t), spec).mask
            elif nonfinite != "error":
                raise ValueError(f"nonfinite must be 'error' or 'missing', got {nonfinite!r}")
            # NaN in a masked-out slot is how many real files mark absence: zero it.
            tensors = zero_masked(tensors, mask_t, spec)
            validate_batch(Batch(tensors, mask_t, target_t, time_t), spec)
        self.inputs: dict[str, Tensor] = tensors
        self.mask: Tensor = mask_t
        self.target: Tensor | None = target_t
        self.class_names: tuple[str, ...] | None = None if class_names is None else tuple(str(c) for c in class_names)
        if self.class_names is not None and spec.task.kind == "classification" \
                and len(self.class_names) != spec.task.n_classes:
            raise ValueError(f"{len(self.class_names)} class names for {spec.task.n_classes} classes")
        self.time_mask: dict[str, Tensor] | None = time_t
        self.groups: np.ndarray | None = _groups(groups, n, spec.name)
        self.splits: dict[str, np.ndarray] = {}
        for split_name, idx in (splits or {}).items():
            idx = np.asarray(idx, dtype=np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise ValueError(f"split {split_name!r} indexes rows outside [0, {n})")
            self.splits[split_name] = idx

    @staticmethod
    def _n_rows(spec: DatasetSpec, inputs: Mapping[str, np.ndarray | Tensor], target) -> int:
        if target is not None:
            return len(target)
        return len(inputs[spec.modality_names[0]])

    def __len__(self) -> int:
        return int(self.mask.shape[0])

    @property
    def has_labels(self) -> bool:
        return self.target is not None

    @property
    def labels(self) -> np.ndarray:
        if self.target is None:
            raise ValueError(f"dataset {self.spec.name!r} has no labels (it was built with target=None)")
        return self.target.numpy()

    def __getitem__(self, i: int) -> dict:
        """Sample ``i`` as a dict: ``inputs`` modality -> (*shape) tensor (views, no copy),
        ``mask`` (M,) bool, ``index`` its row, ``target`` where the data has labels,
        ``time_mask`` modality -> (T,) bool where the data has one. ``collate`` inverts it."""
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"sample {i} is out of range for {len(self)} samples")
        i %= len(self)
        item = {"inputs": {k: v[i] for k, v in self.inputs.items()}, "mask": self.mask[i], "index": i}
        if self.target is not None:
            item["target"] = self.target[i]
        if self.time_mask is not None:
            item["time_mask"] = {k: v[i] for k, v in self.time_mask.items()}
        return item

    @staticmethod
    def collate(items: Sequence[dict]) -> Batch:
        """A list of ``data[i]`` dicts -> one ``Batch`` (B = len(items)); see ``mlmm.data.collate``."""
        return collate(items)

    def loader(self, batch_size: int = 128, shuffle: bool = False, **kwargs) -> torch.utils.data.DataLoader:
        """``torch.utils.data.DataLoader`` over this dataset yielding ``Batch`` objects
        (``kwargs`` go to the DataLoader, e.g. ``generator=`` for a seeded shuffle)."""
        from torch.utils.data import DataLoader

        return DataLoader(self, batch_size=batch_size, shuffle=shuffle, collate_fn=collate, **kwargs)

    def as_batch(self) -> Batch:
        return Batch(self.inputs, self.mask, self.target, self.time_mask)

    def subset(self, index: np.ndarray | Tensor) -> MultimodalDataset:
        """Rows ``index`` as a new dataset (no splits; already validated)."""
        idx = torch.as_tensor(np.asarray(index, dtype=np.int64))
        return MultimodalDataset(
            self.spec,
            {k: v[idx] for k, v in self.inputs.items()},
            None if self.target is None else self.target[idx],
            self.mask[idx],
            _validated=True,
            time_mask=select_time_mask(self.time_mask, idx),
            groups=None if self.groups is None else self.groups[idx.numpy()],
            class_names=self.class_names,
        )

    def split(self, name: str) -> MultimodalDataset:
        if name not in self.splits:
            known = ", ".join(self.splits) or "none"
            raise ValueError(f"dataset {self.spec.name!r} has no split {name!r}; known: {known}")
        return self.subset(self.splits[name])

    def with_mask(self, mask: np.ndarray | Tensor) -> MultimodalDataset:
        """Same rows with availability narrowed to ``mask & natural mask``; newly masked slots are zeroed."""
        mask_t = torch.as_tensor(np.asarray(mask) if not isinstance(mask, Tensor) else mask)
        if tuple(mask_t.shape) != tuple(self.mask.shape) or mask_t.dtype != torch.bool:
            raise ValueError(f"mask must be bool of shape {tuple(self.mask.shape)}, "
                             f"got {mask_t.dtype} {tuple(mask_t.shape)}")
        batch = self.as_batch().with_mask(mask_t)
        return MultimodalDataset(self.spec, batch.inputs, self.target, batch.mask, splits=self.splits, _validated=True,
                                 time_mask=self.time_mask, groups=self.groups, class_names=self.class_names)

    def with_time_mask(self, time_mask: Mapping[str, np.ndarray | Tensor]) -> MultimodalDataset:
        """Same rows with observed steps narrowed to ``time_mask & self.time_mask``
        (sequence modality -> (N, T) bool); unobserved steps are zeroed and a modality
        left with no observed step becomes missing."""
        time_t = {k: torch.as_tensor(np.asarray(v) if not isinstance(v, Tensor) else v) for k, v in time_mask.items()}
        batch = self.as_batch().with_time_mask(time_t, self.spec)
        return MultimodalDataset(self.spec, batch.inputs, self.target, batch.mask, splits=self.splits, _validated=True,
                                 time_mask=batch.time_mask, groups=self.groups, class_names=self.class_names)


def _as_target(target: np.ndarray | Tensor, spec: DatasetSpec) -> Tensor:
    """Labels as long (classification, integers checked) or float32 (regression)."""
    target_t = torch.as_tensor(np.asarray(target) if not isinstance(target, Tensor) else target)
    if spec.task.kind == "classification":
        if target_t.dtype.is_floating_point:
            if not torch.equal(target_t, target_t.round()):
                raise ValueError("classification labels must be integers")
        return target_t.to(torch.long)
    return target_t.to(torch.float32)


def _groups(groups, n: int, name: str) -> np.ndarray | None:
    """``groups`` as an (n,) numpy array of ids, or None; a wrong length or a missing id is an error."""
    if groups is None:
        return None
    ids = np.asarray(groups.numpy() if isinstance(groups, Tensor) else groups)
    if ids.ndim != 1 or len(ids) != n:
        raise ValueError(f"dataset {name!r}: groups must hold one id per row ({n}), got shape {ids.shape}")
    if ids.dtype.kind == "f" and np.isnan(ids).any():
        row = int(np.flatnonzero(np.isnan(ids))[0])
        raise ValueError(f"dataset {name!r}: groups has a missing id (NaN) at row {row}")
    if ids.dtype.kind == "O":
        ids = ids.astype(str)
    return ids


def _stored(m, x: np.ndarray | Tensor) -> Tensor:
    """How modality ``m`` is kept in memory: token ids int64, uint8 images uint8, the rest float32."""
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x)
    if m.kind == "text":
        return x.to(torch.int64) if not x.dtype.is_floating_point and x.dtype != torch.bool else x
    if m.kind == "image" and x.dtype == torch.uint8:
        return x
    return x.to(torch.float32)


def padding_as_missing(inputs: Mapping[str, Tensor], mask: Tensor, spec: DatasetSpec) -> Tensor:
    """``mask`` with every text row made only of ``pad_id`` marked missing (an empty caption
    carries no information; the mask, not the padding, then says so)."""
    mask = mask.clone()
    for j, m in enumerate(spec.modalities):
        if m.kind == "text":
            mask[:, j] &= (inputs[m.name] != m.pad_id).any(dim=1)
    return mask


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of row indices into (first, second); ``second`` gets ``test_fraction``
    of every class (rounded), both sorted. Same seed, same split, on every platform."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    first, second = [], []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        rows = rows[rng.permutation(rows.size)]
        k = int(round(test_fraction * rows.size))
        second.append(rows[:k])
        first.append(rows[k:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))
