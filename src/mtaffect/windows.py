"""Temporal windows over one track's frames, and stitching per-window predictions back to frames.

The GRU stage works on fixed-length windows (the paper: 32 frames). This module plans them and
puts the per-step outputs back, pure numpy, for three users: GRU training data, GRU evaluation,
and video prediction.

Policy
------
* **Positions, not frame numbers.** A track is given as its sorted frame numbers ``frames`` (N,).
  Windows hold *positions* ``0..N-1`` into the track's arrays (rows of its frame table, features,
  labels), so callers index their own arrays with them (:meth:`Windows.take`).
* **Gaps split runs** (``on_gap="split"``, default). Consecutive frame numbers must differ by 1; a
  missing frame (no face, no label) is a gap, and no window spans one. ``on_gap="ignore"`` treats
  the positions as contiguous whatever the frame numbers (for inputs already made gap-free, e.g.
  a test video whose missing faces were filled).
* **Inside a run** of n positions: windows start every ``stride`` positions; if the last one does
  not end on the run's end, one more window aligned to the run's end is added (it overlaps its
  predecessor). A run of exactly ``length + k·stride`` positions needs no extra window.
* **Short runs** (n < length) become one window padded at its end by repeating the run's last
  position, with ``valid=False`` on the padded steps (losses mask them; :func:`stitch` ignores them).
  In ``mode="train"`` runs shorter than ``min_length`` are dropped instead (the authors drop every
  window with a gap and every video under 32 frames: ``min_length=length`` reproduces that). In
  ``mode="predict"`` nothing is ever dropped: every position is covered by at least one valid step.
* **Stitching** averages the valid steps that cover each position and returns exactly one row per
  position, in position order; a position no valid step covers is an error, never a silent gap.
  (The authors' test script keeps the first occurrence of each frame and, through a collate
  transposition, misaligns the last batch of every video: METHOD.md §8.1 bug 1.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["Windows", "plan_windows", "runs", "stitch"]

MODES = ("train", "predict")
GAP_POLICIES = ("split", "ignore")


@dataclass(frozen=True)
class Windows:
    """Windows over one track.

    positions: (W, length) int64 indices into the track's arrays (padded steps repeat an edge index).
    valid: (W, length) bool, False on padded steps.
    n_positions: N, the number of positions of the track the windows were planned on.
    """

    positions: np.ndarray
    valid: np.ndarray
    n_positions: int

    @property
    def length(self) -> int:
        return int(self.positions.shape[1])

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    def take(self, array: ArrayLike) -> np.ndarray:
        """Gather a per-position array ``(N, ...)`` into windows ``(W, length, ...)``."""
        array = np.asarray(array)
        if array.shape[0] != self.n_positions:
            raise ValueError(f"array has {array.shape[0]} rows, windows were planned on {self.n_positions}")
        return array[self.positions]

    def coverage(self) -> np.ndarray:
        """How many valid steps cover each position: (N,) int64."""
        return np.bincount(self.positions[self.valid], minlength=self.n_positions)


def runs(frames: ArrayLike, *, on_gap: str = "split") -> list[tuple[int, int]]:
    """Contiguous runs of a sorted frame-number array as ``[(start, stop), ...]`` position ranges."""
    frames = _check_frames(frames)
    if on_gap not in GAP_POLICIES:
        raise ValueError(f"on_gap must be one of {GAP_POLICIES}, got {on_gap!r}")
    n = frames.shape[0]
    if n == 0:
        return []
    if on_gap == "ignore":
        return [(0, n)]
    breaks = np.flatnonzero(np.diff(frames) != 1) + 1
    starts = np.concatenate(([0], breaks))
    stops = np.concatenate((breaks, [n]))
    return [(int(a), int(b)) for a, b in zip(starts, stops)]


def _check_frames(frames) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.ndim != 1:
        raise ValueError(f"frames must be a 1-D array of frame numbers, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        if arr.dtype.kind != "f" or not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError("frames must hold integer frame numbers")
    arr = arr.astype(np.int64)
    if arr.size > 1 and np.any(np.diff(arr) <= 0):
        bad = int(np.flatnonzero(np.diff(arr) <= 0)[0])
        raise ValueError(
            f"frames must be strictly increasing: position {bad + 1} holds {arr[bad + 1]} after {arr[bad]}"
        )
    return arr


def _run_starts(n: int, length: int, stride: int) -> np.ndarray:
    starts = np.arange(0, n - length + 1, stride)
    if starts[-1] + length < n:
        starts = np.append(starts, n - length)
    return starts


def plan_windows(
    frames: ArrayLike,
    length: int = 32,
    stride: int = 16,
    *,
    mode: str = "train",
    min_length: int = 1,
    on_gap: str = "split",
) -> Windows:
    """Plan fixed-length windows over one track (policy in the module docstring).

    frames: (N,) strictly increasing frame numbers of the track.
    length: steps per window (the paper: 32). stride: start-to-start distance inside a run
        (training 16, evaluation/prediction 32 in the authors' code).
    mode: "train" drops runs shorter than ``min_length``; "predict" covers every position.
    Returns :class:`Windows` with positions/valid of shape (W, length); W = 0 for an empty track.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if length < 1 or stride < 1:
        raise ValueError(f"length and stride must be >= 1, got length={length}, stride={stride}")
    if mode == "predict" and min_length > 1:
        raise ValueError("mode='predict' covers every frame: min_length must be 1")
    if mode == "predict" and stride > length:
        raise ValueError(
            f"mode='predict' covers every frame: stride {stride} must not exceed length {length}"
        )
    frames = _check_frames(frames)
    steps = np.arange(length)
    positions: list[np.ndarray] = []
    valid: list[np.ndarray] = []
    for start, stop in runs(frames, on_gap=on_gap):
        n = stop - start
        if n < min_length:
            continue
        if n >= length:
            block = start + _run_starts(n, length, stride)[:, None] + steps[None, :]
            positions.append(block)
            valid.append(np.ones(block.shape, dtype=bool))
        else:  # one window, padded at the end by repeating the run's last position
            positions.append((start + np.minimum(steps, n - 1))[None, :])
            valid.append((steps < n)[None, :])
    if not positions:
        return Windows(np.zeros((0, length), np.int64), np.zeros((0, length), bool), int(frames.shape[0]))
    return Windows(np.concatenate(positions).astype(np.int64), np.concatenate(valid), int(frames.shape[0]))


def stitch(values: ArrayLike, windows: Windows, n_positions: int | None = None) -> np.ndarray:
    """Average per-step window outputs back onto positions: one row per position, in order.

    values: (W, length, C) or (W, length) per-step outputs (logits, probabilities, VA values).
    windows: the :class:`Windows` the values were computed on.
    n_positions: N (defaults to ``windows.n_positions``; must agree with it).
    Returns (N, C) (or (N,)) float64: for each position the mean over the valid steps covering it.
    Raises ValueError if a position is not covered by any valid step.
    """
    values = np.asarray(values, dtype=np.float64)
    n = windows.n_positions if n_positions is None else int(n_positions)
    if n != windows.n_positions:
        raise ValueError(f"n_positions={n} but the windows were planned on {windows.n_positions} positions")
    squeeze = values.ndim == 2
    if squeeze:
        values = values[..., None]
    if values.shape[:2] != windows.positions.shape:
        raise ValueError(f"values of shape {values.shape[:2]} do not match windows {windows.positions.shape}")
    index = windows.positions[windows.valid]  # (S,) every valid step, window-major
    counts = np.bincount(index, minlength=n)
    missing = np.flatnonzero(counts[:n] == 0) if n else np.zeros(0, np.int64)
    if missing.size:
        raise ValueError(
            f"{missing.size} of {n} positions are not covered by any valid window step "
            f"(first: {missing[:5].tolist()}); plan the windows with mode='predict'"
        )
    sums = np.zeros((n, values.shape[-1]), dtype=np.float64)
    np.add.at(sums, index, values[windows.valid])
    out = sums / counts[:, None]
    return out[:, 0] if squeeze else out
