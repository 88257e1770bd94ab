"""scikit-learn estimators over every mlmm method: ``MLMMClassifier`` and ``MLMMRegressor``.

``fit(X, y)`` / ``predict`` / ``predict_proba`` / ``score`` with ``get_params`` / ``set_params``,
so they work in ``GridSearchCV``, ``cross_val_score`` and pipelines. ``X`` is one of

- a dict modality -> (N, ...) array, a row all NaN where that modality is missing
  (2-D arrays are vector modalities; give ``kinds`` for sequences, images or text);
- a pandas DataFrame whose columns form groups: ``modalities={"a": ["c1", "c2"], "b": "prefix:b_"}``,
  or, without it, columns named ``<modality>__<feature>``; all NaN in a group = missing;
- a 2-D numpy array: one vector modality ``"x"`` (or ``modalities={"a": [0, 1], "b": [2, 3]}``
  naming column indices).

A validation split (``val_fraction``, stratified for classification) is carved from the
training data for early stopping and calibration, as ``mlmm run`` does::

    from mlmm.sklearn import MLMMClassifier
    clf = MLMMClassifier("masked-mean", method_params={"embed_dim": 64}, train_params={"max_epochs": 50})
    clf.fit({"image": X_img, "text": X_txt}, y).predict({"image": X_img_new, "text": X_txt_new})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.model_selection import train_test_split
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, column_or_1d

from .data.arrays import arrays_to_dataset
from .data.base import MultimodalDataset
from .data.spec import DatasetSpec, ModalitySpec, TaskSpec
from .train.config import TrainConfig
from .train.loop import Trainer, build_method

_KIND_BY_RANK = {1: "vector", 2: "sequence", 3: "image"}


def _groups_of(columns: list[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for c in columns:
        name, sep, _ = str(c).partition("__")
        if not sep:
            raise ValueError(f"column {c!r} is not named <modality>__<feature>; pass modalities={{name: columns}}")
        groups.setdefault(name, []).append(c)
    return groups


class _MLMMEstimator(BaseEstimator):
    """Shared part of ``MLMMClassifier`` / ``MLMMRegressor`` (see the module docstring)."""

    _task = "classification"

    def __init__(self, method: str = "masked-mean", method_params: dict | None = None,
                 train_params: dict | None = None, modalities: Mapping[str, Any] | None = None,
                 kinds: Mapping[str, str] | None = None, val_fraction: float = 0.15, random_state: int = 0,
                 device: str = "cpu") -> None:
        self.method = method
        self.method_params = method_params
        self.train_params = train_params
        self.modalities = modalities
        self.kinds = kinds
        self.val_fraction = val_fraction
        self.random_state = random_state
        self.device = device

    # ------------------------------------------------------------ inputs

    def _arrays(self, X, fitting: bool) -> dict[str, np.ndarray]:
        """X -> modality -> (N, ...) float/int array (NaN rows = missing)."""
        if isinstance(X, Mapping):
            arrays = {str(k): np.asarray(v) for k, v in X.items()}
        elif hasattr(X, "columns") and hasattr(X, "iloc") and (
                self.modalities is not None or all("__" in str(c) for c in X.columns)):  # a DataFrame of groups
            columns = [str(c) for c in X.columns]
            if self.modalities is not None:
                from .data.loaders.table import parse_columns

                groups = {m: parse_columns(spec, columns, m, "X") for m, spec in self.modalities.items()}
            else:
                groups = _groups_of(columns)
            if fitting:
                self.feature_names_in_ = np.asarray(columns, dtype=object)
            arrays = {m: X[cols].to_numpy(dtype=np.float64).astype(np.float32) for m, cols in groups.items()}
        else:  # one table of numbers: sklearn's own checks (sparse, complex, 1-D, empty ...); NaN = missing
            x = check_array(X, dtype=np.float32, ensure_all_finite="allow-nan", ensure_min_samples=1)
            if not fitting and x.shape[1] != self.n_features_in_:
                raise ValueError(f"X has {x.shape[1]} features, but {type(self).__name__} is expecting "
                                 f"{self.n_features_in_} features as input")
            groups = dict(self.modalities) if self.modalities is not None else {"x": list(range(x.shape[1]))}
            arrays = {m: x[:, list(cols)].astype(np.float32) for m, cols in groups.items()}
        if not arrays:
            raise ValueError("X has no modality")
        n = {len(a) for a in arrays.values()}
        if len(n) != 1:
            raise ValueError(f"modalities of X have different numbers of rows: {sorted(n)}")
        return arrays

    def _spec(self, arrays: Mapping[str, np.ndarray], n_outputs: int) -> DatasetSpec:
        kinds = dict(self.kinds or {})
        mods = []
        for name, a in arrays.items():
            kind = kinds.get(name) or _KIND_BY_RANK.get(a.ndim - 1)
            if kind is None:
                raise ValueError(f"modality {name!r}: cannot tell the kind of shape {a.shape[1:]}; pass kinds=")
            mods.append(ModalitySpec(name, kind, tuple(a.shape[1:])))
        if self._task == "classification":
            task = TaskSpec("classification", n_classes=n_outputs)
        else:
            task = TaskSpec("regression", n_outputs=n_outputs)
        return DatasetSpec("sklearn", tuple(mods), task)

    def _dataset(self, X, target=None, fitting: bool = False, arrays=None) -> MultimodalDataset:
        if not fitting:
            check_is_fitted(self, "model_")
        arrays = self._arrays(X, fitting) if arrays is None else arrays
        if not fitting:
            spec = self.model_.spec
            if set(arrays) != set(spec.modality_names):
                raise ValueError(f"X has modalities {sorted(arrays)}; the estimator was fitted on "
                                 f"{sorted(spec.modality_names)}")
            if len(next(iter(arrays.values()))) == 0:
                raise ValueError("X has 0 samples")
            return arrays_to_dataset(spec, arrays)
        n = len(next(iter(arrays.values())))
        if n < 2:
            raise ValueError(f"need at least 2 samples to fit, got {n} sample")
        spec = self._spec(arrays, self._n_outputs(target))
        data = arrays_to_dataset(spec, arrays)
        return MultimodalDataset(spec, data.inputs, target, data.mask, _validated=True)

    # ------------------------------------------------------------ fit / predict

    def fit(self, X, y):
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        arrays = self._arrays(X, fitting=True)  # X first: an empty or sparse X is named as such
        target = self._encode(np.asarray(y) if self._task == "regression" else column_or_1d(y, warn=True))
        data = self._dataset(X, target, fitting=True, arrays=arrays)
        if len(target) != len(data):
            raise ValueError(f"X has {len(data)} samples but y has {len(target)}")
        self.n_features_in_ = int(sum(m.size for m in data.spec.modalities))
        rows = np.arange(len(data))
        stratify = target if self._task == "classification" and np.bincount(target).min() >= 2 else None
        n_val = max(1, int(round(self.val_fraction * len(data))))
        if stratify is not None:
            n_val = max(n_val, len(self.classes_))
        train_rows, val_rows = train_test_split(rows, test_size=n_val, random_state=self.random_state,
                                                stratify=stratify)
        method = build_method(self.method, data.spec, seed=self.random_state, **dict(self.method_params or {}))
        config = TrainConfig(**dict(self.train_params or {}))
        fit = Trainer(config, device=self.device).fit(method, data.subset(train_rows), data.subset(val_rows),
                                                      seed=self.random_state)
        self.model_ = fit.model
        self.history_ = fit.history
        return self

    def _predict_values(self, X) -> torch.Tensor:
        check_is_fitted(self, "model_")
        return self.model_.predict_logits(self._dataset(X))


class MLMMClassifier(ClassifierMixin, _MLMMEstimator):
    """Any mlmm method as a scikit-learn classifier (see the module docstring). ``classes_``:
    the labels, sorted; ``predict`` returns them, ``predict_proba`` their probabilities."""

    _task = "classification"

    def _n_outputs(self, target: np.ndarray) -> int:
        return len(self.classes_)

    def _encode(self, y: np.ndarray) -> np.ndarray:
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"the classifier needs samples of at least 2 classes in the data, got 1 class "
                             f"({self.classes_[0]!r})")
        return codes.astype(np.int64)

    def predict_proba(self, X) -> np.ndarray:
        return torch.softmax(self._predict_values(X).double(), dim=1).numpy()

    def predict(self, X) -> np.ndarray:
        values = self._predict_values(X)  # first: an unfitted estimator says so (NotFittedError)
        return self.classes_[values.argmax(dim=1).numpy()]


class MLMMRegressor(RegressorMixin, _MLMMEstimator):
    """Any mlmm method (that takes a regression task) as a scikit-learn regressor."""

    _task = "regression"

    def _n_outputs(self, target: np.ndarray) -> int:
        return 1 if target.ndim == 1 else int(target.shape[1])

    def _encode(self, y: np.ndarray) -> np.ndarray:
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        y = y.astype(np.float32)
        if not np.isfinite(y).all():
            raise ValueError("y holds NaN or inf")
        self._y_2d = y.ndim == 2
        return y

    def predict(self, X) -> np.ndarray:
        values = self._predict_values(X).numpy().astype(np.float64)
        return values if self._y_2d else values[:, 0]
