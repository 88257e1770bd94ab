"""The one batch type every method consumes, and the one place inputs are validated.

``Batch.inputs[name]`` has shape (B, *spec.modality(name).shape);
``Batch.mask`` is a (B, M) bool tensor whose column j is ``spec.modalities[j]``.
The mask is the only truth about availability: masked-out rows hold zeros
(never NaN), and no method infers missingness from values.

Sequence modalities may also carry ``Batch.time_mask[name]``, a (B, T) bool
mask of observed time steps (rules in ``mlmm.data.timemask``: a modality with
no observed step counts as missing, unobserved steps hold zeros). It is
optional (None) and methods that ignore it see the (B, M) mask and zeros.

Storage dtypes per kind: vector and sequence float; image float, or uint8
(0..255, 4x smaller in memory) which ``float_values`` scales to [0, 1] float32
where the pipeline first computes with it (the ``Standardizer``), so methods
only ever see floats; text int64 token ids in [0, vocab_size), ``pad_id``
marking padding (``ModalitySpec``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from .spec import DatasetSpec
from .timemask import apply_time_mask, check_time_mask, merge_time_masks, select_time_mask, time_mask_to


@dataclass(frozen=True)
class Batch:
    """inputs: modality -> (B, ...) float tensor, keyed in mask-column order (spec order);
    mask: (B, M) bool; target: (B,) long or (B, K) float;
    time_mask: optional sequence modality -> (B, T) bool observed steps (see module doc);
    index: optional (B,) long, each sample's row in the training split ``prepare`` saw (set by
    the training loop on training batches only, so a method keeping per-row state finds a row
    in O(1); None elsewhere — never infer it from values);
    kept: optional (B, M) bool a' ⊆ mask, the loop's modality-dropout draw, set only for a stage
    whose ``StageControl.modality_dropout`` is "offered" (the batch itself keeps the full mask
    and the method applies a' where its paper says; None otherwise)."""

    inputs: Mapping[str, Tensor]
    mask: Tensor
    target: Tensor | None = None
    time_mask: Mapping[str, Tensor] | None = None
    index: Tensor | None = None
    kept: Tensor | None = None

    @property
    def size(self) -> int:
        return int(self.mask.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """Every tensor on ``device``; ``non_blocking``: asynchronous host-to-GPU copies from pinned memory."""
        if non_blocking:
            return self._map(lambda t: t.to(device, non_blocking=True))
        return Batch(
            {k: v.to(device) for k, v in self.inputs.items()},
            self.mask.to(device),
            None if self.target is None else self.target.to(device),
            time_mask_to(self.time_mask, device),
            None if self.index is None else self.index.to(device),
            None if self.kept is None else self.kept.to(device),
        )

    def pin_memory(self) -> Batch:
        """Every tensor in pinned host memory (what a DataLoader with ``pin_memory=True`` calls)."""
        return self._map(lambda t: t.pin_memory())

    def _map(self, f) -> Batch:
        def opt(t):
            return None if t is None else f(t)

        return Batch({k: f(v) for k, v in self.inputs.items()}, f(self.mask), opt(self.target),
                     None if self.time_mask is None else {k: f(v) for k, v in self.time_mask.items()},
                     opt(self.index), opt(self.kept))

    def select(self, index: Tensor) -> Batch:
        """Rows ``index`` of every field (a new batch; nothing is mutated)."""
        return Batch(
            {k: v[index] for k, v in self.inputs.items()},
            self.mask[index],
            None if self.target is None else self.target[index],
            select_time_mask(self.time_mask, index),
            None if self.index is None else self.index[index],
            None if self.kept is None else self.kept[index],
        )

    def with_index(self, index: Tensor | None) -> Batch:
        """Same batch carrying training-row indices ``index`` ((B,) long, or None to drop them)."""
        if index is not None and tuple(index.shape) != (self.size,):
            raise ValueError(f"index must have shape ({self.size},), got {tuple(index.shape)}")
        return replace(self, index=index)

    def with_kept(self, kept: Tensor | None) -> Batch:
        """Same batch (full mask) carrying the loop's modality-dropout draw ``kept`` ⊆ mask."""
        if kept is not None:
            if kept.shape != self.mask.shape or kept.dtype != torch.bool:
                raise ValueError(f"kept must be a bool tensor shaped like the mask {tuple(self.mask.shape)}, "
                                 f"got {kept.dtype} {tuple(kept.shape)}")
            kept = kept & self.mask
        return replace(self, kept=kept)

    def with_mask(self, mask: Tensor) -> Batch:
        """Same data under a narrower mask: newly masked rows are zeroed (contract)."""
        if mask.shape != self.mask.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} != batch mask {tuple(self.mask.shape)}")
        mask = mask & self.mask
        inputs = {}
        for j, (name, x) in enumerate(self.inputs.items()):
            keep = mask[:, j].reshape(-1, *([1] * (x.dim() - 1)))
            inputs[name] = torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))
        kept = None if self.kept is None else self.kept & mask
        return replace(self, inputs=inputs, mask=mask, kept=kept)

    def with_time_mask(self, time_mask: Mapping[str, Tensor], spec: DatasetSpec) -> Batch:
        """Same data with observed steps narrowed to ``time_mask & self.time_mask``
        (modality -> (B, T) bool): unobserved steps are zeroed and a modality left
        with no observed step becomes missing in the (B, M) mask."""
        check_time_mask(time_mask, spec, self.size)
        merged = merge_time_masks(self.time_mask, time_mask)
        inputs, mask = apply_time_mask(self.inputs, self.mask, merged, spec)
        kept = None if self.kept is None else self.kept & mask
        return replace(self, inputs=inputs, mask=mask, time_mask=merged, kept=kept)


