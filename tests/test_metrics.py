"""ABAW metrics against scikit-learn, direct formulas and hand-computed cases, plus degenerate cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from mtaffect import metrics


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


# ----------------------------------------------------------------------------- expression


@pytest.mark.parametrize("seed", range(5))
def test_expr_score_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    y_true = rng.integers(0, 7, n)
    y_pred = np.where(rng.random(n) < 0.5, y_true, rng.integers(0, 7, n))
    out = metrics.expr_score(y_true, y_pred)
    f1 = skm.f1_score(y_true, y_pred, average="macro")
    acc = skm.accuracy_score(y_true, y_pred)
    assert out["f1"] == pytest.approx(f1, abs=1e-12)
    assert out["accuracy"] == pytest.approx(acc, abs=1e-12)
    assert out["score"] == pytest.approx(0.67 * f1 + 0.33 * acc, abs=1e-12)
    assert set(out) == {"f1", "accuracy", "score"}


def test_macro_f1_averages_classes_present_in_truth_or_prediction() -> None:
    # classes 0, 1 in truth, class 2 only predicted; 3..6 absent from both
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 2, 1, 1])
    # F1: class 0 = 2·1/(2+0+1) = 2/3, class 1 = 1, class 2 = 0 (one FP)
    assert metrics.macro_f1(y_true, y_pred) == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert metrics.macro_f1(y_true, y_pred) == pytest.approx(skm.f1_score(y_true, y_pred, average="macro"))
    # fixed 7-class average: absent classes count as 0
    assert metrics.macro_f1(y_true, y_pred, average="all") == pytest.approx((2 / 3 + 1) / 7)
    sk_all = skm.f1_score(y_true, y_pred, average="macro", labels=list(range(7)), zero_division=0)
    assert metrics.macro_f1(y_true, y_pred, average="all") == pytest.approx(sk_all)
    out = metrics.expr_score(y_true, y_pred, average="all")
    assert out["score"] == pytest.approx(0.67 * (5 / 3) / 7 + 0.33 * 0.75)


def test_expr_score_hand_computed_perfect_and_wrong() -> None:
    y = np.array([0, 1, 2, 3, 4, 5, 6])
    assert metrics.expr_score(y, y) == {"f1": 1.0, "accuracy": 1.0, "score": pytest.approx(1.0)}
    wrong = (y + 1) % 7
    assert metrics.expr_score(y, wrong) == {"f1": 0.0, "accuracy": 0.0, "score": 0.0}


def test_expr_score_accepts_scores_and_takes_argmax(rng: np.random.Generator) -> None:
    logits = rng.normal(size=(50, 7))
    y_true = rng.integers(0, 7, 50)
    assert metrics.expr_score(y_true, logits) == metrics.expr_score(y_true, logits.argmax(1))


def test_confusion_matrix_matches_sklearn(rng: np.random.Generator) -> None:
    y_true = rng.integers(0, 7, 200)
    y_pred = rng.integers(0, 7, 200)
    expected = skm.confusion_matrix(y_true, y_pred, labels=list(range(7)))
    np.testing.assert_array_equal(metrics.confusion_matrix(y_true, y_pred), expected)
    cm = metrics.confusion_matrix([0, 0, 1], [1, 0, 1], n_classes=3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [0, 0, 0]])


def test_f1_per_class_absent_class_is_zero_not_nan() -> None:
    f1 = metrics.f1_per_class([0, 0], [0, 0])
    assert f1[0] == 1.0 and np.all(f1[1:] == 0.0) and not np.isnan(f1).any()
    assert metrics.macro_f1([0, 0], [0, 0]) == 1.0  # only class 0 present


@pytest.mark.parametrize(
    ("y_true", "y_pred", "message"),
    [
        ([0, 7], [0, 1], "outside"),
        ([0, -1], [0, 1], "outside"),
        ([0, 1], [0], "mismatch"),
        ([], [], "zero frames"),
        ([0.5, 1], [0, 1], "non-integer"),
        ([np.nan, 1], [0, 1], "NaN"),
    ],
)
def test_expr_score_rejects_bad_input(y_true, y_pred, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        metrics.expr_score(np.asarray(y_true), np.asarray(y_pred))


def test_expr_score_rejects_unknown_average() -> None:
    with pytest.raises(ValueError, match="average"):
        metrics.expr_score([0], [0], average="weighted")


# ----------------------------------------------------------------------------- CCC and VA scores


def _ccc_direct(x: np.ndarray, y: np.ndarray) -> float:
    """Lin's CCC written via Pearson's rho and population stds (the authors' metric form)."""
    rho = np.corrcoef(x, y)[0, 1]
    return 2 * rho * x.std() * y.std() / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)


