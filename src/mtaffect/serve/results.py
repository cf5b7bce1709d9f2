"""Reading ``mtaffect predict --out`` folders for the web app: listing, series per zoom level, summaries.

A *run* is a folder holding ``report.json`` (one ``predict --out`` folder, or one job of the app);
a *result* is one per-input folder inside it (``<run>/<video stem>`` or ``<run>/images``), named
by its path relative to the results root (``"job-1a2b/single_face"``; ``"single_face"`` when the
root is itself a run). Every id coming from a request is resolved with :func:`safe_child`, which
refuses anything that leaves the root.

Series are served downsampled: the frames of a window are grouped into buckets of ``2**level``
frames, the smallest power of two that keeps the window under the requested number of points.
Buckets are aligned to multiples of their size, so panning keeps them stable. Frames where a
person has no face are NaN and do not count in a bucket's mean; a bucket without any face is a
gap (``null`` in JSON).
"""

from __future__ import annotations

import io
import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mtaffect.labels import EXPRESSIONS
from mtaffect.predict.media import MEDIA_EXTENSIONS

__all__ = ["ResultStore", "Loaded", "safe_child", "bucket_series", "summary"]

TABLE = "predictions"
DOWNLOADS = ("predictions.csv", "predictions.parquet", "va.png", "expressions.png", "circumplex.png",
             "overlay.mp4")
# Browsers play these containers (H.264/VP9/AV1 inside); others (.mov HEVC, .avi) use the overlay.
PLAYABLE = {".mp4", ".m4v", ".webm", ".ogv"}


class NotFound(LookupError):
    """An id or file that is not (or not safely) inside the results root."""


def safe_child(root: Path, rel: str) -> Path:
    """``root / rel`` resolved, or :class:`NotFound` if it escapes ``root`` (``..``, absolute, links)."""
    if not rel or "\x00" in rel or rel.startswith(("/", "\\")) or ":" in rel.split("/")[0]:
        raise NotFound(rel)
    parts = rel.replace("\\", "/").split("/")
    if any(p in ("..",) for p in parts):
        raise NotFound(rel)
    root = root.resolve()
    path = (root / rel).resolve()
    if path != root and not path.is_relative_to(root):
        raise NotFound(rel)
    return path


@dataclass
class Loaded:
    """One result's table, arranged for fast slicing: one slot per decoded frame (videos)."""

    kind: str  # "video" or "images"
    inputs: list[str]  # the input(s) as written in the table
    table: pd.DataFrame
    times: np.ndarray  # (F,) seconds per frame (videos); image index for images
    tracks: list[int]
    # per track: (F, 9) float64 = 7 probabilities, valence, arousal; NaN where no face
    values: dict[int, np.ndarray] = field(default_factory=dict)
    complete: bool = True
    found: np.ndarray | None = None  # (rows,) face_found as bool
    row_time: np.ndarray | None = None  # (rows,) time of each row, NaN for photos


TABLE_FILES = (f"{TABLE}.parquet", f"{TABLE}.csv", f"{TABLE}.partial.csv")
MARKER = "done.json"  # predict's finished marker, written last in each per-input folder


def table_file(folder: Path) -> Path | None:
    """The most complete table of a per-input folder: Parquet, CSV, or the rows streamed so far."""
    return next((folder / n for n in TABLE_FILES if (folder / n).is_file()), None)


def _read_table(folder: Path) -> tuple[pd.DataFrame, bool]:
    path = table_file(folder)
    if path is None:
        raise NotFound(str(folder))
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
    else:  # still running: the partial CSV holds every row written so far; a half-written last
        # line (the writer appends while we read) is left out
        data = path.read_bytes()
        data = data[: data.rfind(b"\n") + 1]
        df = pd.read_csv(io.BytesIO(data), dtype={"input": "string", "expression": "string"})
    return df, (folder / MARKER).is_file()


