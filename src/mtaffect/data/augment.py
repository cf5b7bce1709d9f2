"""The paper's face augmentation, batched in uint8 with one OpenCV warp per image.

The authors' training transform (METHOD.md §4.4) is, per image: resize the 112 crop to
``int(1.2 · 112) = 134``, take a random 112 crop (a translation of up to 22 px), flip horizontally
with probability ½, then ToTensor/×255/Normalize. Upsampling every image on the CPU and building
per-sample float tensors is what makes that pipeline slow (PERFORMANCE.md §3).

Here the resize, the crop and the flip are one affine map from output pixels to source pixels, so
each image is resampled once, directly into its slot of a preallocated uint8 batch, by
``cv2.warpAffine`` (bilinear, like the resize it replaces). The result equals resize-then-crop up to
OpenCV's fixed-point rounding (≤ 2 grey levels; tested). Normalisation is left to the device
(:class:`mtaffect.models.preprocessing.Preprocessing`), so the wire format stays uint8 NHWC.

The evaluation transform is the same map with the centre offset ``(R − size) // 2`` and no flip,
defined once (:func:`eval_matrix`): :func:`eval_batch` warps crops with it, and prediction composes it
into the face-alignment warp (:func:`mtaffect.predict.align.align_faces`), so evaluation and
prediction see the same pixels. Its factor is the checkpoint's ``Preprocessing.eval_resize``.
"""

from __future__ import annotations

import cv2
import numpy as np

from mtaffect.models.preprocessing import EVAL_RESIZE

__all__ = ["resized_side", "crop_matrices", "warp_batch", "augment_batch", "eval_matrix", "eval_batch"]


def resized_side(size: int, resize_factor: float = EVAL_RESIZE) -> int:
    """Side R of the intermediate resize: ``int(resize_factor · size)`` as torchvision's Resize(134)."""
    return int(resize_factor * size)


def crop_matrices(
    in_size: int, size: int, resized: int, offsets: np.ndarray, flips: np.ndarray
) -> np.ndarray:
    """Inverse affine maps (output pixel → source pixel), ``(n, 2, 3)`` float64.

    ``offsets``: ``(n, 2)`` integer (x0, y0) of the crop inside the ``resized`` square;
    ``flips``: ``(n,)`` bool, mirror the crop left-right. Pixel centres follow the half-pixel
    convention of ``cv2.resize`` / PIL: source x = (upscaled x + 0.5) / s − 0.5, s = resized / in_size.
    """
    offsets = np.asarray(offsets, dtype=np.float64).reshape(-1, 2)
    flips = np.asarray(flips, dtype=bool).reshape(-1)
    inv = in_size / resized
    n = len(offsets)
    m = np.zeros((n, 2, 3), dtype=np.float64)
    # x: upscaled u = x0 + j (or x0 + size − 1 − j when flipped)
    m[:, 0, 0] = np.where(flips, -inv, inv)
    start = np.where(flips, offsets[:, 0] + size - 1, offsets[:, 0])
    m[:, 0, 2] = (start + 0.5) * inv - 0.5
    m[:, 1, 1] = inv
    m[:, 1, 2] = (offsets[:, 1] + 0.5) * inv - 0.5
    return m


def warp_batch(
    images: np.ndarray, matrices: np.ndarray, size: int, out: np.ndarray | None = None
) -> np.ndarray:
    """Resample each image ``(n, H, W, 3)`` uint8 through its inverse map → ``(n, size, size, 3)`` uint8."""
    n = len(images)
    if out is None:
        out = np.empty((n, size, size, images.shape[-1]), dtype=np.uint8)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    for i in range(n):
        cv2.warpAffine(
            images[i], matrices[i], (size, size), dst=out[i], flags=flags, borderMode=cv2.BORDER_REPLICATE
        )
    return out


def augment_batch(
    images: np.ndarray,
    size: int,
    rng: np.random.Generator,
    *,
    resize_factor: float = EVAL_RESIZE,
    flip: bool = True,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Training transform, an independent draw per image: resize ×``resize_factor``, random
    ``size`` crop, horizontal flip with probability ½. ``images``: ``(n, S, S, 3)`` uint8."""
    images = np.asarray(images)
    in_size = images.shape[1]
    resized = resized_side(size, resize_factor)
    span = resized - size
    n = len(images)
    offsets = rng.integers(0, span + 1, size=(n, 2))
    flips = rng.random(n) < 0.5 if flip else np.zeros(n, dtype=bool)
    return warp_batch(images, crop_matrices(in_size, size, resized, offsets, flips), size, out)


def eval_matrix(in_size: int, size: int, resize_factor: float = EVAL_RESIZE) -> np.ndarray:
    """The evaluation transform as one inverse affine map (output pixel → source pixel), ``(2, 3)``
    float64: an ``in_size`` crop resized ×``resize_factor`` (to ``R = int(resize_factor · size)``),
    then the centre ``size`` crop at offset ``(R − size) // 2``, no flip."""
    resized = resized_side(size, resize_factor)
    centre = (resized - size) // 2
    return crop_matrices(in_size, size, resized, np.array([[centre, centre]]), np.zeros(1, bool))[0]


def eval_batch(
    images: np.ndarray, size: int, *, resize_factor: float = EVAL_RESIZE, out: np.ndarray | None = None
) -> np.ndarray:
    """Evaluation transform (:func:`eval_matrix`) of each image: ``(n, S, S, 3)`` uint8 →
    ``(n, size, size, 3)`` uint8."""
    images = np.asarray(images)
    matrix = eval_matrix(images.shape[1], size, resize_factor)
    return warp_batch(images, np.broadcast_to(matrix, (len(images), 2, 3)), size, out)
