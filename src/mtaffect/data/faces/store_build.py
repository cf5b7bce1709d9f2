"""Building frame stores (:mod:`mtaffect.data.faces.store`): decode every face of a split once, in
resumable chunks, through a :class:`~mtaffect.data.faces.reader.FaceReader` that reads no store."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from mtaffect.data.faces.crops import cache_keys
from mtaffect.data.faces.reader import FaceReader, UnreadableFaceError
from mtaffect.data.faces.store import (
    DATA,
    MANIFEST,
    PROGRESS,
    ROWS,
    STORE_VERSION,
    FrameStore,
    _stat,
    store_entries,
)
from mtaffect.data.prefetch import ordered_chunks
from mtaffect.io import write_json, write_parquet

__all__ = ["build_frame_store", "build_frame_stores"]


class _Chunks:
    """Chunk ``todo[i]`` of a store: ``(chunk, faces uint8 (k, S, S, 3), [(row, source, reason)])``.

    Faces come from a :class:`FaceReader` that reads no frame store; a face it cannot read is stored
    black and recorded, so the store reports the same error the decode would."""

    def __init__(self, reader: Any, n: int, chunk: int, todo: list[int]) -> None:
        self.reader, self.n, self.chunk, self.todo = reader, n, chunk, todo

    def __call__(self, i: int) -> tuple[int, np.ndarray, list[tuple[int, str, str]]]:
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
                      split: str | None = None, chunk: int = 1024, workers: int = 0,
                      progress: bool = True) -> FrameStore:
    """Decode every distinct face of ``index`` (at ``size``, as :class:`FaceReader` reads it) into the
    store ``folder``; resumable (see :mod:`mtaffect.data.faces.store`). ``workers``: decoding processes
    (:func:`mtaffect.data.prefetch.ordered_chunks`). Returns the finished :class:`FrameStore`."""
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

    def record() -> None:
        write_json(folder / PROGRESS, {"chunk": chunk, "done": sorted(done),
                                       "bad": {str(r): list(v) for r, v in sorted(bad.items())}})

    record()  # the kept chunks only, before the new sizes/mtimes hide which chunks were stale
    write_parquet(rows, folder / ROWS, index=False)
    data_path = folder / DATA
    if done:
        data = np.load(data_path, mmap_mode="r+", allow_pickle=False)
    else:  # a new file (a process still mapping the old one keeps its inode), then the faces
        data_path.unlink(missing_ok=True)
        data = np.lib.format.open_memmap(data_path, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
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
        record()
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
                       chunk: int = 1024, workers: int = 0, progress: bool = True) -> dict[str, Any]:
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
