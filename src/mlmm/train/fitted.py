"""FittedModel: a trained method with its preprocessing, class names and prediction API.

``predict`` / ``predict_proba`` / ``predict_logits`` take a ``MultimodalDataset``
(labels or not), a ``Batch`` or a dict of per-modality arrays (NaN rows or
absent keys = missing), validate present entries (NaN/inf there is an error
naming the sample and modality, or, with ``nonfinite="missing"``, makes that
entry missing), and never return NaN silently. ``save`` / ``mlmm.load`` are in
``mlmm.train.saving``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.utils.data
from torch import Tensor, nn

from ..data.arrays import arrays_to_dataset
from ..data.base import MultimodalDataset
from ..data.batch import Batch, make_batch, nonfinite_as_missing
from ..data.preprocess import Standardizer
from ..data.spec import DatasetSpec
from ..errors import UnseenModalityWarning
from ..methods.base import Capability, MissingModalityModel, Output

Data = MultimodalDataset | Batch | Mapping[str, object]


def needs_calibration(method: nn.Module) -> bool:
    """True when ``method`` declares ``Capability.CALIBRATES``: prediction depends on its
    ``calibrate`` step (a wrapper declares its members')."""
    return isinstance(method, MissingModalityModel) and method.has(Capability.CALIBRATES)


def _check_present_finite(batch: Batch) -> None:
    """``ValueError`` naming the modality and first row where a present float entry is NaN or inf."""
    for j, (name, x) in enumerate(batch.inputs.items()):
        if not x.is_floating_point() or x.numel() == 0:
            continue
        bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1) & batch.mask[:, j]
        if bool(bad.any()):
            row = int(bad.nonzero()[0, 0])
            raise ValueError(f"modality {name!r} holds NaN or inf in {int(bad.sum())} present rows (first row {row}); "
                             "mark those entries missing in the mask, fill them, or pass nonfinite='missing'")


def _is_streamed_dataset(data) -> bool:
    """A map-style torch Dataset that is not held in memory (e.g. ``mlmm.data.MemmapDataset``)."""
    return isinstance(data, torch.utils.data.Dataset) and not isinstance(data, MultimodalDataset)


