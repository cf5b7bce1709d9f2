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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtaffect import labels
from mtaffect.data.numbers import parse_number
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
    return float(parse_number(text, integer=True, lo=0, hi=labels.OTHER_INDEX, what="expression"))


def _va(text: str, what: str) -> float:
    text = text.strip()
    if not text:
        return np.nan
    return float(parse_number(text, lo=labels.VA_MIN, hi=labels.VA_MAX, what=what))


def _rows(reader: Any, path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of a ``csv.reader``; a CSV syntax error is a one-line error."""
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise InputFormatError(path, f"not a readable CSV line ({err})", reader.line_num) from None
        yield reader.line_num, fields


def read_generic(
    path: str | Path, database: str, skips: Skips | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Records of a user CSV (see the module docstring); ``database`` names them in the index."""
    path = Path(path)
    skips = skips if skips is not None else Skips()
    lines = read_text_lines(path)
    if not lines:
        raise InputFormatError(path, "empty file; expected a header with 'image' and label columns", 1)
    reader = _rows(csv.reader(io.StringIO("\n".join(lines))), path)
    header = [h.strip().lower() for h in next(reader)[1]]
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
    for number, fields in reader:
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            skips.malformed(database, path, number, f"expected {len(header)} fields, found {len(fields)}")
            continue
        try:
            expr = _expression(fields[col["expression"]]) if has_expr else np.nan
            v = _va(fields[col["valence"]], "valence") if has_va else np.nan
            a = _va(fields[col["arousal"]], "arousal") if has_va else np.nan
            if np.isnan(v) != np.isnan(a):
                raise ValueError("valence and arousal must be given together")
            split = fields[col["split"]].strip().lower() if "split" in col else "train"
            if split not in labels.SPLITS:
                raise ValueError(f"split {split!r} is not one of {labels.SPLITS}")
            frame = fields[col["frame"]].strip() if "frame" in col else ""
            frame_value = np.nan
            if frame:  # stored as float64 on the way to Int64: exact up to 2**53
                frame_value = float(parse_number(frame, integer=True, lo=0, hi=2**53, what="frame"))
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
    # a repeated (split, track, frame, image): identical labels are counted; other labels are
    # malformed (strict: error at the repeat's line; lenient: every copy dropped and counted)
    key_names = ["split", "track", "frame", "image"]
    rows = pd.DataFrame({k: out[k] for k in (*key_names, "expression", "valence", "arousal", "line")})[ok]
    identical = rows.duplicated(key_names + ["expression", "valence", "arousal"])
    skips.count(database, "duplicate_row", int(identical.sum()))
    rows = rows[~identical]
    conflict = rows.duplicated(key_names, keep=False)
    for line in rows.loc[rows.duplicated(key_names), "line"]:
        skips.malformed(
            database, path, int(line), "the same image is labelled again with other labels",
            reason="conflicting_duplicate",
        )
    keep = np.zeros(len(ok), dtype=bool)
    keep[rows.index[~conflict.to_numpy(dtype=bool)]] = True
    sel = np.flatnonzero(keep)

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
