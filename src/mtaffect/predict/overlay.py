"""An H.264 video of the input with each face's box, track, expression and valence/arousal bars.

Drawn in a second pass over the video from the finished prediction table (rows in frame order),
so prediction stays streaming and the overlay costs one more decode plus the encode. Frames keep
their timestamps (variable frame rate survives): the output's time base is 1 ms.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd

from mtaffect.io import atomic_path
from mtaffect.labels import EXPRESSIONS
from mtaffect.predict.media import VideoReader

__all__ = ["draw_faces", "layout_panels", "write_overlay"]

_RGB = {
    "Neutral": (200, 200, 200), "Anger": (230, 60, 60), "Disgust": (160, 110, 60), "Fear": (170, 100, 220),
    "Happiness": (60, 200, 80), "Sadness": (70, 120, 230), "Surprise": (255, 160, 40),
}  # fmt: skip


_FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass
class _Style:
    """Sizes for one frame height: text scale and thickness, row height, bar width, padding."""

    scale: float
    thick: int
    row: int
    bar: int
    pad: int

    @staticmethod
    def for_height(height: int) -> _Style:
        scale = float(np.clip(height / 900, 0.4, 1.5))
        thick = 1 if scale < 0.8 else 2
        (_, th), base = cv2.getTextSize("Ag", _FONT, scale, thick)
        pad = max(2, int(round(4 * scale)))
        return _Style(scale, thick, th + base + pad, int(round(110 * scale / 0.4 * 0.55)), pad)


def _panel_size(style: _Style, title: str) -> tuple[int, int]:
    """(width, height) of a face's label panel: a title row, then the V and A rows with their bars."""
    title_w = cv2.getTextSize(title, _FONT, style.scale, style.thick)[0][0]
    value_w = cv2.getTextSize("V +0.00", _FONT, style.scale, style.thick)[0][0]
    width = max(title_w, value_w + style.pad + style.bar) + 2 * style.pad
    return width, 3 * style.row + style.pad


def _overlap(a: tuple[float, ...], b: np.ndarray) -> np.ndarray:
    """Intersection areas of rectangle ``a`` (x0, y0, x1, y1) with rectangles ``b (n, 4)``."""
    if not len(b):
        return np.zeros(0)
    w = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    return w * h


def layout_panels(boxes: np.ndarray, sizes: list[tuple[int, int]], frame: tuple[int, int]) -> np.ndarray:
    """Top-left corners ``(n, 2)`` of the label panels of faces ``boxes (n, 4)`` in a frame ``(h, w)``.

    Each panel goes below its face, else above, right or left of it (at a few offsets along the face)
    or inside its bottom edge: the first
    place that lies in the frame and covers no other face and no panel already placed (faces in
    ``boxes`` order); when every place collides, the one covering the least. Panels are always
    moved fully into the frame, so the bars are never cut off at the edge.
    """
    height, width = frame
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    placed: list[tuple[float, float, float, float]] = []
    corners = np.zeros((len(boxes), 2), np.int64)
    for i, (box, (pw, ph)) in enumerate(zip(boxes, sizes)):
        x0, y0, x1, y1 = box
        gap = 3
        # below, then above: slid from the face's left edge to its right edge, then one third of a
        # panel further out; then beside it (top, middle, bottom); last, inside its bottom edge
        xs = [x0 + f * (x1 - pw - x0) for f in (0, 1, 0.5, 0.25, 0.75)]
        options = [(x, y1 + gap + d) for d in (0, ph / 3) for x in xs]
        options += [(x, y0 - gap - ph - d) for d in (0, ph / 3) for x in xs]
        ys = [y0 + f * (y1 - ph - y0) for f in (0, 0.5, 1)]
        options += [(x1 + gap, y) for y in ys] + [(x0 - gap - pw, y) for y in ys] + [(x0, y1 - ph)]
        others = np.delete(boxes, i, axis=0)
        best, best_cost = None, None
        for ox, oy in options:
            cx = float(np.clip(ox, 0, max(0, width - pw)))
            cy = float(np.clip(oy, 0, max(0, height - ph)))
            rect = (cx, cy, cx + pw, cy + ph)
            moved = abs(cx - ox) + abs(cy - oy)  # pulled into the frame: it no longer sits beside the face
            cost = _overlap(rect, others).sum() + 2 * _overlap(rect, np.array(placed).reshape(-1, 4)).sum()
            cost += _overlap(rect, box[None]).sum() * 0.5 + moved * ph
            if best_cost is None or cost < best_cost:
                best, best_cost = rect, cost
            if cost == 0:
                break
        placed.append(best)
        corners[i] = (int(best[0]), int(best[1]))
    return corners


