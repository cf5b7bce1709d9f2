"""Procedural faces whose expression and valence/arousal are visible in the drawing.

A face is described in a canonical frame (x to the right, y down, the face half-width is 1)
by :func:`face_landmarks`, which returns the 68 iBUG points; :func:`draw_face` paints it
into an image through a similarity transform (scale, roll, translation).

The cues, identical in every database so that one network can learn them all:

* **expression** (discrete): brow shape (inner ends lowered for Anger, raised for Sadness and
  Fear, arched for Surprise, one brow lowered for Disgust), mouth type (closed line, smile with
  teeth, pressed lips, O-shaped opening, wide stretched opening, asymmetric raised corner) and a
  few marks (frown lines for Anger, nose wrinkles for Disgust, forehead lines for Surprise);
* **valence** (continuous): mouth-corner curvature, on top of the expression's own curvature;
* **arousal** (continuous): eye opening and brow height.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_SHIFT = 4  # cv2 sub-pixel drawing: coordinates are scaled by 2**_SHIFT
_ONE = 1 << _SHIFT

# Per-expression cue table, ABAW order (Neutral, Anger, Disgust, Fear, Happiness, Sadness, Surprise).
# brow_inner: vertical offset of the inner brow end (+ = lower); brow_arch: middle raised;
# mouth_w: mouth half-width; mouth_open: opening height; mouth_curve: the expression's own
# curvature (+ = corners up); lip: lip thickness; teeth: show teeth; asym: right corner raised.
_CUES = {
    "brow_inner": (0.0, 0.24, 0.10, -0.20, 0.0, -0.22, -0.02),
    "brow_arch": (0.04, -0.02, 0.02, 0.0, 0.06, 0.0, 0.20),
    "brow_lift": (0.0, 0.04, 0.0, -0.10, 0.0, -0.02, -0.14),
    "mouth_w": (0.36, 0.27, 0.36, 0.50, 0.50, 0.34, 0.21),
    "mouth_open": (0.0, 0.0, 0.05, 0.15, 0.09, 0.0, 0.34),
    "mouth_curve": (0.0, -0.03, 0.0, -0.05, 0.10, -0.10, 0.0),
    "lip": (0.07, 0.035, 0.07, 0.06, 0.06, 0.07, 0.06),
    "teeth": (False, False, False, True, True, False, False),
    "asym": (0.0, 0.0, 0.16, 0.0, 0.0, 0.0, 0.0),
    "eye_extra": (0.0, -0.02, -0.01, 0.03, -0.015, -0.005, 0.035),
}
VALENCE_CURVE = 0.26  # mouth-corner rise per unit of valence (canonical units)
VALENCE_WIDTH = 0.12  # relative mouth widening per unit of valence
AROUSAL_BROW = 0.15  # brow rise per unit of arousal
AROUSAL_EYE = 0.06  # eye-opening gain per unit of arousal
EXPRESSION_CENTRES = np.array(
    [[0.0, -0.3], [-0.6, 0.65], [-0.55, 0.25], [-0.45, 0.75], [0.65, 0.4], [-0.6, -0.55], [0.2, 0.8]]
)
"""Typical (valence, arousal) of each expression: VA is drawn around these, so it correlates with
the expression without being determined by it."""


@dataclass(frozen=True)
class Appearance:
    """What stays fixed for one person: colours and face proportions (canonical units)."""

    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    lips: tuple[int, int, int]
    iris: tuple[int, int, int]
    brow: tuple[int, int, int]
    face_height: float  # half-height of the face ellipse
    eye_spacing: float  # x of the eye centres
    mouth_scale: float
    brow_thickness: float

    @staticmethod
    def random(rng: np.random.Generator) -> Appearance:
        tone = rng.uniform(0.0, 1.0)
        skin = (
            int(95 + 150 * tone + rng.integers(-10, 10)),
            int(65 + 130 * tone + rng.integers(-10, 10)),
            int(45 + 120 * tone + rng.integers(-10, 10)),
        )
        hair = tuple(int(c) for c in rng.integers(15, 110, 3))
        lips = (int(min(255, skin[0] * 0.8 + 40)), int(skin[1] * 0.55), int(skin[2] * 0.6))
        iris = tuple(int(c) for c in rng.integers(20, 120, 3))
        brow = tuple(int(c * 0.5) for c in hair)
        return Appearance(
            skin=skin,  # type: ignore[arg-type]
            hair=hair,  # type: ignore[arg-type]
            lips=lips,
            iris=iris,  # type: ignore[arg-type]
            brow=brow,  # type: ignore[arg-type]
            face_height=float(rng.uniform(1.17, 1.32)),
            eye_spacing=float(rng.uniform(0.37, 0.43)),
            mouth_scale=float(rng.uniform(0.92, 1.08)),
            brow_thickness=float(rng.uniform(0.06, 0.085)),
        )


def _lip_y(x: np.ndarray, w: float, centre_y: float, curve: float, asym: float) -> np.ndarray:
    """The mouth's centre line: corners raised by ``curve`` (+ = smile) and the right side by ``asym``."""
    u = np.clip(x / w, -1.0, 1.0)
    return centre_y - curve * u**2 - asym * (u + 1.0) / 2.0


