"""AffectNet (DATASETS.md §2): the CSV release (v1 file lists) and the newer npy release.

CSV release: ``Manually_Annotated_file_lists/{training,validation}.csv`` (or the CSVs directly
in the root), 9 columns, header present or absent (detected by the first field), 136 landmark
values joined by ``;`` in one field. Images under ``Manually_Annotated_Images/`` (or the
``Manually_Annotated[_compressed]/`` nestings), joined with the first column.

Codes: 0..6 map to ABAW through ``labels.AFFECTNET_TO_ABAW``; 7..10 (contempt, none,
uncertain, no-face) get no expression (counted; the row stays if its VA is usable). VA -2 or any
value outside [-1, 1] is missing. Rows with a ``NULL`` or empty field (a known quirk of the
release) are skipped and counted; rows with a wrong field count or unparsable numbers are
malformed (strict: error with file and line).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mtaffect import labels
from mtaffect.data.numbers import NumberError, json_number, parse_column, parse_number
from mtaffect.data.records import Skips, check_relative_paths, make_records, read_text_lines
from mtaffect.errors import UserError

__all__ = ["read_affectnet", "read_affectnet_csv", "read_affectnet_npy"]

DATABASE = "affectnet"
HEADER_FIRST = "subDirectory_filePath"
CSV_NAMES = {"training.csv": "train", "validation.csv": "validation"}
IMAGE_ROOTS = (
    "Manually_Annotated_Images",
    "Manually_Annotated/Manually_Annotated_Images",
    "Manually_Annotated_compressed/Manually_Annotated_Images",
    "Manually_Annotated_compressed",
    "Manually_Annotated",
)
NPY_SPLITS = {"train_set": "train", "val_set": "validation"}
_MAP = np.full(11, -1, dtype=np.int64)
for _code, _abaw in labels.AFFECTNET_TO_ABAW.items():
    _MAP[_code] = _abaw


def read_affectnet(root: str | Path, skips: Skips | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Records of an AffectNet copy, CSV or npy release (detected from the layout)."""
    root = Path(root)
    skips = skips if skips is not None else Skips()
    if any((root / split / "annotations").is_dir() for split in NPY_SPLITS):
        return read_affectnet_npy(root, skips)
    return read_affectnet_csv(root, skips)


def _find_csvs(root: Path) -> dict[str, Path]:
    for folder in (root / "Manually_Annotated_file_lists", root):
        found = {split: folder / name for name, split in CSV_NAMES.items() if (folder / name).is_file()}
        if found:
            return found
    raise UserError(f"{root}: no AffectNet training.csv / validation.csv (or train_set/annotations) found")


def _image_root(root: Path) -> Path:
    for candidate in IMAGE_ROOTS:
        if (root / candidate).is_dir():
            return root / candidate
    return root


def _existing(image_root: Path, paths: np.ndarray) -> np.ndarray:
    """Mask of ``paths`` (relative to ``image_root``) that exist, listing each folder once."""
    listings: dict[str, set[str]] = {}
    out = np.zeros(len(paths), dtype=bool)
    for i, path in enumerate(paths):
        folder, _, name = path.rpartition("/")
        if folder not in listings:
            try:
                listings[folder] = set(os.listdir(image_root / folder))
            except OSError:
                listings[folder] = set()
        out[i] = name in listings[folder]
    return out


def _parse_landmarks(texts: list[str], path: Path, line_numbers: np.ndarray, skips: Skips) -> np.ndarray:
    """136 float32 per row (object array of arrays); a wrong count or a non-number is malformed."""
    out = np.empty(len(texts), dtype=object)
    if not texts:
        return out
    lists = pc.split_pattern(pa.array(texts, pa.string()), ";")
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
    try:
        flat = pc.cast(pc.utf8_trim_whitespace(lists.flatten()), pa.float32()).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        flat = None
    if flat is not None and (lengths == 136).all():
        out[:] = list(flat.reshape(len(texts), 136))
        return out
    for j, text in enumerate(texts):  # slow path: name the bad lines
        try:
            row = np.array(text.split(";"), dtype=np.float32)
        except ValueError:
            row = np.zeros(0, np.float32)
        if len(row) != 136:
            skips.malformed(
                DATABASE,
                path,
                int(line_numbers[j]),
                f"expected 136 numbers joined by ';' as landmarks, found {text[:40]!r}...",
                reason="bad_landmarks",
            )
            row = None
        out[j] = row
    return out


