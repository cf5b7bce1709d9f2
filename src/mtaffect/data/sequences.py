"""GRU-stage data: 32-frame windows over the feature cache, per task set, as (inputs, Targets) batches.

The authors train the GRU on Aff-Wild2 only, with two task sets built from the video frames that
carry the task's label (METHOD.md §2.5, §4.3): EXPR (expression frames) and VA (valence/arousal
frames); the shared annotation of a frame rides along as its secondary label. Windows are 32
frames, stride 16 for training and 32 for validation. That is our default
(:class:`SequenceConfig`); the paper's Table 3 caption mentions T ∈ {1, 2, 3}, which
``task_sets: [EXPR, VA, EXPR_VA]`` gives (EXPR_VA = Aff-Wild2 frames labelled for both).

Windows come from :func:`mtaffect.windows.plan_windows` on each track's labelled frame numbers:

* a missing frame (no face, or no label for the task) **splits** the track into runs; a window
  never crosses a gap (the authors drop such windows; we cut the run there instead, so no frame is
  lost);
* a run shorter than the window length is **padded** by repeating its last frame, with the padded
  steps masked out of every loss (``short: pad``, default), or **dropped** (``short: drop``,
  the authors' choice for videos shorter than 32 frames).

One batch of a task set is ``(inputs, targets)``: ``inputs = {"EXPR": (B, T, 128), "VA": (B, T, 128)}``
float32 embeddings read from the cache, every frame of a window under the *same* augmentation draw
(the authors' sequence-level augmentation, METHOD.md §4.4), and :class:`Targets` of shape (B, T)
whose masks are False on padded steps and missing labels. Order and draws are seeded per epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from mtaffect.data.records import has_expression, has_va
from mtaffect.errors import UserError
from mtaffect.labels import TASK_SETS
from mtaffect.models.outputs import Targets

__all__ = [
    "SequenceConfig",
    "WindowSet",
    "WindowLoader",
    "WindowTaskData",
    "gru_frames",
    "gru_task_frames",
    "build_window_set",
    "build_window_loaders",
    "iterate_steps",
    "track_windows",
]

SHORT_POLICIES = ("pad", "drop")


@dataclass
class SequenceConfig:
    """Options of the GRU stages' data (config section ``data.sequences``).

    length: frames per window (32); stride: training stride (16); eval_stride: validation (32).
    task_sets: the GRU's task sets; default = the authors' (EXPR, VA); add EXPR_VA for T ∈ {1,2,3}.
    databases: video databases whose tracks form windows (the authors: Aff-Wild2 only).
    short: runs shorter than ``length``: "pad" (masked, default) or "drop" (authors).
    translations/flips: the feature cache's augmentation draws (see mtaffect.features).
    cache_batch: frames per feature-extraction chunk (the resumable unit).
    """

    length: int = 32
    stride: int = 16
    eval_stride: int = 32
    task_sets: list = field(default_factory=lambda: ["EXPR", "VA"])
    databases: list = field(default_factory=lambda: ["affwild2"])
    short: str = "pad"
    translations: list = field(default_factory=lambda: [0.125, 0.375, 0.625, 0.875])
    flips: bool = True
    cache_batch: int = 256

    def __post_init__(self) -> None:
        if self.length < 1 or self.stride < 1 or self.eval_stride < 1:
            raise ValueError("length, stride and eval_stride must be positive")
        if self.short not in SHORT_POLICIES:
            raise ValueError(f"short must be one of {SHORT_POLICIES}, got {self.short!r}")
        unknown = sorted(set(self.task_sets) - set(TASK_SETS))
        if unknown or not self.task_sets:
            raise ValueError(f"task_sets must be a non-empty subset of {TASK_SETS}, got {self.task_sets}")


def gru_frames(
    index: pd.DataFrame, config: SequenceConfig, splits: Sequence[str] = ("train", "validation")
) -> pd.DataFrame:
    """Rows of ``index`` the GRU stages read: video frames of ``config.databases`` in ``splits`` with a
    label (7-class expression or valence/arousal). This is what the feature cache must cover."""
    keep = index["database"].isin(config.databases).to_numpy() & index["split"].isin(splits).to_numpy()
    keep &= index["frame"].astype("Int64").notna().to_numpy(dtype=bool)
    keep &= has_expression(index) | has_va(index)
    return index[keep]


def gru_task_frames(
    index: pd.DataFrame, task_set: str, config: SequenceConfig, split: str = "train"
) -> pd.DataFrame:
    """Frames of one GRU task set: EXPR → expression-labelled, VA → VA-labelled, EXPR_VA → both."""
    frames = gru_frames(index, config, (split,))
    if task_set == "EXPR":
        return frames[has_expression(frames)]
    if task_set == "VA":
        return frames[has_va(frames)]
    if task_set == "EXPR_VA":
        return frames[has_expression(frames) & has_va(frames)]
    raise UserError(f"unknown task set {task_set!r}; known: {', '.join(TASK_SETS)}")


def track_windows(
    frames: np.ndarray, length: int, stride: int, *, mode: str, short: str = "pad"
) -> tuple[np.ndarray, np.ndarray]:
    """Windows over one track's sorted frame numbers → (positions (W, length), valid (W, length)).

    Positions index ``frames``; gaps split runs; padded steps repeat the run's last position and are
    False in ``valid`` (:func:`mtaffect.windows.plan_windows`). ``short="drop"`` drops runs shorter
    than ``length`` in training (the authors); prediction always covers every frame.
    """
    from mtaffect.windows import plan_windows

    min_length = length if (short == "drop" and mode == "train") else 1
    windows = plan_windows(
        np.asarray(frames, dtype=np.int64), length, stride, mode=mode, min_length=min_length
    )
    return windows.positions, windows.valid


@dataclass
class WindowSet:
    """Windows of one task set, as flat arrays (W windows × L steps).

    cache: (W, L) positions into the feature cache; valid: (W, L) real (not padded) steps;
    expression/has_expression/valence/arousal/has_va: per-step labels and masks (False on padding);
    rows: (W, L) positions into the frame table the set was built from (−1 on padding).
    """

    cache: np.ndarray
    valid: np.ndarray
    expression: np.ndarray
    has_expression: np.ndarray
    valence: np.ndarray
    arousal: np.ndarray
    has_va: np.ndarray
    rows: np.ndarray

    def __len__(self) -> int:
        return self.cache.shape[0]

    def targets(self, sel: np.ndarray) -> Targets:
        """Targets (B, L) of windows ``sel``."""
        return Targets(
            torch.from_numpy(self.expression[sel]),
            torch.from_numpy(self.has_expression[sel]),
            torch.from_numpy(self.valence[sel]),
            torch.from_numpy(self.arousal[sel]),
            torch.from_numpy(self.has_va[sel]),
        )


def build_window_set(
    frames: pd.DataFrame,
    cache_positions: np.ndarray,
    *,
    length: int,
    stride: int,
    mode: str = "train",
    short: str = "pad",
) -> WindowSet:
    """Cut every (database, track) of ``frames`` into windows.

    ``frames``: rows with database/track/frame/expression/valence/arousal; ``cache_positions``: their
    feature-cache positions (same order; −1 = not cached → error). Frames are sorted by frame number
    within a track; duplicated frame numbers are an error naming the track.
    """
    cache_positions = np.asarray(cache_positions, dtype=np.int64)
    if (cache_positions < 0).any():
        missing = frames.iloc[int(np.flatnonzero(cache_positions < 0)[0])]
        raise UserError(f"frame {missing['database']}/{missing['image']} is not in the feature cache")
    has_expr = has_expression(frames)
    expr = np.where(has_expr, frames["expression"].astype("Int64").fillna(0).to_numpy(np.int64), 0)
    labelled_va = has_va(frames)
    val = frames["valence"].astype("Float64").fillna(0.0).to_numpy(np.float32)
    aro = frames["arousal"].astype("Float64").fillna(0.0).to_numpy(np.float32)
    frame_no = frames["frame"].astype("Int64").to_numpy(np.int64)
    order = np.lexsort(
        (frame_no, frames["track"].astype(str).to_numpy(), frames["database"].astype(str).to_numpy())
    )
    keys = (frames["database"].astype(str) + "\x00" + frames["track"].astype(str)).to_numpy()[order]
    bounds = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1], True])
    all_rows, all_valid = [], []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        rows = order[start:stop]
        numbers = frame_no[rows]
        if (np.diff(numbers) == 0).any():
            raise UserError(f"track {keys[start].replace(chr(0), '/')}: the same frame number appears twice")
        pos, valid = track_windows(numbers, length, stride, mode=mode, short=short)
        all_rows.append(rows[pos])
        all_valid.append(valid)
    if all_rows:
        rows_w = np.concatenate(all_rows).astype(np.int64)
        valid_w = np.concatenate(all_valid)
    else:
        rows_w, valid_w = np.zeros((0, length), np.int64), np.zeros((0, length), bool)
    return WindowSet(
        cache=cache_positions[rows_w] if rows_w.size else rows_w,
        valid=valid_w,
        expression=expr[rows_w].astype(np.int64),
        has_expression=has_expr[rows_w] & valid_w,
        valence=val[rows_w],
        arousal=aro[rows_w],
        has_va=labelled_va[rows_w] & valid_w,
        rows=np.where(valid_w, rows_w, -1),
    )


class WindowLoader:
    """Seeded batches of one task set's windows: iterate → ``(inputs, Targets)``, B windows each.

    Each epoch shuffles the windows (plain shuffle: the authors do not balance the GRU stage) and
    draws one augmentation per window among ``train_draws`` (cache draw indices; every frame of the
    window uses it). ``len()`` = batches per epoch (the last partial batch is dropped, as the
    authors' ``drop_last``, unless there are fewer windows than one batch).
    """

    def __init__(
        self,
        windows: WindowSet,
        cache: object,
        batch_size: int,
        *,
        seed: int = 0,
        train_draws: Sequence[int] | None = None,
        task_id: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        if len(windows) == 0:
            raise UserError("a GRU task set has no windows (are its tracks labelled?)")
        self.windows = windows
        self.cache = cache
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.task_id = int(task_id)
        self.shuffle = shuffle
        self.rank, self.world = int(rank), int(world)
        n_draws = len(cache.draws)
        self.train_draws = np.asarray(
            list(train_draws) if train_draws is not None else (range(1, n_draws) if n_draws > 1 else [0]),
            dtype=np.int64,
        )
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return max(1, (len(self.windows) // self.world) // self.batch_size)

    def batch(self, sel: np.ndarray, draws: np.ndarray | int) -> tuple[dict[str, torch.Tensor], Targets]:
        """Inputs and targets of windows ``sel`` under per-window draws (cache draw indices)."""
        draw_idx = np.asarray(draws)[:, None] if np.ndim(draws) else draws
        inputs = self.cache.gather(self.windows.cache[sel], draw_idx)
        return inputs, self.windows.targets(sel)

    def __iter__(self) -> Iterator[tuple[dict[str, torch.Tensor], Targets]]:
        return self.steps(0)

    def steps(self, start: int = 0) -> Iterator[tuple[dict[str, torch.Tensor], Targets]]:
        """Batches ``start ..`` of the current epoch; a batch depends only on (seed, epoch, task, rank)."""
        rng = np.random.default_rng([self.seed, self.epoch, self.task_id])
        n = len(self.windows)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        draws = self.train_draws[rng.integers(0, len(self.train_draws), size=n)]
        order = order[self.rank :: self.world]  # DDP: rank r takes every world-th window
        size = min(self.batch_size, len(order))
        for b in range(start, len(self)):
            sel = order[b * size : (b + 1) * size]
            yield self.batch(sel, draws[sel])


def build_window_loaders(
    index: pd.DataFrame,
    cache: object,
    config: SequenceConfig,
    batch_size: int,
    *,
    seed: int = 0,
    split: str = "train",
    rank: int = 0,
    world: int = 1,
) -> dict[str, WindowLoader]:
    """One :class:`WindowLoader` per GRU task set of ``config`` (stride ``config.stride``)."""
    loaders = {}
    for task_id, task_set in enumerate(config.task_sets):
        frames = gru_task_frames(index, task_set, config, split)
        windows = build_window_set(
            frames,
            cache.positions(frames),
            length=config.length,
            stride=config.stride,
            mode="train",
            short=config.short,
        )
        if len(windows) == 0:
            raise UserError(f"GRU task set {task_set}: no {split} windows in databases {config.databases}")
        loaders[task_set] = WindowLoader(
            windows, cache, batch_size, seed=seed, task_id=task_id, rank=rank, world=world
        )
    return loaders


class WindowTaskData:
    """The GRU stages' training data in the shape :func:`mtaffect.train.loop.fit` expects.

    ``steps_per_epoch()`` = the shortest task loader (capped by ``max_steps``); ``epoch(e, start)``
    yields ``{task_set: (inputs, Targets)}``; :meth:`to_device` moves a batch (inputs are already
    float embeddings, so nothing else is done on the device).
    """

    def __init__(self, loaders: Mapping[str, WindowLoader], *, max_steps: int = 0) -> None:
        if not loaders:
            raise ValueError("no GRU task sets to train on")
        self.loaders = dict(loaders)
        self.max_steps = int(max_steps)

    def steps_per_epoch(self) -> int:
        steps = min(len(loader) for loader in self.loaders.values())
        return min(steps, self.max_steps) if self.max_steps else steps

    def epoch(
        self, epoch: int, start_step: int = 0
    ) -> Iterator[dict[str, tuple[dict[str, torch.Tensor], Targets]]]:
        for loader in self.loaders.values():
            loader.set_epoch(epoch)
        n = self.steps_per_epoch()
        iterators = [loader.steps(start_step) for loader in self.loaders.values()]
        for _, batches in zip(range(start_step, n), zip(*iterators)):
            yield dict(zip(self.loaders, batches))

    @staticmethod
    def to_device(
        batch: Mapping[str, tuple[dict[str, torch.Tensor], Targets]], device: torch.device
    ) -> dict[str, tuple[dict[str, torch.Tensor], Targets]]:
        non_blocking = torch.device(device).type == "cuda"
        return {
            name: (
                {k: v.to(device, non_blocking=non_blocking) for k, v in inputs.items()},
                targets.to(device, non_blocking=non_blocking),
            )
            for name, (inputs, targets) in batch.items()
        }


def iterate_steps(
    loaders: Mapping[str, WindowLoader], epoch: int = 0
) -> Iterator[dict[str, tuple[dict[str, torch.Tensor], Targets]]]:
    """One training step per item: ``{task_set: (inputs, targets)}``; the epoch ends with the shortest
    task loader (METHOD.md §4.2)."""
    for loader in loaders.values():
        loader.set_epoch(epoch)
    yield from (dict(zip(loaders, batches)) for batches in zip(*loaders.values()))
