"""ABAW submission files: the ABAW2 per-track layout, the ABAW5+ single file, and a validator.

**ABAW2** (DATASETS.md §1.10): ``<out>/<folder>/<track>.txt`` for every track of the test list
(``folder`` ``EXPR_Set`` / ``VA_Set`` by default), the task's annotation header, then one line per
video frame, frame 1 first: EXPR one integer 0..6, VA ``v,a`` with 4 decimals clipped to [-1, 1].

**ABAW5+** (§6): one file, header ``image_location,<label columns>``, one row per frame
``<track>/<NNNNN>.jpg,<prediction>``; with the organisers' example file the rows follow its order
and frames exactly, else every frame 1..N of every test track in test-list order.

**Frames without a prediction** (no face found) take the prediction of the nearest frame that has
one; at equal distance the earlier frame wins (so a gap is filled half from each side, and frames
before the first face take the first prediction, after the last the last one).

**Frame count N** per track, first source that has it: a user file (``track,frames`` per line), the
row count of the track's annotation file, a prediction table of the whole video (``mtaffect
predict`` on the raw video writes one row per decoded frame, so its frame count is that of a full
decode), a full decode of the raw video. Predictions beyond N are dropped with a warning.

**Tracks and tables.** A table from ``mtaffect predict --cropped`` is one track named after its
folder, frames = image number − 1. A table of a raw video may hold several people: track
``<video>_left`` / ``_right`` takes the person whose mean box centre is further left / right;
an unsuffixed track takes the person seen in the most frames.

**Formats read elsewhere.** The per-track text format (header, one row per frame) has its one home
in :mod:`mtaffect.data.sources.abaw_text`, shared with the Aff-Wild2 reader; test lists are read by
:func:`mtaffect.data.sources.testlists.read_test_list`.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mtaffect.data.numbers import NumberError
from mtaffect.data.sources import abaw_text
from mtaffect.errors import InputFormatError, UserError
from mtaffect.io import atomic_open, remove_leftovers

__all__ = [
    "read_frame_counts",
    "load_predictions",
    "track_values",
    "fill_nearest",
    "write_abaw2",
    "write_abaw5",
    "validate_submission",
    "SubmissionInputs",
]

ABAW5_HEADERS = {
    "EXPR": "image_location," + abaw_text.EXPR_HEADER_8,
    "VA": "image_location," + abaw_text.VA_HEADER,
}
FOLDERS = {"EXPR": "EXPR_Set", "VA": "VA_Set"}
TASKS = ("EXPR", "VA")
_SIDE = re.compile(r"^(?P<base>.+)_(?P<side>left|right)$")


def _check_task(task: str) -> str:
    task = task.upper()
    if task not in TASKS:
        raise UserError(f"task must be EXPR or VA, got {task!r}")
    return task


def read_frame_counts(path: str | Path) -> dict[str, int]:
    """``track,frames`` per line (a header line without a number is skipped)."""
    path = Path(path)
    counts: dict[str, int] = {}
    for i, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        parts = [p.strip() for p in line.split(",")]
        if not line.strip() or (i == 1 and not parts[-1].isdigit()):
            continue
        if len(parts) != 2 or not parts[1].isdigit():
            raise InputFormatError(path, f"expected 'track,frames', got {line!r}", line=i)
        counts[parts[0]] = int(parts[1])
    return counts


@dataclass
class SubmissionInputs:
    """Where predictions and frame counts come from (see the module docstring)."""

    tables: dict[str, pd.DataFrame]  # output name → per-frame table
    frame_counts: dict[str, int] = field(default_factory=dict)
    annotations: Path | None = None
    videos: Path | None = None
    warnings: list[str] = field(default_factory=list)


def load_predictions(source: str | Path | list[str | Path]) -> dict[str, pd.DataFrame]:
    """Prediction tables by name: a ``mtaffect predict`` output folder (``<name>/predictions.parquet``
    or ``.csv``), or table files themselves (name = file stem, or folder name for ``predictions.*``)."""
    sources = source if isinstance(source, list) else [source]
    tables: dict[str, pd.DataFrame] = {}
    for src in sources:
        src = Path(src)
        if src.is_dir():
            files = sorted(src.glob("*/predictions.parquet")) or sorted(src.glob("*/predictions.csv"))
            files += sorted(p for p in src.glob("*.parquet")) + sorted(p for p in src.glob("*.csv"))
        elif src.is_file():
            files = [src]
        else:
            raise UserError(f"{src}: no such prediction folder or table")
        for f in files:
            name = f.parent.name if f.stem == "predictions" else f.stem
            if name in tables or name == "images":
                continue
            try:
                tables[name] = pd.read_parquet(f) if f.suffix == ".parquet" else pd.read_csv(f)
            except (OSError, ValueError) as err:
                raise InputFormatError(f, f"unreadable prediction table: {err}") from err
    if not tables:
        raise UserError(f"no prediction tables found in {', '.join(map(str, sources))}")
    return tables


def _frame_count(track: str, inputs: SubmissionInputs, table_name: str | None) -> tuple[int, str]:
    if track in inputs.frame_counts:
        return inputs.frame_counts[track], "frame-count file"
    if inputs.annotations is not None:
        for f in inputs.annotations.rglob(f"{track}.txt"):
            return abaw_text.count_frame_rows(f), f"annotation {f}"
    base = _SIDE.match(track).group("base") if _SIDE.match(track) else track
    if table_name is not None and table_name == base:
        df = inputs.tables[table_name]
        # a raw-video table has a time on every row and a row for every decoded frame 0..N-1
        if len(df) and df["time"].notna().all() and df["frame"].nunique() == int(df["frame"].max()) + 1:
            return int(df["frame"].max()) + 1, "prediction table of the whole video"
    if inputs.videos is not None:
        from mtaffect.predict.media import VIDEO_EXTENSIONS, count_frames

        # one walk of the folder; of several containers of one video, the first path in sort order
        found = sorted(
            f
            for f in inputs.videos.rglob(glob.escape(base) + ".*")
            if f.stem == base and f.suffix.lower() in VIDEO_EXTENSIONS and f.is_file()
        )
        if found:
            return count_frames(found[0]), f"decode of {found[0]}"
    raise UserError(
        f"{track}: unknown frame count; give --frame-counts, --annotations or --videos "
        "(or predict on the raw video)"
    )


def _pick_person(df: pd.DataFrame, track: str) -> pd.DataFrame:
    faces = df[df["face_found"].astype(bool)]
    if faces.empty:
        return faces
    ids = faces["track_id"].astype("int64")
    if faces["track_id"].nunique() == 1:
        return faces
    m = _SIDE.match(track)
    if m:
        centre = ((faces["box_x0"] + faces["box_x1"]) / 2).astype(float).groupby(ids).mean()
        pick = centre.idxmin() if m.group("side") == "left" else centre.idxmax()
    else:
        pick = ids.value_counts().idxmax()
    return faces[ids == pick]


def track_values(
    track: str, inputs: SubmissionInputs, task: str
) -> tuple[np.ndarray, np.ndarray, str | None]:
    """``(frames, values, table name)`` of one test track: sorted 0-based frames with a prediction,
    values ``(n,)`` int (EXPR) or ``(n, 2)`` float (VA)."""
    base = _SIDE.match(track).group("base") if _SIDE.match(track) else track
    name = track if track in inputs.tables else base if base in inputs.tables else None
    if name is None:
        return np.zeros(0, np.int64), np.zeros(0), None
    faces = _pick_person(inputs.tables[name], track)
    faces = faces.sort_values("frame").drop_duplicates("frame")
    frames = faces["frame"].to_numpy(np.int64)
    if task == "EXPR":
        values = faces["expression_index"].to_numpy(np.int64)
    else:
        values = faces[["valence", "arousal"]].to_numpy(np.float64)
    return frames, values, name


def fill_nearest(frames: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Values for frames ``0..n-1`` from the nearest predicted frame (ties → the earlier frame)."""
    if len(frames) == 0:
        raise ValueError("no prediction to fill from")
    target = np.arange(n)
    right = np.clip(np.searchsorted(frames, target, side="left"), 0, len(frames) - 1)
    left = np.clip(right - 1, 0, len(frames) - 1)
    use_left = np.abs(target - frames[left]) <= np.abs(frames[right] - target)
    return values[np.where(use_left, left, right)]


