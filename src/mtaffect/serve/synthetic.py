"""A synthetic result in the ``predict --out`` layout, for the app's tests and its benchmark.

``write_synthetic_result(run, seconds=3600, fps=30)`` writes ``run/report.json`` and
``run/<name>/predictions.{csv,parquet}`` + ``done.json``: two people with smooth random valence,
arousal and expression probabilities, person 0 absent for a stretch (a gap) and person 1 present
in the second half only, variable frame intervals when ``jitter`` > 0. No video is written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mtaffect.io import write_json
from mtaffect.predict.tables import TableWriter, make_table

__all__ = ["write_synthetic_result"]


def _smooth(rng: np.random.Generator, n: int, k: int, scale: float) -> np.ndarray:
    steps = rng.normal(0.0, scale, size=(n, k))
    walk = np.cumsum(steps, axis=0)
    return walk - walk.mean(axis=0)


def write_synthetic_result(
    run: str | Path,
    *,
    name: str = "long",
    seconds: float = 3600.0,
    fps: float = 30.0,
    jitter: float = 0.0,
    seed: int = 0,
) -> Path:
    """Write the run; returns the per-input folder. ``jitter``: relative spread of frame intervals."""
    rng = np.random.default_rng(seed)
    run = Path(run)
    n = int(round(seconds * fps))
    dt = np.full(n, 1.0 / fps) * (1 + jitter * rng.uniform(-1, 1, n))
    time = np.concatenate([[0.0], np.cumsum(dt[:-1])])
    frame = np.arange(n)
    present = {
        0: (frame < int(0.40 * n)) | (frame >= int(0.45 * n)),
        1: frame >= n // 2,
    }
    parts = []
    for track, mask in present.items():
        idx = frame[mask]
        logits = _smooth(rng, n, 7, 0.02)[idx]
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        va = np.tanh(_smooth(rng, n, 2, 0.01)[idx])
        x0 = 40.0 + 140 * track  # inside the benchmark's 320x180 video
        boxes = np.tile([x0, 40.0, x0 + 80, 140.0], (len(idx), 1))
        parts.append(
            make_table(
                input=f"{name}.mp4", frame=idx, time=time[idx], track_id=np.full(len(idx), track),
                boxes=boxes, det_score=np.full(len(idx), 0.99), probabilities=probs,
                valence=va[:, 0], arousal=va[:, 1],
            )
        )
    nobody = frame[~(present[0] | present[1])]
    parts.append(make_table(input=f"{name}.mp4", frame=nobody, time=time[nobody]))
    df = pd.concat(parts, ignore_index=True).sort_values(["frame", "track_id"], kind="stable")
    folder = run / name
    with TableWriter(folder / "predictions") as writer:
        for start in range(0, len(df), 20000):
            writer.write(df.iloc[start : start + 20000].reset_index(drop=True))
    entry = {"input": f"{name}.mp4", "output": name, "status": "ok", "error": None, "frames": n,
             "faces": int(df["face_found"].sum()), "tracks": 2}
    write_json(run / "report.json", {"backend": "synthetic", "inputs": [entry]})
    write_json(folder / "done.json", {"input": f"{name}.mp4", "status": "ok"})
    return folder
