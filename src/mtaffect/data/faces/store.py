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
Opening a store checks the sources of the rows a reader uses against ``rows.parquet``; a changed
file makes :class:`FrameStoreError` name it and the command that rebuilds the store.
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
from tqdm import tqdm

from mtaffect.errors import InputFormatError
from mtaffect.io import write_json, write_parquet

__all__ = [
    "STORE_VERSION", "FrameStore", "FrameStoreError", "build_frame_store", "build_frame_stores",
    "store_entries",
]

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
    :func:`build_frame_stores`."""
    return [dict(e) for e in (meta.get("frame_stores") or [])]


class _Chunks:
    """Chunk ``todo[i]`` of a store: ``(chunk, faces uint8 (k, S, S, 3), [(row, source, reason)])``.

    Faces come from a :class:`FaceReader` that reads no frame store; a face it cannot read is stored
    black and recorded, so the store reports the same error the decode would."""

    def __init__(self, reader: Any, n: int, chunk: int, todo: list[int]) -> None:
        self.reader, self.n, self.chunk, self.todo = reader, n, chunk, todo

    def __call__(self, i: int) -> tuple[int, np.ndarray, list[tuple[int, str, str]]]:
        from mtaffect.data.faces.reader import UnreadableFaceError

        c = self.todo[i]
        rows = np.arange(c * self.chunk, min(self.n, (c + 1) * self.chunk))
        try:
            return c, self.reader.read(rows), []
        except UnreadableFaceError:
            pass
        faces = np.zeros((len(rows), self.reader.size, self.reader.size, 3), np.uint8)
        bad = []
        for k, row in enumerate(rows):
            try:
                faces[k] = self.reader.read([row])[0]
            except UnreadableFaceError as err:
                bad.append((int(row), err.path, str(err).removeprefix(f"{err.path}: ")))
        return c, faces, bad


def build_frame_store(index: pd.DataFrame, meta: Mapping[str, Any], folder: str | Path, *, size: int = 112,
                      split: str | None = None, chunk: int = 4096, workers: int = 0,
                      progress: bool = True) -> FrameStore:
    """Decode every distinct face of ``index`` (at ``size``, as :class:`FaceReader` reads it) into the
    store ``folder``; resumable (see the module docstring). ``workers``: decoding processes
    (:func:`mtaffect.data.prefetch.ordered_chunks`). Returns the finished :class:`FrameStore`."""
    from mtaffect.data.faces.crops import cache_keys
    from mtaffect.data.faces.reader import FaceReader
    from mtaffect.data.prefetch import ordered_chunks

    folder = Path(folder)
    distinct = pd.Series(cache_keys(index)).drop_duplicates().sort_values(kind="stable")
    keys = distinct.to_numpy(dtype=object)  # sorted: a track's frames stay in order
    faces_index = index.iloc[distinct.index.to_numpy()].reset_index(drop=True)
    reader = FaceReader(faces_index, meta, size, frame_stores=False)
    n = len(keys)
    sources = reader.sources(np.arange(n))
    sizes, mtimes = _stat(sources)  # before any face is read: a file changed meanwhile is caught later
    rows = pd.DataFrame({"key": keys, "source": sources, "bytes": sizes, "mtime_ns": mtimes})
    n_chunks = -(-n // chunk)
    done, bad = _resumable(folder, rows, size, chunk)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"version": STORE_VERSION, "size": size, "n": n, "split": split, "chunk": chunk,
                "complete": False}
    write_json(folder / MANIFEST, manifest)  # first: from here on no reader uses the folder
    write_parquet(rows, folder / ROWS, index=False)
    data_path = folder / DATA
    shape = (n, size, size, 3)
    if done:
        data = np.load(data_path, mmap_mode="r+", allow_pickle=False)
    else:
        data = np.lib.format.open_memmap(data_path, mode="w+", dtype=np.uint8, shape=shape)
    todo = [c for c in range(n_chunks) if c not in done]
    bar = tqdm(total=n, initial=n - sum(min(chunk, n - c * chunk) for c in todo), unit="face",
               disable=not progress, desc=f"frame store {folder}")
    for c, faces, failed in ordered_chunks(_Chunks(reader, n, chunk, todo), len(todo), workers=workers):
        lo = c * chunk
        data[lo : lo + len(faces)] = np.asarray(faces)
        data.flush()
        bad = {r: v for r, v in bad.items() if not lo <= r < lo + chunk}
        bad.update({r: (path, reason) for r, path, reason in failed})
        done.add(c)
        write_json(folder / PROGRESS, {"chunk": chunk, "done": sorted(done),
                                       "bad": {str(r): list(v) for r, v in sorted(bad.items())}})
        bar.update(len(faces))
    bar.close()
    del data
    manifest.update(complete=True, bad={str(r): list(v) for r, v in sorted(bad.items())})
    write_json(folder / MANIFEST, manifest)
    return FrameStore(folder)


def _resumable(folder: Path, rows: pd.DataFrame, size: int, chunk: int) -> tuple[set[int], dict]:
    """Chunks of an earlier build of the same rows that can be kept (with their bad faces): none if
    the rows, size or chunk differ; otherwise every recorded chunk whose sources are unchanged."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        old = pd.read_parquet(folder / ROWS)
        record = (json.loads((folder / PROGRESS).read_text(encoding="utf-8"))
                  if not manifest.get("complete") else None)
        data = np.load(folder / DATA, mmap_mode="r", allow_pickle=False)
        shape_ok = data.shape == (len(rows), size, size, 3) and data.dtype == np.uint8
        del data
    except (OSError, ValueError, KeyError):
        return set(), {}
    same = (manifest.get("version") == STORE_VERSION and manifest.get("size") == size
            and manifest.get("chunk") == chunk and shape_ok and len(old) == len(rows)
            and bool((old["key"].to_numpy(dtype=object) == rows["key"].to_numpy(dtype=object)).all()))
    if not same:
        return set(), {}
    if record is None:  # a finished store: every chunk
        done = set(range(-(-len(rows) // chunk)))
        bad_items = manifest.get("bad") or {}
    else:
        done = set(record.get("done", [])) if record.get("chunk") == chunk else set()
        bad_items = record.get("bad") or {}
    def differs(column: str, dtype: Any) -> np.ndarray:
        return old[column].to_numpy(dtype=dtype) != rows[column].to_numpy(dtype=dtype)

    changed = np.flatnonzero(differs("bytes", np.int64) | differs("mtime_ns", np.int64)
                             | differs("source", object))
    done -= {int(r) // chunk for r in changed}
    bad = {int(r): (str(v[0]), str(v[1])) for r, v in bad_items.items() if int(r) // chunk in done}
    return done, bad


def build_frame_stores(index: pd.DataFrame, meta: Mapping[str, Any], store_dir: str | Path, *,
                       splits: tuple[str, ...] | list[str] = ("train", "validation"), size: int = 112,
                       chunk: int = 4096, workers: int = 0, progress: bool = True) -> dict[str, Any]:
    """One store per split of ``index`` under ``store_dir`` (``<split>-<size>/``); returns a copy of
    ``meta`` whose ``frame_stores`` list names them (replacing earlier entries of the same split and
    size): write it with the index (``write_index``) so that every :class:`FaceReader` finds them."""
    splits = list(splits)
    entries = [e for e in store_entries(meta) if not (e.get("size") == size and e.get("split") in splits)]
    for split in splits:
        rows = index[(index["split"] == split).to_numpy(dtype=bool)]
        if rows.empty:
            continue
        store = build_frame_store(rows, meta, Path(store_dir) / f"{split}-{size}", size=size, split=split,
                                  chunk=chunk, workers=workers, progress=progress)
        entries.append({"path": str(store.path.resolve()), "split": split, "size": size, "n": store.n,
                        "unreadable": len(store.bad)})
    out = dict(meta)
    out["frame_stores"] = entries
    return out
