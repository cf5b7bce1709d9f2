"""The ABAW per-track text format: one header line, then one value line per video frame.

Aff-Wild2's EXPR and VA annotation files and ABAW2 submission files share it (DATASETS.md §1.3,
§1.10): ``<track>.txt`` whose header names the task's columns (EXPR: the seven (or eight, with
``Other``) class names; VA: ``valence,arousal``) and whose data row r (0-based) belongs to image
number r + 1. EXPR rows hold one integer, VA rows two numbers.

This module owns the syntax: reading a file (BOM tolerated), deciding its line end, recognising the
headers, parsing the rows with the one number parser (:mod:`mtaffect.data.numbers`), counting them,
and saying from which row on a damaged file can no longer be trusted to be positional. What the
values mean (the annotation sentinels -1 / -5, a submission's allowed range) is the caller's: the
Aff-Wild2 reader and the submission validator apply their own rules.

**Positional files keep their alignment** (docs/data.md, "Line ends and alignment"). Row r labels
frame r + 1, so anything that adds or removes a row moves every later label. Hence:

* a file's line end is decided once, from the whole file: LF (a CR just before an LF belongs to
  the line end, so CRLF files are LF files) unless lone CRs outnumber LFs (an old lone-CR file; a
  tie goes to the header's line end). Any other CR or LF byte is damage *inside* a line: that line
  is malformed at its true number, and the row count stays right;
* a refused row that could be a piece of a split row or two rows joined into one (blank, a NUL
  byte, more fields than the format, only the characters of the format's numbers without having
  the shape of a whole row, or cut into two acceptable rows by dropping at most one byte) may have
  moved every later row: :func:`aligned_rows` says where the trusted rows end (the row before it,
  which may be the other piece of a split row), and the caller drops the rest, counted;
* integers are written without leading zeros (``03`` may be the rows ``0`` and ``3`` joined);
* a header line (either task's) after the first line is two files concatenated: an inserted row.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtaffect import labels
from mtaffect.data.numbers import NumberError, bulk_numbers, number_pattern, parse_number

__all__ = [
    "EXPR_HEADER",
    "EXPR_HEADER_8",
    "VA_HEADER",
    "HEADERS",
    "RowFormat",
    "EXPR_ROWS",
    "VA_ROWS",
    "TrackFile",
    "read_track_file",
    "split_lines",
    "expr_classes",
    "is_va_header",
    "parse_expr_line",
    "parse_va_line",
    "parse_expr_rows",
    "parse_va_rows",
    "aligned_rows",
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

_LEADING_ZERO = re.compile(r"^[+-]?0[0-9]")
_INTEGER = re.compile(r"^[+-]?(?:0|[1-9][0-9]*)$")  # the shape only: any number of digits
_NUMBER = re.compile(number_pattern())
_MAX_JOINED = 256
"""Longer refused rows are not cut into candidate rows: they count as possibly joined (no row of these
formats is that long)."""


@dataclass(frozen=True)
class RowFormat:
    """The syntax of one data row: ``columns`` comma-separated numbers, integers or decimals."""

    columns: int
    integer: bool
    what: tuple[str, ...]

    @property
    def alphabet(self) -> frozenset[str]:
        """The characters an acceptable row can be written with (a piece of one holds no other)."""
        chars = "0123456789+- \t" + ("" if self.integer else ".eE") + ("," if self.columns > 1 else "")
        return frozenset(chars)

    def shaped(self, text: str) -> bool:
        """``columns`` fields, each written as a number (it may still overflow or be out of range).
        Pieces of acceptable rows never are: one of their fields is empty or cut (``1e``, ``-``,
        ``03``), or the piece is acceptable itself."""
        pattern = _INTEGER if self.integer else _NUMBER
        parts = text.split(",")
        return len(parts) == self.columns and all(pattern.match(p.strip()) for p in parts)

    def parse(self, text: str) -> tuple:
        """The row's numbers (no range check); :class:`NumberError` names the problem."""
        parts = text.split(",")
        if len(parts) != self.columns:
            raise NumberError(f"expected {self.columns} comma-separated values, found {text[:40]!r}")
        out = []
        for part, what in zip(parts, self.what):
            value = parse_number(part, integer=self.integer, what=what)
            if self.integer and _LEADING_ZERO.match(part.strip()):
                raise NumberError(f"{what} {part.strip()[:40]!r} has a leading zero (two rows joined?)")
            out.append(value)
        return tuple(out)


