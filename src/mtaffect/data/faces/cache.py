"""The face cache: aligned crops of the still/film databases, in shards that read fast.

Layout of ``<cache_dir>/<fmt><size>/`` (e.g. ``jpeg112``):

* ``shard-NNNNN.bin`` (``fmt="jpeg"``): the crops' JPEG bytes, concatenated;
  ``shard-NNNNN.u8`` (``fmt="raw"``): the decoded crops, uint8 (n, size, size, 3), memory-mapped;
* ``shard-NNNNN.npz``: ``keys`` (see :func:`~mtaffect.data.faces.crops.cache_keys`), ``offsets``,
  ``lengths`` (bytes) and ``status`` (index into :data:`STATUS`) of the shard's entries;
* ``cache.json``: size, format, shard names, counts — written last.

A shard's data file is renamed into place before its table, so a shard with a table is complete;
a rerun skips every shard whose table lists the keys planned for it.
"""

from __future__ import annotations

import json
import multiprocessing
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import simplejpeg
from tqdm import tqdm

from mtaffect.data.faces.crops import (
    cache_keys,
    crop_face,
    decode_image,
    is_too_large,
    resize_face,
    row_methods,
)
from mtaffect.errors import InputFormatError, UserError
from mtaffect.io import atomic_open, write_json

STATUS = ("ok", "missing_image", "unreadable_image", "no_face_geometry", "image_too_large")
"""Cache entry status codes (index into this tuple)."""
FORMATS = ("jpeg", "raw")
CACHE_VERSION = 1


class CacheStore:
    """A finished cache folder (``cache.json`` + shards): look up keys, read crops."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        manifest_path = self.path / "cache.json"
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            message = f"no finished face cache ({err}); run `mtaffect cache`"
            raise InputFormatError(manifest_path, message) from err
        self.size, self.fmt = int(manifest["size"]), str(manifest["format"])
        self.shards: list[str] = list(manifest["shards"])
        keys, offsets, lengths, status, shard = [], [], [], [], []
        for s, name in enumerate(self.shards):
            with np.load(self.path / f"{name}.npz") as table:
                keys.append(table["keys"].astype(object))
                offsets.append(table["offsets"])
                lengths.append(table["lengths"])
                status.append(table["status"])
                shard.append(np.full(len(table["keys"]), s, dtype=np.int32))

        def cat(xs: list[np.ndarray], dt: Any) -> np.ndarray:
            return np.concatenate(xs) if xs else np.zeros(0, dtype=dt)

        self.keys = cat(keys, object)
        self.offsets, self.lengths = cat(offsets, np.int64), cat(lengths, np.int64)
        self.status, self.shard = cat(status, np.int8), cat(shard, np.int32)
        self._lookup = pd.Index(self.keys)
        self._maps: dict[int, np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers: reopen the memory maps lazily
        state = dict(self.__dict__)
        state["_maps"] = {}
        return state

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Entry number and status of each key; (-1, -1) for keys not in the cache."""
        pos = self._lookup.get_indexer(pd.Index(np.asarray(keys, dtype=object)))
        status = np.where(pos >= 0, self.status[np.maximum(pos, 0)], -1) if len(self.status) else pos
        return pos.astype(np.int64), np.asarray(status, dtype=np.int64)

    def _map(self, shard: int) -> np.ndarray:
        mm = self._maps.get(shard)
        if mm is None:
            name = self.shards[shard]
            if self.fmt == "raw":
                mm = np.memmap(self.path / f"{name}.u8", dtype=np.uint8, mode="r")
                mm = mm.reshape(-1, self.size, self.size, 3)
            else:
                mm = np.memmap(self.path / f"{name}.bin", dtype=np.uint8, mode="r")
            self._maps[shard] = mm
        return mm

    def read(self, entries: np.ndarray, size: int | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """Crops of cache entries: uint8 (n, size, size, 3) RGB (resized if ``size`` differs), written
        into ``out`` when given (C-contiguous, that shape)."""
        size = self.size if size is None else int(size)
        entries = np.asarray(entries, dtype=np.int64)
        if out is None:
            out = np.empty((len(entries), size, size, 3), dtype=np.uint8)
        shards, offsets, lengths = self.shard[entries], self.offsets[entries], self.lengths[entries]
        same = size == self.size
        if self.fmt == "raw":
            slots = offsets // (self.size * self.size * 3)
            for k in range(len(entries)):
                face = self._map(int(shards[k]))[slots[k]]
                out[k] = face if same else resize_face(face, size)
            return out
        for k in range(len(entries)):
            off = int(offsets[k])
            data = self._map(int(shards[k]))[off : off + int(lengths[k])]
            if same:
                simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=out[k])
            else:
                out[k] = resize_face(simplejpeg.decode_jpeg(data, colorspace="RGB"), size)
        return out


