"""Per-frame predictions of a CNN or a GRU on index rows, and the training loop's validators.

The protocol (the checkpoint's evaluation transform for the CNN: resize ×``Preprocessing.eval_resize``,
1.2 by default, and centre crop; GRU windows planned in predict mode and
stitched back so every frame is predicted exactly once and in order) is described in
:mod:`mtaffect.evaluate`. Each ``predict_*_frames`` returns (N, 9) float32 in the order of its
``frames``: 7 expression probabilities (``labels.EXPRESSIONS`` order), valence, arousal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from mtaffect.data.records import has_expression, has_va
from mtaffect.evaluate.scores import summary_metrics, with_predictions
from mtaffect.labels import NUM_EXPRESSIONS
from mtaffect.runtime import autocast, inference, resolve_device

__all__ = [
    "IN_MEMORY_LIMIT",
    "labelled_frames",
    "make_cnn_validator",
    "make_gru_validator",
    "window_validator",
    "predict_cnn_frames",
    "predict_gru_frames",
]

IN_MEMORY_LIMIT = 1 << 30
"""Validation crops up to this many bytes are decoded once and kept in memory across epochs."""


def labelled_frames(
    index: pd.DataFrame,
    split: str = "validation",
    databases: list[str] | None = None,
    *,
    videos_only: bool = False,
) -> pd.DataFrame:
    """Rows of ``split`` carrying a 7-class expression or a valence/arousal label (optionally only
    the databases given, only video frames)."""
    keep = (index["split"] == split).to_numpy(dtype=bool) & (has_expression(index) | has_va(index))
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
    """Evaluation crops of a fixed frame list: read (and centre-cropped, ×``eval_resize``) once if
    they fit in memory.

    Batches are read ahead in ``workers`` processes (:func:`mtaffect.data.prefetch.ordered_chunks`,
    pinned when ``pin``), in order: the crops do not depend on ``workers``. With ``warp`` (a
    :class:`mtaffect.data.augment.DeviceWarp` of the evaluation transform) the batches are the faces
    as read and the crop is taken on the device (the same pixels, bit for bit).
    """

    def __init__(
        self,
        reader: Any,
        n: int,
        size: int,
        eval_resize: float,
        batch_size: int,
        *,
        workers: int = 0,
        pin: bool = False,
        warp: Any = None,
    ) -> None:
        self.reader, self.n, self.size = reader, n, size
        self.eval_resize, self.batch_size = eval_resize, batch_size
        self.workers, self.pin, self.warp = workers, pin, warp
        self.kept: np.ndarray | None = None
        if n * size * size * 3 <= IN_MEMORY_LIMIT:
            self.kept = np.concatenate([np.asarray(b) for b in self._stream(pin=False)]) if n else None

    def _read(self, i: int) -> np.ndarray:
        from mtaffect.data.augment import eval_batch

        lo = i * self.batch_size
        rows = np.arange(lo, min(self.n, lo + self.batch_size))
        faces = np.asarray(self.reader.read(rows))
        if self.warp is not None:
            return faces
        return eval_batch(faces, self.size, resize_factor=self.eval_resize)

    def _stream(self, pin: bool):
        from mtaffect.data.prefetch import ordered_chunks

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
            batch = torch.as_tensor(batch)
            if crops.warp is not None:  # faces as read → evaluation crops, on the device
                batch = crops.warp(batch.to(device, non_blocking=True))
            x = preprocessing.apply(batch, device=device, channels_last=True)
            with autocast(device):
                result = model(x)
            out[lo : lo + len(batch)] = _decode(result, _decoding(model))
    return out


def _eval_crops(
    frames: pd.DataFrame,
    meta: dict,
    preprocessing: Any,
    batch_size: int,
    device: torch.device,
    reader: Any,
    workers: int | None,
    device_warps: bool | None = None,
) -> _EvalCrops:
    """The evaluation crops of ``frames`` in batches, decoded by ``workers`` processes (None: the
    device's default), pinned on CUDA; ``reader`` None reads them with a :class:`FaceReader`. The
    transform is ``preprocessing``'s: its ``size`` and ``eval_resize``, applied in the readers or,
    with ``device_warps`` (None: on CUDA), on the device."""
    from functools import partial

    from mtaffect.data.augment import DeviceWarp, eval_matrix
    from mtaffect.data.prefetch import default_workers

    if reader is None:
        from mtaffect.data.faces import FaceReader

        reader = FaceReader(frames, meta, preprocessing.size)
    size, resize = preprocessing.size, preprocessing.eval_resize
    on_device = device.type == "cuda" if device_warps is None else device_warps
    matrix_of = partial(eval_matrix, size=size, resize_factor=resize)
    warp = DeviceWarp(matrix_of, size, device) if on_device else None
    return _EvalCrops(
        reader,
        len(frames),
        preprocessing.size,
        preprocessing.eval_resize,
        batch_size,
        workers=default_workers(device) if workers is None else workers,
        pin=device.type == "cuda",
        warp=warp,
    )


def predict_cnn_frames(
    model: nn.Module,
    frames: pd.DataFrame,
    meta: dict,
    *,
    preprocessing: Any,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    reader: Any = None,
    workers: int | None = None,
    device_warps: bool | None = None,
) -> np.ndarray:
    """Per-frame predictions of a CNN on ``frames`` (index rows) → (N, 9): 7 probabilities, V, A.

    ``preprocessing``: the checkpoint's :class:`~mtaffect.models.preprocessing.Preprocessing` (input
    size, normalisation and the evaluation resize ``eval_resize``).

    ``workers``: processes decoding batches ahead of the model (None: 8 at most on CUDA, none on CPU;
    :func:`mtaffect.data.prefetch.default_workers`); the predictions do not depend on it, nor on
    ``device_warps`` (crop on the device, None: on CUDA; bit-identical to OpenCV's warp).
    """

    device = resolve_device(device)
    crops = _eval_crops(frames, meta, preprocessing, batch_size, device, reader, workers, device_warps)
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


def make_cnn_validator(
    frames: pd.DataFrame,
    meta: dict,
    *,
    preprocessing: Any,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    reader: Any = None,
    workers: int | None = None,
    device_warps: bool | None = None,
) -> Callable[[nn.Module], dict[str, float]]:
    """``validate(model) -> metrics`` for a CNN on ``frames`` (e.g. ``TaskSets.validation``).

    The evaluation crops are read once (in ``workers`` processes, as :func:`predict_cnn_frames`) and
    kept in memory when they fit (:data:`IN_MEMORY_LIMIT`).
    """

    frames = frames.reset_index(drop=True)
    device = resolve_device(device)
    crops = _eval_crops(frames, meta, preprocessing, batch_size, device, reader, workers, device_warps)

    def validate(model: nn.Module) -> dict[str, float]:
        return summary_metrics(with_predictions(frames, _run_cnn(model, crops, preprocessing, device)))

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
        return summary_metrics(with_predictions(frames, predicted))

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
