"""The per-frame prediction table and its ABAW scores, per database and over all frames.

A prediction table is index rows plus ``pred_expression`` (argmax), the seven ``p_<name>``
probabilities (:data:`PROB_COLUMNS`, ``labels.EXPRESSIONS`` order), ``pred_valence`` and
``pred_arousal`` (:func:`with_predictions`). Scores are computed over all frames concatenated: EXPR
on expression-labelled frames, CCC on VA-labelled frames (:mod:`mtaffect.data.records` decides which
rows carry a label), ``abaw_sum`` = EXPR score + CCC_V + CCC_A.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mtaffect import metrics
from mtaffect.data.records import has_expression, has_va
from mtaffect.labels import EXPRESSIONS, NUM_EXPRESSIONS

__all__ = ["PROB_COLUMNS", "TABLE_COLUMNS", "score_table", "summary_metrics", "with_predictions"]

PROB_COLUMNS = [f"p_{name.lower()}" for name in EXPRESSIONS]

TABLE_COLUMNS = [
    "database",
    "n_expression",
    "expr_f1",
    "expr_accuracy",
    "expr_score",
    "n_va",
    "ccc_valence",
    "ccc_arousal",
    "ccc_mean",
    "abaw_sum",
]


def with_predictions(frames: pd.DataFrame, predicted: np.ndarray) -> pd.DataFrame:
    """``frames`` (index rows, re-numbered 0..N-1) plus the prediction columns of ``predicted``
    (N, 9): 7 expression probabilities, valence, arousal (what the ``predict_*_frames`` return)."""
    out = frames.reset_index(drop=True).copy()
    probs = predicted[:, :NUM_EXPRESSIONS]
    out["pred_expression"] = probs.argmax(axis=1).astype(np.int64)
    for i, column in enumerate(PROB_COLUMNS):
        out[column] = probs[:, i]
    out["pred_valence"] = predicted[:, NUM_EXPRESSIONS]
    out["pred_arousal"] = predicted[:, NUM_EXPRESSIONS + 1]
    return out


def _scores(df: pd.DataFrame) -> dict[str, float]:
    row: dict[str, float] = {}
    has_e, has_v = has_expression(df), has_va(df)
    row["n_expression"] = int(has_e.sum())
    if has_e.any():
        s = metrics.expr_score(
            df["expression"].astype("Int64").to_numpy(np.int64, na_value=0)[has_e],
            df["pred_expression"].to_numpy()[has_e],
        )
        row.update(expr_f1=s["f1"], expr_accuracy=s["accuracy"], expr_score=s["score"])
    row["n_va"] = int(has_v.sum())
    if has_v.any():
        true_v = df["valence"].astype("Float64").to_numpy(np.float64, na_value=np.nan)[has_v]
        true_a = df["arousal"].astype("Float64").to_numpy(np.float64, na_value=np.nan)[has_v]
        v = metrics.va_scores(
            true_v, df["pred_valence"].to_numpy()[has_v], true_a, df["pred_arousal"].to_numpy()[has_v]
        )
        row.update(ccc_valence=v["ccc_valence"], ccc_arousal=v["ccc_arousal"], ccc_mean=v["ccc_mean"])
    row["abaw_sum"] = row.get("expr_score", 0.0) + row.get("ccc_valence", 0.0) + row.get("ccc_arousal", 0.0)
    return row


def score_table(predictions: pd.DataFrame) -> pd.DataFrame:
    """Per database (and "all" when there are several) ABAW scores of per-frame predictions.

    Columns: database, n_expression, expr_f1, expr_accuracy, expr_score, n_va, ccc_valence,
    ccc_arousal, ccc_mean, abaw_sum (NaN where a database has no frame of a task).
    """
    rows = [{"database": db, **_scores(part)} for db, part in predictions.groupby("database", sort=True)]
    if len(rows) != 1:
        rows.append({"database": "all", **_scores(predictions)})
    return pd.DataFrame(rows).reindex(columns=TABLE_COLUMNS)


def summary_metrics(predictions: pd.DataFrame) -> dict[str, float]:
    """The loop's validation dict over all frames.

    Keys: expr_score, expr_f1, expr_accuracy, ccc_valence, ccc_arousal, ccc_mean, abaw_sum.
    """
    row = _scores(predictions)
    return {
        k: float(row.get(k, 0.0))
        for k in (
            "expr_score",
            "expr_f1",
            "expr_accuracy",
            "ccc_valence",
            "ccc_arousal",
            "ccc_mean",
            "abaw_sum",
        )
    }
