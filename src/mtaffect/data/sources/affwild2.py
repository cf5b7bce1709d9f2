"""Aff-Wild2 as released for ABAW (DATASETS.md §1, §6): per-track label files + cropped_aligned.

Layout accepted (every edition): task folders ``EXPR_Set | EXPR_Classification_Challenge |
EXPR_Recognition_Challenge`` and ``VA_Set | VA_Estimation_Challenge`` anywhere up to three
levels under the root (``annotations/``, ``3rd ABAW Annotations/`` ...), split folders
``Train_Set | Training_Set | Validation_Set``, one ``<track>.txt`` per track, image folders
``cropped_aligned/<track>/NNNNN.jpg`` (and ``cropped_aligned_new_50_vids``), test lists
anywhere up to three levels down.

The frame rule (§1.5): data row r (0-based, after the header) labels image number r + 1. A frame
becomes a row of the index when its image exists and at least one task labels it; a frame
labelled by EXPR and VA *in the same split* is one row carrying both labels (the shared
annotation join, on the frame number, exact track names). The reader is columnar: each label
file is parsed in one numpy call, each image folder listed once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mtaffect import labels
from mtaffect.data.numbers import NumberError
from mtaffect.data.records import Skips, make_records, string_array
from mtaffect.data.sources import abaw_text
from mtaffect.data.sources.affwild2_mtl import MTL_FILES, parse_mtl_file
from mtaffect.data.sources.testlists import is_test_list_name, read_test_list, test_list_task

__all__ = [
    "read_affwild2",
    "AffWild2Layout",
    "find_layout",
    "list_frames",
    "parse_expr_file",
    "parse_va_file",
]

DATABASE = "affwild2"
TASK_DIRS = {
    "EXPR_Set": "EXPR",
    "EXPR_Classification_Challenge": "EXPR",
    "EXPR_Recognition_Challenge": "EXPR",
    "VA_Set": "VA",
    "VA_Estimation_Challenge": "VA",
}
SPLIT_DIRS = {"Train_Set": "train", "Training_Set": "train", "Validation_Set": "validation"}
IMAGE_ROOTS = ("cropped_aligned", "cropped_aligned_new_50_vids")
_SKIP_DIRS = {*IMAGE_ROOTS, "videos", "cropped", "batch1", "batch2", "batch3"}
_CODE_TEXT = [str(i) for i in range(8)]


@dataclass
class AffWild2Layout:
    """Where the annotation files, image folders and test lists of one Aff-Wild2 copy are."""

    root: Path
    label_files: dict[tuple[str, str], dict[str, Path]] = field(default_factory=dict)
    """(task, split) -> {track: file}"""
    task_dirs: dict[str, Path] = field(default_factory=dict)
    image_dirs: dict[str, Path] = field(default_factory=dict)
    """track -> its image folder"""
    test_lists: list[Path] = field(default_factory=list)
    mtl_files: dict[str, Path] = field(default_factory=dict)
    """split -> MTL single-file annotations (s-Aff-Wild2)"""


def find_layout(root: str | Path, skips: Skips) -> AffWild2Layout:
    """Locate task folders, image folders and test lists under ``root`` (no file is parsed)."""
    root = Path(root)
    layout = AffWild2Layout(root=root)
    stack: list[tuple[Path, int]] = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir():
                if entry.name in TASK_DIRS:
                    task = TASK_DIRS[entry.name]
                    if task in layout.task_dirs:
                        raise _ambiguous(task, layout.task_dirs[task], Path(entry.path))
                    layout.task_dirs[task] = Path(entry.path)
                elif entry.name in IMAGE_ROOTS and depth == 0:
                    image_root = Path(entry.path)
                    if (image_root / entry.name).is_dir():  # zip extracted into its own name
                        image_root = image_root / entry.name
                    for track_dir in os.scandir(image_root):
                        if track_dir.is_dir() and track_dir.name not in layout.image_dirs:
                            layout.image_dirs[track_dir.name] = Path(track_dir.path)
                elif depth < 2 and entry.name not in _SKIP_DIRS and not entry.name.startswith("."):
                    stack.append((Path(entry.path), depth + 1))
            elif entry.is_file() and entry.name in MTL_FILES:
                layout.mtl_files.setdefault(MTL_FILES[entry.name], Path(entry.path))
            elif entry.is_file() and is_test_list_name(entry.name) and test_list_task(entry.name):
                layout.test_lists.append(Path(entry.path))
    for task, task_dir in layout.task_dirs.items():
        for split_dir in sorted(task_dir.iterdir()):
            split = SPLIT_DIRS.get(split_dir.name)
            if split is None or not split_dir.is_dir():
                continue
            files = layout.label_files.setdefault((task, split), {})
            for entry in os.scandir(split_dir):
                if entry.is_file() and entry.name.endswith(".txt"):
                    files[entry.name[:-4]] = Path(entry.path)
                elif not entry.name.startswith("."):
                    skips.count(DATABASE, "ignored_annotation_entries", 1, entry.path)
    layout.test_lists.sort()
    return layout


def _ambiguous(task: str, first: Path, second: Path) -> Exception:
    from mtaffect.errors import UserError

    return UserError(
        f"two {task} annotation folders under the Aff-Wild2 root: {first} and {second}; "
        "point --affwild2 at a copy holding one edition"
    )


_FRAME_NAME = r"^[0-9]{1,18}\.jpg$"  # longer stems would overflow int64 in pyarrow's cast: ignored


def list_frames(folder: Path) -> tuple[np.ndarray, pa.Array, int]:
    """Frame numbers (sorted, int64) and file names of ``folder``'s ``digits.jpg`` images.

    Returns (frames, names as a pyarrow string array, ignored) where ``ignored`` counts other
    entries (``.DS_Store``...). Frame numbers come from the file stem, never from list position.
    """
    try:
        listing = os.listdir(folder)
    except OSError:
        return np.zeros(0, np.int64), pa.array([], pa.string()), 0
    names = pa.array(listing, pa.string())
    names = names.filter(pc.match_substring_regex(names, _FRAME_NAME))
    ignored = len(listing) - len(names)
    frames = pc.cast(pc.utf8_slice_codeunits(names, 0, -4), pa.int64()).to_numpy(zero_copy_only=False)
    order = np.argsort(frames, kind="stable")
    frames = frames[order]
    names = names.take(pa.array(order))
    if len(frames) > 1:
        dup = np.zeros(len(frames), dtype=bool)
        dup[1:] = frames[1:] == frames[:-1]
        if dup.any():  # 00001.jpg and 0001.jpg: keep the first name
            ignored += int(dup.sum())
            frames, names = frames[~dup], names.filter(pa.array(~dup))
    return frames, names, ignored


def _reporter(skips: Skips, path: Path, lines: set[int]) -> abaw_text.Report:
    """A malformed row of ``path``: raised (strict) or counted (lenient) by ``skips``; its line is
    added to ``lines``."""

    def report(line: int, message: str) -> None:
        skips.malformed(DATABASE, path, line, message)
        lines.add(line)

    return report


def _bad_header(skips: Skips, path: Path, expected: str, found: str) -> None:
    """A label file whose header is not its task's: raised (strict) or the file skipped (lenient)."""
    skips.malformed(DATABASE, path, 1, f"expected {expected}, found {found[:80]!r}", reason="bad_header")


