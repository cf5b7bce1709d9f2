"""Benchmark (c): a GRU-stage epoch on the feature cache vs the authors' design, on the same windows.

Ours (measured): the GRU *student* stage (the heavier one: a frozen GRU teacher forward + the
student's forward/backward/Adam step per step) reading 16 windows × 32 frames per task set
(EXPR, VA) from a float16 feature cache with one augmentation draw per window
(:class:`mtaffect.data.sequences.WindowTaskData` + :class:`mtaffect.train.tasks.DistillationTask`).

The authors' design (measured per frame, extrapolated per step): the same GRU work plus the frozen
ResNet-50 recomputed on every frame of every window at every step, once for the student's CNN and
once for the teacher's CNN (``Seq_Model.forward`` under no_grad: 2 task sets × 16 × 32 = 1,024
frames per model, 2,048 per student step; 1,024 per teacher step). We time the ResNet-50 (FER+
caffe layout, 112², eval, no_grad, channels_last, batch 64) and add its per-step cost to our
measured GRU step: authors step = 2,048 × (ResNet-50 s/frame) + GRU step (student stage);
1,024 × ... (teacher stage). The ratio is per step, so it is the same per epoch whatever the epoch
length; the per-epoch times are printed for an Aff-Wild2-sized epoch (10,000 steps ≈ 160 k windows
per task set at stride 16), **extrapolated** from the per-step times.

Run: ``OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m benchmarks.bench_gru_stage [--threads 1]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks._timing import time_quiet

EPOCH_STEPS = 10_000


def synthetic_index(n_tracks: int, frames: int, seed: int = 0) -> pd.DataFrame:
    """Aff-Wild2-like train rows: tracks of consecutive frames with expression and VA labels."""
    rng = np.random.default_rng(seed)
    n = n_tracks * frames
    return pd.DataFrame({
        "database": "affwild2", "split": "train",
        "track": np.repeat([f"v{t}" for t in range(n_tracks)], frames),
        "frame": pd.array(np.tile(np.arange(1, frames + 1), n_tracks), dtype="Int64"),
        "image": [f"v{t}/{f:05d}.jpg" for t in range(n_tracks) for f in range(1, frames + 1)],
        "expression": pd.array(rng.integers(0, 7, n), dtype="Int64"),
        "valence": pd.array(rng.uniform(-1, 1, n), dtype="Float64"),
        "arousal": pd.array(rng.uniform(-1, 1, n), dtype="Float64"),
    })  # fmt: skip


def write_cache(folder: Path, index: pd.DataFrame, n_draws: int = 9) -> object:
    """A feature-cache folder with random float16 embeddings (the GRU step does not care about values)."""
    from mtaffect.features import FeatureCache, default_draws, frame_table
    from mtaffect.io import write_json, write_parquet

    frames = frame_table(index)
    folder.mkdir(parents=True, exist_ok=True)
    write_parquet(frames, folder / "frames.parquet", index=False)
    rng = np.random.default_rng(0)
    for task in ("EXPR", "VA"):
        mm = np.memmap(folder / f"{task}.f16", dtype=np.float16, mode="w+", shape=(n_draws, len(frames), 128))
        for d in range(n_draws):
            mm[d] = rng.standard_normal((len(frames), 128), dtype=np.float32).astype(np.float16)
        mm.flush()
        del mm
    draws = [d.__dict__ for d in default_draws()][:n_draws]
    write_json(
        folder / "meta.json",
        {
            "format": 1,
            "key": "bench",
            "draws": draws,
            "size": 112,
            "resized": 134,
            "n_frames": len(frames),
            "dim": 128,
            "complete": True,
        },
    )
    return FeatureCache(folder)


def gru_steps(cache: object, index: pd.DataFrame, steps: int, student: bool):
    """A callable running ``steps`` GRU training steps (teacher or student stage) on the cache."""
    from mtaffect.data.sequences import SequenceConfig, WindowTaskData, build_window_loaders
    from mtaffect.losses import LossConfig
    from mtaffect.models.gru import GRUConfig, TemporalModel
    from mtaffect.train.tasks import DistillationTask, SupervisedTask

    seq = SequenceConfig()
    data = WindowTaskData(build_window_loaders(index, cache, seq, 16, seed=0), max_steps=steps)
    torch.manual_seed(0)
    model = TemporalModel(GRUConfig())
    if student:
        task = DistillationTask(model, TemporalModel(GRUConfig()).eval(), LossConfig(), shared_labels=True)
    else:
        task = SupervisedTask(model, LossConfig())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.5, 0.999))
    epoch = [0]

    def run() -> None:
        task.train()
        for batch in data.epoch(epoch[0]):
            optimizer.zero_grad(set_to_none=True)
            task(batch)["loss"].backward()
            optimizer.step()
        epoch[0] += 1

    return run


def resnet50_seconds_per_frame(batch: int, reps: int) -> tuple[float, object]:
    """Frozen ResNet-50 (caffe/FER+ layout, 112², eval, no_grad, channels_last) seconds per frame."""
    from mtaffect.models.cnn import CNNConfig, MultitaskCNN

    model = MultitaskCNN(CNNConfig(backbone="resnet50_caffe")).eval().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 112, 112).contiguous(memory_format=torch.channels_last)

    def forward() -> None:
        with torch.no_grad():
            model.embed(x)

    timing = time_quiet(forward, reps=reps, warmup=1)
    return timing.median_s / batch, timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tracks", type=int, default=100)
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--steps", type=int, default=20, help="GRU steps per timed repetition")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--cnn-reps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    index = synthetic_index(args.tracks, args.frames)
    with tempfile.TemporaryDirectory() as tmp:
        cache = write_cache(Path(tmp) / "cache", index)
        ours = {}
        for name, student in (("teacher", False), ("student", True)):
            timing = time_quiet(gru_steps(cache, index, args.steps, student), reps=args.reps, warmup=1)
            ours[name] = (timing.median_s / args.steps, timing)
        cnn_frame, cnn_timing = resnet50_seconds_per_frame(64, args.cnn_reps)
    frames_per_model = 2 * 16 * 32  # 2 task sets × 16 windows × 32 frames
    result = {
        "threads": args.threads,
        "resnet50_frames_per_s": 1.0 / cnn_frame,
        "resnet50_quiet_reps": f"{cnn_timing.kept}/{cnn_timing.total}",
    }
    for name, (step, timing) in ours.items():
        cnn_models = 2 if name == "student" else 1
        authors = step + cnn_models * frames_per_model * cnn_frame
        result[name] = {
            "ours_step_ms": step * 1e3, "ours_quiet_reps": f"{timing.kept}/{timing.total}",
            "authors_step_s_extrapolated": authors,
            "speedup": authors / step,
            "ours_epoch_min": step * EPOCH_STEPS / 60,
            "authors_epoch_h_extrapolated": authors * EPOCH_STEPS / 3600,
        }  # fmt: skip
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
