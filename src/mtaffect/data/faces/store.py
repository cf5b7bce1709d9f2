"""The frame store: every face of a split decoded once, into one uint8 array file, memory-mapped.

The GRU feature cache reads each face once per chunk and `mtaffect evaluate` once per run, but both
still decode a JPEG (or crop a photo) for every face every time they run, and a GPU consumes faces
far faster than a few processes decode them (BENCHMARKS.md, issue 10). A frame store holds exactly
what :meth:`FaceReader.read` returns for each distinct face (same size, same pixels), so a reader
that finds one serves memory copies instead of decodes and every consumer's output is unchanged, bit
for bit.

Layout of ``<store_dir>/`` (one folder per split and size, e.g. ``train-112``)::

    frames.npy     uint8 (n, size, size, 3) RGB, a plain .npy (header + raw bytes; never pickled)
    rows.parquet   row order: key (``cache_keys``), source file, its size (bytes) and mtime (ns)
    progress.json  chunks written so far (atomically, after their rows are flushed)
    store.json     version, size, n, chunk, faces that could not be read, ``complete``

``store.json`` is rewritten with ``complete: false`` before any byte of ``frames.npy`` changes and
with ``complete: true`` last, so a reader never uses a store that a build is still writing (it
refuses it, naming the file). A rerun resumes: finished chunks are kept unless one of their source
files changed size or mtime since (those chunks are rebuilt); a different row list starts over.
Opening a store checks the sources of the rows a reader uses against ``rows.parquet`` (the reader
must decode each row from the same file: a face cache rebuilt elsewhere or another database root is
refused; that file's size and mtime must be unchanged); either makes :class:`FrameStoreError` name
it and the command that rebuilds the store. The builder is :mod:`mtaffect.data.faces.store_build`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtaffect.errors import InputFormatError

__all__ = ["STORE_VERSION", "FrameStore", "FrameStoreError", "store_entries"]

STORE_VERSION = 1
DATA, ROWS, MANIFEST, PROGRESS = "frames.npy", "rows.parquet", "store.json", "progress.json"
STAT_BLOCK = 8192
REBUILD = "rebuild it with `mtaffect cache --index INDEX --out DIR --frame-store STORE_DIR`"


class FrameStoreError(InputFormatError):
    """A frame store that is missing, unfinished or older than its source files."""


def _stat(paths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Size (bytes) and mtime (ns) of each path, (-1, -1) where it cannot be read; one stat per
    distinct path (a face-cache shard serves thousands of rows), in threads (``os.stat`` releases the
    GIL: Aff-Wild2's 1.7 M training images are a few seconds of system calls on one thread)."""
    inverse, unique = pd.factorize(np.asarray(paths, dtype=object))  # hashing: no fixed-width copy
    sizes = np.full(len(unique), -1, dtype=np.int64)
    mtimes = np.full(len(unique), -1, dtype=np.int64)

    def block(lo: int) -> None:
        for i in range(lo, min(len(unique), lo + STAT_BLOCK)):
            try:
                st = os.stat(unique[i])
            except OSError:
                continue
            sizes[i], mtimes[i] = st.st_size, st.st_mtime_ns

    starts = range(0, len(unique), STAT_BLOCK)
    if len(starts) > 1:
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            list(pool.map(block, starts))
    elif len(unique):
        block(0)
    return sizes[inverse], mtimes[inverse]