def _shade(img: np.ndarray, x: int, y: int, w: int, h: int) -> None:
    """Darken a rectangle (a background that keeps text readable on any picture)."""
    region = img[max(0, y) : y + h, max(0, x) : x + w]
    region[:] = (region.astype(np.uint16) * 2 // 7).astype(np.uint8)


def _bar(img: np.ndarray, style: _Style, x: int, y: int, value: float, label: str) -> None:
    """One panel row: ``label ±v.vv`` then a bar centred at 0 for a value in [-1, 1]."""
    text = f"{label} {value:+.2f}"
    tw = cv2.getTextSize("V +0.00", _FONT, style.scale, style.thick)[0][0]
    base = y + style.row - style.pad - 1
    cv2.putText(img, text, (x, base), _FONT, style.scale, (255, 255, 255), style.thick, cv2.LINE_AA)
    bx, h = x + tw + style.pad, max(4, style.row - 2 * style.pad)
    by = y + (style.row - h) // 2
    cv2.rectangle(img, (bx, by), (bx + style.bar, by + h), (90, 90, 90), -1)
    mid = bx + style.bar // 2
    end = int(round(mid + np.clip(value, -1, 1) * style.bar / 2))
    colour = (60, 200, 80) if value >= 0 else (230, 60, 60)
    cv2.rectangle(img, (min(mid, end), by), (max(mid, end), by + h), colour, -1)
    cv2.line(img, (mid, by - 1), (mid, by + h + 1), (255, 255, 255), 1)


def draw_faces(image: np.ndarray, rows: pd.DataFrame) -> np.ndarray:
    """Draw the face rows of one frame onto a copy of ``image`` (RGB uint8).

    Each face gets its box in its expression's colour and a label panel on a dark background
    (track, expression and probability; valence and arousal bars), placed by :func:`layout_panels`.
    """
    img = image.copy()
    faces = rows[rows["face_found"].fillna(False).astype(bool)] if len(rows) else rows
    if not len(faces):
        return img
    style = _Style.for_height(img.shape[0])
    boxes = faces[["box_x0", "box_y0", "box_x1", "box_y1"]].astype(float).to_numpy()
    titles, colours = [], []
    for row in faces.itertuples(index=False):
        name = str(row.expression)
        p = float(getattr(row, name)) if name in EXPRESSIONS else float("nan")
        titles.append(f"#{row.track_id} {name} {p:.2f}")
        colours.append(_RGB.get(name, (255, 255, 255)))
    sizes = [_panel_size(style, t) for t in titles]
    line = max(1, int(round(2 * style.scale / 0.6)))
    for box, colour in zip(boxes, colours):
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        cv2.rectangle(img, (x0, y0), (x1, y1), colour, line)
    for (px, py), (pw, ph), row, title, colour in zip(
        layout_panels(boxes, sizes, img.shape[:2]), sizes, faces.itertuples(index=False), titles, colours
    ):
        _shade(img, px, py, pw, ph)
        cv2.rectangle(img, (px, py), (px + pw - 1, py + ph - 1), colour, 1)
        x = px + style.pad
        cv2.putText(img, title, (x, py + style.row - style.pad), _FONT, style.scale, colour, style.thick,
                    cv2.LINE_AA)  # fmt: skip
        _bar(img, style, x, py + style.row, float(row.valence), "V")
        _bar(img, style, x, py + 2 * style.row, float(row.arousal), "A")
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