def make_batch(spec: DatasetSpec, inputs: Mapping[str, Tensor], mask: Tensor, target: Tensor | None = None,
               time_mask: Mapping[str, Tensor] | None = None, nonfinite: str = "error") -> Batch:
    """A validated ``Batch`` with inputs put in the spec's modality order (mask-column order).

    Masked-out slots may hold anything (NaN is how files mark absence): they are zeroed.
    ``nonfinite``: what NaN/inf in a *present* entry does — ``"error"`` (default: a
    ``ValueError`` naming the sample and modality) or ``"missing"`` (that modality becomes
    missing for that sample; see ``nonfinite_as_missing``).
    """
    unknown = sorted(set(inputs) - set(spec.modality_names))
    if unknown:
        raise ValueError(f"unknown modality {unknown[0]!r}; dataset {spec.name!r} has {', '.join(spec.modality_names)}")
    ordered = {name: inputs[name] for name in spec.modality_names if name in inputs}
    if len(ordered) == spec.n_modalities and isinstance(mask, Tensor) and mask.dtype == torch.bool \
            and mask.dim() == 2 and mask.shape[1] == spec.n_modalities \
            and all(isinstance(x, Tensor) and x.dim() >= 1 and x.shape[0] == mask.shape[0] for x in ordered.values()):
        ordered = zero_masked(ordered, mask, spec)  # shapes are checked by validate_batch below
    batch = Batch(ordered, mask, target, time_mask)
    if nonfinite == "missing":
        batch = nonfinite_as_missing(batch, spec)
    elif nonfinite != "error":
        raise ValueError(f"nonfinite must be 'error' or 'missing', got {nonfinite!r}")
    validate_batch(batch, spec)
    return batch


def float_values(x: Tensor) -> Tensor:
    """An image stored as uint8 (0..255) as float32 in [0, 1]; any other tensor unchanged."""
    return x.to(torch.float32).div_(255.0) if x.dtype == torch.uint8 else x


def nonfinite_as_missing(batch: Batch, spec: DatasetSpec) -> Batch:
    """The batch with every (sample, modality) holding NaN/inf marked missing (mask False,
    values zeroed). Text (integer ids) cannot hold NaN and is left alone. A sample left with
    no modality is still rejected by ``validate_batch``."""
    keep = batch.mask.clone()
    for j, m in enumerate(spec.modalities):
        x = batch.inputs[m.name]
        if x.dtype.is_floating_point:
            keep[:, j] &= torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
    if torch.equal(keep, batch.mask):
        return batch
    inputs = zero_masked(batch.inputs, keep, spec)
    return Batch(inputs, keep, batch.target, batch.time_mask)


