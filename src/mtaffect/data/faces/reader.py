"""FaceReader: faces of index rows, from the released crops or the face cache."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import simplejpeg

from mtaffect.data.faces.cache import STATUS, CacheStore
from mtaffect.data.faces.crops import cache_keys, decode_image, resize_face, row_methods
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
    """

    def __init__(self, index: pd.DataFrame, meta: Mapping[str, Any], size: int = 112) -> None:
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

    def path(self, row: int) -> str:
        """The source image file of index position ``row``."""
        return f"{self._roots[self._db[row]]}/{self._images[row]}"

    def read(self, rows: np.ndarray | list[int]) -> np.ndarray:
        """Faces of index positions ``rows``: uint8 (len(rows), size, size, 3) RGB, in order."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if not self.valid[rows].all():
            bad = [int(r) for r in rows[~self.valid[rows]]]
            message = f"{self.reason[bad[0]]} ({len(bad)} of the requested rows)"
            raise UnreadableFaceError(self.path(bad[0]), message, bad)
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
