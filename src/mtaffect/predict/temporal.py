"""Temporal inference per track in bounded memory: 32-frame windows, overlaps averaged.

A GRU checkpoint predicts a frame from the window it sits in. For one track (its consecutive frames
with a face) the windows are those of :func:`mtaffect.windows.plan_windows` in ``mode="predict"``:
starts every ``stride`` positions, one more window aligned to the track's end when needed, a single
padded window for tracks shorter than ``length``; every frame is predicted exactly once, as the
average of the valid window steps covering it (:func:`mtaffect.windows.stitch`). The averaged
quantities are the expression probabilities and the decoded valence/arousal.

:class:`StreamingWindows` gives the same numbers while the video is still being read: it keeps the
head embeddings (2 × 128 floats per frame) only until no future window can cover a frame, which is
at most ``length + stride`` frames per live track, and releases finished frames in order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mtaffect.predict.runtime import FaceModel
from mtaffect.windows import plan_windows, stitch

__all__ = ["StreamingWindows", "predict_track"]


def _decoded_windows(model: FaceModel, emb_expr: np.ndarray, emb_va: np.ndarray) -> np.ndarray:
    """GRU on windows ``(W, L, h)`` → per-step values ``(W, L, 9)``: 7 probabilities, valence, arousal."""
    dec = model.decode(model.windows(emb_expr, emb_va))
    return np.concatenate([dec["probabilities"], dec["valence"][..., None], dec["arousal"][..., None]], -1)


def predict_track(
    model: FaceModel,
    emb_expr: np.ndarray,
    emb_va: np.ndarray,
    *,
    frames: np.ndarray | None = None,
    length: int = 32,
    stride: int = 16,
) -> np.ndarray:
    """Whole-track inference: ``(N, h)`` embeddings → ``(N, 9)`` (7 probabilities, valence, arousal).

    ``frames``: the frames' numbers (sorted); a missing number is a gap no window spans (a face
    missing in a ``cropped_aligned`` folder). None = consecutive frames.
    """
    n = len(emb_expr)
    if n == 0:
        return np.zeros((0, 9))
    numbers = np.arange(n) if frames is None else np.asarray(frames)
    windows = plan_windows(numbers, length, stride, mode="predict", on_gap="split")
    values = _decoded_windows(model, windows.take(emb_expr), windows.take(emb_va))
    return stitch(values, windows, n)


class StreamingWindows:
    """One track's frames in, finished per-frame predictions out, in order.

    ``push(items, emb_expr, emb_va)`` adds consecutive frames (``items``: anything the caller wants
    back, one per frame) and returns the ``(item, values (9,))`` pairs now final; ``finish()``
    returns the rest. ``pending_item`` is the oldest item not yet returned (None if none).
    """

    def __init__(self, model: FaceModel, *, length: int = 32, stride: int = 16) -> None:
        if not 1 <= stride <= length:
            raise ValueError("need 1 <= stride <= length so that every frame is covered")
        self.model, self.length, self.stride = model, length, stride
        self.n = 0  # frames pushed
        self.base = 0  # global position of the buffers' first entry
        self.next_start = 0  # start of the next regular window
        self.items: list[Any] = []
        self.expr: list[np.ndarray] = []
        self.va: list[np.ndarray] = []
        self.sums = np.zeros((0, 9))
        self.counts = np.zeros(0, np.int64)

    @property
    def pending_item(self) -> Any:
        return self.items[0] if self.items else None

    def _add(self, starts: list[int], *, pad_to: int | None = None) -> None:
        if not starts:
            return
        ex, va = np.asarray(self.expr), np.asarray(self.va)
        steps = np.arange(self.length)
        if pad_to is None:
            idx = np.asarray(starts)[:, None] - self.base + steps[None, :]
            valid = np.ones(idx.shape, bool)
        else:  # one short track: repeat the last frame, ignore the padded steps
            idx = np.minimum(steps, pad_to - 1)[None, :]
            valid = (steps < pad_to)[None, :]
        values = _decoded_windows(self.model, ex[idx], va[idx])
        np.add.at(self.sums, idx[valid], values[valid])
        np.add.at(self.counts, idx[valid], 1)

    def _release(self, upto: int) -> list[tuple[Any, np.ndarray]]:
        """Return the frames at global positions < ``upto`` and drop them from the buffers."""
        k = max(0, upto - self.base)
        if k == 0:
            return []
        out = [(self.items[i], self.sums[i] / self.counts[i]) for i in range(k)]
        del self.items[:k], self.expr[:k], self.va[:k]
        self.sums, self.counts = self.sums[k:], self.counts[k:]
        self.base += k
        return out

    def push(
        self, items: list[Any], emb_expr: np.ndarray, emb_va: np.ndarray
    ) -> list[tuple[Any, np.ndarray]]:
        k = len(items)
        if k == 0:
            return []
        self.items.extend(items)
        self.expr.extend(np.asarray(emb_expr, np.float32))
        self.va.extend(np.asarray(emb_va, np.float32))
        self.sums = np.concatenate([self.sums, np.zeros((k, 9))])
        self.counts = np.concatenate([self.counts, np.zeros(k, np.int64)])
        self.n += k
        starts = []
        while self.next_start + self.length <= self.n:
            starts.append(self.next_start)
            self.next_start += self.stride
        self._add(starts)
        # a frame is final once no regular window (start >= next_start) and no end-aligned window
        # (start >= n - length, for any final n >= the current n) can still cover it
        return self._release(min(self.next_start, self.n - self.length))

    def finish(self) -> list[tuple[Any, np.ndarray]]:
        n = self.n
        if n == 0:
            return []
        if n < self.length:
            self._add([0], pad_to=n)
        elif self.next_start - self.stride + self.length < n:
            self._add([n - self.length])
        return self._release(n)