def collate(items: Sequence[Mapping]) -> Batch:
    """Stack per-sample dicts (``MultimodalDataset[i]``: ``inputs``, ``mask``, optional
    ``target``, ``time_mask``, ``index``) into one ``Batch``: inputs (B, *shape), mask (B, M),
    ``index`` (B,) each sample's row in its dataset (methods with per-row training state use it).
    Nothing is validated again (the dataset validated its rows once). The ``collate_fn`` for
    ``torch.utils.data.DataLoader`` over a ``MultimodalDataset``."""
    if not items:
        raise ValueError("collate needs at least one sample")
    first = items[0]
    inputs = {k: torch.stack([it["inputs"][k] for it in items]) for k in first["inputs"]}
    mask = torch.stack([it["mask"] for it in items])
    target = torch.stack([torch.as_tensor(it["target"]) for it in items]) if "target" in first else None
    time_mask = None
    if first.get("time_mask") is not None:
        time_mask = {k: torch.stack([it["time_mask"][k] for it in items]) for k in first["time_mask"]}
    index = torch.as_tensor([int(it["index"]) for it in items], dtype=torch.long) if "index" in first else None
    return Batch(inputs, mask, target, time_mask, index=index)


def zero_masked(inputs: Mapping[str, Tensor], mask: Tensor, spec: DatasetSpec) -> dict[str, Tensor]:
    """Copy of ``inputs`` with every masked-out row set to 0 (NaN there is allowed and removed)."""
    out = {}
    for j, m in enumerate(spec.modalities):
        x = inputs[m.name]
        keep = mask[:, j].reshape(-1, *([1] * (x.dim() - 1)))
        out[m.name] = torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))
    return out


def validate_batch(batch: Batch, spec: DatasetSpec, *, allow_empty_samples: bool = False) -> None:
    """Raise ``ValueError`` naming the problem if ``batch`` breaks the contract for ``spec``.

    Checked: unknown or absent modality, shape and dtype per modality, mask
    shape and dtype, NaN/inf in a present entry, a non-zero value in a
    masked-out slot (mask and inputs disagree), samples with no modality,
    labels out of range; and for a time mask: known sequence modality, (B, T)
    bool, no present modality without an observed step, zeros at unobserved steps. Called once at the boundary (dataset
    construction,
    ``FittedModel.predict``), never inside the training loop.
    """
    names = spec.modality_names
    unknown = sorted(set(batch.inputs) - set(names))
    if unknown:
        raise ValueError(f"unknown modality {unknown[0]!r}; dataset {spec.name!r} has {', '.join(names)}")
    absent = [n for n in names if n not in batch.inputs]
    if absent:
        raise ValueError(f"modality {absent[0]!r} is absent from inputs (give zeros and mask it out instead)")
    if tuple(batch.inputs) != names:
        # Mask column j is modality j: keeping the dict in that order lets every
        # consumer pair columns and inputs by position. make_batch reorders for you.
        raise ValueError(
            f"inputs must be keyed in the spec's modality order ({', '.join(names)}), got "
            f"{', '.join(batch.inputs)}; build the batch with mlmm.data.batch.make_batch"
        )
    mask = batch.mask
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor, got {getattr(mask, 'dtype', type(mask))}")
    if mask.dim() != 2 or mask.shape[1] != len(names):
        raise ValueError(f"mask must have shape (B, {len(names)}), got {tuple(mask.shape)}")
    n = mask.shape[0]
    for j, m in enumerate(spec.modalities):
        x = batch.inputs[m.name]
        if not isinstance(x, Tensor):
            raise ValueError(f"modality {m.name!r}: expected a tensor, got {type(x).__name__}")
        if tuple(x.shape) != (n, *m.shape):
            raise ValueError(f"modality {m.name!r}: expected shape {(n, *m.shape)}, got {tuple(x.shape)}")
        present = mask[:, j]
        flat = x.reshape(n, -1)
        if m.kind == "text":
            if x.dtype not in (torch.int64, torch.int32):
                raise ValueError(f"modality {m.name!r}: text token ids must be int64, got {x.dtype}")
            _check_token_ids(flat[present], torch.nonzero(present).flatten(), m)
        elif m.kind == "image" and x.dtype == torch.uint8:
            pass  # 0..255 pixels: always finite
        elif not x.dtype.is_floating_point:
            raise ValueError(f"modality {m.name!r}: expected a floating dtype"
                             f"{' (or uint8)' if m.kind == 'image' else ''}, got {x.dtype}")
        else:
            bad = ~torch.isfinite(flat[present]).all(dim=1)
            if bad.any():
                row = int(torch.nonzero(present).flatten()[bad][0])
                raise ValueError(f"modality {m.name!r}: NaN or inf in a present entry (sample {row}); mark it "
                             "missing in the mask, or pass nonfinite='missing' to treat such entries as missing")
        leak = (flat[~present] != 0).any(dim=1)
        if leak.any():
            row = int(torch.nonzero(~present).flatten()[leak][0])
            raise ValueError(
                f"modality {m.name!r}: sample {row} is masked out but holds non-zero values "
                "(mask and inputs disagree; masked-out slots must hold zeros)"
            )
    if batch.time_mask is not None:
        _validate_time_mask(batch, spec)
    if not allow_empty_samples:
        empty = ~mask.any(dim=1)
        if empty.any():
            raise ValueError(
                f"{int(empty.sum())} sample(s) have no modality at all (first: sample "
                f"{int(torch.nonzero(empty)[0])}); drop them or give at least one modality"
            )
    if batch.target is not None:
        validate_target(batch.target, spec, n)


