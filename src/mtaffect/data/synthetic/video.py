"""A synthetic video: an mp4 whose frames are aligned face crops, with per-frame truth."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd

from mtaffect.data.synthetic.affect import TrackLook, affect_sequence, render_crop
from mtaffect.io import atomic_path


def write_video(path: str | Path, *, n_frames: int = 300, seed: int = 0, size: int = 112,
                fps: int = 25) -> pd.DataFrame:
    """Write an H.264 mp4 (MPEG-4 part 2 if no H.264 encoder is available) of ``n_frames`` synthetic
    face frames (the whole frame is the face, as in an aligned crop) and return its truth.

    Returns a DataFrame with one row per frame: ``frame`` (0-based decode order), ``time`` (seconds),
    ``expression`` (0..6), ``valence``, ``arousal`` (what the frame shows, before rendering jitter).
    """
    if size % 2:
        raise ValueError(f"video size must be even for yuv420p, got {size}")
    rng = np.random.default_rng([seed, 5])
    expr, val, aro = affect_sequence(rng, n_frames)
    look = TrackLook(rng, size)
    path = Path(path)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            try:
                stream = container.add_stream("libx264", rate=fps)
                stream.options = {"crf": "18", "preset": "veryfast"}
            except (av.codec.codec.UnknownCodecError, ValueError):  # pragma: no cover - build-dependent
                stream = container.add_stream("mpeg4", rate=fps)
            stream.width = stream.height = size
            stream.pix_fmt = "yuv420p"
            stream.time_base = Fraction(1, fps)
            for t in range(n_frames):
                img, _ = render_crop(look, t, int(expr[t]), float(val[t]), float(aro[t]), rng)
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts = t
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return pd.DataFrame({
        "frame": np.arange(n_frames, dtype=np.int64),
        "time": np.arange(n_frames) / fps,
        "expression": expr,
        "valence": val,
        "arousal": aro,
    })
