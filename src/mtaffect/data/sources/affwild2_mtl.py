"""Aff-Wild2 MTL single-file annotations (s-Aff-Wild2, ABAW3/4/7; DATASETS.md §6).

``training_set_annotations.txt`` / ``validation_set_annotations.txt``: one header line, then one
row per *image*: ``<track>/<NNNNN>.jpg,valence,arousal,expression,AU1,…,AU26``. Sentinels: VA
-5, expression -1 (8 classes, 7 = Other). Only the first four fields are read. Used by the
Aff-Wild2 reader when a copy has these files and no per-track task folders.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from mtaffect import labels
from mtaffect.data.records import Skips, read_text_lines

__all__ = ["MTL_FILES", "parse_mtl_file"]

MTL_FILES = {"training_set_annotations.txt": "train", "validation_set_annotations.txt": "validation"}
_IMAGE = re.compile(r"^([^/\\]+)/(\d+)\.jpg$")


def parse_mtl_file(path: Path, skips: Skips, database: str = "affwild2") -> pd.DataFrame:
    """Columns track, frame (int64), name (file name), expression (int16, -1 = none), valence, arousal."""
    lines = read_text_lines(path)
    out: dict[str, list] = {k: [] for k in ("track", "frame", "name", "expression", "valence", "arousal")}
    for number in range(2, len(lines) + 1):
        line = lines[number - 1]
        if not line:
            continue
        fields = line.split(",")
        match = _IMAGE.match(fields[0].strip()) if fields else None
        try:
            if match is None or len(fields) < 4:
                raise ValueError("expected '<track>/<NNNNN>.jpg,valence,arousal,expression,AUs...'")
            v, a, e = float(fields[1]), float(fields[2]), int(float(fields[3]))
            if not -1 <= e <= labels.OTHER_INDEX:
                raise ValueError(f"expression code {e} outside -1..{labels.OTHER_INDEX}")
        except ValueError as err:
            skips.malformed(database, path, number, str(err))
            continue
        va_ok = labels.is_valid_va(v) and labels.is_valid_va(a)
        if not va_ok and not (
            np.isclose(v, labels.AFFWILD2_VA_MISSING) or np.isclose(a, labels.AFFWILD2_VA_MISSING)
        ):
            skips.count(database, "va_out_of_range", 1, f"{path}:{number}")
        out["track"].append(match.group(1))
        out["frame"].append(int(match.group(2)))
        out["name"].append(fields[0].strip().split("/")[-1])
        out["expression"].append(e)
        out["valence"].append(v if va_ok else np.nan)
        out["arousal"].append(a if va_ok else np.nan)
    table = pd.DataFrame(out)
    return table.astype(
        {"frame": np.int64, "expression": np.int16, "valence": np.float64, "arousal": np.float64}
    )