def parse_expr_file(path: Path, skips: Skips) -> tuple[np.ndarray, int] | None:
    """EXPR codes per data row (int16; -1 = unannotated or skipped) and the class count (7 or 8).

    The header names the classes, but each data line holds one integer (§1.3). Returns None
    when the header is wrong and the file is skipped (lenient mode). Rows after damage that may
    have moved them (:func:`abaw_text.aligned_rows`) are dropped, counted as ``unaligned_rows``.
    """
    track = abaw_text.read_track_file(path)
    n_classes = abaw_text.expr_classes(track.header)
    if n_classes is None:
        _bad_header(skips, path, f"an EXPR header ({abaw_text.EXPR_HEADER}[,Other])", track.header)
        return None
    malformed: set[int] = set()
    codes = abaw_text.parse_expr_rows(track, _reporter(skips, path, malformed))
    bad = (codes < -1) | (codes >= n_classes)
    bad[[r - 2 for r in malformed]] = False  # reported already (left -1)
    if bad.any():
        for r in np.flatnonzero(bad):
            skips.malformed(
                DATABASE,
                path,
                int(r) + 2,
                f"expression code {codes[r]} outside -1..{n_classes - 1}",
                reason="bad_expression_code",
            )
        codes[bad] = -1
    if malformed or bad.any():
        refused = bad.copy()
        refused[[r - 2 for r in malformed]] = True

        def acceptable(text: str) -> bool:
            try:
                return -1 <= abaw_text.parse_expr_line(text) < n_classes
            except NumberError:
                return False

        aligned = abaw_text.aligned_rows(track, refused, abaw_text.EXPR_ROWS, acceptable)
        _drop_unaligned(skips, path, codes, refused, aligned)
    return codes.astype(np.int16), n_classes


