"""A generic CSV for users' own data: an image path plus any of expression / valence / arousal.

Columns (header required, any order, extra columns ignored):

* ``image`` (required): path relative to the CSV's folder (absolute paths and ``..`` rejected);
* ``expression``: an ABAW index 0..6 (7 = Other) or a name from ``labels.EXPRESSIONS_8``
  (case-insensitive); empty = no label;
* ``valence``, ``arousal``: floats in [-1, 1]; empty = no label (both or neither);
* optional ``split`` (train / validation / test, default train), ``track`` (default: the image
  path), ``frame`` (integer, for videos).

At least one of expression / valence+arousal must be a column. The database root is the CSV's
folder.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtaffect import labels
from mtaffect.data.records import Skips, check_relative_paths, make_records, read_text_lines
from mtaffect.errors import InputFormatError

__all__ = ["read_generic"]

_NAMES = {name.lower(): i for i, name in enumerate(labels.EXPRESSIONS_8)}


def _expression(text: str) -> float:
    text = text.strip()
    if not text:
        return np.nan
    if text.lower() in _NAMES:
        return float(_NAMES[text.lower()])
    value = int(text)  # ValueError for anything else
    if not 0 <= value <= labels.OTHER_INDEX:
        raise ValueError(f"expression {value} outside 0..{labels.OTHER_INDEX}")
    return float(value)


def _va(text: str) -> float:
    text = text.strip()
    if not text:
        return np.nan
    value = float(text)
    if not labels.is_valid_va(value):
        raise ValueError(f"{value:g} outside [-1, 1]")
    return value


def read_generic(
    path: str | Path, database: str, skips: Skips | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Records of a user CSV (see the module docstring); ``database`` names them in the index."""
    path = Path(path)
    skips = skips if skips is not None else Skips()
    lines = read_text_lines(path)
    if not lines:
        raise InputFormatError(path, "empty file; expected a header with 'image' and label columns", 1)
    reader = csv.reader(io.StringIO("\n".join(lines)))
    header = [h.strip().lower() for h in next(reader)]
    if "image" not in header:
        raise InputFormatError(path, f"no 'image' column in the header {header}", 1)
    has_expr = "expression" in header
    has_va = "valence" in header and "arousal" in header
    if not has_expr and not has_va:
        raise InputFormatError(path, "needs an 'expression' column or 'valence' and 'arousal' columns", 1)
    col = {name: header.index(name) for name in header}
    out: dict[str, list[Any]] = {
        k: [] for k in ("image", "expression", "valence", "arousal", "split", "track", "frame", "line")
    }
    for fields in reader:
        number = reader.line_num
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            skips.malformed(database, path, number, f"expected {len(header)} fields, found {len(fields)}")
            continue
        try:
            expr = _expression(fields[col["expression"]]) if has_expr else np.nan
            v = _va(fields[col["valence"]]) if has_va else np.nan
            a = _va(fields[col["arousal"]]) if has_va else np.nan
            if np.isnan(v) != np.isnan(a):
                raise ValueError("valence and arousal must be given together")
            split = fields[col["split"]].strip().lower() if "split" in col else "train"
            if split not in labels.SPLITS:
                raise ValueError(f"split {split!r} is not one of {labels.SPLITS}")
            frame = fields[col["frame"]].strip() if "frame" in col else ""
            frame_value = float(int(frame)) if frame else np.nan
        except ValueError as err:
            skips.malformed(database, path, number, str(err))
            continue
        image = fields[col["image"]].strip().replace("\\", "/")
        if np.isnan(expr) and np.isnan(v) and split != "test":
            skips.count(database, "no_label", 1, f"{path}:{number}")
            continue
        out["image"].append(image)
        out["expression"].append(expr)
        out["valence"].append(v)
        out["arousal"].append(a)
        out["split"].append(split)
        track = fields[col["track"]].strip() if "track" in col else ""
        out["track"].append(track or image)
        out["frame"].append(frame_value)
        out["line"].append(number)
    images = pd.Series(out["image"], dtype=object)
    ok = check_relative_paths(
        images, database=database, file=path, lines=np.asarray(out["line"]), skips=skips
    )
    root = path.parent
    listing: dict[str, set[str]] = {}
    for i, image in enumerate(out["image"]):
        if not ok[i]:
            continue
        folder, _, name = image.rpartition("/")
        if folder not in listing:
            try:
                listing[folder] = set(os.listdir(root / folder))
            except OSError:
                listing[folder] = set()
        if name not in listing[folder]:
            ok[i] = False
            skips.count(database, "missing_image", 1, image)
    keys = pd.DataFrame({k: out[k] for k in ("split", "track", "frame", "image")})
    duplicated = np.zeros(len(ok), dtype=bool)
    duplicated[np.flatnonzero(ok)] = keys[ok].duplicated().to_numpy(dtype=bool)
    skips.count(database, "duplicate_row", int(duplicated.sum()))
    sel = np.flatnonzero(ok & ~duplicated)

    def pick(key: str, dtype: Any = object) -> np.ndarray:
        return np.asarray(out[key], dtype=dtype)[sel] if len(out[key]) else np.zeros(0, dtype)

    records = make_records(
        len(sel),
        database=database,
        split=pick("split"),
        track=pick("track"),
        frame=pick("frame", np.float64),
        image=pick("image"),
        expression=pick("expression", np.float64),
        valence=pick("valence", np.float64),
        arousal=pick("arousal", np.float64),
    )
    return records, {"file": path.name}
