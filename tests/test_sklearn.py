"""mlmm.sklearn: any method as a scikit-learn estimator (dicts of per-modality arrays or a
DataFrame with column groups, NaN = missing), in GridSearchCV and cross_val_score, and
scikit-learn's estimator checks (the ones it does not pass are declared, with the reason)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from mlmm.sklearn import MLMMClassifier, MLMMRegressor  # noqa: E402

FAST = {"max_epochs": 15, "patience": 15}
SMALL = {"embed_dim": 16}


def _arrays(n: int = 90, seed: int = 0):
    g = np.random.default_rng(seed)
    y = g.integers(0, 3, n)
    a = (g.normal(size=(n, 4)) + 2 * y[:, None]).astype(np.float32)
    b = (g.normal(size=(n, 3)) - 2 * y[:, None]).astype(np.float32)
    a[::4] = np.nan  # modality a missing in every 4th sample
    b[1::4] = np.nan
    return {"a": a, "b": b}, np.array(["cat", "dog", "eel"])[y]


def _frame(arrays):
    return pd.DataFrame({f"{m}__{k}": arrays[m][:, k] for m in arrays for k in range(arrays[m].shape[1])})


def test_classifier_on_a_dict_of_modalities_with_missing_rows():
    X, y = _arrays()
    clf = MLMMClassifier(method_params=SMALL, train_params=FAST).fit(X, y)
    assert list(clf.classes_) == ["cat", "dog", "eel"]
    Xn, yn = _arrays(30, seed=1)
    proba = clf.predict_proba(Xn)
    assert proba.shape == (30, 3) and np.allclose(proba.sum(1), 1)
    assert set(clf.predict(Xn)) <= {"cat", "dog", "eel"}
    assert clf.score(Xn, yn) > 0.6  # chance is 1/3; the classes are well separated
    with pytest.raises(ValueError, match="NaN or inf"):  # partly missing entry: not silently used
        bad = {k: v.copy() for k, v in Xn.items()}
        bad["a"][2, 1] = np.nan
        clf.predict(bad)


def test_get_set_params_and_grid_search_on_a_dataframe():
    X, y = _arrays()
    frame = _frame(X)
    clf = MLMMClassifier(method="masked-mean", method_params=SMALL, train_params=FAST)
    assert clf.get_params()["method"] == "masked-mean"
    assert clf.set_params(method="late-ensemble").method == "late-ensemble"
    grid = GridSearchCV(clf, {"method": ["masked-mean", "late-ensemble"]}, cv=2).fit(frame, y)
    assert grid.best_params_["method"] in ("masked-mean", "late-ensemble")
    assert grid.predict(frame.iloc[:5]).shape == (5,)


def test_cross_val_score_and_a_regressor():
    X, y = _arrays()
    scores = cross_val_score(MLMMClassifier(method_params=SMALL, train_params=FAST), _frame(X), y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.6
    target = np.nan_to_num(X["b"]).sum(1) + np.nan_to_num(X["a"]).sum(1)
    reg = MLMMRegressor(method_params=SMALL, train_params=FAST).fit(X, target)
    assert reg.predict(X).shape == (90,) and np.isfinite(reg.predict(X)).all()


def test_dataframe_groups_can_be_named():
    X, y = _arrays()
    frame = _frame(X).rename(columns=lambda c: c.replace("__", "_"))
    with pytest.raises(ValueError):  # no <modality>__<feature> names and no mapping: one modality "x" ...
        MLMMClassifier(train_params=FAST).fit(frame.rename(columns=str), y[:10])
    clf = MLMMClassifier(modalities={"a": "prefix:a_", "b": "prefix:b_"}, method_params=SMALL, train_params=FAST)
    clf.fit(frame, y)
    assert clf.model_.spec.modality_names == ("a", "b")


# Checks that do not apply, and why.
_EXPECTED = {
    "check_classifiers_train": "the checks train 2 epochs to stay fast; the accuracy bar needs a full fit",
    "check_regressors_train": "the checks train 2 epochs to stay fast; the score bar needs a full fit",
    "check_estimator_sparse_array": "dense data only (check_array's 'Sparse data was passed' TypeError)",
    "check_estimator_sparse_matrix": "dense data only (check_array's 'Sparse data was passed' TypeError)",
}


def _expected(estimator):
    return _EXPECTED


@parametrize_with_checks(
    [MLMMClassifier(method_params={"embed_dim": 8}, train_params={"max_epochs": 2, "patience": 2}),
     MLMMRegressor(method_params={"embed_dim": 8}, train_params={"max_epochs": 2, "patience": 2})],
    expected_failed_checks=_expected)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FitNeverImproved on 2-epoch fits of random data
        check(estimator)