def parse_va_file(path: Path, skips: Skips) -> np.ndarray | None:
    """(R, 2) float64 valence/arousal per data row; NaN = unannotated (-5), out of range or skipped.

    Both values must be finite numbers: ``-0.25,nan`` or ``Infinity,0.2`` is malformed (never
    half a label, never an infinite one). Rows after damage that may have moved them are dropped,
    counted as ``unaligned_rows``.
    """
    track = abaw_text.read_track_file(path)
    if not abaw_text.is_va_header(track.header):
        _bad_header(skips, path, f"the header '{abaw_text.VA_HEADER}'", track.header)
        return None
    malformed: set[int] = set()
    values = abaw_text.parse_va_rows(track, _reporter(skips, path, malformed))
    if malformed:
        refused = np.zeros(len(values), dtype=bool)
        refused[[r - 2 for r in malformed]] = True
        aligned = abaw_text.aligned_rows(track, refused, abaw_text.VA_ROWS, _va_ok)
        _drop_unaligned(skips, path, values, refused, aligned)
    sentinel = np.isclose(values, labels.AFFWILD2_VA_MISSING).any(axis=1)
    finite = np.isfinite(values).all(axis=1)
    out_of_range = finite & ~sentinel & ((values < labels.VA_MIN) | (values > labels.VA_MAX)).any(axis=1)
    skips.count(DATABASE, "va_out_of_range", int(out_of_range.sum()), str(path))
    values[sentinel | out_of_range] = np.nan
    return values


def _va_ok(text: str) -> bool:
    try:
        abaw_text.parse_va_line(text)
    except NumberError:
        return False
    return True


def _drop_unaligned(skips: Skips, path: Path, values: np.ndarray, refused: np.ndarray, aligned: int) -> None:
    """Rows ``aligned:`` of a per-track array lose their labels: damage at or after row ``aligned``
    may have moved them, and a moved row labels another frame. The rows dropped that were not
    refused (counted as malformed already) are counted as ``unaligned_rows``."""
    if aligned >= len(values):
        return
    skips.count(
        DATABASE,
        "unaligned_rows",
        int((~refused[aligned:]).sum()),
        f"{path}:{aligned + 2}: this row and the later ones may have moved (split, joined or inserted lines)",
    )
    values[aligned:] = -1 if values.dtype.kind == "i" else np.nan


def _take(array: np.ndarray, frames: np.ndarray, missing: Any) -> np.ndarray:
    """array[frame - 1] where 1 <= frame <= len(array), else ``missing`` (row r labels image r + 1)."""
    inside = (frames >= 1) & (frames <= len(array))
    out = np.full((len(frames), *array.shape[1:]), missing, dtype=array.dtype)
    out[inside] = array[frames[inside] - 1]
    return out


