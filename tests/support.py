"""Test-only data builders shared by several test modules (not collected: no ``test_`` prefix).

Test modules import these, never each other; models come from :mod:`mtaffect.testing`. Three groups:
feature-cache toys (a frame index, a face reader and the cache builder), frame-training toys (three
in-memory task sets and their batch preparer), and ABAW prediction tables. Spawned DDP workers
import this module too: pytest puts ``tests/`` on ``sys.path`` and ``spawn`` passes it on.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mtaffect.data.loading import FrameTaskData, ImagePreparer, LabelArrays, TaskSource
from mtaffect.features import FeatureCache, ensure_feature_cache
from mtaffect.models.preprocessing import Preprocessing
from mtaffect.predict.tables import make_table


def free_port() -> int:
    """A loopback TCP port nobody listens on now (for a gloo process group's MASTER_PORT)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------ feature-cache toys

FEATURE_SIZE = 24  # side of FakeReader's faces
FEATURE_PREP = {"size": FEATURE_SIZE, "mean": [128.0, 128.0, 128.0], "std": [1.0, 1.0, 1.0]}


def toy_index(n_tracks: int = 2, n_frames: int = 10, split: str = "train") -> pd.DataFrame:
    """Aff-Wild2 rows ``v<t>/<frame>.jpg`` (frames 1-based) with both labels, index dtypes."""
    rows = []
    for t in range(n_tracks):
        for f in range(1, n_frames + 1):
            rows.append(
                {
                    "database": "affwild2",
                    "split": split,
                    "track": f"v{t}",
                    "frame": f,
                    "image": f"v{t}/{f:05d}.jpg",
                    "expression": (t + f) % 7,
                    "valence": 0.1 * (f % 5),
                    "arousal": -0.1 * (f % 3),
                }
            )
    df = pd.DataFrame(rows)
    df["frame"] = df["frame"].astype("Int64")
    df["expression"] = df["expression"].astype("Int64")
    df["valence"] = df["valence"].astype("Float64")
    df["arousal"] = df["arousal"].astype("Float64")
    return df


class FakeReader:
    """Deterministic faces from the image name: what FaceReader returns, without files.

    ``log`` collects the length of every read, so a test can see what was (not) recomputed."""

    def __init__(self, index: pd.DataFrame, log: list | None = None) -> None:
        self.images = index["image"].astype(str).to_numpy()
        self.log = log if log is not None else []

    def read(self, rows: np.ndarray) -> np.ndarray:
        self.log.append(len(rows))
        out = np.empty((len(rows), FEATURE_SIZE, FEATURE_SIZE, 3), np.uint8)
        for i, r in enumerate(rows):
            seed = sum(map(ord, self.images[r]))
            out[i] = np.random.default_rng(seed).integers(
                0, 256, (FEATURE_SIZE, FEATURE_SIZE, 3), dtype=np.uint8
            )
        return out


def feature_cache(tmp_path: Path, model: torch.nn.Module, index: pd.DataFrame, **kwargs: Any) -> FeatureCache:
    """``ensure_feature_cache`` on CPU over FakeReader faces (``factory=`` another reader factory)."""
    return ensure_feature_cache(
        model,
        index,
        {},
        tmp_path,
        reader_factory=kwargs.pop("factory", FakeReader),
        preprocessing_meta=FEATURE_PREP,
        device="cpu",
        progress=False,
        **kwargs,
    )


# ---------------------------------------------------------------------------- frame-training toys

FRAME_SIZE = 32  # training crop side; the toy faces are 40 x 40
FRAME_PREPARER = ImagePreparer(Preprocessing(size=FRAME_SIZE))


class ArrayReader:
    """Faces from an in-memory (N, H, W, 3) array."""

    def __init__(self, faces: np.ndarray) -> None:
        self.faces = faces

    def read(self, rows: np.ndarray) -> np.ndarray:
        return self.faces[np.asarray(rows)]


class SeededSampler:
    """A weighted sampler drawing the same rows for the same (seed, epoch), in any process."""

    def __init__(self, weights, num_samples, seed) -> None:
        self.weights, self.num_samples, self.seed, self.epoch = weights, num_samples, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        return iter(
            torch.multinomial(torch.as_tensor(self.weights), self.num_samples, True, generator=g).tolist()
        )


def _task_source(n: int, seed: int, expr_frac: float, va_frac: float) -> TaskSource:
    """``n`` noisy faces brightened by their expression; ``*_frac`` of them keep each label."""
    rng = np.random.default_rng(seed)
    expression = rng.integers(0, 7, n)
    valence, arousal = rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)
    faces = np.clip(rng.normal(128, 30, (n, 40, 40, 3)) + expression[:, None, None, None] * 10, 0, 255)
    df = pd.DataFrame(
        {
            "expression": pd.Series(expression, dtype="Int64").where(rng.random(n) < expr_frac, pd.NA),
            "valence": pd.array(np.where(rng.random(n) < va_frac, valence, np.nan), dtype="Float64"),
            "arousal": pd.array(arousal, dtype="Float64"),
        }
    )
    return TaskSource(ArrayReader(faces.astype(np.uint8)), LabelArrays.from_frame(df), np.ones(n))


def make_data(seed: int = 0, **kw: Any) -> FrameTaskData:
    """Three task sets as in the paper; EXPR frames carry some shared VA labels, VA frames some EXPR."""
    sources = {
        "EXPR": _task_source(24, 1, 1.0, 0.5),
        "VA": _task_source(24, 2, 0.5, 1.0),
        "EXPR_VA": _task_source(24, 3, 1, 1),
    }
    args = dict(batch_per_task=8, size=FRAME_SIZE, seed=seed, sampler_factory=SeededSampler)
    args.update(kw)
    return FrameTaskData(sources, **args)


# -------------------------------------------------------------------------- ABAW prediction tables


def prediction_table(
    name: str, frames, n_video: int | None = None, *, tracks=None, x0=None, seed: int = 0
) -> pd.DataFrame:
    """Face rows at ``frames``; with ``n_video`` also no-face rows so every frame 0..n-1 is present."""
    rng = np.random.default_rng(seed)
    frames = np.asarray(frames)
    k = len(frames)
    probs = rng.dirichlet(np.ones(7), size=k)
    x0 = np.full(k, 10.0) if x0 is None else np.asarray(x0, float)
    faces = make_table(
        input=name,
        frame=frames,
        time=frames / 25.0,
        track_id=np.zeros(k) if tracks is None else tracks,
        boxes=np.stack([x0, np.zeros(k), x0 + 50, np.full(k, 50.0)], 1),
        det_score=np.ones(k),
        probabilities=probs,
        valence=rng.uniform(-1, 1, k),
        arousal=rng.uniform(-1, 1, k),
    )
    if n_video is None:
        faces["time"] = pd.NA  # a --cropped table: no timestamps
        return faces
    missing = np.setdiff1d(np.arange(n_video), frames)
    empty = make_table(input=name, frame=missing, time=missing / 25.0)
    return pd.concat([faces, empty]).sort_values("frame", kind="stable").reset_index(drop=True)