class FrameStore:
    """A finished store folder: look up face keys, check their sources, read faces.

    ``keys`` / ``sources``: row order and source file of each face; ``bad``: positions whose face
    could not be read at build time → (source, reason), served as the error the decode would raise.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise FrameStoreError(manifest_path, f"no frame store here ({err}); {REBUILD}") from err
        if manifest.get("version") != STORE_VERSION:
            raise FrameStoreError(manifest_path, f"frame store version {manifest.get('version')} "
                                  f"(this mtaffect reads {STORE_VERSION}); {REBUILD}")
        if not manifest.get("complete"):
            raise FrameStoreError(manifest_path, f"the frame store is unfinished (an interrupted build?); "
                                  f"rerun the build to finish it: {REBUILD}")
        self.size, self.n = int(manifest["size"]), int(manifest["n"])
        self.split = manifest.get("split")
        rows = pd.read_parquet(self.path / ROWS)
        if len(rows) != self.n:
            raise FrameStoreError(self.path / ROWS, f"{len(rows)} rows for a store of {self.n}; {REBUILD}")
        self.keys = rows["key"].to_numpy(dtype=object)
        self.sources = rows["source"].to_numpy(dtype=object)
        self.source_bytes = rows["bytes"].to_numpy(np.int64)
        self.source_mtime = rows["mtime_ns"].to_numpy(np.int64)
        self.bad = {int(k): (str(v[0]), str(v[1])) for k, v in (manifest.get("bad") or {}).items()}
        data = self.path / DATA
        try:  # the .npy header is parsed (never unpickled); the file must hold exactly these faces
            faces = np.load(data, mmap_mode="r", allow_pickle=False)
            ok = (faces.shape == (self.n, self.size, self.size, 3) and faces.dtype == np.uint8
                  and data.stat().st_size == faces.offset + faces.nbytes)
            found = f"{faces.dtype} {faces.shape}"
            del faces
        except (OSError, ValueError) as err:
            raise FrameStoreError(data, f"unreadable frame store data ({err}); {REBUILD}") from err
        if not ok:
            raise FrameStoreError(data, f"holds {found}, not {self.n} faces of {self.size} px; {REBUILD}")
        self._lookup = pd.Index(self.keys)
        self._map: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        """A pickled store (a DataLoader worker's) only reads: the row table stays behind (hundreds of
        MB for Aff-Wild2) and the memory map is reopened lazily."""
        state = dict(self.__dict__)
        state.update(_map=None, keys=None, sources=None, source_bytes=None, source_mtime=None, _lookup=None)
        return state

    @property
    def faces(self) -> np.ndarray:
        """The faces, uint8 ``(n, size, size, 3)``, memory-mapped read-only."""
        if self._map is None:
            self._map = np.load(self.path / DATA, mmap_mode="r", allow_pickle=False)
        return self._map

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Store position of each key (:func:`~mtaffect.data.faces.crops.cache_keys`), −1 if absent."""
        return np.asarray(self._lookup.get_indexer(pd.Index(np.asarray(keys, dtype=object))), np.int64)

    def stale(self, positions: np.ndarray | None = None) -> np.ndarray:
        """Positions (of ``positions``, default all) whose source file changed size or mtime."""
        positions = np.arange(self.n) if positions is None else np.unique(np.asarray(positions, np.int64))
        sizes, mtimes = _stat(self.sources[positions])
        changed = (sizes != self.source_bytes[positions]) | (mtimes != self.source_mtime[positions])
        return positions[changed]

    def check(self, positions: np.ndarray | None = None) -> None:
        """Raise :class:`FrameStoreError` if a source of ``positions`` (default all) changed."""
        changed = self.stale(positions)
        if len(changed):
            first = int(changed[0])
            raise FrameStoreError(self.path / ROWS, f"{len(changed)} source files changed since the frame "
                                  f"store was built (first: {self.sources[first]}); {REBUILD}")

    def read(self, positions: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Faces at ``positions``: uint8 ``(len, size, size, 3)``, copied (into ``out`` when given)."""
        positions = np.asarray(positions, dtype=np.int64)
        if out is None:
            return self.faces[positions]
        np.take(self.faces, positions, axis=0, out=out)
        return out


def store_entries(meta: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The frame stores an index's metadata lists (``meta["frame_stores"]``), as written by
    :func:`mtaffect.data.faces.store_build.build_frame_stores`."""
    return [dict(e) for e in (meta.get("frame_stores") or [])]
