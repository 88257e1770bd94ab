"""ECE and the reliability curve on hand-computable cases."""

import numpy as np
import pytest

from mlmm.metrics.calibration import expected_calibration_error, reliability_curve, softmax


def test_perfectly_confident_and_right_has_zero_ece() -> None:
    probs = np.eye(3)[[0, 1, 2, 1]]
    assert expected_calibration_error(probs, np.array([0, 1, 2, 1])) == 0.0


def test_hand_computed_ece() -> None:
    # Two samples at confidence 0.9 (one right), two at 0.6 (both right), 10 bins.
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    target = np.array([0, 1, 0, 1])
    # bin (0.8, 0.9]: acc 0.5, conf 0.9 -> 0.4; bin (0.5, 0.6]: acc 1, conf 0.6 -> 0.4
    assert expected_calibration_error(probs, target, n_bins=10) == pytest.approx(0.4)
    curve = reliability_curve(probs, target, n_bins=10)
    assert curve["count"].sum() == 4 and curve["count"][8] == 2 and curve["count"][5] == 2
    assert np.isnan(curve["accuracy"][0])


def test_always_wrong_at_full_confidence_has_ece_one() -> None:
    probs = np.eye(2)[[1, 1, 0]]
    assert expected_calibration_error(probs, np.array([0, 0, 1])) == pytest.approx(1.0)


def test_softmax_is_stable_and_normalised() -> None:
    p = softmax(np.array([[1000.0, 0.0], [0.0, 0.0]]))
    assert np.allclose(p.sum(axis=1), 1.0) and np.isfinite(p).all() and p[0, 0] == pytest.approx(1.0)


def test_shape_errors_are_named() -> None:
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        expected_calibration_error(np.zeros(3), np.zeros(3))