@pytest.mark.parametrize("seed", range(5))
def test_ccc_matches_direct_formula(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, 100)
    y = 0.5 * x + 0.3 * rng.normal(size=100) + 0.1
    assert metrics.ccc(x, y) == pytest.approx(_ccc_direct(x, y), abs=1e-12)
    assert metrics.ccc(x, y) == pytest.approx(metrics.ccc(y, x), abs=1e-15)


def test_ccc_hand_computed() -> None:
    assert metrics.ccc([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert metrics.ccc([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # x = [0, 2], y = [0, 1]: cov = 0.5, var x = 1, var y = 0.25, (mx - my)^2 = 0.25 → 1 / 1.5
    assert metrics.ccc([0, 2], [0, 1]) == pytest.approx(2 / 3)
    # a shift lowers CCC but not PCC: y = x + 1 with var x = 2/3 → 2·(2/3) / (4/3 + 1)
    assert metrics.ccc([1, 2, 3], [2, 3, 4]) == pytest.approx((4 / 3) / (4 / 3 + 1))
    assert metrics.pcc([1, 2, 3], [2, 3, 4]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("x", "y"),
    [
        ([], []),  # no samples
        ([0.3], [0.3]),  # one sample
        ([0.3], [-0.2]),
        ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),  # both constant and equal: 0/0
        ([0.5, 0.5, 0.5], [0.1, 0.2, 0.3]),  # constant prediction of a varying truth
    ],
)
def test_ccc_and_pcc_degenerate_cases_return_zero(x, y) -> None:
    assert metrics.ccc(x, y) == 0.0
    assert metrics.pcc(x, y) == 0.0


def test_ccc_constant_prediction_off_target_is_zero_not_nan() -> None:
    assert metrics.ccc([0.5, 0.5], [0.1, 0.1]) == 0.0


def test_pcc_rmse_match_numpy_and_sklearn(rng: np.random.Generator) -> None:
    x = rng.uniform(-1, 1, 80)
    y = rng.uniform(-1, 1, 80)
    assert metrics.pcc(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    assert metrics.rmse(x, y) == pytest.approx(np.sqrt(skm.mean_squared_error(x, y)), abs=1e-12)


def test_sagr_fraction_of_same_sign() -> None:
    assert metrics.sagr([0.5, -0.5, 0.2, -0.1], [0.1, -0.9, -0.2, 0.3]) == 0.5
    assert metrics.sagr([0.0, 0.0], [0.0, 0.1]) == 0.5  # 0 is its own sign


def test_va_scores_keys_and_values(rng: np.random.Generator) -> None:
    tv, pv = rng.uniform(-1, 1, 60), rng.uniform(-1, 1, 60)
    ta, pa = rng.uniform(-1, 1, 40), rng.uniform(-1, 1, 40)  # arousal may have other frames
    out = metrics.va_scores(tv, pv, ta, pa)
    expected_keys = {f"{m}_{d}" for m in ("ccc", "pcc", "rmse", "sagr") for d in ("valence", "arousal")}
    assert set(out) == expected_keys | {"ccc_mean"}
    assert out["ccc_valence"] == pytest.approx(_ccc_direct(tv, pv))
    assert out["ccc_mean"] == pytest.approx((out["ccc_valence"] + out["ccc_arousal"]) / 2)
    assert all(np.isfinite(v) for v in out.values())


def test_va_inputs_rejected_when_nan_empty_or_mismatched() -> None:
    with pytest.raises(ValueError, match="NaN"):
        metrics.ccc([0.1, np.nan], [0.1, 0.2])
    with pytest.raises(ValueError, match="mismatch"):
        metrics.rmse([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="zero frames"):
        metrics.va_scores([], [], [0.1, 0.2], [0.1, 0.2])


def test_abaw_sum() -> None:
    expr = metrics.expr_score([0, 1, 1], [0, 1, 0])
    va = metrics.va_scores([0.1, 0.4, -0.3], [0.2, 0.3, -0.1], [0.5, 0.0, -0.5], [0.4, 0.1, -0.2])
    assert metrics.abaw_sum(expr, va) == pytest.approx(expr["score"] + va["ccc_valence"] + va["ccc_arousal"])
    assert metrics.abaw_sum(0.5, None) == 0.5
    assert metrics.abaw_sum(None, va) == pytest.approx(va["ccc_valence"] + va["ccc_arousal"])
