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

from collections.abc import Callable

import cv2
import numpy as np
import torch

from mtaffect.models.preprocessing import EVAL_RESIZE

__all__ = [
    "resized_side", "crop_matrices", "warp_batch", "augment_batch", "eval_matrix", "eval_batch",
    "fixed_point_maps", "warp_tensor", "DeviceWarp",
]


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


# ------------------------------------------------------------------ the same warps as tensor ops
#
# ``cv2.warpAffine`` (INTER_LINEAR, BORDER_REPLICATE) samples in fixed point: the source position of
# output pixel (x, y) is rounded to 1/32 px — X = (round(M00·x·1024) + round((M01·y + M02)·1024) +
# 16) >> 5, likewise Y —, the four neighbours (clamped to the image: replicated border) are weighted
# by (32 − fx or fx)·(32 − fy or fy)·32, which sum to 2^15, and the sum is rounded (+2^14) and
# shifted by 15. Reproducing that arithmetic exactly makes the batched tensor warp below equal
# ``warp_batch`` bit for bit (tested against OpenCV on CPU), on any torch device: the maps are
# computed once per matrix on the host (float64, round half to even like cvRound), the device only
# gathers and adds integers.

_AB_BITS, _INTER_BITS = 10, 5
_TAB = 1 << _INTER_BITS


def fixed_point_maps(
    matrices: np.ndarray, in_height: int, in_width: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """``cv2.warpAffine``'s bilinear sampling of inverse maps ``(m, 2, 3)`` onto a ``size`` square:
    flat source positions ``(m, 4, size²)`` int64 (y·W + x of the four neighbours, border clamped) and
    their integer weights ``(m, 4, size²)`` int32 (each pixel's four sum to 2^15)."""
    matrices = np.asarray(matrices, dtype=np.float64).reshape(-1, 2, 3)
    x = np.arange(size, dtype=np.float64)
    scale = float(1 << _AB_BITS)
    round_delta = (1 << _AB_BITS) // _TAB // 2
    m = matrices[:, None, :, :]  # (m, 1, 2, 3)
    adelta = np.rint(m[..., 0, 0] * x * scale).astype(np.int64)  # (m, size): per column
    bdelta = np.rint(m[..., 1, 0] * x * scale).astype(np.int64)
    x0 = np.rint((m[..., 0, 1] * x + m[..., 0, 2]) * scale).astype(np.int64) + round_delta  # per row
    y0 = np.rint((m[..., 1, 1] * x + m[..., 1, 2]) * scale).astype(np.int64) + round_delta
    big_x = (x0[:, :, None] + adelta[:, None, :]) >> (_AB_BITS - _INTER_BITS)  # (m, rows, cols)
    big_y = (y0[:, :, None] + bdelta[:, None, :]) >> (_AB_BITS - _INTER_BITS)
    xi, yi = big_x >> _INTER_BITS, big_y >> _INTER_BITS
    fx, fy = big_x & (_TAB - 1), big_y & (_TAB - 1)
    xs = (np.clip(xi, 0, in_width - 1), np.clip(xi + 1, 0, in_width - 1))
    ys = (np.clip(yi, 0, in_height - 1), np.clip(yi + 1, 0, in_height - 1))
    wx, wy = (_TAB - fx, fx), (_TAB - fy, fy)
    positions = np.stack([ys[a] * in_width + xs[b] for a in (0, 1) for b in (0, 1)], axis=1)
    weights = np.stack([wy[a] * wx[b] * _TAB for a in (0, 1) for b in (0, 1)], axis=1)
    n = len(matrices)
    return positions.reshape(n, 4, size * size), weights.reshape(n, 4, size * size).astype(np.int32)


def warp_tensor(
    images: torch.Tensor, positions: torch.Tensor, weights: torch.Tensor, size: int
) -> torch.Tensor:
    """:func:`warp_batch` as tensor ops on the images' device: uint8 ``(n, H, W, C)`` → uint8
    ``(n, size, size, C)``, bit-identical to OpenCV's warp. ``positions``/``weights``: from
    :func:`fixed_point_maps`, one map for every image (leading dim 1) or one per image (n), on the
    same device."""
    n, h, w, c = images.shape
    flat = images.reshape(n, h * w, c)
    pixels = size * size
    if positions.shape[0] == 1:
        picked = flat[:, positions[0].reshape(-1)]  # (n, 4·P, C)
    else:
        picked = torch.gather(flat, 1, positions.reshape(n, 4 * pixels, 1).expand(n, 4 * pixels, c))
    picked = picked.reshape(n, 4, pixels, c).to(torch.int32)
    total = (picked * weights.reshape(-1, 4, pixels, 1)).sum(dim=1)  # ≤ 255 · 2^15: fits int32
    return ((total + (1 << 14)) >> 15).clamp_(0, 255).to(torch.uint8).reshape(n, size, size, c)


class DeviceWarp:
    """One transform (a feature-cache draw, the evaluation crop) applied to uint8 batches on a torch
    device by :func:`warp_tensor`. ``matrix_of(in_size) -> (2, 3)`` gives the inverse map for square
    inputs of that side; the integer maps are built once per input side."""

    def __init__(self, matrix_of: Callable[[int], np.ndarray], size: int, device: torch.device | str) -> None:
        self.matrix_of, self.size, self.device = matrix_of, int(size), torch.device(device)
        self._maps: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(n, S, S, C)`` on :attr:`device` → uint8 ``(n, size, size, C)`` there."""
        side = int(images.shape[1])
        maps = self._maps.get(side)
        if maps is None:
            positions, weights = fixed_point_maps(self.matrix_of(side), side, side, self.size)
            maps = (torch.from_numpy(positions).to(self.device), torch.from_numpy(weights).to(self.device))
            self._maps[side] = maps
        return warp_tensor(images, maps[0], maps[1], self.size)
