"""Face alignment: a similarity transform from five landmarks onto a crop template.

A model only gives the numbers it was trained for on faces cropped the way its training crops
were. The checkpoint's ``preprocessing`` block may name the convention (key ``crop``:
``{"template": name, "scale": s}``); the user may override it (``--template``, ``--crop-scale``)
and check the result with ``--debug-crops``.

Templates are five ``(x, y)`` points (left eye, right eye, nose, left and right mouth corner, as
seen in the image) on a 112×112 canvas, scaled to the crop size:

* ``arcface``: the widely used 112×112 face-recognition template (tight: eyebrows to chin).
* ``affwild2`` (default): the ``arcface`` points pulled towards the crop centre by 0.8, leaving
  the forehead, chin and cheeks in the crop as in the Aff-Wild2 ``cropped_aligned`` images the
  ABAW checkpoints were trained on. The organisers did not publish their template; this one was
  set by eye against released crops, so check your crops (``--debug-crops``).
* boxes without landmarks (Haar detector): a square around the box centre, ``1.2 ×`` the box side
  times ``scale``.

``scale`` (> 0) zooms the crop out (> 1 shows more context) or in (< 1).

Prediction then applies the training's evaluation transform in the same warp (``post``: the one map
of :func:`mtaffect.data.augment.eval_matrix`), so each face is resampled once from the frame.
"""

from __future__ import annotations

import cv2
import numpy as np

from mtaffect.errors import UserError

__all__ = ["TEMPLATES", "template_points", "similarity", "align_faces", "crop_convention"]

_ARCFACE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    np.float64,
)
_CENTRE = np.array([56.0, 56.0])

TEMPLATES: dict[str, np.ndarray] = {
    "arcface": _ARCFACE,
    "affwild2": _CENTRE + (_ARCFACE - _CENTRE) * 0.8,
}
DEFAULT_TEMPLATE = "affwild2"
BOX_MARGIN = 1.2


def template_points(name: str, size: int, scale: float = 1.0) -> np.ndarray:
    """The template's 5 points ``(5, 2)`` on a ``size × size`` crop, zoomed out by ``scale``."""
    if name not in TEMPLATES:
        raise UserError(f"unknown crop template {name!r}; known: {sorted(TEMPLATES)}")
    if scale <= 0:
        raise UserError(f"crop scale must be positive, got {scale}")
    pts = _CENTRE + (TEMPLATES[name] - _CENTRE) / scale
    return pts * (size / 112.0)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src`` onto ``dst``.

    ``src``, ``dst``: ``(k, 2)`` points. Returns the ``2 × 3`` matrix for ``cv2.warpAffine``
    (closed form of Umeyama 1991 without reflection).
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var = (s**2).sum() / len(src)
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    c = (sig * sign).sum() / max(var, 1e-12)
    m = np.zeros((2, 3))
    m[:, :2] = c * rot
    m[:, 2] = mu_d - c * rot @ mu_s
    return m


def _box_matrix(box: np.ndarray, size: int, scale: float) -> np.ndarray:
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(x1 - x0, y1 - y0) * BOX_MARGIN * scale
    f = size / max(side, 1e-6)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return np.array([[f, 0, size / 2 - f * cx], [0, f, size / 2 - f * cy]])


def align_faces(
    image: np.ndarray,
    boxes: np.ndarray,
    landmarks: np.ndarray | None,
    *,
    size: int = 112,
    template: str = DEFAULT_TEMPLATE,
    scale: float = 1.0,
    post: np.ndarray | None = None,
) -> np.ndarray:
    """Aligned crops ``(n, size, size, 3)`` uint8 of the faces of ``image`` (RGB uint8).

    boxes ``(n, 4)``; landmarks ``(n, 5, 2)`` or None (then box crops). A face whose landmarks are
    degenerate (all points together) falls back to its box. Pixels outside the image are replicated
    from the border, as a crop tool does when a face touches the frame edge. ``post``: a ``2 × 3``
    inverse map (output pixel → aligned-crop pixel, the convention of :mod:`mtaffect.data.augment`,
    e.g. :func:`~mtaffect.data.augment.eval_matrix`) applied to the aligned crop in the same warp,
    so each face is resampled once from the original image.
    """
    n = len(boxes)
    out = np.zeros((n, size, size, 3), np.uint8)
    dst = template_points(template, size, scale)
    forward = None if post is None else cv2.invertAffineTransform(np.asarray(post, np.float64))
    for k in range(n):
        pts = None if landmarks is None else np.asarray(landmarks[k], np.float64)
        if pts is not None and np.ptp(pts, axis=0).max() > 1.0:
            m = similarity(pts, dst)
        else:
            m = _box_matrix(boxes[k], size, scale)
        if forward is not None:
            m = _compose(forward, m)
        out[k] = cv2.warpAffine(
            image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
    return out


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2 × 3 affine map ``outer ∘ inner``."""
    a = np.vstack([outer, [0, 0, 1]]) @ np.vstack([inner, [0, 0, 1]])
    return a[:2]


CROP_NAMES = {"affwild2_cropped_aligned": "affwild2"}
"""Crop convention names used in checkpoints (``Preprocessing.crop``) → template names here."""


def crop_convention(crop: str | dict | None) -> tuple[str, float]:
    """``(template, scale)`` for a checkpoint's crop convention (a name or ``{"template", "scale"}``)."""
    if not crop:
        return DEFAULT_TEMPLATE, 1.0
    if isinstance(crop, str):
        return CROP_NAMES.get(crop, crop), 1.0
    name = str(crop.get("template", DEFAULT_TEMPLATE))
    return CROP_NAMES.get(name, name), float(crop.get("scale", 1.0))