EXPR_ROWS = RowFormat(1, True, ("expression code",))
VA_ROWS = RowFormat(2, False, ("valence", "arousal"))


@dataclass(frozen=True)
class TrackFile:
    """A per-track file split into its header and its rows.

    ``header``: the first line, stripped. ``body``: the data rows joined by LF (the file's decided
    line end normalised, trailing blank lines and spaces dropped); a stray line-end byte inside a
    row is kept there as a CR byte. ``bom``: the file began with a UTF-8 byte-order mark (dropped
    from ``header``). ``line_end``: ``"LF"``, ``"CRLF"`` or ``"CR"``, as decided for the whole file.
    """

    header: str
    body: bytes
    bom: bool = False
    line_end: str = "LF"

    def rows(self) -> list[bytes]:
        """The data rows; row r is line r + 2 of the file and labels image r + 1."""
        return self.body.split(b"\n") if self.body else []

    @property
    def stray(self) -> str:
        """The name of a line-end byte found inside a row of this file."""
        return "line feed" if self.line_end == "CR" else "carriage return"


def _decide(raw: bytes) -> tuple[bytes, str]:
    """``raw`` with its decided line end as LF and any other line-end byte as CR, and the style."""
    if b"\r" not in raw:  # the common case, without counting
        return raw, "LF"
    crlf = raw.count(b"\r\n")
    lf = raw.count(b"\n")
    lone_cr = raw.count(b"\r") - crlf
    if lone_cr > lf or (lone_cr == lf and lf and _first_end_is_cr(raw)):  # an old lone-CR file
        return raw.translate(_SWAP), "CR"
    return raw.replace(b"\r\n", b"\n"), "CRLF" if 2 * crlf > lf else "LF"


_SWAP = bytes.maketrans(b"\r\n", b"\n\r")


def _first_end_is_cr(raw: bytes) -> bool:
    """A tie between lone CRs and LFs goes to the header's line end."""
    i = min((k for k in (raw.find(b"\r"), raw.find(b"\n")) if k >= 0), default=-1)
    return i >= 0 and raw[i : i + 1] == b"\r" and raw[i + 1 : i + 2] != b"\n"


def split_lines(raw: bytes) -> tuple[list[bytes], str]:
    """The lines of ``raw`` at its decided line end (see the module docstring) and that end's name;
    other line-end bytes stay inside their lines (as CR)."""
    text, style = _decide(raw)
    return text.split(b"\n"), style


def read_track_file(path: str | Path) -> TrackFile:
    """Read ``path`` as a per-track file (raises OSError when it cannot be read)."""
    raw = Path(path).read_bytes()
    bom = raw.startswith(b"\xef\xbb\xbf")
    if bom:
        raw = raw[3:]
    text, style = _decide(raw)
    head, _, body = text.partition(b"\n")
    return TrackFile(head.decode("utf-8", errors="replace").strip(), body.rstrip(), bom, style)


def count_frame_rows(path: str | Path) -> int:
    """The number of data rows (= video frames) of a per-track file, at its decided line end."""
    return len(read_track_file(path).rows())


def expr_classes(header: str) -> int | None:
    """7 or 8 (with ``Other``) for an EXPR header, spaces and case ignored; None for anything else."""
    return _EXPR_CLASSES.get(header.replace(" ", "").lower())


def is_va_header(header: str) -> bool:
    """True for ``valence,arousal`` (spaces and case ignored)."""
    return header.replace(" ", "").lower() == VA_HEADER


def _text(row: bytes) -> str:
    return row.decode("utf-8", errors="replace")


def _parse_row(fmt: RowFormat, text: str, stray: str = "carriage return") -> tuple:
    body = text.strip()
    if "\x00" in body:
        raise NumberError("a NUL byte in the line (a damaged block: the rows after it cannot be aligned)")
    if "\r" in body:
        raise NumberError(f"a {stray} inside the line (the file's lines end otherwise)")
    if not body:
        raise NumberError("a blank line (an inserted or an emptied row)")
    return fmt.parse(body)