def load_result(folder: Path) -> Loaded:
    df, complete = _read_table(folder)
    kind = "images" if folder.name == "images" else "video"
    found = df["face_found"].astype("boolean").fillna(False).to_numpy(bool)
    tracks = sorted(int(t) for t in pd.unique(df.loc[found, "track_id"].dropna()))
    cols = [*EXPRESSIONS, "valence", "arousal"]
    names = [str(x) for x in pd.unique(df["input"].astype(str))]  # in order of appearance
    if kind == "images":
        inputs = names
        slot = df["input"].astype(str).map({name: i for i, name in enumerate(inputs)}).to_numpy(int)
        times = np.arange(len(inputs), dtype=float)
    else:
        inputs = names[:1]
        frames = df["frame"].to_numpy(dtype="int64", na_value=0)
        first = np.unique(frames, return_index=True)
        uniq, idx = first
        slot = np.searchsorted(uniq, frames)
        times = df["time"].to_numpy(dtype=float, na_value=np.nan)[idx]
        if len(times) and np.isnan(times).all():  # aligned crops carry no time: one unit per frame
            times = uniq.astype(float)
    values: dict[int, np.ndarray] = {}
    tid = df["track_id"].to_numpy(dtype="float64", na_value=np.nan)
    data = df[cols].to_numpy(dtype=float, na_value=np.nan)
    for t in tracks:
        rows = found & (tid == t)
        arr = np.full((len(times), len(cols)), np.nan)
        arr[slot[rows]] = data[rows]
        values[t] = arr
    row_time = df["time"].to_numpy(dtype=float, na_value=np.nan)
    return Loaded(kind, inputs, df, times, tracks, values, complete, found, row_time)


