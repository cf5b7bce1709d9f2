"""Affect over time and the photometric look of a frame: what a synthetic track shows.

* :func:`affect_sequence` — expression in segments, valence/arousal as a smooth random walk pulled
  towards the expression's typical VA (so VA correlates with the expression but is not determined
  by it, and a temporal model has structure to exploit);
* :func:`still_affect` — one (expression, valence, arousal) for a still photo;
* :func:`background` and :func:`finish` — scene backgrounds, lighting gradient and sensor noise;
* :func:`render_crop` — one aligned face crop (the Aff-Wild2 ``cropped_aligned`` look).
"""

from __future__ import annotations

import cv2
import numpy as np

from mtaffect.data.synthetic.drawing import EXPRESSION_CENTRES, Appearance, draw_face, similarity

EXPRESSION_PRIOR = np.array([0.30, 0.10, 0.08, 0.08, 0.20, 0.13, 0.11])
"""How often each expression (ABAW order) starts a segment: Neutral and Happiness dominate, as in
the real databases, but every class is present."""

CUE_JITTER = 0.04
"""Per-frame noise on the rendered valence/arousal cues: temporal smoothing removes it."""


def affect_sequence(rng: np.random.Generator, n_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expression (int64), valence, arousal (float64) for ``n_frames`` consecutive video frames.

    Expressions change in segments of 12–80 frames; valence/arousal follow an AR(1) walk towards
    a per-segment target near the expression's centre (EXPRESSION_CENTRES), clipped to ±0.98.
    """
    expr = np.empty(n_frames, dtype=np.int64)
    va = np.empty((n_frames, 2))
    state = EXPRESSION_CENTRES[0] + rng.normal(0, 0.2, 2)
    t = 0
    while t < n_frames:
        e = int(rng.choice(7, p=EXPRESSION_PRIOR))
        length = int(rng.integers(12, 81))
        target = EXPRESSION_CENTRES[e] + rng.normal(0, 0.22, 2)
        for _ in range(min(length, n_frames - t)):
            state = state + 0.09 * (target - state) + rng.normal(0, 0.018, 2)
            state = np.clip(state, -0.98, 0.98)
            expr[t], va[t] = e, state
            t += 1
    return expr, va[:, 0].copy(), va[:, 1].copy()


def va_around(rng: np.random.Generator, expression: int) -> tuple[float, float]:
    """A (valence, arousal) drawn around the expression's centre, spread 0.25, clipped to ±0.98."""
    v, a = np.clip(EXPRESSION_CENTRES[expression] + rng.normal(0, 0.25, 2), -0.98, 0.98)
    return float(v), float(a)


def still_affect(rng: np.random.Generator) -> tuple[int, float, float]:
    """One expression (uniform over the 7) and a VA around its centre (for still photos)."""
    e = int(rng.integers(0, 7))
    return (e, *va_around(rng, e))


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A scene background (H, W, 3 uint8 RGB): colour gradient plus a few soft shapes."""
    c0, c1 = rng.integers(20, 235, 3), rng.integers(20, 235, 3)
    ramp = np.linspace(0.0, 1.0, width if rng.random() < 0.5 else height)
    ramp = ramp[None, :, None] if ramp.size == width else ramp[:, None, None]
    img = (c0 + (c1 - c0) * ramp).astype(np.float32)
    img = np.broadcast_to(img, (height, width, 3)).astype(np.uint8).copy()
    for _ in range(int(rng.integers(2, 6))):
        colour = tuple(int(c) for c in rng.integers(10, 245, 3))
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        if rng.random() < 0.5:
            cv2.circle(img, centre, int(rng.integers(4, max(5, width // 4))), colour, -1, cv2.LINE_AA)
        else:
            size = (int(rng.integers(4, max(5, width // 3))), int(rng.integers(4, max(5, height // 3))))
            cv2.rectangle(img, centre, (centre[0] + size[0], centre[1] + size[1]), colour, -1)
    k = max(3, (min(height, width) // 20) | 1)
    return cv2.GaussianBlur(img, (k, k), 0)


def random_light(rng: np.random.Generator) -> tuple[float, float, float]:
    """A lighting (horizontal gradient, vertical gradient, gain) for :func:`finish`."""
    return float(rng.uniform(-0.25, 0.25)), float(rng.uniform(-0.25, 0.25)), float(rng.uniform(0.8, 1.15))


_NOISE_BANK = np.random.default_rng(20210801).standard_normal((640, 800)).astype(np.float32)
"""Unit Gaussian noise shared by every image: a frame takes a window at a random offset (cheaper
than drawing fresh normals, and just as deterministic)."""


def finish(img: np.ndarray, rng: np.random.Generator, noise: float = 5.0,
           light: tuple[float, float, float] | None = None) -> np.ndarray:
    """Lighting gradient, gain and Gaussian sensor noise: returns a new uint8 image."""
    h, w = img.shape[:2]
    gx, gy, gain = light if light is not None else random_light(rng)
    rows, cols = np.linspace(-1, 1, h, dtype=np.float32), np.linspace(-1, 1, w, dtype=np.float32)
    field = np.add.outer(gy * rows, gx * cols)
    field = (field + 1.0) * np.float32(gain)
    bh, bw = _NOISE_BANK.shape
    if h <= bh and w <= bw:
        y0, x0 = int(rng.integers(0, bh - h + 1)), int(rng.integers(0, bw - w + 1))
        grain = _NOISE_BANK[y0 : y0 + h, x0 : x0 + w]
    else:
        grain = rng.standard_normal((h, w), dtype=np.float32)
    out = img.astype(np.float32)
    out *= field[:, :, None]
    out += (grain * np.float32(noise))[:, :, None]
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


class TrackLook:
    """Everything that stays put along one video track: person, background, head placement."""

    def __init__(self, rng: np.random.Generator, size: int) -> None:
        self.look = Appearance.random(rng)
        self.bg = background(rng, size, size)
        self.size = size
        self.scale = rng.uniform(0.285, 0.305) * size  # face half-width in pixels (aligned crops: ±3.5 %)
        self.roll = rng.uniform(-8.0, 8.0)
        self.yaw = rng.uniform(-0.6, 0.6)
        self.phase = rng.uniform(0, 2 * np.pi)
        self.light = random_light(rng)


def render_crop(track: TrackLook, t: int, expression: int, valence: float, arousal: float,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``t`` of a track as an aligned face crop (size×size×3 RGB) and its 68 landmarks in pixels.

    Head pose drifts slowly (sinusoids of t), the rendered VA cues get per-frame jitter.
    """
    s = track.size
    wobble = np.sin(track.phase + t / 23.0)
    centre = (s / 2 + 2.0 * wobble + rng.normal(0, 0.6), s * 0.47 + 1.5 * np.cos(track.phase + t / 31.0))
    m = similarity(track.scale * (1 + 0.03 * wobble), track.roll + 3.0 * wobble, centre)
    img = track.bg.copy()
    v = float(np.clip(valence + rng.normal(0, CUE_JITTER), -1, 1))
    a = float(np.clip(arousal + rng.normal(0, CUE_JITTER), -1, 1))
    pts = draw_face(img, expression, v, a, track.look, m, yaw=track.yaw + 0.2 * wobble)
    gx, gy, gain = track.light
    light = (gx, gy, gain * (1.0 + 0.04 * np.cos(track.phase + t / 17.0)))
    return finish(img, rng, noise=4.0 + 2.0 * rng.random(), light=light), pts
