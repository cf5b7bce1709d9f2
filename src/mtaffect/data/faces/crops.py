"""Crop conventions per database (see :mod:`mtaffect.data.faces`), image decoding, cache keys."""

from __future__ import annotations

import math
import struct

import cv2
import numpy as np
import pandas as pd
import simplejpeg

CROP_METHODS: dict[str, str] = {"affectnet": "landmark_square", "expw": "box", "afew_va": "eye_level"}
"""How each native database's faces are cropped; Aff-Wild2 is read as released ("direct")."""
DIRECT_DATABASES = frozenset({"affwild2"})
GAP = 0.05
SHOWING_TOP = 0.65


# ----------------------------------------------------------------------------------------- crops


def _square(img: np.ndarray, x0: float, y0: float, side: float) -> np.ndarray:
    """The square [x0, x0+side) × [y0, y0+side) of ``img``; pixels outside the image are black."""
    side_i = max(1, int(round(side)))
    x, y = int(math.floor(x0)), int(math.floor(y0))
    h, w = img.shape[:2]
    out = np.zeros((side_i, side_i, img.shape[2]), dtype=img.dtype)
    sx0, sy0, sx1, sy1 = max(0, x), max(0, y), min(w, x + side_i), min(h, y + side_i)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y : sy1 - y, sx0 - x : sx1 - x] = img[sy0:sy1, sx0:sx1]
    return out


