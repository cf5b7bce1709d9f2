"""FaceReader: faces of index rows, from the released crops, the face cache or a frame store."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import simplejpeg

from mtaffect.data.faces.cache import STATUS, CacheStore
from mtaffect.data.faces.crops import cache_keys, decode_image, resize_face, row_methods
from mtaffect.data.faces.store import REBUILD, ROWS, FrameStore, FrameStoreError, store_entries
from mtaffect.errors import InputFormatError, UserError


class UnreadableFaceError(InputFormatError):
    """A face image that cannot be read or cropped; ``rows`` are the index positions concerned."""

    def __init__(self, path: str | Path, message: str, rows: list[int] | None = None) -> None:
        super().__init__(path, message)
        self.rows = rows or []


class FaceReader:
    """Read faces of index rows as uint8 RGB arrays (n, size, size, 3), wherever they live.

    Rows of Aff-Wild2 (and generic ready-made crops) are read from their image files under
    ``meta["roots"]``; the others from the face cache recorded in ``meta["face_cache"]`` (built by
    :func:`build_face_cache` / ``mtaffect cache``). Faces are resized to ``size`` when their stored
    size differs. A face that cannot be produced raises :class:`UnreadableFaceError` naming the
    file; :attr:`valid` tells in advance which rows the cache already knows to be bad.

    Frame stores listed in ``meta["frame_stores"]`` (:func:`build_frame_stores`, ``mtaffect cache
    --frame-store``) at this ``size`` serve the faces they hold as memory copies: the same pixels,
    no decoding. Their rows' source files are checked here: the file this reader would decode each
    row from must be the one the store was built from (not another face cache or database root), with
    the same size and mtime; a store built from other files, a changed, unfinished or missing store is
    refused with :class:`~mtaffect.data.faces.store.FrameStoreError` naming its file.
    ``frame_stores=False`` ignores them (what a store build itself reads with).
    """

    def __init__(self, index: pd.DataFrame, meta: Mapping[str, Any], size: int = 112, *,
                 frame_stores: bool = True) -> None:
        self.size = int(size)
        self.n = len(index)
        roots = {k: Path(v) for k, v in (meta.get("roots") or {}).items()}
        methods = row_methods(index)
        self.direct = methods == "direct"
        self._images = index["image"].astype(str).to_numpy(dtype=object)
        codes, names = pd.factorize(index["database"].astype(str), sort=False)
        self._db = codes.astype(np.int32)
        self._roots = [str(roots.get(name, "")) for name in names]
        for k, name in enumerate(names):
            if name not in roots and self.direct[codes == k].any():
                raise UserError(f"the index metadata has no root for database {name!r}")
        dbs = np.asarray(names, dtype=object)[codes]
        self.store: CacheStore | None = None
        self.entry = np.full(self.n, -1, dtype=np.int64)
        self.valid = np.ones(self.n, dtype=bool)
        self.reason = np.full(self.n, "", dtype=object)
        cached = np.flatnonzero(~self.direct)
        if cached.size:
            info = meta.get("face_cache")
            if not info:
                listed = ", ".join(sorted(set(dbs[cached])))
                raise UserError(f"{cached.size} index rows ({listed}) need the face cache: "
                                "run `mtaffect cache --index INDEX --out DIR` first")
            self.store = CacheStore(info["path"])
            keys = cache_keys(index.iloc[cached])
            entry, status = self.store.lookup(keys)
            self.entry[cached] = entry
            bad = status != 0
            self.valid[cached[bad]] = False
            self.reason[cached[bad]] = [("not_in_cache" if s < 0 else STATUS[s]) for s in status[bad]]
        self.stores: list[FrameStore] = []
        self.store_of = np.full(self.n, -1, dtype=np.int16)  # which store serves a row (-1: none)
        self.store_pos = np.full(self.n, -1, dtype=np.int64)
        if frame_stores:
            self._open_stores(index, meta)

    def _open_stores(self, index: pd.DataFrame, meta: Mapping[str, Any]) -> None:
        entries = [e for e in store_entries(meta) if int(e.get("size", -1)) == self.size]
        if not entries:
            return
        keys = cache_keys(index)
        for entry in entries:
            store = FrameStore(entry["path"])
            todo = np.flatnonzero(self.store_of < 0)
            pos = store.lookup(keys[todo])
            found = pos >= 0
            if not found.any():
                continue
            rows, pos = todo[found], pos[found]
            now = self.sources(rows)
            moved = np.flatnonzero(store.sources[pos] != now)
            if len(moved):  # the face cache or a database root changed: the store's faces are others
                k = int(moved[0])
                raise FrameStoreError(
                    store.path / ROWS, f"{len(moved)} rows would be read from other files than the frame "
                    f"store was built from (first: {keys[rows[k]]}: stored from {store.sources[pos[k]]}, "
                    f"now {now[k]}); {REBUILD}")
            store.check(pos)  # the rows this reader will serve from the store, not all of it
            self.store_of[rows] = len(self.stores)
            self.store_pos[rows] = pos
            self.stores.append(store)

    def path(self, row: int) -> str:
        """The source image file of index position ``row``."""
        return f"{self._roots[self._db[row]]}/{self._images[row]}"

    def sources(self, rows: np.ndarray) -> np.ndarray:
        """The file each row's face is read from (an image, or a face-cache shard), object array;
        vectorised (a frame store compares millions of rows with it)."""
        rows = np.asarray(rows, dtype=np.int64)
        roots = np.asarray([f"{root}/" for root in self._roots], dtype=object)
        out = roots[self._db[rows]] + self._images[rows] if len(rows) else np.empty(0, dtype=object)
        if self.store is not None:
            entry = self.entry[rows]
            shard = (~self.direct[rows]) & (entry >= 0)
            if shard.any():
                ext = "u8" if self.store.fmt == "raw" else "bin"
                files = np.asarray([str(self.store.path / f"{name}.{ext}") for name in self.store.shards],
                                   dtype=object)
                out[shard] = files[self.store.shard[entry[shard]]]
        return out

    def read(self, rows: np.ndarray | list[int]) -> np.ndarray:
        """Faces of index positions ``rows``: uint8 (len(rows), size, size, 3) RGB, in order."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if not self.valid[rows].all():
            bad = [int(r) for r in rows[~self.valid[rows]]]
            message = f"{self.reason[bad[0]]} ({len(bad)} of the requested rows)"
            raise UnreadableFaceError(self.path(bad[0]), message, bad)
        out = np.empty((len(rows), self.size, self.size, 3), dtype=np.uint8)
        if self.stores:
            which = self.store_of[rows]
            for s, store in enumerate(self.stores):
                sel = np.flatnonzero(which == s)
                if len(sel) == 0:
                    continue
                pos = self.store_pos[rows[sel]]
                for k in np.flatnonzero(np.isin(pos, list(store.bad))) if store.bad else ():
                    path, reason = store.bad[int(pos[k])]
                    raise UnreadableFaceError(path, reason, [int(rows[sel[k]])])
                if len(sel) == len(rows):  # the usual case: one store serves the whole batch
                    return store.read(pos, out=out)
                out[sel] = store.read(pos)
            rest = np.flatnonzero(which < 0)
            if len(rest) < len(rows):
                if len(rest):
                    out[rest] = self._read_sources(rows[rest])
                return out
        return self._read_sources(rows, out)

    def _read_sources(self, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Faces of ``rows`` decoded from their files or the face cache (no frame store)."""
        if out is None:
            out = np.empty((len(rows), self.size, self.size, 3), dtype=np.uint8)
        cached = ~self.direct[rows]
        if cached.all() and self.store is not None:
            return self.store.read(self.entry[rows], self.size, out=out)
        if cached.any():
            assert self.store is not None
            out[cached] = self.store.read(self.entry[rows[cached]], self.size)
        for k in np.flatnonzero(~cached):
            self._read_file(int(rows[k]), out[k])
        return out

    def _read_file(self, row: int, out: np.ndarray) -> None:
        path = self.path(row)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as err:
            raise UnreadableFaceError(path, f"cannot read image: {err.strerror or err}", [row]) from err
        if data[:3] == b"\xff\xd8\xff":  # JPEG of the right size (the usual case): decode in place
            try:
                h, w = simplejpeg.decode_jpeg_header(data)[:2]
                if h == w == self.size:
                    simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=out)
                    return
            except ValueError:
                pass  # decode_image below gives the verdict
        img = decode_image(data)
        if img is None:
            raise UnreadableFaceError(path, "not a readable image", [row])
        out[...] = resize_face(img, self.size)
