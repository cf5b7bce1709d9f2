"""Line-level damage of positional files and the alignment oracle (issue 19).

In a positional file (the ABAW per-track EXPR / VA files, ABAW2 submissions: data row r is frame
r + 1) a row added or removed moves every later label. Each ``gen_*`` here writes a clean track
file, LF, CRLF or lone-CR, then damages it once where a disk, a transfer or an editor does: a stray
line-end byte inside a line, a byte turned into a line end (a row split in two), a line end deleted
or turned into another byte (two rows joined), an inserted blank line, an inserted header line (two
files concatenated), a NUL byte, a block of NULs.
The oracle knows the original rows and where the damage starts, and checks the property itself,
not a reader's rule: every label the index holds is the original label of its frame (never a
shift), the frames before the damage (but the one just before it, which may be the other piece of
a split row) are all kept, a stray line-end byte costs at most its own frame, and nothing is lost
uncounted. :func:`may_have_moved` states docs/data.md's rule for the mutations of
tests/fuzz_formats.py, written here from the rule, not from the reader.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

EXPR_HEADER = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise"
VA_HEADER = "valence,arousal"
INT_SHAPE = re.compile(r"[+-]?(?:0|[1-9][0-9]*)")
NUM_SHAPE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
ENDS = {"LF": b"\n", "CRLF": b"\r\n", "CR": b"\r"}
KINDS = ["stray", "split", "join", "blank", "header", "nul", "nul_block", "none"]
HEADER_VARIANTS = [EXPR_HEADER, EXPR_HEADER.lower(), EXPR_HEADER + ",Other", VA_HEADER, "Valence, Arousal"]


def expr_ok(text: str, n_classes: int = 7) -> bool:
    """An acceptable EXPR annotation row: one integer -1..n-1, no leading zero."""
    t = text.strip(" \t")
    return bool(INT_SHAPE.fullmatch(t)) and -1 <= int(t) < n_classes


def va_ok(text: str) -> bool:
    """An acceptable VA row: two finite decimal numbers (any range: out of range is no label)."""
    parts = [p.strip(" \t") for p in text.split(",")]
    return len(parts) == 2 and all(NUM_SHAPE.fullmatch(p) and math.isfinite(float(p)) for p in parts)


def may_have_moved(text: str, columns: int, integer: bool, ok: Callable[[str], bool]) -> bool:
    """docs/data.md: could a refused row be a piece of a split row or two rows joined?"""
    t = text.strip(" \t\r\n\x0b\x0c")
    if not t or "\x00" in t or len(t) > 256 or t.count(",") >= columns:
        return True
    if t.replace(" ", "").lower() in {h.replace(" ", "").lower() for h in HEADER_VARIANTS}:
        return True  # a header mid-file: two files concatenated (an inserted row)
    shape = INT_SHAPE if integer else NUM_SHAPE
    parts = t.split(",")
    shaped = len(parts) == columns and all(shape.fullmatch(p.strip()) for p in parts)
    chars = set("0123456789+- \t") | (set() if integer else set(".eE")) | ({","} if columns > 1 else set())
    if not shaped and set(t) <= chars:
        return True
    return any(ok(t[:i]) and (ok(t[i:]) or ok(t[i + 1 :])) for i in range(1, len(t)))


def first_unaligned(texts: list[str], refused: list[bool], columns: int, integer: bool,
                    ok: Callable[[str], bool]) -> int:
    """The first row whose label the reader must drop as possibly moved (len(texts): none)."""
    for r, (text, bad) in enumerate(zip(texts, refused)):
        if bad and may_have_moved(text, columns, integer, ok):
            return max(r - 1, 0)
    return len(texts)


@dataclass
class LineCase:
    """A damaged per-track file and what it was before the damage."""

    fmt: str
    task: str  # EXPR or VA
    data: bytes
    labels: list[Any]  # per original row: an EXPR code, a (v, a) pair, or None (no label)
    first: int  # 0-based original row where the damage starts
    kind: str
    style: str
    meta: dict = field(default_factory=dict)

    @property
    def first_line(self) -> int:
        return self.first + 2  # the header is line 1


def _row_texts(draw: Any, task: str, n: int, submission: bool) -> tuple[list[str], list[Any]]:
    texts, values = [], []
    for _ in range(n):
        if task == "EXPR":
            code = draw(st.integers(0 if submission else -1, 6))
            texts.append(str(code))
            values.append(None if code < 0 else code)
        else:
            v, a = draw(st.integers(-20, 20)) / 20, draw(st.integers(-20, 20)) / 20
            texts.append(f"{v:.4f},{a:.4f}" if draw(st.booleans()) else f"{v},{a}")
            values.append((v, a))
    return texts, values


def gen_lines(draw: Any, task: str, submission: bool = False) -> LineCase:
    """One clean track file of 1..12 rows, then one damage event."""
    n = draw(st.integers(1, 12))
    texts, values = _row_texts(draw, task, n, submission)
    style = draw(st.sampled_from(["LF", "CRLF", "CR"]))
    end = ENDS[style]
    header = (EXPR_HEADER if task == "EXPR" else VA_HEADER).encode()
    rows = [t.encode() for t in texts]
    kind = draw(st.sampled_from(KINDS))
    first = draw(st.integers(0, n - 1))
    if kind == "join" and n < 2:
        kind = "split"
    if kind == "join":  # the last row has no line end after it to delete: a byte appended is no join
        first = min(first, n - 2)
    # the rows before the damaged one, then the damaged part, then the rest (each with its line end)
    before = header + end + b"".join(r + end for r in rows[:first])
    row = rows[first]
    rest = b"".join(r + end for r in rows[first + 1 :])
    if kind == "stray":  # the other style's line-end byte inside the line
        byte = b"\n" if style == "CR" else b"\r"
        # (not first in a CR file: an LF after the previous line's CR is a CRLF line end, which can
        # make a short file an LF file by the tie rule: "H\r\n0\r0" has one row)
        k = draw(st.integers(1 if style == "CR" else 0, len(row)))
        damaged = row[:k] + byte + row[k:] + end + rest
    elif kind == "split":  # a byte turned into the line end, or a line end inserted
        k = draw(st.integers(0, len(row) - 1))
        keep = draw(st.booleans())
        if first == n - 1 and k == len(row) - 1:  # the file's last byte turned into its end: truncation,
            keep = True  # which no reader can see ("0.0,0.05" → "0.0,0.0"); insert the line end instead
        damaged = row[:k] + end + row[k if keep else k + 1 :] + end + rest
    elif kind == "join":  # the line end after the row deleted or turned into one byte
        byte = draw(st.sampled_from([b"", b"0", b"1", b",", b" ", b"x", b"\x00", b"-", b".", b"\r", b"\n"]))
        damaged = row + byte + rest  # (a byte that is still a line end of the file's style: no damage)
    elif kind == "blank":  # a blank line inserted before the row
        damaged = draw(st.sampled_from([b"", b" "])) + end + row + end + rest
    elif kind == "header":  # a header line inserted before the row (two files concatenated)
        damaged = draw(st.sampled_from(HEADER_VARIANTS)).encode() + end + row + end + rest
    elif kind == "nul":
        k = draw(st.integers(0, len(row) - 1))
        damaged = row[:k] + b"\x00" + row[k + draw(st.integers(0, 1)) :] + end + rest
    elif kind == "nul_block":  # a zeroed block from inside the row, maybe over line ends
        tail = row + end + rest
        k = draw(st.integers(0, len(row) - 1))
        size = draw(st.integers(1, 20))
        damaged = tail[:k] + b"\x00" * min(size, len(tail) - k) + tail[k + size :]
    else:
        damaged = row + end + rest
    if kind != "none" and not draw(st.booleans()):  # no final line end (as glmanhtu writes)
        if damaged.endswith(end):
            damaged = damaged[: -len(end)]
    data = (b"\xef\xbb\xbf" if draw(st.integers(0, 3)) == 0 else b"") + before + damaged
    fmt = ("submission_" if submission else "affwild2_") + task.lower() + "_lines"
    return LineCase(fmt, task, data, values, first, kind, style)


def decided_rows(data: bytes) -> list[bytes]:
    """The data rows of ``data`` by docs/data.md's line-end rule, written from the rule: LF
    (CRLF counted as LF) unless lone CRs outnumber LFs, a tie going to the header's line end;
    trailing blank lines dropped."""
    data = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    crlf, lf = data.count(b"\r\n"), data.count(b"\n")
    lone_cr = data.count(b"\r") - crlf
    header_end = re.search(rb"\r\n|\r|\n", data)
    if lone_cr > lf or (lone_cr == lf > 0 and header_end.group() == b"\r"):
        lines = data.split(b"\r")
    else:
        lines = data.replace(b"\r\n", b"\n").split(b"\n")
    rows = lines[1:]
    while rows and not rows[-1].strip(b" \t\r\n\x0b\x0c"):
        rows.pop()
    return rows


LINE_GENERATORS = {
    "affwild2_expr_lines": lambda draw: gen_lines(draw, "EXPR"),
    "affwild2_va_lines": lambda draw: gen_lines(draw, "VA"),
    "submission_expr_lines": lambda draw: gen_lines(draw, "EXPR", submission=True),
    "submission_va_lines": lambda draw: gen_lines(draw, "VA", submission=True),
}