def _mouth(
    xs: np.ndarray, w: float, cy: float, curve: float, asym: float, opening: float, lip: float, outer: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Upper and lower lip y at ``xs`` (outer contour or inner contour)."""
    taper = np.sqrt(np.clip(1.0 - (xs / w) ** 2, 0.0, 1.0))
    mid = _lip_y(xs, w, cy, curve, asym)
    half = opening / 2.0 * taper
    if outer:
        return mid - half - lip * taper, mid + half + lip * 1.2 * taper
    return mid - half, mid + half


def face_landmarks(
    expression: int, valence: float, arousal: float, look: Appearance, yaw: float = 0.0
) -> np.ndarray:
    """The 68 iBUG landmarks (68, 2) of a face in canonical units (face half-width 1, centre 0).

    iBUG order: jaw 0–16, brows 17–26, nose 27–35, eyes 36–47, outer lips 48–59, inner lips 60–67;
    "left" in the image is the person's right.
    """
    e = int(expression)
    pts = np.zeros((68, 2))
    # jaw: lower part of the face ellipse, from ear level on the image left through the chin
    ay, cy = look.face_height, 0.02
    top = np.arcsin((-0.15 - cy) / ay)
    phis = np.linspace(np.pi - top, top, 17)
    pts[0:17, 0] = np.cos(phis)
    pts[0:17, 1] = cy + ay * np.sin(phis)
    # brows: height follows arousal, shape follows the expression
    brow_y = -0.50 - AROUSAL_BROW * arousal + _CUES["brow_lift"][e]
    t = np.linspace(0.0, 1.0, 5)  # 0 = outer end, 1 = inner end
    inner, arch = _CUES["brow_inner"][e], _CUES["brow_arch"][e]
    bx = 0.74 - 0.56 * t
    by = brow_y + inner * t - arch * np.sin(np.pi * t)
    drop_right = 0.12 if e == 2 else 0.0  # Disgust: one brow lowered
    pts[17:22, 0], pts[17:22, 1] = -bx, by
    pts[22:27, 0], pts[22:27, 1] = bx[::-1], by[::-1] + drop_right
    # nose
    pts[27:31, 0] = 0.0
    pts[27:31, 1] = np.linspace(-0.12, 0.30, 4)
    pts[31:36, 0] = np.linspace(-0.17, 0.17, 5)
    pts[31:36, 1] = 0.40 + np.array([0.0, 0.03, 0.045, 0.03, 0.0])
    # eyes: opening follows arousal
    opening = float(np.clip(0.035 + AROUSAL_EYE * (arousal + 1.0) + _CUES["eye_extra"][e], 0.02, 0.19))
    ex, ey, hw = look.eye_spacing, -0.12, 0.16
    for sign, first in ((-1, 36), (1, 42)):
        c = sign * ex
        outer, inner_x = c + sign * hw, c - sign * hw
        upper = [c + sign * 0.06, c - sign * 0.06]
        lower = [c - sign * 0.06, c + sign * 0.06]
        if sign < 0:  # 36 outer, 37 38 upper, 39 inner, 40 41 lower
            xs = [outer, upper[0], upper[1], inner_x, lower[0], lower[1]]
        else:  # 42 inner, 43 44 upper, 45 outer, 46 47 lower
            xs = [inner_x, upper[1], upper[0], outer, lower[1], lower[0]]
        ys = [ey, ey - opening, ey - opening, ey, ey + opening * 0.7, ey + opening * 0.7]
        pts[first : first + 6, 0], pts[first : first + 6, 1] = xs, ys
    # mouth: curvature follows valence on top of the expression's own shape
    w = _CUES["mouth_w"][e] * look.mouth_scale * (1.0 + VALENCE_WIDTH * valence)
    curve = _CUES["mouth_curve"][e] + VALENCE_CURVE * valence
    asym, open_, lip = _CUES["asym"][e], _CUES["mouth_open"][e], _CUES["lip"][e]
    my = 0.74
    ox = np.array([-0.6, -0.3, 0.0, 0.3, 0.6]) * w
    up, _ = _mouth(ox, w, my, curve, asym, open_, lip, outer=True)
    _, lo = _mouth(ox[::-1], w, my, curve, asym, open_, lip, outer=True)
    corner_y = _lip_y(np.array([-w, w]), w, my, curve, asym)
    pts[48] = (-w, corner_y[0])
    pts[49:54, 0], pts[49:54, 1] = ox, up
    pts[54] = (w, corner_y[1])
    pts[55:60, 0], pts[55:60, 1] = ox[::-1], lo
    ix = np.array([-0.4, 0.0, 0.4]) * w
    iu, _ = _mouth(ix, w, my, curve, asym, open_, lip, outer=False)
    _, il = _mouth(ix[::-1], w, my, curve, asym, open_, lip, outer=False)
    inner_corners = _lip_y(np.array([-0.85 * w, 0.85 * w]), w, my, curve, asym)
    pts[60] = (-0.85 * w, inner_corners[0])
    pts[61:64, 0], pts[61:64, 1] = ix, iu
    pts[64] = (0.85 * w, inner_corners[1])
    pts[65:68, 0], pts[65:68, 1] = ix[::-1], il
    pts[17:, 0] += yaw * 0.14  # a slight head turn moves the inner features sideways
    return pts


def similarity(scale: float, roll_deg: float, centre: tuple[float, float]) -> np.ndarray:
    """2×3 matrix mapping canonical face units to image pixels."""
    a = np.deg2rad(roll_deg)
    c, s = np.cos(a) * scale, np.sin(a) * scale
    return np.array([[c, -s, centre[0]], [s, c, centre[1]]])


def transform(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2×3 affine matrix to (n, 2) points."""
    return points @ matrix[:, :2].T + matrix[:, 2]


_CIRCLE = np.stack([np.cos(np.linspace(0, 2 * np.pi, 48, endpoint=False)),
                    np.sin(np.linspace(0, 2 * np.pi, 48, endpoint=False))], 1)


def _fix(points: np.ndarray) -> np.ndarray:
    return np.round(points * _ONE).astype(np.int32).reshape(-1, 1, 2)


def _ellipse(img: np.ndarray, m: np.ndarray, centre: tuple[float, float], axes: tuple[float, float],
             colour: tuple[int, ...]) -> None:
    pts = np.asarray(centre) + _CIRCLE * np.asarray(axes)
    cv2.fillPoly(img, [_fix(transform(pts, m))], colour, cv2.LINE_AA, _SHIFT)


def _line(img: np.ndarray, m: np.ndarray, pts: np.ndarray, colour: tuple[int, ...], width: float,
          closed: bool = False) -> None:
    thickness = max(1, int(round(width)))
    cv2.polylines(img, [_fix(transform(pts, m))], closed, colour, thickness, cv2.LINE_AA, _SHIFT)


def draw_face(img: np.ndarray, expression: int, valence: float, arousal: float, look: Appearance,
              matrix: np.ndarray, yaw: float = 0.0) -> np.ndarray:
    """Paint a face into ``img`` (H, W, 3 RGB uint8, in place); return its 68 landmarks in pixels (68, 2).

    ``valence``/``arousal`` here are the *rendered* values (callers add per-frame jitter to them).
    """
    e = int(expression)
    scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))
    pts = face_landmarks(e, valence, arousal, look, yaw)
    # neck, hair, face
    neck = np.array([[-0.45, 0.8], [0.45, 0.8], [0.6, 2.6], [-0.6, 2.6]])
    cv2.fillPoly(img, [_fix(transform(neck, matrix))], tuple(int(c * 0.85) for c in look.skin),
                 cv2.LINE_AA, _SHIFT)
    _ellipse(img, matrix, (0.0, -0.3), (1.13, 1.12), look.hair)
    _ellipse(img, matrix, (0.0, 0.02), (1.0, look.face_height), look.skin)
    dark = tuple(int(c * 0.55) for c in look.skin)
    # brows
    _line(img, matrix, pts[17:22], look.brow, look.brow_thickness * scale)
    _line(img, matrix, pts[22:27], look.brow, look.brow_thickness * scale)
    # eyes: white, iris (clipped to the opening), lids
    for first in (36, 42):
        eye = pts[first : first + 6]
        cv2.fillPoly(img, [_fix(transform(eye, matrix))], (240, 240, 236), cv2.LINE_AA, _SHIFT)
        centre = eye.mean(0)
        half_open = (eye[4, 1] - eye[1, 1]) / 2.0
        iris = (0.085, max(0.01, min(0.085, half_open * 0.95)))
        _ellipse(img, matrix, (centre[0], centre[1] - 0.005), iris, look.iris)
        _line(img, matrix, eye, (30, 25, 25), 0.022 * scale, closed=True)
    # nose
    _line(img, matrix, pts[27:31], dark, 0.025 * scale)
    _line(img, matrix, pts[31:36], dark, 0.03 * scale)
    # mouth: dense contours drawn from the same geometry as the landmarks
    w = abs(pts[54, 0] - pts[48, 0]) / 2.0
    mx = (pts[54, 0] + pts[48, 0]) / 2.0
    xs = np.linspace(-w, w, 25)
    my = 0.74
    curve = _CUES["mouth_curve"][e] + VALENCE_CURVE * valence
    asym, opening, lip = _CUES["asym"][e], _CUES["mouth_open"][e], _CUES["lip"][e]
    up, lo = _mouth(xs, w, my, curve, asym, opening, lip, outer=True)
    outer = np.concatenate([np.stack([xs + mx, up], 1), np.stack([xs[::-1] + mx, lo[::-1]], 1)])
    cv2.fillPoly(img, [_fix(transform(outer, matrix))], look.lips, cv2.LINE_AA, _SHIFT)
    if opening > 0:
        xi = np.linspace(-0.85 * w, 0.85 * w, 21)
        iu, il = _mouth(xi, w, my, curve, asym, opening, lip, outer=False)
        inner = np.concatenate([np.stack([xi + mx, iu], 1), np.stack([xi[::-1] + mx, il[::-1]], 1)])
        cv2.fillPoly(img, [_fix(transform(inner, matrix))], (45, 18, 22), cv2.LINE_AA, _SHIFT)
        if _CUES["teeth"][e]:
            teeth = np.concatenate([np.stack([xi + mx, iu], 1),
                                    np.stack([xi[::-1] + mx, (iu + (il - iu) * 0.45)[::-1]], 1)])
            cv2.fillPoly(img, [_fix(transform(teeth, matrix))], (238, 236, 226), cv2.LINE_AA, _SHIFT)
    else:
        mid = _lip_y(xs, w, my, curve, asym)
        _line(img, matrix, np.stack([xs + mx, mid], 1), (70, 25, 30), 0.025 * scale)
    # expression marks
    shift = pts[27, 0]
    if e == 1:  # Anger: vertical frown lines between the brows
        for x in (-0.07, 0.07):
            _line(img, matrix, np.array([[shift + x, -0.42], [shift + x * 0.6, -0.24]]), dark, 0.03 * scale)
    elif e == 2:  # Disgust: nose wrinkles
        for x in (-0.11, 0.11):
            _line(img, matrix, np.array([[shift + x, 0.0], [shift + x * 1.4, 0.12]]), dark, 0.03 * scale)
    elif e == 6:  # Surprise: forehead lines
        for y in (-0.8, -0.92):
            xs_line = np.linspace(-0.35, 0.35, 7)
            seg = np.stack([xs_line + shift, y + 0.03 * np.cos(xs_line * 4.3)], 1)
            _line(img, matrix, seg, dark, 0.025 * scale)
    return transform(pts, matrix)
