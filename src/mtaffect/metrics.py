"""ABAW evaluation metrics, pure numpy: expression score, CCC and the other valence/arousal scores.

Conventions
-----------
* **Classes.** An expression is an integer index into :data:`mtaffect.labels.EXPRESSIONS` (ABAW
  order: 0 Neutral, 1 Anger, 2 Disgust, 3 Fear, 4 Happiness, 5 Sadness, 6 Surprise). Predictions
  may also be given as ``(N, n_classes)`` scores (logits or probabilities); they are reduced by argmax.
* **Valence/arousal** are floats in ``[-1, 1]``. Metrics are computed *globally* over all frames
  concatenated, not per video (METHOD.md §6.1), as the ABAW evaluation does.
* **Missing labels** must be removed by the caller (masks); a NaN in an input is an error, never
  silently ignored.

Scores
------
* ``expr_score`` = 0.67 · F1 + 0.33 · accuracy (ABAW2 criterion). F1 is the macro F1 as the ABAW
  evaluation (sklearn ``f1_score(average="macro")``) computes it: averaged over the classes present
  in the truth **or** the prediction (``average="present"``, default); ``average="all"`` averages over
  the fixed ``n_classes`` instead (a class absent from both counts as F1 = 0).
* ``ccc`` is Lin's concordance correlation coefficient with **population** statistics:
  ``2·cov(x, y) / (var(x) + var(y) + (mean(x) − mean(y))²)``.
* ``va_scores`` adds Pearson correlation (PCC), RMSE and SAGR (sign agreement: the fraction of
  frames where ``np.sign(true) == np.sign(pred)``; 0 is its own sign, so 0 vs 0.1 disagrees).
* ``abaw_sum`` = expression score + CCC_V + CCC_A: the validation criterion used for early
  stopping and checkpoint selection (METHOD.md §5).

Degenerate cases (never NaN)
----------------------------
* ``ccc`` and ``pcc`` return **0.0** when they are undefined: fewer than 2 samples, or a zero
  denominator (for CCC: both series constant and equal; for PCC: either series constant). 0 is the
  "no measurable agreement" value, and matches the loss's eps-guarded CCC (mtaffect.losses).
  A constant prediction of a varying truth is well defined and gives CCC = 0 as well.
* F1 of a class with no true and no predicted frame is 0 (it only enters ``average="all"``); a
  class with predictions but no truth (or the reverse) has F1 = 0 and *does* enter the default
  average, as in sklearn.
* Empty inputs raise ``ValueError`` for every score except ``ccc``/``pcc`` (a score of nothing is a
  bug upstream, not a number); mismatched lengths and class indices outside ``[0, n_classes)`` raise
  ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike

from mtaffect.labels import NUM_EXPRESSIONS

EXPR_F1_WEIGHT = 0.67
EXPR_ACCURACY_WEIGHT = 0.33

__all__ = [
    "abaw_sum",
    "accuracy",
    "ccc",
    "confusion_matrix",
    "expr_score",
    "f1_per_class",
    "macro_f1",
    "pcc",
    "rmse",
    "sagr",
    "va_scores",
]


def _as_values(x, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64).reshape(-1)
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN: remove frames without a label before scoring")
    return arr


def _pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_values(x, "x"), _as_values(y, "y")
    if a.shape != b.shape:
        raise ValueError(f"length mismatch: {a.shape[0]} vs {b.shape[0]} values")
    return a, b


def _non_empty(a: np.ndarray, what: str) -> None:
    if a.size == 0:
        raise ValueError(f"{what} of zero frames is undefined: no labelled frame to score")


def _as_classes(y, n_classes: int, name: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim == 2:  # scores (N, C): predicted class by argmax
        if arr.shape[1] != n_classes:
            raise ValueError(f"{name} has {arr.shape[1]} score columns, expected {n_classes}")
        arr = arr.argmax(axis=1)
    arr = arr.reshape(-1)
    if arr.dtype.kind == "f":
        if np.isnan(arr).any():
            raise ValueError(f"{name} contains NaN: remove frames without a label before scoring")
        if not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} holds non-integer class values")
    elif arr.dtype.kind not in "iub":
        raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
        raise ValueError(f"{name} holds class indices outside [0, {n_classes}): {arr.min()}..{arr.max()}")
    return arr


def _class_pair(y_true, y_pred, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    t = _as_classes(y_true, n_classes, "y_true")
    p = _as_classes(y_pred, n_classes, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"length mismatch: {t.shape[0]} true vs {p.shape[0]} predicted labels")
    return t, p


# ----------------------------------------------------------------------------- expression


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int = NUM_EXPRESSIONS) -> np.ndarray:
    """Counts ``(n_classes, n_classes)`` int64: row = true class, column = predicted class."""
    t, p = _class_pair(y_true, y_pred, n_classes)
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def f1_per_class(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int = NUM_EXPRESSIONS) -> np.ndarray:
    """F1 of each class ``(n_classes,)`` = 2·TP / (2·TP + FP + FN); 0 where the class is in neither array."""
    cm = confusion_matrix(y_true, y_pred, n_classes)
    tp = np.diag(cm).astype(np.float64)
    denominator = cm.sum(axis=0) + cm.sum(axis=1)  # (TP + FP) + (TP + FN)
    return np.divide(2.0 * tp, denominator, out=np.zeros(n_classes), where=denominator > 0)


def _present(t: np.ndarray, p: np.ndarray, n_classes: int) -> np.ndarray:
    present = np.zeros(n_classes, dtype=bool)
    present[t] = True
    present[p] = True
    return present


def macro_f1(
    y_true: ArrayLike, y_pred: ArrayLike, *, average: str = "present", n_classes: int = NUM_EXPRESSIONS
) -> float:
    """Macro F1: mean per-class F1 over the classes in truth or prediction ("present") or all classes."""
    t, p = _class_pair(y_true, y_pred, n_classes)
    _non_empty(t, "F1")
    f1 = f1_per_class(t, p, n_classes)
    if average == "present":
        return float(f1[_present(t, p, n_classes)].mean())
    if average == "all":
        return float(f1.mean())
    raise ValueError(f"average must be 'present' or 'all', got {average!r}")


def accuracy(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int = NUM_EXPRESSIONS) -> float:
    """Fraction of frames whose predicted class equals the true class."""
    t, p = _class_pair(y_true, y_pred, n_classes)
    _non_empty(t, "accuracy")
    return float(np.mean(t == p))


def expr_score(
    y_true: ArrayLike, y_pred: ArrayLike, *, average: str = "present", n_classes: int = NUM_EXPRESSIONS
) -> dict[str, float]:
    """ABAW expression score: ``{"f1", "accuracy", "score" = 0.67·f1 + 0.33·accuracy}``.

    y_true: (N,) class indices; y_pred: (N,) class indices or (N, n_classes) scores (argmax taken).
    """
    t, p = _class_pair(y_true, y_pred, n_classes)
    f1 = macro_f1(t, p, average=average, n_classes=n_classes)
    acc = accuracy(t, p, n_classes)
    return {"f1": f1, "accuracy": acc, "score": EXPR_F1_WEIGHT * f1 + EXPR_ACCURACY_WEIGHT * acc}


# ----------------------------------------------------------------------------- valence / arousal


def ccc(x: ArrayLike, y: ArrayLike) -> float:
    """Concordance correlation coefficient with population statistics; 0.0 where undefined (module doc)."""
    a, b = _pair(x, y)
    if a.size < 2:
        return 0.0
    mean_a, mean_b = a.mean(), b.mean()
    da, db = a - mean_a, b - mean_b
    covariance = np.mean(da * db)
    denominator = np.mean(da * da) + np.mean(db * db) + (mean_a - mean_b) ** 2
    if denominator <= 0.0:
        return 0.0
    return float(2.0 * covariance / denominator)


def pcc(x: ArrayLike, y: ArrayLike) -> float:
    """Pearson correlation coefficient; 0.0 when fewer than 2 samples or either series is constant."""
    a, b = _pair(x, y)
    if a.size < 2:
        return 0.0
    da, db = a - a.mean(), b - b.mean()
    denominator = np.sqrt(np.sum(da * da) * np.sum(db * db))
    if denominator <= 0.0:
        return 0.0
    return float(np.clip(np.sum(da * db) / denominator, -1.0, 1.0))


def rmse(x: ArrayLike, y: ArrayLike) -> float:
    """Root mean squared error."""
    a, b = _pair(x, y)
    _non_empty(a, "RMSE")
    return float(np.sqrt(np.mean((a - b) ** 2)))


def sagr(x: ArrayLike, y: ArrayLike) -> float:
    """Sign agreement: fraction of frames where ``np.sign(x) == np.sign(y)`` (0 is its own sign)."""
    a, b = _pair(x, y)
    _non_empty(a, "SAGR")
    return float(np.mean(np.sign(a) == np.sign(b)))


def va_scores(
    true_valence: ArrayLike, pred_valence: ArrayLike, true_arousal: ArrayLike, pred_arousal: ArrayLike
) -> dict[str, float]:
    """All valence/arousal scores over frames concatenated.

    Returns ``ccc_valence``, ``ccc_arousal``, ``ccc_mean`` (the ABAW VA criterion), and ``pcc_*``,
    ``rmse_*``, ``sagr_*`` for ``*`` in {valence, arousal}. Each argument is (N,) floats in [-1, 1];
    valence and arousal may have different N (frames labelled for one but not the other).
    """
    out: dict[str, float] = {}
    pairs = (("valence", true_valence, pred_valence), ("arousal", true_arousal, pred_arousal))
    for name, truth, pred in pairs:
        t, p = _pair(truth, pred)
        _non_empty(t, f"{name} scores")
        out[f"ccc_{name}"] = ccc(t, p)
        out[f"pcc_{name}"] = pcc(t, p)
        out[f"rmse_{name}"] = rmse(t, p)
        out[f"sagr_{name}"] = sagr(t, p)
    out["ccc_mean"] = (out["ccc_valence"] + out["ccc_arousal"]) / 2.0
    return out


def abaw_sum(expr: Mapping[str, float] | float | None = None, va: Mapping[str, float] | None = None) -> float:
    """Validation criterion: expression score + CCC_V + CCC_A (a task without frames contributes 0).

    expr: the dict of :func:`expr_score` (its "score") or the score itself; va: the dict of :func:`va_scores`.
    """
    total = 0.0
    if expr is not None:
        total += float(expr["score"] if isinstance(expr, Mapping) else expr)
    if va is not None:
        total += float(va["ccc_valence"]) + float(va["ccc_arousal"])
    return total