def _check_token_ids(ids: Tensor, rows: Tensor, m) -> None:
    """Present rows' token ids (K, L) of text modality ``m`` lie in [0, m.vocab_size); the error names
    the modality, the sample and the offending id."""
    if ids.numel() == 0:
        return
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or (m.vocab_size is not None and high >= m.vocab_size):
        value = low if low < 0 else high
        row = int(rows[(ids == value).any(dim=1)][0])
        bound = f"[0, vocab_size={m.vocab_size})" if m.vocab_size is not None else "[0, ...) (ids are non-negative)"
        raise ValueError(f"modality {m.name!r}: token id {value} in sample {row} is outside {bound}; "
                         "pad with pad_id (not -1) and set vocab_size to the tokenizer's")


def _validate_time_mask(batch: Batch, spec: DatasetSpec) -> None:
    """The time-mask part of ``validate_batch`` (rules in ``mlmm.data.timemask``)."""
    check_time_mask(batch.time_mask, spec, batch.size)
    for j, m in enumerate(spec.modalities):
        if m.name not in batch.time_mask:
            continue
        steps = batch.time_mask[m.name]
        present = batch.mask[:, j]
        empty = present & ~steps.any(dim=1)
        if empty.any():
            raise ValueError(
                f"modality {m.name!r}: sample {int(torch.nonzero(empty)[0])} is present in the mask but has no "
                "observed step in time_mask (a modality with no observed step counts as missing; "
                "build the batch with Batch.with_time_mask)"
            )
        leak = ((batch.inputs[m.name] != 0).any(dim=2) & ~steps & present.unsqueeze(1)).any(dim=1)
        if leak.any():
            raise ValueError(
                f"modality {m.name!r}: sample {int(torch.nonzero(leak)[0])} holds non-zero values at "
                "unobserved time steps (unobserved steps must hold zeros)"
            )


def validate_target(target: Tensor, spec: DatasetSpec, n: int) -> None:
    """Labels: (n,) integers in [0, n_classes) for classification; finite floats for regression."""
    if target.shape[0] != n:
        raise ValueError(f"target has {target.shape[0]} rows but the batch has {n} samples")
    if spec.task.kind == "classification":
        if target.dtype.is_floating_point or target.dim() != 1:
            raise ValueError(f"classification labels must be a 1-D integer tensor, "
                             f"got {target.dtype} {tuple(target.shape)}")
        if n and (int(target.min()) < 0 or int(target.max()) >= int(spec.task.n_classes)):
            raise ValueError(
                f"labels out of range: found [{int(target.min())}, {int(target.max())}] "
                f"for {spec.task.n_classes} classes"
            )
    elif not torch.isfinite(target.float()).all():
        raise ValueError("regression targets hold NaN or inf")