def _read_csv(path: Path, split: str, image_prefix: str, image_root: Path, skips: Skips) -> pd.DataFrame:
    lines = read_text_lines(path)
    start = 1 if lines and lines[0].split(",", 1)[0].strip() == HEADER_FIRST else 0
    rows: list[list[str]] = []
    numbers: list[int] = []
    for number in range(start + 1, len(lines) + 1):
        line = lines[number - 1]
        if not line:
            skips.count(DATABASE, "blank_line", 1)
            continue
        fields = line.split(",")
        if len(fields) != 9:
            skips.malformed(DATABASE, path, number, f"expected 9 comma-separated fields, found {len(fields)}")
            continue
        if any(f.strip() in ("", "NULL") for f in fields):
            skips.count(DATABASE, "null_or_empty_field", 1, f"{path}:{number}")
            continue
        rows.append(fields)
        numbers.append(number)
    if not rows:
        return make_records(0)
    line_no = np.asarray(numbers)
    columns = list(zip(*rows))
    numeric: dict[str, np.ndarray] = {}
    errors: dict[int, str] = {}
    # one validated parser (mtaffect.data.numbers): finite numbers, the code an int64 integer
    fields = ((1, "x"), (2, "y"), (3, "w"), (4, "h"), (6, "expression"), (7, "valence"), (8, "arousal"))
    for k, name in fields:
        values, bad_k = parse_column(columns[k], integer=name == "expression", what=name)
        numeric[name] = values
        for i, message in bad_k.items():
            errors.setdefault(i, message)
    bad = np.zeros(len(rows), dtype=bool)
    bad[list(errors)] = True
    for i in sorted(errors):
        skips.malformed(DATABASE, path, int(line_no[i]), errors[i])
    code = numeric["expression"]
    bad_code = ~bad & ((code < 0) | (code > 10))
    for i in np.flatnonzero(bad_code):
        skips.malformed(
            DATABASE,
            path,
            int(line_no[i]),
            f"expression code {code[i]} outside 0..10",
            reason="bad_expression_code",
        )
    bad |= bad_code
    image_rel = pd.Series(columns[0]).str.strip().str.replace("\\", "/", regex=False)
    bad |= ~check_relative_paths(image_rel, database=DATABASE, file=path, lines=line_no, skips=skips)
    landmarks = _parse_landmarks([columns[5][i] for i in np.flatnonzero(~bad)], path, line_no[~bad], skips)
    bad[np.flatnonzero(~bad)[np.array([row is None for row in landmarks], dtype=bool)]] = True
    landmarks = landmarks[np.array([row is not None for row in landmarks], dtype=bool)]
    keep = ~bad
    image_rel = image_rel.to_numpy(object)[keep]
    code = code[keep].astype(np.int64)
    val, aro = numeric["valence"][keep], numeric["arousal"][keep]
    va_ok = (val >= labels.VA_MIN) & (val <= labels.VA_MAX) & (aro >= labels.VA_MIN) & (aro <= labels.VA_MAX)
    expression = _MAP[code].astype(np.float64)
    expression[expression < 0] = np.nan
    for native, name in labels.AFFECTNET_EXCLUDED.items():
        skips.count(DATABASE, f"expression_excluded_{name}", int((code == native).sum()))
    skips.count(DATABASE, "va_missing", int((~va_ok).sum()))
    usable = ~np.isnan(expression) | va_ok
    skips.count(DATABASE, "no_usable_label", int((~usable).sum()))
    exists = _existing(image_root, image_rel)
    skips.count(
        DATABASE,
        "missing_image",
        int((usable & ~exists).sum()),
        next((str(p) for p in image_rel[usable & ~exists]), None),
    )
    sel = usable & exists
    # a repeated image: identical labels are a plain duplicate; other labels are a conflict,
    # counted apart (the first row is kept, as for every repeat)
    labelled = pd.DataFrame(
        {"image": image_rel[sel], "e": expression[sel], "v": val[sel], "a": aro[sel], "c": code[sel]}
    )
    duplicated = labelled.duplicated("image").to_numpy()
    identical = labelled.duplicated().to_numpy()
    skips.count(DATABASE, "duplicate_row", int(identical.sum()))
    skips.count(
        DATABASE,
        "conflicting_duplicate_row",
        int((duplicated & ~identical).sum()),
        next((str(p) for p in labelled["image"][duplicated & ~identical]), None),
    )
    sel[np.flatnonzero(sel)[duplicated]] = False
    x, y = numeric["x"][keep][sel], numeric["y"][keep][sel]
    return make_records(
        database=DATABASE,
        split=split,
        track=image_rel[sel],
        image=np.array([image_prefix + p for p in image_rel[sel]], dtype=object),
        expression=expression[sel],
        valence=np.where(va_ok, val, np.nan)[sel],
        arousal=np.where(va_ok, aro, np.nan)[sel],
        source_code=np.array([str(c) for c in code[sel]], dtype=object),
        box_x0=x,
        box_y0=y,
        box_x1=x + numeric["w"][keep][sel],
        box_y1=y + numeric["h"][keep][sel],
        landmarks=landmarks[sel],
    )


