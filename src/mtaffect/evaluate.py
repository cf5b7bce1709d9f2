"""Evaluation: the official per-frame protocol on every labelled frame of a split.

* **CNN**: every frame once, with the evaluation transform (resize ×1.2, centre crop; METHOD.md §4.4).
* **GRU**: per track, windows of ``length`` frames with stride ``eval_stride`` planned in
  ``mode="predict"`` (:func:`mtaffect.windows.plan_windows`: gaps split runs, short runs are padded
  and masked, the last window is aligned to the run's end); overlapping steps are averaged by
  :func:`mtaffect.windows.stitch`, so **every frame is predicted exactly once and in order**. The
  authors' test script keeps the first occurrence per frame after a collate transposition that
  misaligns the last batch of every video (METHOD.md §8.1 bug 1); we never reorder: predictions are
  written back by position.

Metrics (:mod:`mtaffect.metrics`) are computed over all frames concatenated, per database and for all
databases: EXPR (macro F1, accuracy, score = 0.67·F1 + 0.33·acc) on expression-labelled frames, CCC of
valence and arousal on VA-labelled frames, and ``abaw_sum`` = EXPR score + CCC_V + CCC_A (the
checkpoint-selection criterion of the training loop, METHOD.md §5).

Python API: :func:`predict_cnn_frames`, :func:`predict_gru_frames`, :func:`score_table`,
:func:`summary_metrics`, :func:`make_cnn_validator`, :func:`make_gru_validator` (the per-epoch
``validate(model) -> dict`` of the training loop) and :func:`evaluate_checkpoint` (the CLI's work).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from mtaffect import metrics
from mtaffect.labels import EXPRESSIONS, NUM_EXPRESSIONS
from mtaffect.runtime import autocast, inference, resolve_device

__all__ = [
    "EvaluationResult",
    "evaluate_checkpoint",
    "format_table",
    "plot_confusion",
    "write_report",
    "labelled_frames",
    "make_cnn_validator",
    "make_gru_validator",
    "window_validator",
    "predict_cnn_frames",
    "predict_gru_frames",
    "score_table",
    "summary_metrics",
]

PROB_COLUMNS = [f"p_{name.lower()}" for name in EXPRESSIONS]
IN_MEMORY_LIMIT = 1 << 30
"""Validation crops up to this many bytes are decoded once and kept in memory across epochs."""


def _has_expression(df: pd.DataFrame) -> np.ndarray:
    expr = df["expression"].astype("Int64")
    return ((expr >= 0) & (expr < NUM_EXPRESSIONS)).fillna(False).to_numpy(dtype=bool)


def _has_va(df: pd.DataFrame) -> np.ndarray:
    return (df["valence"].astype("Float64").notna() & df["arousal"].astype("Float64").notna()).to_numpy(bool)


def labelled_frames(
    index: pd.DataFrame,
    split: str = "validation",
    databases: list[str] | None = None,
    *,
    videos_only: bool = False,
) -> pd.DataFrame:
    """Rows of ``split`` carrying a 7-class expression or a valence/arousal label (optionally only
    the databases given, only video frames)."""
    keep = (index["split"] == split).to_numpy(dtype=bool) & (_has_expression(index) | _has_va(index))
    if databases:
        keep &= index["database"].isin(databases).to_numpy(dtype=bool)
    if videos_only:
        keep &= index["frame"].astype("Int64").notna().to_numpy(dtype=bool)
    return index[keep].reset_index(drop=True)


def _decode(out: Any, decoding: str) -> np.ndarray:
    """Outputs (..., ·) → (..., 9) float: 7 expression probabilities, valence, arousal."""
    from mtaffect.models.cnn import decoded

    values = decoded(out, decoding)
    return (
        torch.cat(
            [
                values["expression_probabilities"].float(),
                values["valence"].float()[..., None],
                values["arousal"].float()[..., None],
            ],
            dim=-1,
        )
        .cpu()
        .numpy()
    )


def _decoding(model: nn.Module) -> str:
    return getattr(getattr(model, "config", None), "va_decoding", "linspace")


class _EvalCrops:
    """Evaluation crops of a fixed frame list: read (and centre-cropped) once if they fit in memory.

    Batches are read ahead in ``workers`` processes (:func:`mtaffect.train.prefetch.ordered_chunks`,
    pinned when ``pin``), in order: the crops do not depend on ``workers``.
    """

    def __init__(
        self,
        reader: Any,
        n: int,
        size: int,
        resize_factor: float,
        batch_size: int,
        *,
        workers: int = 0,
        pin: bool = False,
    ) -> None:
        self.reader, self.n, self.size = reader, n, size
        self.resize_factor, self.batch_size = resize_factor, batch_size
        self.workers, self.pin = workers, pin
        self.kept: np.ndarray | None = None
        if n * size * size * 3 <= IN_MEMORY_LIMIT:
            self.kept = np.concatenate([np.asarray(b) for b in self._stream(pin=False)]) if n else None

    def _read(self, i: int) -> np.ndarray:
        from mtaffect.data.augment import eval_batch

        lo = i * self.batch_size
        rows = np.arange(lo, min(self.n, lo + self.batch_size))
        return eval_batch(np.asarray(self.reader.read(rows)), self.size, resize_factor=self.resize_factor)

    def _stream(self, pin: bool):
        from mtaffect.train.prefetch import ordered_chunks

        n_batches = -(-self.n // self.batch_size)
        return ordered_chunks(self._read, n_batches, workers=self.workers, pin_memory=pin)

    def batches(self):
        """(first row, uint8 crops (n, S, S, 3) as an array or a pinned tensor) per batch, in order."""
        if self.kept is not None:
            for lo in range(0, self.n, self.batch_size):
                yield lo, self.kept[lo : lo + self.batch_size]
            return
        for i, crops in enumerate(self._stream(pin=self.pin)):
            yield i * self.batch_size, crops


@torch.inference_mode()
def _run_cnn(model: nn.Module, crops: _EvalCrops, preprocessing: Any, device: torch.device) -> np.ndarray:
    out = np.zeros((crops.n, NUM_EXPRESSIONS + 2), np.float32)
    with inference(model):
        for lo, batch in crops.batches():
            x = preprocessing.apply(torch.as_tensor(batch), device=device, channels_last=True)
            with autocast(device):
                result = model(x)
            out[lo : lo + len(batch)] = _decode(result, _decoding(model))
    return out


def _eval_crops(
    frames: pd.DataFrame,
    meta: dict,
    preprocessing: Any,
    resize_factor: float,
    batch_size: int,
    device: torch.device,
    reader: Any,
    workers: int | None,
) -> _EvalCrops:
    """The evaluation crops of ``frames`` in batches, decoded by ``workers`` processes (None: the
    device's default), pinned on CUDA; ``reader`` None reads them with a :class:`FaceReader`."""
    from mtaffect.train.prefetch import default_workers

    if reader is None:
        from mtaffect.data.faces import FaceReader

        reader = FaceReader(frames, meta, preprocessing.size)
    return _EvalCrops(
        reader,
        len(frames),
        preprocessing.size,
        resize_factor,
        batch_size,
        workers=default_workers(device) if workers is None else workers,
        pin=device.type == "cuda",
    )


def predict_cnn_frames(
    model: nn.Module,
    frames: pd.DataFrame,
    meta: dict,
    *,
    preprocessing: Any,
    resize_factor: float = 1.2,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    reader: Any = None,
    workers: int | None = None,
) -> np.ndarray:
    """Per-frame predictions of a CNN on ``frames`` (index rows) → (N, 9): 7 probabilities, V, A.

    ``workers``: processes decoding batches ahead of the model (None: 8 at most on CUDA, none on CPU;
    :func:`mtaffect.train.prefetch.default_workers`); the predictions do not depend on it.
    """

    device = resolve_device(device)
    crops = _eval_crops(frames, meta, preprocessing, resize_factor, batch_size, device, reader, workers)
    return _run_cnn(model, crops, preprocessing, device)


def _track_plan(frames: pd.DataFrame, length: int, stride: int) -> list[tuple[np.ndarray, Any]]:
    """Per (database, track): (row positions in ``frames`` sorted by frame, Windows in predict mode)."""
    from mtaffect.windows import plan_windows

    number = frames["frame"].astype("Int64").to_numpy(np.int64)
    keys = (frames["database"].astype(str) + "\x00" + frames["track"].astype(str)).to_numpy()
    order = np.lexsort((number, keys))
    bounds = np.flatnonzero(np.r_[True, keys[order][1:] != keys[order][:-1], True])
    plan = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        rows = order[a:b]
        plan.append((rows, plan_windows(number[rows], length, stride, mode="predict")))
    return plan


@torch.inference_mode()
def predict_gru_frames(
    model: nn.Module,
    cache: Any,
    frames: pd.DataFrame,
    *,
    length: int = 32,
    stride: int = 32,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    draw: int = 0,
) -> np.ndarray:
    """Per-frame predictions of a temporal model from cached embeddings → (N, 9) in ``frames`` order.

    Windows per track (predict mode), batched across tracks, decoded per step, then averaged back
    onto frames with :func:`mtaffect.windows.stitch`: each frame exactly once, in order.
    """
    from mtaffect.windows import stitch

    device = resolve_device(device)
    positions = cache.positions(frames)
    if (positions < 0).any():
        raise ValueError(f"{int((positions < 0).sum())} frames are not in the feature cache")
    plan = _track_plan(frames, length, stride)
    windows_cache = np.concatenate([positions[rows][w.positions] for rows, w in plan]) if plan else None
    n_windows = 0 if windows_cache is None else len(windows_cache)
    values = np.zeros((n_windows, length, NUM_EXPRESSIONS + 2), np.float32)
    with inference(model):
        for lo in range(0, n_windows, batch_size):
            inputs = cache.gather(windows_cache[lo : lo + batch_size], draw)
            out = model({k: v.to(device) for k, v in inputs.items()})
            values[lo : lo + batch_size] = _decode(out, _decoding(model))
    result = np.full((len(frames), NUM_EXPRESSIONS + 2), np.nan, np.float32)
    start = 0
    for rows, windows in plan:
        result[rows] = stitch(values[start : start + len(windows)], windows, len(rows))
        start += len(windows)
    return result


def _with_predictions(frames: pd.DataFrame, predicted: np.ndarray) -> pd.DataFrame:
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
    has_e, has_va = _has_expression(df), _has_va(df)
    row["n_expression"] = int(has_e.sum())
    if has_e.any():
        s = metrics.expr_score(
            df["expression"].astype("Int64").to_numpy(np.int64, na_value=0)[has_e],
            df["pred_expression"].to_numpy()[has_e],
        )
        row.update(expr_f1=s["f1"], expr_accuracy=s["accuracy"], expr_score=s["score"])
    row["n_va"] = int(has_va.sum())
    if has_va.any():
        true_v = df["valence"].astype("Float64").to_numpy(np.float64, na_value=np.nan)[has_va]
        true_a = df["arousal"].astype("Float64").to_numpy(np.float64, na_value=np.nan)[has_va]
        v = metrics.va_scores(
            true_v, df["pred_valence"].to_numpy()[has_va], true_a, df["pred_arousal"].to_numpy()[has_va]
        )
        row.update(ccc_valence=v["ccc_valence"], ccc_arousal=v["ccc_arousal"], ccc_mean=v["ccc_mean"])
    row["abaw_sum"] = row.get("expr_score", 0.0) + row.get("ccc_valence", 0.0) + row.get("ccc_arousal", 0.0)
    return row


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


def make_cnn_validator(
    frames: pd.DataFrame,
    meta: dict,
    *,
    preprocessing: Any,
    resize_factor: float = 1.2,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    reader: Any = None,
    workers: int | None = None,
) -> Callable[[nn.Module], dict[str, float]]:
    """``validate(model) -> metrics`` for a CNN on ``frames`` (e.g. ``TaskSets.validation``).

    The evaluation crops are read once (in ``workers`` processes, as :func:`predict_cnn_frames`) and
    kept in memory when they fit (:data:`IN_MEMORY_LIMIT`).
    """

    frames = frames.reset_index(drop=True)
    device = resolve_device(device)
    crops = _eval_crops(frames, meta, preprocessing, resize_factor, batch_size, device, reader, workers)

    def validate(model: nn.Module) -> dict[str, float]:
        return summary_metrics(_with_predictions(frames, _run_cnn(model, crops, preprocessing, device)))

    return validate


def make_gru_validator(
    frames: pd.DataFrame,
    cache: Any,
    *,
    length: int = 32,
    stride: int = 32,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> Callable[[nn.Module], dict[str, float]]:
    """``validate(model) -> metrics`` for a temporal model on cached embeddings (centre-crop draw)."""
    frames = frames.reset_index(drop=True)

    def validate(model: nn.Module) -> dict[str, float]:
        predicted = predict_gru_frames(
            model, cache, frames, length=length, stride=stride, batch_size=batch_size, device=device
        )
        return summary_metrics(_with_predictions(frames, predicted))

    return validate


def window_validator(
    index: pd.DataFrame,
    cache: Any,
    sequences: Any,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    split: str = "validation",
) -> Callable[[nn.Module], dict[str, float]]:
    """The GRU stages' per-epoch validator: labelled ``split`` video frames of ``sequences.databases``,
    windows of ``sequences.length`` with stride ``sequences.eval_stride``, from ``cache``'s centre draw."""
    from mtaffect.errors import UserError

    frames = labelled_frames(index, split, list(sequences.databases), videos_only=True)
    if frames.empty:
        where = list(sequences.databases)
        raise UserError(f"no labelled {split} video frames of {where} to validate the GRU on")
    return make_gru_validator(
        frames,
        cache,
        length=sequences.length,
        stride=sequences.eval_stride,
        batch_size=batch_size,
        device=device,
    )


# Checkpoint evaluation and report writers live in mtaffect.evaluate_report (this module's size).
from mtaffect.evaluate_report import (  # noqa: E402
    EvaluationResult,
    evaluate_checkpoint,
    format_table,
    plot_confusion,
    write_report,
)
