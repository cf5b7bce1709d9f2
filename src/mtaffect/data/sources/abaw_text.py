"""The ABAW per-track text format: one header line, then one value line per video frame.

Aff-Wild2's EXPR and VA annotation files and ABAW2 submission files share it (DATASETS.md §1.3,
§1.10): ``<track>.txt`` whose header names the task's columns (EXPR: the seven (or eight, with
``Other``) class names; VA: ``valence,arousal``) and whose data row r (0-based) belongs to image
number r + 1. EXPR rows hold one integer, VA rows two numbers.

This module owns the syntax: reading a file (BOM, CRLF and lone CR tolerated), recognising the
headers, parsing the rows with the one number parser (:mod:`mtaffect.data.numbers`) and counting
them. What the values mean (the annotation sentinels -1 / -5, a submission's allowed range) is
the caller's: the Aff-Wild2 reader and the submission validator apply their own rules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtaffect import labels
from mtaffect.data.numbers import NumberError, bulk_numbers, parse_number

__all__ = [
    "EXPR_HEADER",
    "EXPR_HEADER_8",
    "VA_HEADER",
    "HEADERS",
    "TrackFile",
    "read_track_file",
    "expr_classes",
    "is_va_header",
    "parse_expr_line",
    "parse_va_line",
    "parse_expr_rows",
    "parse_va_rows",
    "count_frame_rows",
]

EXPR_HEADER = ",".join(labels.EXPRESSIONS)
EXPR_HEADER_8 = ",".join(labels.EXPRESSIONS_8)
VA_HEADER = "valence,arousal"
HEADERS = {"EXPR": EXPR_HEADER, "VA": VA_HEADER}
"""The canonical header of each task, as ABAW writes it."""
_EXPR_CLASSES = {EXPR_HEADER.lower(): 7, EXPR_HEADER_8.lower(): 8}

Report = Callable[[int, str], None]
"""``report(line, message)``: a row that breaks the format, ``line`` 1-based in the file."""


@dataclass(frozen=True)
class TrackFile:
    """A per-track file split into its header and its rows.

    ``header``: the first line, stripped. ``body``: the data rows joined by LF (CRLF and lone CR
    normalised, trailing blank lines and spaces dropped). ``bom``: the file began with a UTF-8
    byte-order mark (dropped from ``header``).
    """

    header: str
    body: bytes
    bom: bool = False

    def rows(self) -> list[bytes]:
        """The data rows; row r is line r + 2 of the file and labels image r + 1."""
        return self.body.split(b"\n") if self.body else []


def read_track_file(path: str | Path) -> TrackFile:
    """Read ``path`` as a per-track file (raises OSError when it cannot be read)."""
    raw = Path(path).read_bytes().replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    bom = raw.startswith(b"\xef\xbb\xbf")
    if bom:
        raw = raw[3:]
    head, _, body = raw.partition(b"\n")
    return TrackFile(head.decode("utf-8", errors="replace").strip(), body.rstrip(), bom)


def count_frame_rows(path: str | Path) -> int:
    """The number of data rows (= video frames) of a per-track file."""
    return len(read_track_file(path).rows())


def expr_classes(header: str) -> int | None:
    """7 or 8 (with ``Other``) for an EXPR header, spaces and case ignored; None for anything else."""
    return _EXPR_CLASSES.get(header.replace(" ", "").lower())


def is_va_header(header: str) -> bool:
    """True for ``valence,arousal`` (spaces and case ignored)."""
    return header.replace(" ", "").lower() == VA_HEADER


def _text(row: bytes) -> str:
    return row.decode("utf-8", errors="replace")


def parse_expr_line(text: str) -> int:
    """One EXPR row → its integer code (no range check); :class:`NumberError` names the problem."""
    try:
        return parse_number(text, integer=True, what="expression code")
    except NumberError as err:
        raise NumberError(f"expected one integer expression code: {err}") from None


def parse_va_line(text: str) -> tuple[float, float]:
    """One VA row ``v,a`` → two finite floats (no range check); :class:`NumberError` otherwise."""
    parts = text.split(",")
    if len(parts) != 2:
        raise NumberError(f"expected 'valence,arousal', found {text[:40]!r}")
    return parse_number(parts[0], what="valence"), parse_number(parts[1], what="arousal")


def parse_expr_rows(track: TrackFile, report: Report) -> np.ndarray:
    """EXPR codes per data row (int64, no range check); a malformed row is reported and left -1."""
    return _parse_rows(track, 1, True, parse_expr_line, report)[:, 0]


def parse_va_rows(track: TrackFile, report: Report) -> np.ndarray:
    """(R, 2) float64 valence/arousal per data row (no range check); a malformed row is reported and
    left NaN. Both values must be finite numbers (never half a label, never an infinite one)."""
    return _parse_rows(track, 2, False, parse_va_line, report)


def _parse_rows(
    track: TrackFile, columns: int, integer: bool, parse_line: Callable[[str], object], report: Report
) -> np.ndarray:
    """(R, columns) int64 or float64 values: all rows in one bulk call; only when that fails is each row
    parsed alone (``parse_line``, the same number rules), so that every bad row is reported with its
    line. A bad row stays -1 (integers) or NaN."""
    values = bulk_numbers(track.body, columns, integer=integer)
    if values is not None:
        return values
    rows = track.rows()
    if integer:
        values = np.full((len(rows), columns), -1, dtype=np.int64)
    else:
        values = np.full((len(rows), columns), np.nan)
    for r, row in enumerate(rows):
        try:
            values[r] = parse_line(_text(row))
        except NumberError as err:
            report(r + 2, str(err))
    return values
