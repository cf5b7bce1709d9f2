"""Face crops for int8 calibration (``mtaffect export --int8``): a folder of images or a ``.npy`` array.

Quantization takes its activation ranges from these crops, so they should be real faces cut the
way the model sees them (``mtaffect extract-faces`` writes such folders). Images are read as
prediction reads them (:func:`mtaffect.predict.media.read_image`: EXIF-upright RGB, the same
extension list).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from mtaffect.errors import InputFormatError
from mtaffect.predict.media import IMAGE_EXTENSIONS, read_image

__all__ = ["load_calibration"]


def load_calibration(path: str | Path, size: int, limit: int) -> tuple[np.ndarray, list[Path]]:
    """uint8 RGB crops ``(N <= limit, size, size, 3)`` and the image files that could not be read.

    ``path``: a ``.npy`` uint8 array ``(N, H, W, 3)`` (taken as is, first ``limit``), or a folder
    searched recursively for images (sorted by path; resized to ``size`` with area averaging when
    needed). Raises :class:`InputFormatError` for anything else, or when no image is readable.
    """
    path = Path(path)
    if path.suffix == ".npy":
        images = np.load(path, allow_pickle=False)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise InputFormatError(
                path, f"expected a uint8 array (N, H, W, 3), got {images.dtype} {images.shape}"
            )
        return images[:limit], []
    if not path.is_dir():
        raise InputFormatError(path, "calibration source is neither a folder of images nor a .npy file")
    crops: list[np.ndarray] = []
    skipped: list[Path] = []
    for file in sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS):
        try:
            image = read_image(file)
        except InputFormatError:
            skipped.append(file)
            continue
        if image.shape[:2] != (size, size):
            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        crops.append(image)
        if len(crops) >= limit:
            break
    if not crops:
        raise InputFormatError(path, "no readable images for calibration")
    return np.stack(crops), skipped
