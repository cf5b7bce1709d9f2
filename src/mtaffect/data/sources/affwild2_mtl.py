"""Aff-Wild2 MTL single-file annotations (s-Aff-Wild2, ABAW3/4/7; DATASETS.md §6).

``training_set_annotations.txt`` / ``validation_set_annotations.txt``: one header line, then one
row per *image*: ``<track>/<NNNNN>.jpg,valence,arousal,expression,AU1,…,AU26``. Sentinels: VA
-5, expression -1 (8 classes, 7 = Other). Only the first four fields are read; numbers follow
:mod:`mtaffect.data.numbers` (finite, expression an integer). Used by the
Aff-Wild2 reader when a copy has these files and no per-track task folders.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from mtaffect import labels
from mtaffect.data.numbers import NumberError, parse_number
from mtaffect.data.records import Skips, read_text_lines

__all__ = ["MTL_FILES", "parse_mtl_file"]

MTL_FILES = {"training_set_annotations.txt": "train", "validation_set_annotations.txt": "validation"}
_IMAGE = re.compile(r"^([^/\\]+)/([0-9]{1,18})\.jpg$")  # ASCII digits, within int64


def parse_mtl_file(path: Path, skips: Skips, database: str = "affwild2") -> pd.DataFrame:
    """Columns track, frame (int64), name (file name), expression (int16, -1 = none), valence, arousal."""
    lines = read_text_lines(path)
    out: dict[str, list] = {k: [] for k in ("track", "frame", "name", "expression", "valence", "arousal")}
    lines_kept: list[int] = []
    for number in range(2, len(lines) + 1):
        line = lines[number - 1]
        if not line:
            continue
        fields = line.split(",")
        match = _IMAGE.match(fields[0].strip()) if fields else None
        try:
            if match is None or len(fields) < 4:
                raise NumberError("expected '<track>/<NNNNN>.jpg,valence,arousal,expression,AUs...'")
            v = parse_number(fields[1], what="valence")
            a = parse_number(fields[2], what="arousal")
            e = parse_number(fields[3], integer=True, lo=-1, hi=labels.OTHER_INDEX, what="expression code")
        except NumberError as err:
            skips.malformed(database, path, number, str(err))
            continue
        va_ok = labels.is_valid_va(v) and labels.is_valid_va(a)
        if not va_ok and not (
            np.isclose(v, labels.AFFWILD2_VA_MISSING) or np.isclose(a, labels.AFFWILD2_VA_MISSING)
        ):
            skips.count(database, "va_out_of_range", 1, f"{path}:{number}")
        lines_kept.append(number)
        out["track"].append(match.group(1))
        out["frame"].append(int(match.group(2)))
        out["name"].append(fields[0].strip().split("/")[-1])
        out["expression"].append(e)
        out["valence"].append(v if va_ok else np.nan)
        out["arousal"].append(a if va_ok else np.nan)
    out["line"] = lines_kept
    table = pd.DataFrame(out).astype(
        {"frame": np.int64, "expression": np.int16, "valence": np.float64, "arousal": np.float64}
    )
    return _drop_duplicates(table, path, skips, database)


def _drop_duplicates(table: pd.DataFrame, path: Path, skips: Skips, database: str) -> pd.DataFrame:
    """One row per (track, frame): identical repeats counted (``duplicate_line``); repeats with other
    labels are malformed (strict: error at the repeat's line; lenient: every copy dropped, counted
    as ``conflicting_duplicate``) — never a silent pick of one of them."""
    labels_of = ["track", "frame", "expression", "valence", "arousal"]
    same = table.duplicated(labels_of)
    skips.count(database, "duplicate_line", int(same.sum()))
    table = table[~same]
    repeated = table.duplicated(["track", "frame"], keep=False)
    if repeated.any():
        for line in table.loc[table.duplicated(["track", "frame"]), "line"]:
            skips.malformed(
                database, path, int(line), "the same image is labelled again with other labels",
                reason="conflicting_duplicate",
            )
        table = table[~repeated]
    return table.drop(columns="line").reset_index(drop=True)