def _filled(track: str, inputs: SubmissionInputs, task: str) -> np.ndarray:
    frames, values, name = track_values(track, inputs, task)
    if name is None:
        raise UserError(f"{track}: no prediction table for this track (or for its video)")
    if len(frames) == 0:
        raise UserError(f"{track}: no face was found in any frame; cannot fill its predictions")
    n, source = _frame_count(track, inputs, name)
    if frames[-1] >= n:
        inputs.warnings.append(
            f"{track}: predictions up to frame {frames[-1] + 1} but {n} frames ({source}); extra ones dropped"
        )
        keep = frames < n
        frames, values = frames[keep], values[keep]
    return fill_nearest(frames, values, n)


def _fill_all(tracks: list[str], inputs: SubmissionInputs, task: str) -> dict[str, np.ndarray]:
    """Every track's per-frame values; one error listing every track that cannot be filled."""
    filled, problems = {}, []
    for track in tracks:
        try:
            filled[track] = _filled(track, inputs, task)
        except UserError as err:
            problems.append(str(err))
    if problems:
        shown = problems[:10] + ([f"... and {len(problems) - 10} more"] if len(problems) > 10 else [])
        raise UserError(
            f"no submission written: {len(problems)} of {len(tracks)} tracks cannot be filled\n  "
            + "\n  ".join(shown)
        )
    return filled