class FittedModel(nn.Module):
    """A trained method with the preprocessing it was trained under.

    ``forward`` takes a *raw* batch (the units of the data set), standardises
    present entries with the training statistics and runs the method, so the
    preprocessing travels with the model (``state_dict`` holds both, and a
    ``calibrated`` flag). ``class_names``: label i is ``class_names[i]`` (from the
    training data's loader; None when it had none). ``metadata``: JSON-safe facts
    written into the saved manifest (``mlmm run --save-model`` stores the data-file
    column mapping there, which ``mlmm predict`` reuses).
    """

    def __init__(self, standardizer: Standardizer, method: MissingModalityModel,
                 use_unseen_modalities: bool = False, class_names: Sequence[str] | None = None,
                 metadata: Mapping | None = None) -> None:
        super().__init__()
        self.standardizer = standardizer
        self.method = method
        #: (M,) bool: modalities present in at least one training row (set by ``Trainer.fit``).
        #: A modality never seen in training has an untrained encoder and no standardisation
        #: statistics; it is treated as missing at prediction (with an ``UnseenModalityWarning``)
        #: unless ``use_unseen_modalities`` is True.
        self.register_buffer("seen_modalities", torch.ones(method.spec.n_modalities, dtype=torch.bool))
        self.use_unseen_modalities = use_unseen_modalities
        self.class_names = None if class_names is None else tuple(str(c) for c in class_names)
        self.metadata = dict(metadata or {})
        # A buffer so that it travels in state_dict: prediction refuses a method whose
        # calibrate step never ran (a pattern router would route everything to its fallback).
        self.register_buffer("calibrated", torch.tensor(False))

    @property
    def spec(self) -> DatasetSpec:
        return self.method.spec

    def forward(self, batch: Batch) -> Output:
        if not self.use_unseen_modalities:
            batch = self._hide_unseen(batch)
        return self.method(self.standardizer(batch))

    def _hide_unseen(self, batch: Batch) -> Batch:
        seen = self.seen_modalities
        if bool(seen.all()):
            return batch
        given = (batch.mask & ~seen).any(dim=0)
        if bool(given.any()):
            names = [m for m, g in zip(self.spec.modality_names, given.tolist()) if g]
            warnings.warn(UnseenModalityWarning(
                f"modalit{'y' if len(names) == 1 else 'ies'} {', '.join(map(repr, names))} never present in the "
                "training split: treated as missing (its encoder is untrained; pass use_unseen_modalities=True "
                "to use it anyway)"), stacklevel=3)
        return batch.with_mask(batch.mask & seen)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        # state saved before seen_modalities / calibrated existed: every modality counts as seen,
        # and the model as calibrated (Trainer.fit always calibrated)
        state_dict.setdefault(prefix + "seen_modalities", torch.ones_like(self.seen_modalities))
        state_dict.setdefault(prefix + "calibrated", torch.ones_like(self.calibrated))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def mark_calibrated(self) -> None:
        self.calibrated.fill_(True)

    @torch.no_grad()
    def calibrate(self, val: Data) -> None:
        """Run the method's calibrate step on labelled held-out data (raw units), in eval mode;
        ``FitSteps.finish`` and ``Trainer.fit`` do this with the validation split."""
        val = self._as_batch(val, validate=True, nonfinite="error")
        if val.target is None:
            raise ValueError("calibrate needs labelled data (target is None)")
        device = self._device()
        self.eval()
        self.method.calibrate(self.standardizer(val.to(device)))
        self.mark_calibrated()

    def save(self, path: str | Path) -> Path:
        """Write the model to directory ``path`` (weights + JSON manifest); ``mlmm.load`` reads it.
        See ``mlmm.train.saving``."""
        from .saving import save_model

        return save_model(self, path)

    # ------------------------------------------------------------ prediction

    def _device(self) -> torch.device:
        return next(self.parameters(), self.calibrated).device

    def check_data(self, data: MultimodalDataset | Batch) -> None:
        """``ValueError`` unless ``data`` has this model's modalities, in order, with its shapes
        (e.g. a model evaluated on another dataset's data)."""
        inputs = data.inputs
        names, given = self.spec.modality_names, tuple(inputs)
        if given != names:
            raise ValueError(f"the data has modalities ({', '.join(given)}) but the model was trained on "
                             f"{self.spec.name!r} with ({', '.join(names)}); evaluate it on data of that dataset")
        for m in self.spec.modalities:
            shape = tuple(inputs[m.name].shape[1:])
            if shape != tuple(m.shape):
                raise ValueError(f"modality {m.name!r} has per-sample shape {shape} in the data but "
                                 f"{tuple(m.shape)} in the model trained on {self.spec.name!r}")

    def _as_batch(self, data: Data, validate: bool, nonfinite: str, mask=None) -> Batch:
        if nonfinite not in ("error", "missing"):
            raise ValueError(f"nonfinite must be 'error' or 'missing', got {nonfinite!r}")
        if isinstance(data, Mapping):
            return arrays_to_dataset(self.spec, data, mask=mask, nonfinite=nonfinite).as_batch()
        if not isinstance(data, (MultimodalDataset, Batch)):
            raise TypeError(f"cannot predict on a {type(data).__name__}; give a MultimodalDataset, a Batch or a "
                            "dict of per-modality arrays")
        self.check_data(data)
        if isinstance(data, Batch) and validate:
            return make_batch(self.spec, dict(data.inputs), data.mask, data.target, data.time_mask, nonfinite=nonfinite)
        batch = data.as_batch() if isinstance(data, MultimodalDataset) else data
        # A dataset was validated when built, but its tensors can be changed since: the cheap
        # check stays (a NaN present entry gave NaN logits, silently).
        if nonfinite == "missing":
            return nonfinite_as_missing(batch, self.spec)
        _check_present_finite(batch)
        return batch

    @torch.no_grad()
    def predict_logits(self, data: Data, batch_size: int = 1024, validate: bool = True, nonfinite: str = "error",
                       mask=None) -> Tensor:
        """(N, C) logits (classification) or (N, K) values (regression) for every sample of
        ``data``, in eval mode, on the model's device, returned on CPU.

        data: a ``MultimodalDataset`` (validated when built), a ``Batch`` (validated here
              unless ``validate=False``) or a dict modality -> (N, *shape) array (absent key
              or all-NaN row = missing; ``mask`` overrides). ``nonfinite``: NaN/inf in a present
              entry is an error naming the sample and modality (``"error"``) or makes that
              entry missing (``"missing"``). A non-finite output is an error, never returned.
        """
        if needs_calibration(self.method) and not bool(self.calibrated):
            raise RuntimeError(
                f"method {getattr(self.method, 'method_name', type(self.method).__name__)!r} has a calibrate step that "
                "has not run: call FitSteps.finish() (or model.calibrate(validation_data)) before predicting")
        device = self._device()
        was_training = self.training
        if _is_streamed_dataset(data):  # e.g. a MemmapDataset: read batch by batch, never whole
            if mask is not None:
                raise ValueError("mask= is not taken with a streamed dataset; give data.with_mask(mask)")
            self.check_data(data)
            from .streamed import data_loader

            batches = (b if nonfinite == "error" else nonfinite_as_missing(b, self.spec)
                       for b in data_loader(data, batch_size))
            masks = []
        else:
            batch = self._as_batch(data, validate, nonfinite, mask=mask)
            batches = (batch.select(slice(i, i + batch_size)) for i in range(0, batch.size, batch_size))
        self.eval()
        try:
            outs = []
            for b in batches:
                outs.append(self(b.to(device)).logits.cpu())
                if _is_streamed_dataset(data):
                    masks.append(b.mask)
        finally:
            self.train(was_training)
        if _is_streamed_dataset(data):
            batch = Batch({}, torch.cat(masks) if masks else torch.zeros(0, self.spec.n_modalities, dtype=torch.bool))
        logits = torch.cat(outs) if outs else torch.empty(0, self.spec.task.output_dim)
        bad = ~torch.isfinite(logits.reshape(logits.shape[0], logits[0].numel() if len(logits) else 0)).all(dim=1)
        if bad.any():
            row = int(torch.nonzero(bad)[0])
            present = [m for j, m in enumerate(self.spec.modality_names) if bool(batch.mask[row, j])]
            raise ValueError(
                f"the model produced NaN/inf outputs for {int(bad.sum())} sample(s) (first: sample {row}, "
                f"modalities present: {', '.join(present)}); its inputs passed validation, so the model's "
                "weights or an input's scale are at fault")
        return logits

    def predict_proba(self, data: Data, batch_size: int = 1024, nonfinite: str = "error", mask=None) -> np.ndarray:
        """(N, C) class probabilities (softmax of the logits; classification only), numpy."""
        if self.spec.task.kind != "classification":
            raise ValueError("predict_proba is for classification; this model does regression (use predict)")
        logits = self.predict_logits(data, batch_size=batch_size, nonfinite=nonfinite, mask=mask)
        return torch.softmax(logits.double(), dim=1).numpy()

    def predict(self, data: Data, batch_size: int = 1024, nonfinite: str = "error", mask=None) -> np.ndarray:
        """Classification: the predicted class of each sample — its name from ``class_names``
        where the training data had names, else the label index (N,); regression: the
        predicted values, (N,) for one output, (N, K) otherwise. numpy."""
        logits = self.predict_logits(data, batch_size=batch_size, nonfinite=nonfinite, mask=mask)
        if self.spec.task.kind == "classification":
            labels = logits.argmax(dim=1).numpy()
            if self.class_names is not None:
                return np.asarray(self.class_names, dtype=object)[labels]
            return labels
        values = logits.numpy()
        return values[:, 0] if values.shape[1] == 1 else values
