"""Face crops, alignment and the face cache; :class:`FaceReader` hides where a face lives.

Crop conventions (METHOD.md §3.2–3.4, DATASETS.md §2–4), each giving a square face image that is
resized to the cache size with ``INTER_AREA`` when shrinking and ``INTER_CUBIC`` when enlarging:

* **AffectNet — landmark square** (the authors' ``CentralCrop``): a square of side
  ``max(w, h) + 2·gap`` around the 68-landmark extent (w × h), ``gap = 5 % of min(w, h)``, centred
  horizontally; vertically 65 % of the spare height goes above the landmarks (the forehead, which
  the landmarks do not cover) and 35 % below. The authors multiply the *absolute* top coordinate by
  0.65 (``y = (min_y - gap) * 0.65``), which only frames the face when it fills the photo; we use
  the relative reading. Like theirs, a square that fits in the photo is shifted inside it; a larger
  one is padded with black.
* **ExpW — box**: the ``label.lst`` box (top, left, right, bottom) clamped to the photo, resized to a
  square. Crops are keyed by image *and face id*, so faces of one photo never overwrite each other.
* **AFEW-VA — eye-level alignment**: eye centres = midpoints of landmarks 36/39 and 42/45, mouth
  centre = midpoint of 48/54; the image is rotated about the face centre (midway between eye
  centre and mouth centre) so the eyes are level; the crop is the square of side
  ``2·max(eye distance, eye-to-mouth height)`` centred there (outside the frame: black).
* **Aff-Wild2** crops are used as released (``cropped_aligned``), read directly; so is any row
  without box and landmarks (generic databases of ready crops).

The cache (:func:`build_face_cache`) stores the crops of every other row in shards: JPEG bytes
concatenated in ``shard-NNNNN.bin`` with a table ``shard-NNNNN.npz`` (key, offset, length,
status) — or, with ``fmt="raw"``, decoded uint8 arrays in ``shard-NNNNN.u8``. Shards are written
atomically, table last, so an interrupted build never damages a finished shard and a rerun
skips them.

A frame store (:mod:`mtaffect.data.faces.store`, :func:`build_frame_stores`) holds the faces of a split
exactly as :class:`FaceReader` returns them, decoded once into one memory-mapped uint8 array; a reader
whose index metadata lists one serves its rows from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from mtaffect.data.faces.cache import STATUS, CacheStore, build
from mtaffect.data.faces.crops import (
    CROP_METHODS,
    box_crop,
    cache_keys,
    crop_face,
    crop_method,
    decode_image,
    eye_level_crop,
    landmark_square,
    resize_face,
)
from mtaffect.data.faces.reader import FaceReader, UnreadableFaceError
from mtaffect.data.faces.store import FrameStore, FrameStoreError
from mtaffect.data.faces.store_build import build_frame_store, build_frame_stores

__all__ = [
    "CROP_METHODS", "STATUS", "UnreadableFaceError", "landmark_square", "box_crop", "eye_level_crop",
    "resize_face", "crop_face", "crop_method", "cache_keys", "decode_image", "FaceReader", "CacheStore",
    "build_face_cache", "FrameStore", "FrameStoreError", "build_frame_store", "build_frame_stores",
]


def build_face_cache(index: pd.DataFrame, meta: Mapping[str, Any], cache_dir: str | Path, *, size: int = 112,
                     workers: int = 2, fmt: str = "jpeg", quality: int = 90, shard_size: int = 2048,
                     progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Crop every non-direct face of ``index`` into the cache under ``cache_dir``; resumable.

    Returns a copy of ``meta`` with ``meta["face_cache"] = {"path", "size", "format", "entries",
    "counts": {database: {status: n}}, "skipped": {database: {reason: n}}}``; store it with the
    index (``write_index``) so that :class:`FaceReader` finds the cache. A folder holding a cache
    built with other settings (another JPEG quality) is refused unless ``overwrite``, which
    rebuilds it.
    """
    return build(index, meta, cache_dir, size=size, workers=workers, fmt=fmt, quality=quality,
                 shard_size=shard_size, progress=progress, overwrite=overwrite)