def bucket_series(loaded: Loaded, t0: float | None, t1: float | None, points: int) -> dict:
    """The window ``[t0, t1]`` of every track, averaged over buckets of ``2**level`` frames."""
    times = loaded.times
    n_all = len(times)
    i0 = 0 if t0 is None else int(np.searchsorted(times, t0, side="left"))
    i1 = n_all if t1 is None else int(np.searchsorted(times, t1, side="right"))
    i0, i1 = max(0, min(i0, n_all)), max(0, min(i1, n_all))
    # one frame on each side, so a line reaches the window's edges
    i0, i1 = max(0, i0 - 1), min(n_all, i1 + 1)
    points = max(16, min(int(points), 20000))
    level = max(0, math.ceil(math.log2(max(1, i1 - i0) / points)))
    size = 1 << level
    a, b = (i0 // size) * size, min(n_all, -(-i1 // size) * size)
    nb = -(-(b - a) // size)
    pad = nb * size - (b - a)

    def pooled(x: np.ndarray) -> np.ndarray:
        x = np.concatenate([x, np.full((pad, *x.shape[1:]), np.nan)]) if pad else x
        x = x.reshape(nb, size, *x.shape[1:])
        ok = ~np.isnan(x)
        count = ok.sum(axis=1)
        total = np.where(ok, x, 0.0).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    out = {"level": level, "bucket": size, "first": a, "time": _json(pooled(times[a:b])), "tracks": {}}
    for t in loaded.tracks:
        v = pooled(loaded.values[t][a:b])
        probs = v[:, :7]
        gap = np.isnan(probs).any(axis=1)
        expr = np.where(gap, -1, np.argmax(np.nan_to_num(probs, nan=-1.0), axis=1))
        out["tracks"][str(t)] = {
            "probs": [_json(probs[:, k]) for k in range(7)],
            "valence": _json(v[:, 7]),
            "arousal": _json(v[:, 8]),
            "expression": [int(e) if e >= 0 else None for e in expr],
        }
    return out


def _json(x: np.ndarray, digits: int = 4) -> list:
    """NaN → None, rounded: what the charts draw, a third the bytes of full floats."""
    return [None if v != v else v for v in np.round(x.astype(float), digits).tolist()]


def frame_rows(loaded: Loaded, t0: float, t1: float, limit: int = 5000) -> list[dict]:
    """Raw face rows (boxes, probabilities, valence/arousal) of the frames in ``[t0, t1]``."""
    time = loaded.row_time
    sel = loaded.found & (time >= t0) & (time <= t1)
    rows = loaded.table.loc[sel].head(limit)
    return _rows_json(rows)


def _rows_json(rows: pd.DataFrame) -> list[dict]:
    out = []
    box = rows[["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy(dtype=float, na_value=np.nan)
    probs = rows[list(EXPRESSIONS)].to_numpy(dtype=float, na_value=np.nan)
    va = rows[["valence", "arousal"]].to_numpy(dtype=float, na_value=np.nan)
    frame = rows["frame"].to_numpy(dtype="int64", na_value=0)
    time = rows["time"].to_numpy(dtype=float, na_value=np.nan)
    track = rows["track_id"].to_numpy(dtype="int64", na_value=-1)
    for i in range(len(rows)):
        out.append(
            {
                "frame": int(frame[i]),
                "time": None if time[i] != time[i] else round(float(time[i]), 6),
                "track": int(track[i]),
                "box": _json(box[i], 1),
                "probs": _json(probs[i]),
                "valence": _json(va[i, :1])[0],
                "arousal": _json(va[i, 1:])[0],
            }
        )
    return out


def image_rows(loaded: Loaded, index: int) -> list[dict]:
    df = loaded.table
    name = loaded.inputs[index]
    sel = (df["input"].astype(str) == name) & df["face_found"].astype("boolean").fillna(False)
    return _rows_json(df.loc[sel.to_numpy(bool)])


def summary(loaded: Loaded, index: int | None = None) -> list[dict]:
    """Per person: frames with a face, time share per expression, mean and spread of valence/arousal."""
    df = loaded.table
    if index is not None and loaded.kind == "images":
        df = df[df["input"].astype(str) == loaded.inputs[index]]
    found = df["face_found"].astype("boolean").fillna(False).to_numpy(bool)
    df = df[found]
    n_frames = len(loaded.times) if loaded.kind == "video" else 1
    out = []
    for t, g in df.groupby(df["track_id"].astype("int64")):
        idx = g["expression_index"].to_numpy(dtype="int64", na_value=-1)
        share = [float(np.mean(idx == k)) if len(idx) else 0.0 for k in range(7)]
        va = g[["valence", "arousal"]].to_numpy(dtype=float, na_value=np.nan)
        out.append(
            {
                "track": int(t),
                "frames": len(g),
                "presence": len(g) / n_frames if n_frames else 0.0,
                "share": share,
                "valence_mean": _stat(np.nanmean, va[:, 0]),
                "valence_sd": _stat(np.nanstd, va[:, 0]),
                "arousal_mean": _stat(np.nanmean, va[:, 1]),
                "arousal_sd": _stat(np.nanstd, va[:, 1]),
            }
        )
    return out


def _stat(fn, x: np.ndarray) -> float | None:
    x = x[~np.isnan(x)]
    return round(float(fn(x)), 4) if len(x) else None


class ResultStore:
    """The results root: runs, results, cached tables (reloaded when their file changes)."""

    def __init__(self, root: str | Path, media_roots: list[str | Path] | None = None) -> None:
        self.root = Path(root).resolve()
        self.media_roots = [Path(p).resolve() for p in (media_roots or [])]
        self._cache: dict[Path, tuple[tuple, Loaded]] = {}
        self._lock = threading.Lock()

    def runs(self) -> list[Path]:
        found = [self.root] if (self.root / "report.json").is_file() else []
        if self.root.is_dir():
            found += sorted(
                p for p in self.root.iterdir()
                if p.is_dir() and not p.name.startswith(".") and (p / "report.json").is_file()
            )
        return found

    def rel(self, path: Path) -> str:
        rel = path.resolve().relative_to(self.root).as_posix()
        return "" if rel == "." else rel

    def results(self, query: str = "") -> list[dict]:
        """Every result under the root (newest run first), filtered by ``query`` (case-insensitive)."""
        out = []
        for run in sorted(self.runs(), key=lambda p: p.stat().st_mtime, reverse=True):
            report = _report(run)
            entries = {e.get("output"): e for e in report.get("inputs", []) if e.get("output")}
            for folder in sorted(p for p in run.iterdir() if p.is_dir() and table_file(p) is not None):
                e = entries.get(folder.name, {})
                item = {
                    "id": self.rel(folder),
                    "run": self.rel(run),
                    "output": folder.name,
                    "input": Path(str(e.get("input", folder.name))).name,
                    "status": e.get("status", "ok") if (folder / MARKER).is_file() else "running",
                    "frames": e.get("frames", e.get("images")),
                    "tracks": e.get("tracks", e.get("faces")),
                    "error": e.get("error"),
                }
                text = " ".join(str(v) for v in item.values()).lower()
                if query.lower() in text:
                    out.append(item)
        return out

    def folder(self, rid: str) -> Path:
        path = safe_child(self.root, rid)
        if path == self.root or table_file(path) is None:
            raise NotFound(rid)
        return path

    def run_folder(self, rid: str) -> Path:
        path = safe_child(self.root, rid)
        if path == self.root or not (path / "report.json").is_file() or path.name.startswith("."):
            raise NotFound(rid)
        return path

    def load(self, rid: str) -> Loaded:
        folder = self.folder(rid)
        key = tuple(
            (p.stat().st_mtime_ns, p.stat().st_size) if p.exists() else None
            for p in (*(folder / n for n in TABLE_FILES), folder / MARKER)
        )
        with self._lock:
            hit = self._cache.get(folder)
            if hit and hit[0] == key:
                return hit[1]
        loaded = load_result(folder)
        with self._lock:
            if len(self._cache) > 8:  # a few tables in memory: an hour of video is ~100 MB as pandas
                self._cache.pop(next(iter(self._cache)))
            self._cache[folder] = (key, loaded)
        return loaded

    def media(self, rid: str, index: int = 0) -> Path | None:
        """The original video or image of a result, when it lies under the root or a media root."""
        loaded = self.load(rid)
        if not 0 <= index < len(loaded.inputs):
            return None
        raw = Path(loaded.inputs[index])
        run = self.folder(rid).parent
        candidates = [raw] if raw.is_absolute() else [run / raw, self.root / raw, Path.cwd() / raw]
        candidates.append(run / ".media" / raw.name)  # a job's uploads, if the root was moved
        for c in candidates:
            c = c.resolve()
            allowed = [self.root, *self.media_roots]
            if c.is_file() and c.suffix.lower() in MEDIA_EXTENSIONS and any(
                c == r or c.is_relative_to(r) for r in allowed
            ):
                return c
        return None

    def meta(self, rid: str) -> dict:
        folder = self.folder(rid)
        loaded = self.load(rid)
        report = _report(folder.parent)
        entry = next((e for e in report.get("inputs", []) if e.get("output") == folder.name), {})
        media = [self.media(rid, i) for i in range(len(loaded.inputs))]
        times = loaded.times
        finite = times[np.isfinite(times)] if loaded.kind == "video" else np.array([])
        return {
            "id": rid,
            "kind": loaded.kind,
            "inputs": [Path(s).name for s in loaded.inputs],
            "media": [m is not None for m in media],
            "playable": [m is not None and m.suffix.lower() in PLAYABLE for m in media],
            "overlay": (folder / "overlay.mp4").is_file(),
            "frames": len(times),
            "start": float(finite[0]) if len(finite) else 0.0,
            "end": float(finite[-1]) if len(finite) else 0.0,
            "tracks": loaded.tracks,
            "complete": loaded.complete,
            "status": entry.get("status"),
            "error": entry.get("error"),
            "expressions": list(EXPRESSIONS),
            "downloads": [name for name in DOWNLOADS if (folder / name).is_file()],
        }


def _report(run: Path) -> dict:
    try:
        return json.loads((run / "report.json").read_text())
    except (OSError, ValueError):
        return {}
