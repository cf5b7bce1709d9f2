"""AFEW-VA (DATASETS.md §4): clip folders ``<d>/<d>.json`` + ``NNNNN.png`` full film frames.

Clips are found recursively, so both layouts work: nested part folders (``01/001/``) and flat
(``001/``). The JSON ``frames`` keys are 0-based 5-digit stems matched to PNG files **by key**
(never by position); valence/arousal are integers in -10..10 divided by 10; the 68 landmark
pairs are kept (flattened float32) for the face cache. Keys without an image and images without
a key are counted. Values must be JSON numbers (``true`` or ``"3"`` is malformed, never 0.1 or
0.3); a frame key written twice is counted when both copies agree and malformed when they differ
(JSON parsers silently keep the last copy). The authors use every clip for training, so every
frame is ``split="train"``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtaffect import labels
from mtaffect.data.numbers import INT64_DIGITS, NumberError, json_number
from mtaffect.data.records import Skips, make_records
from mtaffect.errors import UserError

__all__ = ["read_afew_va", "find_clips"]

DATABASE = "afew_va"
_KEY = re.compile(rf"[0-9]{{1,{INT64_DIGITS}}}")


def find_clips(root: Path, max_depth: int = 3) -> list[Path]:
    """Clip folders ``<d>/`` holding ``<d>.json`` (d = digits), sorted by clip name then path."""
    found: list[Path] = []
    stack = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        names = {e.name for e in entries}
        if folder != root and folder.name.isdigit() and f"{folder.name}.json" in names:
            found.append(folder)
            continue
        if depth < max_depth:
            stack.extend(
                (Path(e.path), depth + 1) for e in entries if e.is_dir() and not e.name.startswith(".")
            )
    return sorted(found, key=lambda p: (p.name, str(p)))


class _Object(dict):
    """A JSON object that remembers repeated keys (``json`` keeps the last one silently)."""

    repeated: dict[str, list[Any]]


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    out = _Object()
    out.repeated = {}
    for key, value in pairs:
        if key in out:
            out.repeated.setdefault(key, [out[key]]).append(value)
        else:
            out[key] = value
    return out


def _landmarks(value: Any) -> np.ndarray | None:
    """68 (x, y) pairs as 136 float32, or None when absent; booleans and strings are refused."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise NumberError("landmarks must be a list of [x, y] number pairs")
    flat = [x for pair in value for x in (pair if isinstance(pair, list) else [pair])]
    if any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in flat):
        raise NumberError("landmarks must be a list of [x, y] number pairs")
    return np.asarray(flat, dtype=np.float32).reshape(-1)


def _frame(key: str, entry: Any) -> tuple[int, float, float, np.ndarray | None]:
    """(frame number, valence, arousal as written, landmarks) of one ``frames`` entry."""
    if not _KEY.fullmatch(key):
        raise NumberError(f"frame key {key[:40]!r} is not a number")
    if not isinstance(entry, dict):
        raise NumberError("the entry is not an object")
    for name in ("valence", "arousal", "landmarks"):
        values = getattr(entry, "repeated", {}).get(name, [])
        if any(v != values[0] for v in values):
            raise NumberError(f"{name} given twice with different values {values[:2]}")
    v = json_number(entry["valence"], what="valence")
    a = json_number(entry["arousal"], what="arousal")
    return int(key), v, a, _landmarks(entry.get("landmarks"))


def _read_clip(clip: Path, root: Path, skips: Skips) -> dict[str, list[Any]] | None:
    json_path = clip / f"{clip.name}.json"
    try:
        meta = json.loads(
            json_path.read_text(encoding="utf-8-sig"), object_pairs_hook=_object
        )
        frames = meta["frames"]
        if not isinstance(frames, dict):
            raise TypeError("'frames' is not an object")
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as err:
        skips.malformed(
            DATABASE, json_path, None, f"not an AFEW-VA clip JSON ({str(err)[:200]})", reason="bad_clip_json"
        )
        return None
    pngs = {n[:-4] for n in os.listdir(clip) if n.endswith(".png") and n[:-4].isdigit()}
    out: dict[str, list[Any]] = {"frame": [], "image": [], "valence": [], "arousal": [], "landmarks": []}
    prefix = clip.relative_to(root).as_posix() + "/"
    repeated = getattr(frames, "repeated", {})
    seen: set[int] = set()
    for key in sorted(frames):
        if key in repeated:  # a frame key written twice: never keep one of two different labels
            if any(v != repeated[key][0] for v in repeated[key]):
                skips.malformed(
                    DATABASE,
                    json_path,
                    None,
                    f"frame {key!r} is given twice with different values",
                    reason="conflicting_duplicate_frame",
                )
                continue
            skips.count(DATABASE, "duplicate_frame_key", len(repeated[key]) - 1, f"{prefix}{key}")
        try:
            frame, v, a, lnd = _frame(key, frames[key])
        except (KeyError, NumberError) as err:
            skips.malformed(DATABASE, json_path, None, f"frame {key[:40]!r}: {err}", reason="bad_frame_entry")
            continue
        if frame in seen:  # "00001" and "1": one frame under two spellings
            skips.malformed(
                DATABASE,
                json_path,
                None,
                f"frame {key!r} repeats frame number {frame}",
                reason="conflicting_duplicate_frame",
            )
            continue
        seen.add(frame)
        if key not in pngs:
            skips.count(DATABASE, "missing_image", 1, f"{prefix}{key}.png")
            continue
        v, a = v / labels.AFEW_VA_SCALE, a / labels.AFEW_VA_SCALE
        if not (labels.is_valid_va(v) and labels.is_valid_va(a)):
            skips.count(DATABASE, "va_out_of_range", 1, f"{prefix}{key}")
            continue
        if lnd is not None and (lnd.size != 136 or not np.isfinite(lnd).all()):
            skips.count(DATABASE, "bad_landmarks", 1, f"{prefix}{key}")
            lnd = None
        out["frame"].append(frame)
        out["image"].append(f"{prefix}{key}.png")
        out["valence"].append(v)
        out["arousal"].append(a)
        out["landmarks"].append(lnd)
    skips.count(DATABASE, "image_without_label", len(pngs - set(frames)))
    return out


def read_afew_va(root: str | Path, skips: Skips | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Frame records of an AFEW-VA copy (track = clip number as written, e.g. ``"001"``)."""
    root = Path(root)
    skips = skips if skips is not None else Skips()
    clips = find_clips(root)
    if not clips:
        raise UserError(f"{root}: no AFEW-VA clip folder (<d>/<d>.json) found")
    seen: dict[str, Path] = {}
    parts: list[pd.DataFrame] = []
    for clip in clips:
        if clip.name in seen:
            skips.count(DATABASE, "duplicate_clip", 1, f"{clip} (also {seen[clip.name]})")
            continue
        seen[clip.name] = clip
        rows = _read_clip(clip, root, skips)
        if not rows or not rows["frame"]:
            continue
        n = len(rows["frame"])
        landmarks = np.empty(n, dtype=object)
        landmarks[:] = rows["landmarks"]
        parts.append(
            make_records(
                n,
                database=DATABASE,
                split="train",
                track=clip.name,
                frame=np.array(rows["frame"], np.int64),
                image=np.array(rows["image"], dtype=object),
                valence=np.array(rows["valence"]),
                arousal=np.array(rows["arousal"]),
                landmarks=landmarks,
            )
        )
    layout = "nested" if any(len(c.relative_to(root).parts) > 1 for c in clips) else "flat"
    records = pd.concat(parts, ignore_index=True) if parts else make_records(0)
    return records, {"clips": len(seen), "layout": layout}
