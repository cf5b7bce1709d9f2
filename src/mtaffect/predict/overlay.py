"""An H.264 video of the input with each face's box, track, expression and valence/arousal bars.

Drawn in a second pass over the video from the finished prediction table (rows in frame order),
so prediction stays streaming and the overlay costs one more decode plus the encode. Frames keep
their timestamps (variable frame rate survives): the output's time base is 1 ms.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd

from mtaffect.io import atomic_path
from mtaffect.labels import EXPRESSIONS
from mtaffect.predict.media import VideoReader

__all__ = ["draw_faces", "write_overlay"]

_RGB = {
    "Neutral": (200, 200, 200), "Anger": (230, 60, 60), "Disgust": (160, 110, 60), "Fear": (170, 100, 220),
    "Happiness": (60, 200, 80), "Sadness": (70, 120, 230), "Surprise": (255, 160, 40),
}  # fmt: skip


def _bar(img: np.ndarray, x: int, y: int, w: int, value: float, label: str) -> None:
    """A horizontal bar centred at 0 for a value in [-1, 1], with its label."""
    h = max(6, w // 14)
    cv2.rectangle(img, (x, y), (x + w, y + h), (40, 40, 40), -1)
    mid = x + w // 2
    end = int(round(mid + np.clip(value, -1, 1) * w / 2))
    colour = (60, 200, 80) if value >= 0 else (230, 60, 60)
    cv2.rectangle(img, (min(mid, end), y), (max(mid, end), y + h), colour, -1)
    cv2.line(img, (mid, y), (mid, y + h), (255, 255, 255), 1)
    cv2.putText(img, f"{label} {value:+.2f}", (x, y + 2 * h + 4), cv2.FONT_HERSHEY_SIMPLEX,
                max(0.35, w / 400), (255, 255, 255), 1, cv2.LINE_AA)  # fmt: skip


def draw_faces(image: np.ndarray, rows: pd.DataFrame) -> np.ndarray:
    """Draw the face rows of one frame onto a copy of ``image`` (RGB uint8)."""
    img = image.copy()
    scale = max(0.5, img.shape[0] / 540)
    for row in rows.itertuples(index=False):
        if not bool(row.face_found):
            continue
        x0, y0, x1, y1 = (int(round(float(v))) for v in (row.box_x0, row.box_y0, row.box_x1, row.box_y1))
        name = str(row.expression)
        colour = _RGB.get(name, (255, 255, 255))
        cv2.rectangle(img, (x0, y0), (x1, y1), colour, max(1, int(2 * scale)))
        p = float(getattr(row, name)) if name in EXPRESSIONS else float("nan")
        cv2.putText(img, f"#{row.track_id} {name} {p:.2f}", (x0, max(12, y0 - 6)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.6 * scale, colour, max(1, int(2 * scale)), cv2.LINE_AA)  # fmt: skip
        w = max(60, x1 - x0)
        _bar(img, x0, y1 + 6, w, float(row.valence), "V")
        _bar(img, x0, y1 + 6 + 3 * max(6, w // 14) + 4, w, float(row.arousal), "A")
    return img


def write_overlay(video: str | Path, table: pd.DataFrame, out: str | Path, *, crf: int = 23) -> Path:
    """Write ``out`` (.mp4, H.264) from ``video`` and its prediction table (rows of that video)."""
    out = Path(out)
    reader = VideoReader(str(video))
    by_frame = {int(k): g for k, g in table.groupby("frame")} if len(table) else {}
    width, height = reader.width - reader.width % 2, reader.height - reader.height % 2
    with atomic_path(out) as tmp:
        container = av.open(str(tmp), mode="w", format="mp4")
        try:
            stream = container.add_stream("libx264", rate=Fraction(round((reader.fps or 30) * 1000), 1000))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.time_base = Fraction(1, 1000)
            stream.codec_context.time_base = Fraction(1, 1000)
            stream.options = {"crf": str(crf), "preset": "veryfast"}
            last_pts = -1
            for fr in reader:
                rows = by_frame.get(fr.index)
                img = draw_faces(fr.image, rows) if rows is not None else fr.image
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img[:height, :width]), format="rgb24")
                pts = max(last_pts + 1, int(round(fr.time * 1000)))
                frame.pts, frame.time_base, last_pts = pts, Fraction(1, 1000), pts
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        finally:
            container.close()
    return out