@dataclass
class _Columns:
    """Per-group chunks of the output columns; strings as codes or pyarrow arrays (no Python str per row)."""

    splits: list[str] = field(default_factory=lambda: ["train", "validation", "test"])
    tracks: list[str] = field(default_factory=list)
    split: list[np.ndarray] = field(default_factory=list)
    track: list[np.ndarray] = field(default_factory=list)
    frame: list[np.ndarray] = field(default_factory=list)
    image: list[pa.Array] = field(default_factory=list)
    expression: list[np.ndarray] = field(default_factory=list)
    va: list[np.ndarray] = field(default_factory=list)

    def add(
        self,
        split: str,
        track: str,
        frames: np.ndarray,
        names: pa.Array,
        prefix: str,
        expression: np.ndarray,
        va: np.ndarray,
    ) -> None:
        n = len(frames)
        self.split.append(np.full(n, self.splits.index(split), dtype=np.int32))
        self.tracks.append(track)
        self.track.append(np.full(n, len(self.tracks) - 1, dtype=np.int32))
        self.frame.append(frames)
        self.image.append(pc.binary_join_element_wise(pa.scalar(prefix), names, ""))
        self.expression.append(expression)
        self.va.append(va)


def read_affwild2(root: str | Path, skips: Skips | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Frame records of an Aff-Wild2 copy and a description of what was found.

    Returns ``(records, info)``: records in the index schema (one row per image and split);
    ``info`` holds the label-file tracks per task and split (for the leakage report), the class
    count, the test lists read and the tracks they name.
    """
    root = Path(root)
    skips = skips if skips is not None else Skips()
    layout = find_layout(root, skips)
    if not layout.task_dirs and not layout.test_lists and not layout.mtl_files:
        from mtaffect.errors import UserError

        raise UserError(f"{root}: no Aff-Wild2 annotation folder (EXPR_Set, VA_Set, ...) or test list found")
    cols = _Columns()
    listings: dict[str, tuple[np.ndarray, pa.Array]] = {}
    n_classes_seen: set[int] = set()
    missing_folders: set[str] = set()

    def frames_of(track: str) -> tuple[np.ndarray, pa.Array]:
        if track not in listings:
            folder = layout.image_dirs.get(track)
            if folder is None:
                missing_folders.add(track)
                listings[track] = (np.zeros(0, np.int64), pa.array([], pa.string()))
            else:
                frames, names, ignored = list_frames(folder)
                skips.count(DATABASE, "ignored_image_folder_entries", ignored, str(folder))
                listings[track] = (frames, names)
        return listings[track]

    for split in ("train", "validation"):
        expr_files = layout.label_files.get(("EXPR", split), {})
        va_files = layout.label_files.get(("VA", split), {})
        for track in sorted(set(expr_files) | set(va_files)):
            expr = parse_expr_file(expr_files[track], skips) if track in expr_files else None
            va = parse_va_file(va_files[track], skips) if track in va_files else None
            if expr is None and va is None:
                continue
            frames, names = frames_of(track)
            image_count = len(frames)
            keep = np.zeros(image_count, dtype=bool)
            e_at = np.full(image_count, -1, dtype=np.int16)
            va_at = np.full((image_count, 2), np.nan)
            if expr is not None:
                codes, n_classes = expr
                n_classes_seen.add(n_classes)
                e_at = _take(codes, frames, np.int16(-1))
                has = e_at >= 0
                keep |= has
                labelled = int((codes >= 0).sum())
                skips.count(DATABASE, "expr_unannotated_rows", int((codes < 0).sum()))
                skips.count(DATABASE, "expr_label_without_image", labelled - int(has.sum()))
                skips.count(
                    DATABASE,
                    "expr_image_beyond_last_row",
                    int((frames > len(codes)).sum()),
                    f"{track}: {len(codes)} rows",
                )
            if va is not None:
                va_at = _take(va, frames, np.nan)
                has = ~np.isnan(va_at[:, 0])
                keep |= has
                labelled = int((~np.isnan(va[:, 0])).sum())
                skips.count(DATABASE, "va_unannotated_rows", len(va) - labelled)
                skips.count(DATABASE, "va_label_without_image", labelled - int(has.sum()))
                skips.count(
                    DATABASE,
                    "va_image_beyond_last_row",
                    int((frames > len(va)).sum()),
                    f"{track}: {len(va)} rows",
                )
            n = int(keep.sum())
            if n == 0:
                continue
            prefix = layout.image_dirs[track].relative_to(root).as_posix() + "/"
            cols.add(
                split, track, frames[keep], names.filter(pa.array(keep)), prefix, e_at[keep], va_at[keep]
            )

    if layout.mtl_files and not layout.task_dirs:
        n_classes_seen.add(8)
        for split, path in sorted(layout.mtl_files.items()):
            table = parse_mtl_file(path, skips, DATABASE)
            for track, group in table.groupby("track", sort=True):
                frames, names = frames_of(str(track))
                labelled = (group["expression"].to_numpy() >= 0) | group["valence"].notna().to_numpy()
                skips.count(DATABASE, "mtl_unlabelled_rows", int((~labelled).sum()))
                group = group[labelled].sort_values("frame")
                pos = np.searchsorted(frames, group["frame"].to_numpy())
                found = np.zeros(len(pos), dtype=bool)
                if len(frames):  # a track without images: nothing found (never index an empty listing)
                    at_pos = frames[np.minimum(pos, len(frames) - 1)]
                    found = (pos < len(frames)) & (at_pos == group["frame"].to_numpy())
                skips.count(DATABASE, "mtl_label_without_image", int((~found).sum()))
                n = int(found.sum())
                if n == 0:
                    continue
                prefix = layout.image_dirs[str(track)].relative_to(root).as_posix() + "/"
                at = pos[found]
                cols.add(
                    split,
                    str(track),
                    frames[at],
                    names.take(pa.array(at)),
                    prefix,
                    group["expression"].to_numpy()[found],
                    group[["valence", "arousal"]].to_numpy(np.float64)[found],
                )
    elif layout.mtl_files:
        skips.count(DATABASE, "mtl_files_ignored_task_folders_used", len(layout.mtl_files))

    test_tracks: dict[str, list[str]] = {}
    for test_list in layout.test_lists:
        test_tracks[str(test_list.relative_to(root))] = read_test_list(test_list, skips, DATABASE)
    all_test = sorted({t for tracks in test_tracks.values() for t in tracks})
    for track in all_test:
        frames, names = frames_of(track)
        if len(frames) == 0:
            continue
        n = len(frames)
        prefix = layout.image_dirs[track].relative_to(root).as_posix() + "/"
        cols.add(
            "test", track, frames, names, prefix, np.full(n, -1, dtype=np.int16), np.full((n, 2), np.nan)
        )
    for track in sorted(missing_folders):
        skips.count(DATABASE, "track_without_image_folder", 1, track)

    records = _assemble(cols)
    annotated = {t for files in layout.label_files.values() for t in files} | set(all_test)
    info = {
        "classes": max(n_classes_seen) if n_classes_seen else 7,
        "task_dirs": {task: str(path.relative_to(root)) for task, path in layout.task_dirs.items()},
        "tracks": {
            f"{task}/{split}": sorted(files) for (task, split), files in sorted(layout.label_files.items())
        },
        "test_lists": test_tracks,
        "tracks_without_image_folder": sorted(missing_folders),
        "image_folders_unreferenced": len(set(layout.image_dirs) - annotated),
    }
    return records, info


def _assemble(cols: _Columns) -> pd.DataFrame:
    if not cols.frame:
        return make_records(0)
    expression = np.concatenate(cols.expression).astype(np.int64)
    va = np.concatenate(cols.va)
    has_expr = expression >= 0
    return make_records(
        database=DATABASE,
        split=string_array(np.concatenate(cols.split), cols.splits),
        track=string_array(np.concatenate(cols.track), cols.tracks),
        frame=np.concatenate(cols.frame),
        image=pd.arrays.ArrowStringArray(pa.concat_arrays(cols.image)),
        expression=np.where(has_expr, expression, np.nan),
        valence=va[:, 0],
        arousal=va[:, 1],
        source_code=string_array(np.maximum(expression, 0), _CODE_TEXT, mask=~has_expr),
    )