def read_affectnet_csv(root: str | Path, skips: Skips | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Records of the CSV release (``training.csv`` → train, ``validation.csv`` → validation)."""
    root = Path(root)
    skips = skips if skips is not None else Skips()
    csvs = _find_csvs(root)
    image_root = _image_root(root)
    prefix = "" if image_root == root else image_root.relative_to(root).as_posix() + "/"
    parts = [_read_csv(path, split, prefix, image_root, skips) for split, path in sorted(csvs.items())]
    info = {
        "release": "csv",
        "files": {s: str(p.relative_to(root)) for s, p in csvs.items()},
        "image_root": prefix.rstrip("/") or ".",
    }
    return pd.concat(parts, ignore_index=True), info


def _scalar(path: Path, *, integer: bool = False, what: str = "value") -> Any:
    """The one number of an annotation ``.npy`` (the release stores it as text, e.g. ``'0.785'``)."""
    value = np.load(path, allow_pickle=False)
    if value.size != 1:
        raise NumberError(f"{what}: expected one value, found {value.size}")
    item = value.reshape(-1)[0]
    if isinstance(item, (bytes, np.bytes_)):
        item = item.decode("utf-8", errors="replace")
    if isinstance(item, str):
        return parse_number(item, integer=integer, what=what)
    return json_number(item.item() if isinstance(item, np.generic) else item, integer=integer, what=what)


def read_affectnet_npy(root: str | Path, skips: Skips | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Records of the npy release: ``<split>/annotations/<id>_{exp,val,aro,lnd}.npy`` + ``images/<id>.*``."""
    root = Path(root)
    skips = skips if skips is not None else Skips()
    parts = []
    for folder, split in NPY_SPLITS.items():
        annotations = root / folder / "annotations"
        if not annotations.is_dir():
            continue
        images = {}
        if (root / folder / "images").is_dir():
            for name in os.listdir(root / folder / "images"):
                stem, dot, _ = name.rpartition(".")
                if dot:
                    images.setdefault(stem, name)
        ids = sorted(n[: -len("_exp.npy")] for n in os.listdir(annotations) if n.endswith("_exp.npy"))
        rows: dict[str, list[Any]] = {
            k: [] for k in ("track", "image", "expression", "valence", "arousal", "source_code", "landmarks")
        }
        for ident in ids:
            try:
                code = _scalar(annotations / f"{ident}_exp.npy", integer=True, what="expression code")
                val = _scalar(annotations / f"{ident}_val.npy", what="valence")
                aro = _scalar(annotations / f"{ident}_aro.npy", what="arousal")
            except (OSError, ValueError) as err:
                skips.malformed(
                    DATABASE,
                    annotations / f"{ident}_*.npy",
                    None,
                    f"unreadable annotation: {err}",
                    reason="bad_annotation_file",
                )
                continue
            lnd_path = annotations / f"{ident}_lnd.npy"
            lnd = None
            if lnd_path.is_file():
                try:
                    lnd = np.asarray(np.load(lnd_path, allow_pickle=False), dtype=np.float32).reshape(-1)
                except (OSError, ValueError):  # a corrupt or object .npy: no landmarks, counted
                    lnd = None
                if lnd is None or lnd.size != 136 or not np.isfinite(lnd).all():
                    skips.count(DATABASE, "bad_landmarks", 1, str(lnd_path))
                    lnd = None
            if ident not in images:
                skips.count(DATABASE, "missing_image", 1, f"{folder}/images/{ident}")
                continue
            abaw = labels.AFFECTNET_TO_ABAW.get(code)
            if code in labels.AFFECTNET_EXCLUDED:
                skips.count(DATABASE, f"expression_excluded_{labels.AFFECTNET_EXCLUDED[code]}", 1)
            elif abaw is None:
                skips.malformed(
                    DATABASE,
                    annotations / f"{ident}_exp.npy",
                    None,
                    f"expression code {code} outside 0..10",
                    reason="bad_expression_code",
                )
                continue
            va_ok = labels.is_valid_va(val) and labels.is_valid_va(aro)
            if not va_ok:
                skips.count(DATABASE, "va_missing", 1)
            if abaw is None and not va_ok:
                skips.count(DATABASE, "no_usable_label", 1)
                continue
            rows["track"].append(ident)
            rows["image"].append(f"{folder}/images/{images[ident]}")
            rows["expression"].append(np.nan if abaw is None else abaw)
            rows["valence"].append(val if va_ok else np.nan)
            rows["arousal"].append(aro if va_ok else np.nan)
            rows["source_code"].append(str(code))
            rows["landmarks"].append(lnd)
        n = len(rows["track"])
        landmarks = np.empty(n, dtype=object)
        landmarks[:] = rows["landmarks"]
        parts.append(
            make_records(
                n,
                database=DATABASE,
                split=split,
                track=np.array(rows["track"], dtype=object),
                image=np.array(rows["image"], dtype=object),
                expression=np.array(rows["expression"], np.float64),
                valence=np.array(rows["valence"], np.float64),
                arousal=np.array(rows["arousal"], np.float64),
                source_code=np.array(rows["source_code"], dtype=object),
                landmarks=landmarks,
            )
        )
    if not parts:
        raise UserError(f"{root}: no AffectNet train_set/annotations or val_set/annotations found")
    return pd.concat(parts, ignore_index=True), {"release": "npy"}