def landmark_square(img: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """AffectNet convention (module docstring): the landmark square, variable size, same dtype."""
    pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    (min_x, min_y), (max_x, max_y) = pts.min(0), pts.max(0)
    w, h = max_x - min_x, max_y - min_y
    gap = min(w, h) * GAP
    side = max(w, h) + 2 * gap
    x0 = min_x - (side - w) / 2
    y0 = min_y - (side - h) * SHOWING_TOP
    ih, iw = img.shape[:2]
    if side <= min(ih, iw):  # fits: shift inside the photo, as the authors do
        x0 = min(max(x0, 0.0), iw - side)
        y0 = min(max(y0, 0.0), ih - side)
    return _square(img, x0, y0, side)


def box_crop(img: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """ExpW convention: the box (x0, y0, x1, y1) clamped to the image; raises ValueError if empty."""
    h, w = img.shape[:2]
    x0, y0 = max(0, int(math.floor(box[0]))), max(0, int(math.floor(box[1])))
    x1, y1 = min(w, int(math.ceil(box[2]))), min(h, int(math.ceil(box[3])))
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"face box {tuple(box)} lies outside the {w}×{h} image")
    return img[y0:y1, x0:x1]


def eye_level_crop(img: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """AFEW-VA convention (module docstring): rotated so the eyes are level, at native resolution."""
    p = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    left, right = (p[36] + p[39]) / 2, (p[42] + p[45]) / 2
    mouth = (p[48] + p[54]) / 2
    angle = math.atan2(right[1] - left[1], right[0] - left[0])
    c, s = math.cos(-angle), math.sin(-angle)
    rot = np.array([[c, -s], [s, c]])
    eyes = (left + right) / 2
    eye_width = float((rot @ (right - left))[0])
    em_height = float((rot @ (mouth - eyes))[1])
    side = 2.0 * max(eye_width, em_height)
    if not side > 1:
        raise ValueError("degenerate landmarks: eyes and mouth coincide")
    centre = (eyes + mouth) / 2
    side_i = max(1, int(round(side)))
    # source -> crop: rotate by -angle about the face centre, then move the centre to the crop centre
    m = np.zeros((2, 3))
    m[:, :2] = rot
    m[:, 2] = side_i / 2 - rot @ centre
    return cv2.warpAffine(img, m, (side_i, side_i), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def resize_face(img: np.ndarray, size: int) -> np.ndarray:
    """Resize to size × size: INTER_AREA when shrinking, INTER_CUBIC when enlarging."""
    h, w = img.shape[:2]
    if h == size and w == size:
        return np.ascontiguousarray(img)
    shrink = h * w >= size * size
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def crop_method(database: str, has_landmarks: bool, has_box: bool) -> str:
    """The crop convention of a row: by database, else landmarks → square, box → box, else direct."""
    if database in DIRECT_DATABASES:
        return "direct"
    if database in CROP_METHODS:
        return CROP_METHODS[database]
    if has_landmarks:
        return "landmark_square"
    return "box" if has_box else "direct"


def crop_face(img: np.ndarray, method: str, size: int, landmarks: np.ndarray | None = None,
              box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """Crop one face from a source image (H, W, 3) with ``method`` and resize it to size × size."""
    if method == "landmark_square":
        if landmarks is None:
            raise ValueError("no landmarks")
        crop = landmark_square(img, landmarks)
    elif method == "eye_level":
        if landmarks is None:
            raise ValueError("no landmarks")
        crop = eye_level_crop(img, landmarks)
    elif method == "box":
        if box is None:
            raise ValueError("no face box")
        crop = box_crop(img, box)
    elif method == "direct":
        crop = img
    else:
        raise ValueError(f"unknown crop method {method!r}")
    return resize_face(crop, size)


MAX_IMAGE_PIXELS = 100_000_000
"""Source photos larger than this (100 megapixels, 300 MB decoded) are refused from their header,
before decoding: the databases' photos are far smaller, and a 20000×20000 file would take 1.2 GB."""


def image_header_size(data: bytes | memoryview | np.ndarray) -> tuple[int, int] | None:
    """(width, height) read from the image header only (JPEG: simplejpeg; others: Pillow's lazy
    open, which parses the header and decodes nothing); None if the header is unreadable."""
    buf = memoryview(data) if not isinstance(data, np.ndarray) else memoryview(np.ascontiguousarray(data))
    if len(buf) >= 3 and bytes(buf[:3]) == b"\xff\xd8\xff":
        try:
            h, w = simplejpeg.decode_jpeg_header(buf)[:2]
            return int(w), int(h)
        except ValueError:
            pass
    if len(buf) >= 24 and bytes(buf[:8]) == b"\x89PNG\r\n\x1a\n":  # IHDR: width, height big-endian
        width, height = struct.unpack(">II", bytes(buf[16:24]))
        return int(width), int(height)
    import io
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's decompression-bomb warning: we decide
            with Image.open(io.BytesIO(bytes(buf))) as img:
                return int(img.size[0]), int(img.size[1])
    except Image.DecompressionBombError:  # Pillow refuses, unsized, above twice its own limit
        return 2 * int(Image.MAX_IMAGE_PIXELS or MAX_IMAGE_PIXELS) + 1, 1
    except Exception:  # noqa: BLE001 - any header Pillow cannot parse: let OpenCV give the verdict
        return None


def is_too_large(data: bytes | memoryview | np.ndarray, max_pixels: int = MAX_IMAGE_PIXELS) -> bool:
    """True when the header announces more than ``max_pixels`` pixels."""
    size = image_header_size(data)
    return size is not None and size[0] * size[1] > max_pixels


def decode_image(data: bytes | memoryview | np.ndarray) -> np.ndarray | None:
    """Decode JPEG (simplejpeg) or any format OpenCV reads into RGB uint8; None if unreadable or
    larger than :data:`MAX_IMAGE_PIXELS` (checked from the header, before decoding)."""
    buf = memoryview(data) if not isinstance(data, np.ndarray) else data
    if is_too_large(buf):
        return None
    if len(buf) >= 3 and bytes(buf[:3]) == b"\xff\xd8\xff":
        try:
            return simplejpeg.decode_jpeg(buf, colorspace="RGB")
        except ValueError:
            pass  # fall through: OpenCV is more tolerant of odd JPEGs, and reports truly broken ones
    arr = np.frombuffer(buf, dtype=np.uint8)
    if arr.size == 0:
        return None
    img = cv2.imdecode(arr, cv2.IMREAD_COLOR)
    if img is None:
        return None
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def cache_keys(index: pd.DataFrame) -> np.ndarray:
    """The cache key of each index row: ``database/image`` plus ``#face_id`` where there is one."""
    face = index["face_id"]
    ids = "#" + face.astype("string").fillna("").to_numpy(dtype=object)
    suffix = np.where(face.isna().to_numpy(), "", ids)
    dbs = index["database"].astype(str).to_numpy(dtype=object)
    keys = dbs + "/" + index["image"].astype(str).to_numpy(dtype=object)
    return (keys + suffix).astype(object)


def row_methods(index: pd.DataFrame) -> np.ndarray:
    """:func:`crop_method` of every row (object array); vectorised per database."""
    codes, names = pd.factorize(index["database"].astype(str), sort=False)
    out = np.empty(len(index), dtype=object)
    for k, name in enumerate(names):
        sel = codes == k
        if name in DIRECT_DATABASES or name in CROP_METHODS:
            out[sel] = crop_method(name, False, False)
            continue
        sub = index[sel]
        has_marks = sub["landmarks"].map(lambda v: v is not None and len(v) >= 136).to_numpy(dtype=bool)
        has_box = sub[["box_x0", "box_y0", "box_x1", "box_y1"]].notna().all(axis=1).to_numpy(dtype=bool)
        out[sel] = [crop_method(name, m, b) for m, b in zip(has_marks, has_box)]
    return out