def _line(task: str, value) -> str:
    if task == "EXPR":
        return str(int(value))
    v, a = np.clip(np.asarray(value, np.float64), -1.0, 1.0)
    return f"{v:.4f},{a:.4f}"


def write_abaw2(
    tracks: list[str], inputs: SubmissionInputs, task: str, out: str | Path, *, folder: str | None = None
) -> Path:
    """Write ``out/<folder>/<track>.txt`` for every track; returns the folder."""
    task = _check_task(task)
    target = Path(out) / (folder or FOLDERS[task])
    filled = _fill_all(tracks, inputs, task)  # every track's problem first, before any file or folder
    target.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target)  # a killed earlier run's half-written track files (never renamed into place)
    for track, values in filled.items():
        with atomic_open(target / f"{track}.txt", "w", encoding="utf-8", newline="\n") as handle:
            handle.write(abaw_text.HEADERS[task] + "\n")
            handle.writelines(_line(task, v) + "\n" for v in values)
    return target


def _read_example(path: Path) -> tuple[str, list[tuple[str, int]]]:
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    if not lines or not lines[0].startswith("image_location"):
        raise InputFormatError(path, "example file must start with an 'image_location,...' header", line=1)
    rows = []
    for i, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        loc = line.split(",", 1)[0].strip()
        m = re.fullmatch(r"(.+)/(\d+)\.jpg", loc)
        if not m:
            raise InputFormatError(path, f"expected '<track>/<NNNNN>.jpg', got {loc!r}", line=i)
        rows.append((m.group(1), int(m.group(2))))
    return lines[0].strip(), rows