def _load(path: str) -> tuple[np.ndarray | None, int]:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return None, 1
    except OSError:
        return None, 2
    if is_too_large(data):  # refused from the header, never decoded
        return None, 4
    img = decode_image(data)
    return img, (0 if img is not None else 2)


def _build_shard(job: tuple) -> tuple[str, list[int]]:
    """Worker: crop, encode and write one shard; returns its name and status codes."""
    folder, name, items, size, fmt, quality = job
    cv2.setNumThreads(1)
    blobs: list[bytes] = []
    status: list[int] = []
    last_path, img, img_status = None, None, 0
    blank = np.zeros((size, size, 3), dtype=np.uint8)
    for _, path, method, marks, box in items:
        if path != last_path:  # faces of one photo are consecutive: decode it once
            img, img_status = _load(path)
            last_path = path
        face, st = blank, img_status
        if st == 0:
            try:
                face = crop_face(img, method, size, marks, box)  # type: ignore[arg-type]
            except ValueError:
                face, st = blank, 3
        status.append(st)
        if fmt == "raw":
            blobs.append(np.ascontiguousarray(face).tobytes())
        else:
            jpeg = simplejpeg.encode_jpeg(np.ascontiguousarray(face), quality, "RGB", "420")
            blobs.append(jpeg if st == 0 else b"")
    lengths = np.array([len(b) for b in blobs], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    folder = Path(folder)
    with atomic_open(folder / f"{name}.{'u8' if fmt == 'raw' else 'bin'}", "wb") as handle:
        for blob in blobs:
            handle.write(blob)
    with atomic_open(folder / f"{name}.npz", "wb") as handle:
        np.savez(handle, keys=np.array([it[0] for it in items], dtype=str), offsets=offsets, lengths=lengths,
                 status=np.array(status, dtype=np.int8))
    return name, status


def _plan(index: pd.DataFrame, roots: Mapping[str, Path]) -> list[tuple]:
    """Unique faces to crop, sorted by key (faces of one photo stay together)."""
    methods = row_methods(index)
    sel = np.flatnonzero(methods != "direct")
    if sel.size == 0:
        return []
    sub = index.iloc[sel]
    keys = cache_keys(sub)
    _, first = np.unique(keys.astype(str), return_index=True)
    items = []
    dbs = sub["database"].astype(str).to_numpy()
    images = sub["image"].astype(str).to_numpy()
    boxes = sub[["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy(dtype=np.float64, na_value=np.nan)
    marks = sub["landmarks"].to_numpy(dtype=object)
    for i in first:
        root = roots.get(dbs[i])
        if root is None:
            raise UserError(f"the index metadata has no root for database {dbs[i]!r}")
        box = None if np.isnan(boxes[i]).any() else tuple(float(x) for x in boxes[i])
        m = None if marks[i] is None else np.asarray(marks[i], dtype=np.float32)
        items.append((str(keys[i]), str(root / images[i]), str(methods[sel[i]]), m, box))
    return items


def _is_done(folder: Path, name: str, keys: list[str], fmt: str) -> bool:
    table, data = folder / f"{name}.npz", folder / f"{name}.{'u8' if fmt == 'raw' else 'bin'}"
    if not (table.exists() and data.exists()):
        return False
    try:
        with np.load(table) as t:
            return t["keys"].tolist() == keys and int(t["lengths"].sum()) == data.stat().st_size
    except (OSError, ValueError, KeyError):
        return False


SETTINGS_FILE = "build.json"


def _claim(folder: Path, settings: dict[str, Any], overwrite: bool) -> None:
    """Make sure every shard in ``folder`` is (or will be) built with ``settings``.

    ``build.json`` is written before the first shard, so shards of an earlier build with other
    settings (another JPEG ``--quality``) are never kept under a ``cache.json`` that claims the
    new ones: the rerun is refused, or with ``overwrite`` the old shards are deleted first.
    """
    earlier = None
    for name in (SETTINGS_FILE, "cache.json"):  # caches of version 1 have only cache.json
        try:
            found = json.loads((folder / name).read_text(encoding="utf-8"))
            earlier = {k: found.get(k) for k in settings}
            break
        except (OSError, ValueError, AttributeError):
            continue
    has_shards = any(folder.glob("shard-*"))
    if earlier is not None and earlier != settings and (has_shards or (folder / "cache.json").exists()):
        if not overwrite:
            differ = ", ".join(
                f"{k} {earlier[k]} (now {settings[k]})" for k in settings if earlier[k] != settings[k]
            )
            raise UserError(f"{folder} holds a face cache built with other settings: {differ}; "
                            "pass --overwrite to rebuild it, or choose another --out")
        for old in [*folder.glob("shard-*"), folder / "cache.json"]:
            old.unlink(missing_ok=True)
    write_json(folder / SETTINGS_FILE, settings)


def build(index: pd.DataFrame, meta: Mapping[str, Any], cache_dir: str | Path, *, size: int = 112,
          workers: int = 2, fmt: str = "jpeg", quality: int = 90, shard_size: int = 2048,
          progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """See :func:`mtaffect.data.faces.build_face_cache`."""
    if fmt not in FORMATS:
        raise UserError(f"face cache format must be one of {FORMATS}, not {fmt!r}")
    if size < 8:
        raise UserError(f"face size {size} is too small")
    roots = {k: Path(v) for k, v in (meta.get("roots") or {}).items()}
    items = _plan(index, roots)
    folder = Path(cache_dir) / f"{fmt}{size}"
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.glob(".*.tmp"):  # temporary files of an interrupted build
        leftover.unlink()
    _claim(folder, {"version": CACHE_VERSION, "size": size, "format": fmt,
                    "quality": quality if fmt == "jpeg" else None}, overwrite)
    shards = [items[i : i + shard_size] for i in range(0, len(items), shard_size)]
    names = [f"shard-{i:05d}" for i in range(len(shards))]
    todo = [(str(folder), n, s, size, fmt, quality) for n, s in zip(names, shards)
            if not _is_done(folder, n, [it[0] for it in s], fmt)]
    bar = tqdm(total=len(shards), initial=len(shards) - len(todo), unit="shard", disable=not progress,
               desc=f"face cache {folder}")
    if workers <= 1 or len(todo) <= 1:
        for job in todo:
            _build_shard(job)
            bar.update()
    else:
        with multiprocessing.get_context().Pool(min(workers, len(todo))) as pool:
            for _ in pool.imap_unordered(_build_shard, todo):
                bar.update()
    bar.close()
    for stale in folder.glob("shard-*.*"):  # shards of an earlier, longer plan
        if stale.name.split(".")[0] not in set(names):
            stale.unlink()
    counts: dict[str, Counter] = {}
    status_by_key: dict[str, int] = {}
    for name in names:
        with np.load(folder / f"{name}.npz") as t:
            status_by_key.update(zip(t["keys"].tolist(), t["status"].tolist()))
    for key, st in status_by_key.items():
        counts.setdefault(key.split("/", 1)[0], Counter())[STATUS[st]] += 1
    info = {
        "version": CACHE_VERSION, "path": str(folder.resolve()), "size": size, "format": fmt,
        "quality": quality if fmt == "jpeg" else None, "entries": len(items), "shards": names,
        "counts": {db: dict(sorted(c.items())) for db, c in sorted(counts.items())},
        "skipped": {db: {k: v for k, v in sorted(c.items()) if k != "ok"} for db, c in sorted(counts.items())
                    if any(k != "ok" for k in c)},
    }
    write_json(folder / "cache.json", info)
    out = dict(meta)
    out["face_cache"] = {k: v for k, v in info.items() if k != "shards"}
    return out
