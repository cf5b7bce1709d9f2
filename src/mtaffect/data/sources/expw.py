"""ExpW (DATASETS.md §3): ``label/label.lst`` + ``image/origin/<name>.jpg``.

One line per *face*, 8 space-separated fields: image name, face id, box **top, left, right,
bottom**, detector confidence, expression code (0 angry … 6 neutral). Several faces share one
photo, so a record is keyed by (image, face id): ``track`` is ``<image name>#<face id>`` and the
face cache names crops by that key (the authors' crops overwrote each other, D#14).

Quirks handled: listed photos that are absent (counted, dropped), duplicate lines (identical:
counted and dropped; same key with different content: first kept, counted), inverted or empty
boxes (counted, dropped). ExpW has no official split: every face is ``split="train"``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtaffect import labels
from mtaffect.data.numbers import parse_column
from mtaffect.data.records import Skips, check_relative_paths, make_records, read_text_lines
from mtaffect.errors import UserError

__all__ = ["read_expw"]

DATABASE = "expw"
LABEL_FILES = ("label/label.lst", "label.lst")
IMAGE_DIRS = ("image/origin", "origin", "image")
_MAP = np.full(7, -1, dtype=np.int64)
for _code, _abaw in labels.EXPW_TO_ABAW.items():
    _MAP[_code] = _abaw


def read_expw(root: str | Path, skips: Skips | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Face records of an ExpW copy (one per label line that names an existing photo)."""
    root = Path(root)
    skips = skips if skips is not None else Skips()
    label_file = next((root / p for p in LABEL_FILES if (root / p).is_file()), None)
    if label_file is None:
        raise UserError(f"{root}: no ExpW label/label.lst found")
    image_dir = next((root / p for p in IMAGE_DIRS if (root / p).is_dir()), root)
    prefix = "" if image_dir == root else image_dir.relative_to(root).as_posix() + "/"
    rows: list[list[str]] = []
    numbers: list[int] = []
    for number, line in enumerate(read_text_lines(label_file), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 8:
            skips.malformed(
                DATABASE, label_file, number, f"expected 8 space-separated fields, found {len(fields)}"
            )
            continue
        rows.append(fields)
        numbers.append(number)
    if not rows:
        return make_records(0), {"label_file": str(label_file.relative_to(root))}
    line_no = np.asarray(numbers)
    cols = list(zip(*rows))
    # one validated parser (mtaffect.data.numbers): a face id is an int64 integer, never a float
    # (1e19 or 9223372036854775808 would collapse two faces); box and score are finite floats
    face_id, errors = parse_column(cols[1], integer=True, lo=0, what="face id")
    box = []
    for k, what in ((2, "top"), (3, "left"), (4, "right"), (5, "bottom"), (6, "confidence")):
        values, bad_k = parse_column(cols[k], what=what)
        box.append(values)
        for i, message in bad_k.items():
            errors.setdefault(i, message)
    top, left, right, bottom, _conf = box
    code, bad_codes = parse_column(cols[7], integer=True, what="expression code")
    for i, message in bad_codes.items():
        errors.setdefault(i, message)
    bad = np.zeros(len(rows), dtype=bool)
    bad[list(errors)] = True
    for i in sorted(errors):
        skips.malformed(DATABASE, label_file, int(line_no[i]), errors[i])
    bad_code = ~bad & ((code < 0) | (code > 6))
    for i in np.flatnonzero(bad_code):
        skips.malformed(
            DATABASE,
            label_file,
            int(line_no[i]),
            f"expression code {code[i]} outside 0..6",
            reason="bad_expression_code",
        )
    bad |= bad_code
    names = pd.Series(cols[0]).str.replace("\\", "/", regex=False)
    bad |= ~check_relative_paths(names, database=DATABASE, file=label_file, lines=line_no, skips=skips)
    keep = ~bad
    table = pd.DataFrame(
        {
            "name": names.to_numpy(object),
            "face_id": face_id,
            "top": top,
            "left": left,
            "right": right,
            "bottom": bottom,
            "code": code,
        }
    )[keep]
    exact_dup = table.duplicated()
    skips.count(DATABASE, "duplicate_line", int(exact_dup.sum()))
    table = table[~exact_dup]
    key_dup = table.duplicated(["name", "face_id"])
    skips.count(
        DATABASE,
        "conflicting_duplicate_face",
        int(key_dup.sum()),
        next((f"{n}#{f}" for n, f in table.loc[key_dup, ["name", "face_id"]].to_numpy()), None),
    )
    table = table[~key_dup]
    empty_box = (table["right"] <= table["left"]) | (table["bottom"] <= table["top"])
    skips.count(DATABASE, "empty_box", int(empty_box.sum()))
    table = table[~empty_box]
    listing: dict[str, set[str]] = {}
    exists = np.zeros(len(table), dtype=bool)
    for i, name in enumerate(table["name"].to_numpy()):
        folder, _, base = name.rpartition("/")
        if folder not in listing:
            try:
                listing[folder] = set(os.listdir(image_dir / folder))
            except OSError:
                listing[folder] = set()
        exists[i] = base in listing[folder]
    skips.count(DATABASE, "missing_image", int((~exists).sum()), next(iter(table["name"][~exists]), None))
    table = table[exists]
    names_kept = table["name"].to_numpy(object)
    faces = table["face_id"].to_numpy()
    records = make_records(
        database=DATABASE,
        split="train",
        track=np.array([f"{n}#{f}" for n, f in zip(names_kept, faces)], dtype=object),
        image=np.array([prefix + n for n in names_kept], dtype=object),
        expression=_MAP[table["code"].to_numpy()],
        source_code=np.array([str(c) for c in table["code"].to_numpy()], dtype=object),
        face_id=faces,
        box_x0=table["left"].to_numpy(),
        box_y0=table["top"].to_numpy(),
        box_x1=table["right"].to_numpy(),
        box_y1=table["bottom"].to_numpy(),
    )
    return records, {"label_file": str(label_file.relative_to(root)), "image_dir": prefix.rstrip("/") or "."}