def write_abaw5(
    tracks: list[str],
    inputs: SubmissionInputs,
    task: str,
    out_file: str | Path,
    *,
    example: str | Path | None = None,
) -> Path:
    """Write the single-file layout; with ``example`` its header, rows and order are kept."""
    task = _check_task(task)
    out_file = Path(out_file)
    if example is not None:
        header, rows = _read_example(Path(example))
        needed: dict[str, int] = {}
        for track, number in rows:
            needed[track] = max(needed.get(track, 0), number)
        for track, n in needed.items():  # the example fixes the frames: use its count
            inputs.frame_counts.setdefault(track, n)
    else:
        header = ABAW5_HEADERS[task]
    wanted = list(dict.fromkeys(t for t, _ in rows)) if example is not None else list(tracks)
    cache = _fill_all(wanted, inputs, task)  # every track's problem first, before any file
    if example is None:
        rows = [(track, k) for track in tracks for k in range(1, len(cache[track]) + 1)]
    if out_file.parent.is_dir():
        remove_leftovers(out_file.parent, out_file.name)  # this file's, from a killed earlier run
    with atomic_open(out_file, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(header + "\n")
        for track, number in rows:
            handle.write(f"{track}/{number:05d}.jpg,{_line(task, cache[track][number - 1])}\n")
    return out_file


def validate_submission(
    path: str | Path,
    task: str,
    *,
    test_list: list[str] | None = None,
    frame_counts: dict[str, int] | None = None,
    example: str | Path | None = None,
) -> list[str]:
    """Every problem of a submission as ``file:line: message`` (empty list = valid).

    ``path``: an ABAW2 folder of ``<track>.txt`` files, or an ABAW5 single file.
    """
    task = _check_task(task)
    path = Path(path)
    if path.is_dir():
        return _validate_abaw2(path, task, test_list, frame_counts)
    if path.is_file():
        return _validate_abaw5(path, task, test_list, example)
    return [f"{path}: no such submission folder or file"]


def _check_value(task: str, text: str, n_classes: int) -> str | None:
    """The problem of one prediction ``text`` (None when fine): the per-track format's syntax
    (:mod:`mtaffect.data.sources.abaw_text`), then the submission's ranges."""
    try:
        if task == "EXPR":
            return _expr_range(abaw_text.parse_expr_line(text), n_classes)
        return _va_range(abaw_text.parse_va_line(text), text)
    except NumberError as err:
        return str(err)


def _expr_range(code: int, n_classes: int) -> str | None:
    # a submission predicts a class for every frame: no -1 (unannotated) as in the annotations
    return None if 0 <= code < n_classes else f"class {code} outside 0..{n_classes - 1}"


def _va_range(values, text: str) -> str | None:
    return None if all(-1.0 <= v <= 1.0 for v in values) else f"values outside [-1, 1]: {text!r}"


def _validate_abaw2(folder: Path, task: str, test_list, frame_counts) -> list[str]:
    problems = []
    files = {p.stem: p for p in sorted(folder.glob("*.txt"))}
    if test_list is not None:
        problems += [f"{folder}: missing {t}.txt (in the test list)" for t in test_list if t not in files]
        problems += [f"{p}: track not in the test list" for t, p in files.items() if t not in set(test_list)]
    allowed = {abaw_text.HEADERS[task]} | ({abaw_text.EXPR_HEADER_8} if task == "EXPR" else set())
    for track, f in files.items():
        problems += _validate_track_file(f, task, allowed, (frame_counts or {}).get(track))
    return problems


def _validate_track_file(f: Path, task: str, allowed: set[str], expected: int | None) -> list[str]:
    """Problems of one ABAW2 ``<track>.txt`` as ``file:line: message``, in line order."""
    content = abaw_text.read_track_file(f)
    if not content.header and not content.body:
        return [f"{f}:1: empty file"]
    found: list[tuple[int, str]] = []
    if content.bom:  # the reader tolerates one; a submission is written without
        found.append((1, "starts with a UTF-8 byte-order mark"))
    if content.header not in allowed:
        found.append((1, f"header {content.header!r}, expected {abaw_text.HEADERS[task]!r}"))
    malformed: set[int] = set()

    def report(line: int, message: str) -> None:
        malformed.add(line)
        found.append((line, message))

    rows = content.rows()
    if task == "EXPR":
        n_classes = 8 if content.header == abaw_text.EXPR_HEADER_8 else 7
        codes = abaw_text.parse_expr_rows(content, report)
        for r in np.flatnonzero((codes < 0) | (codes >= n_classes)):  # malformed rows are -1 here
            if r + 2 not in malformed:
                found.append((int(r) + 2, _expr_range(int(codes[r]), n_classes)))
    else:
        values = abaw_text.parse_va_rows(content, report)  # malformed rows are NaN: never out of range
        for r in np.flatnonzero(((values < -1.0) | (values > 1.0)).any(axis=1)):
            found.append((int(r) + 2, _va_range(values[r], rows[r].decode("utf-8", "replace"))))
    problems = [f"{f}:{line}: {message}" for line, message in sorted(found, key=lambda p: p[0])]
    if expected is not None and len(rows) != expected:
        problems.append(f"{f}: {len(rows)} frame lines, expected {expected}")
    return problems


def _validate_abaw5(file, task, test_list, example) -> list[str]:
    problems = []
    # the per-track format's line-end rule: a stray CR is damage inside its line, not a line end
    raw, _ = abaw_text.split_lines(file.read_bytes())
    lines = [line.decode("utf-8", errors="replace") for line in raw]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines or not lines[0].startswith("image_location,"):
        return [f"{file}:1: header must start with 'image_location,'"]
    n_classes = 8 if "Other" in lines[0] else 7
    seen: list[tuple[str, int]] = []
    for i, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        loc, _, rest = line.partition(",")
        m = re.fullmatch(r"(.+)/(\d{5,})\.jpg", loc.strip())
        if not m:
            problems.append(f"{file}:{i}: image_location {loc!r} is not '<track>/<NNNNN>.jpg'")
            continue
        seen.append((m.group(1), int(m.group(2))))
        msg = _check_value(task, rest, n_classes)
        if msg:
            problems.append(f"{file}:{i}: {msg}")
    tracks = {t for t, _ in seen}
    if test_list is not None:
        problems += [f"{file}: no rows for test track {t}" for t in test_list if t not in tracks]
        problems += [f"{file}: rows for {t}, not in the test list" for t in sorted(tracks - set(test_list))]
    if example is not None:
        header, rows = _read_example(Path(example))
        if lines[0].strip() != header:
            problems.append(f"{file}:1: header differs from the example's {header!r}")
        if seen != rows:
            diff = next((k for k, (a, b) in enumerate(zip(seen, rows)) if a != b), min(len(seen), len(rows)))
            problems.append(
                f"{file}:{diff + 2}: rows differ from the example from here on "
                f"({len(seen)} rows, example has {len(rows)})"
            )
    return problems