def parse_expr_line(text: str) -> int:
    """One EXPR row → its integer code (no range check); :class:`NumberError` names the problem."""
    try:
        return _parse_row(EXPR_ROWS, text)[0]
    except NumberError as err:
        raise NumberError(f"expected one integer expression code: {err}") from None


def parse_va_line(text: str) -> tuple[float, float]:
    """One VA row ``v,a`` → two finite floats (no range check); :class:`NumberError` otherwise."""
    try:
        return _parse_row(VA_ROWS, text)
    except NumberError as err:
        if str(err).startswith("expected 2"):
            raise NumberError(f"expected 'valence,arousal', found {text.strip()[:40]!r}") from None
        raise


def parse_expr_rows(track: TrackFile, report: Report) -> np.ndarray:
    """EXPR codes per data row (int64, no range check); a malformed row is reported and left -1."""
    return _parse_rows(track, EXPR_ROWS, parse_expr_line, report)[:, 0]


def parse_va_rows(track: TrackFile, report: Report) -> np.ndarray:
    """(R, 2) float64 valence/arousal per data row (no range check); a malformed row is reported and
    left NaN. Both values must be finite numbers (never half a label, never an infinite one)."""
    return _parse_rows(track, VA_ROWS, parse_va_line, report)


def _parse_rows(
    track: TrackFile, fmt: RowFormat, parse_line: Callable[[str], object], report: Report
) -> np.ndarray:
    """(R, columns) int64 or float64 values: all rows in one bulk call; only when that fails is each row
    parsed alone (``parse_line``, the same number rules), so that every bad row is reported with its
    line. A bad row stays -1 (integers) or NaN."""
    values = None
    if b"\r" not in track.body:  # a stray line-end byte: pyarrow would take it for a line end
        values = bulk_numbers(track.body, fmt.columns, integer=fmt.integer, leading_zeros=not fmt.integer)
    if values is not None:
        return values
    rows = track.rows()
    if fmt.integer:
        values = np.full((len(rows), fmt.columns), -1, dtype=np.int64)
    else:
        values = np.full((len(rows), fmt.columns), np.nan)
    for r, row in enumerate(rows):
        text = _text(row)
        if "\r" in text.strip():
            report(r + 2, f"a {track.stray} inside the line (the file's lines end with {track.line_end})")
            continue
        try:
            values[r] = parse_line(text)
        except NumberError as err:
            report(r + 2, str(err))
    return values


def _possibly_moved(text: str, fmt: RowFormat, acceptable: Callable[[str], bool]) -> bool:
    """Could refused row ``text`` be a piece of a split row or two rows joined into one (damage that
    moved every later row)? Conservative: True unless the text proves otherwise."""
    body = text.strip()
    if not body or "\x00" in body or len(body) > _MAX_JOINED:
        return True  # an inserted / emptied line, a damaged block, or too long to cut
    if is_va_header(body) or expr_classes(body) is not None:
        return True  # a header mid-file: two files concatenated, the rows after it are the second's
    if body.count(",") >= fmt.columns:
        return True  # more fields than one row has: two rows joined
    if not fmt.shaped(body) and set(body) <= fmt.alphabet:
        return True  # a piece of an acceptable row (refused rows shaped like one are whole rows)
    for i in range(1, len(body)):  # two rows, the line end between them deleted or turned into a byte
        if acceptable(body[:i]) and (acceptable(body[i:]) or acceptable(body[i + 1 :])):
            return True
    return False


def aligned_rows(
    track: TrackFile, refused: np.ndarray, fmt: RowFormat, acceptable: Callable[[str], bool]
) -> int:
    """How many leading rows of ``track`` are known to label their own frames (``len(rows)``: all).

    ``refused``: (R,) bool, the rows the caller did not accept (malformed or out of its range);
    ``acceptable(text)``: the caller's rule for one row (syntax and range). The first refused row
    that could have moved the rows after it (see :func:`_possibly_moved`) ends the trusted rows one
    row early: the row before it may be the other piece of a split row.
    """
    rows = None
    for r in np.flatnonzero(refused):
        rows = rows if rows is not None else track.rows()
        if _possibly_moved(_text(rows[r]), fmt, acceptable):
            return max(int(r) - 1, 0)
    return len(refused)
