"""The one number parser of the annotation readers: finite, in range, integer where one is meant.

Every reader turns annotation text (or JSON values) into numbers through this module, so the
rules are the same for every format:

* a number is written in ASCII decimal: ``[+-]digits[.digits][e[+-]digits]``; ``nan``, ``inf``,
  ``Infinity``, ``1_000``, hex and non-ASCII digits are refused (``float()`` would take most);
* a float must be finite once parsed (``1e400`` overflows to inf: refused);
* an integer is written without a point or an exponent (``1e19`` and ``3.0`` are refused where an
  integer is meant) and must fit in int64 (``9223372036854775808`` is refused, never wrapped);
* in JSON, ``true``/``false``, strings and ``null`` are refused where a number is meant (Python's
  ``float(True)`` is 1.0);
* ranges (``lo``..``hi``) are checked when given; readers that treat out-of-range values as a
  known data quirk (counted, not an error) check the range themselves.

:class:`NumberError` is a ``ValueError`` whose message says what is wrong with the text; the
readers wrap it with the file and line (strict mode) or count it (lenient mode).
"""

from __future__ import annotations

import io
import math
import re
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

__all__ = [
    "NumberError",
    "parse_number",
    "parse_column",
    "bulk_numbers",
    "json_number",
    "integer_pattern",
    "number_pattern",
    "INT64_DIGITS",
]

_INT = r"[+-]?[0-9]+"
_FLOAT = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_INT_RE = re.compile(_INT)
_FLOAT_RE = re.compile(_FLOAT)
INT64_DIGITS = 18
"""Integers with more digits than this are refused: every 18-digit integer fits in int64."""


def integer_pattern(leading_zeros: bool = True) -> str:
    """The integer rule as an anchored RE2/``re`` pattern (at most 18 digits), for bulk matching;
    ``leading_zeros=False`` refuses ``03`` (the per-track files' rule, mtaffect.data.sources.abaw_text)."""
    if leading_zeros:
        return rf"^[+-]?[0-9]{{1,{INT64_DIGITS}}}$"
    return rf"^[+-]?(?:0|[1-9][0-9]{{0,{INT64_DIGITS - 1}}})$"


def number_pattern() -> str:
    """The float rule as an anchored RE2/``re`` pattern (finiteness is checked after parsing)."""
    return rf"^{_FLOAT}$"


class NumberError(ValueError):
    """Text (or a JSON value) that is not an acceptable number; the message says why."""


def _show(text: str) -> str:
    return repr(text[:40] + ("..." if len(text) > 40 else ""))


def _check_range(value: float, text: str, what: str, lo: float | None, hi: float | None) -> None:
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        low = "-inf" if lo is None else f"{lo:g}"
        high = "inf" if hi is None else f"{hi:g}"
        raise NumberError(f"{what} {text} outside {low}..{high}")


def parse_number(
    text: str, *, integer: bool = False, lo: float | None = None, hi: float | None = None, what: str = "value"
) -> Any:
    """``text`` as an int (``integer=True``) or a finite float, checked against ``lo``..``hi``.

    Leading/trailing whitespace is ignored. Raises :class:`NumberError` otherwise.
    """
    t = str(text).strip()
    if integer:
        if not _INT_RE.fullmatch(t):
            raise NumberError(f"{what} {_show(t)} is not an integer")
        if len(t.lstrip("+-")) > INT64_DIGITS:
            raise NumberError(f"{what} {_show(t)} is too large for an integer")
        value: Any = int(t)
    else:
        if not _FLOAT_RE.fullmatch(t):
            raise NumberError(f"{what} {_show(t)} is not a finite number")
        value = float(t)
        if not math.isfinite(value):
            raise NumberError(f"{what} {_show(t)} overflows a float")
    _check_range(value, t, what, lo, hi)
    return value


def bulk_numbers(
    body: bytes, columns: int, integer: bool, *, leading_zeros: bool = True
) -> np.ndarray | None:
    """Comma-separated numbers of ``body`` (LF line ends) parsed in bulk: (lines, columns) array.

    None when any line has another field count or breaks the number rules: the caller then
    parses line by line with :func:`parse_number` to name the bad lines. pyarrow splits the
    fields (no quoting: a quoted number is malformed) and each column is checked with one RE2
    match of the same patterns, so the bulk and the per-line paths accept exactly the same text:
    a leading ``+`` is dropped before pyarrow's cast (which refuses ``+3`` as an integer), and no
    pyarrow error leaves this function (any is a None: the per-line path names the line). Both trim
    the same whitespace (Python's ``str.isspace`` set, U+00A0 and U+2028 included); a body that begins
    with U+FEFF (which pyarrow would drop as a byte-order mark) is left to the per-line path.
    """
    kind = np.int64 if integer else np.float64
    if not body:
        return np.zeros((0, columns), dtype=kind)
    if body.startswith(b"\xef\xbb\xbf"):  # pyarrow's CSV reader drops a leading BOM; str.strip keeps
        return None  # U+FEFF (no whitespace): the per-line path refuses the row and names its line
    names = [f"c{i}" for i in range(columns)]
    try:
        table = pacsv.read_csv(
            io.BytesIO(body),
            read_options=pacsv.ReadOptions(column_names=names, use_threads=False),
            parse_options=pacsv.ParseOptions(ignore_empty_lines=False, quote_char=False),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()), null_values=[], strings_can_be_null=False
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    if table.num_rows != body.count(b"\n") + 1:
        return None
    pattern = integer_pattern(leading_zeros) if integer else number_pattern()
    out = []
    for col in table.columns:
        text = pc.utf8_trim_whitespace(col)
        if col.null_count or not pc.all(pc.match_substring_regex(text, pattern)).as_py():
            return None
        text = pc.utf8_ltrim(text, characters="+")  # the pattern allows one sign at most
        try:
            out.append(pc.cast(text, pa.int64() if integer else pa.float64()).to_numpy())
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):  # pragma: no cover
            return None
    values = np.stack(out, axis=1)
    if not integer and not np.isfinite(values).all():  # 1e400: overflows to inf
        return None
    return values


def parse_column(
    texts: pd.Series | list[str],
    *,
    integer: bool = False,
    lo: float | None = None,
    hi: float | None = None,
    what: str = "value",
) -> tuple[np.ndarray, dict[int, str]]:
    """Vectorised :func:`parse_number` over a column of strings.

    Returns ``(values, errors)``: int64 (``integer``) or float64 values (0 / NaN at bad rows) and
    ``{position: message}`` for the rows that are not acceptable numbers. Good rows are
    converted in bulk; messages are built for the bad rows only.
    """
    s = pd.Series(texts, dtype=object).astype(str).str.strip()
    pattern = _INT if integer else _FLOAT
    ok = np.array(s.str.fullmatch(pattern).fillna(False), dtype=bool)
    if integer:
        ok &= np.array(s.str.lstrip("+-").str.len() <= INT64_DIGITS, dtype=bool)
        values = np.zeros(len(s), dtype=np.int64)
        if ok.any():
            values[ok] = s[ok].astype(np.int64).to_numpy()
    else:
        values = np.full(len(s), np.nan, dtype=np.float64)
        if ok.any():
            values[ok] = s[ok].astype(np.float64).to_numpy()
        ok &= np.isfinite(values)
    if lo is not None:
        ok &= ~(values < lo)
    if hi is not None:
        ok &= ~(values > hi)
    errors: dict[int, str] = {}
    for i in np.flatnonzero(~ok):
        try:
            parse_number(s.iloc[i], integer=integer, lo=lo, hi=hi, what=what)
        except NumberError as err:
            errors[int(i)] = str(err)
        else:  # pragma: no cover - the vectorised and the scalar rules are the same
            errors[int(i)] = f"{what} {_show(s.iloc[i])} is not acceptable"
    if not integer:
        values[~ok] = np.nan
    return values, errors


def json_number(
    value: Any,
    *,
    integer: bool = False,
    lo: float | None = None,
    hi: float | None = None,
    what: str = "value",
) -> Any:
    """A JSON value that must be a number: bool, str, None, lists and non-finite floats refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NumberError(f"{what} {value!r} is a {type(value).__name__}, not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise NumberError(f"{what} {value!r} is not finite")
    if integer:
        if isinstance(value, float):
            if not value.is_integer():
                raise NumberError(f"{what} {value!r} is not an integer")
            value = int(value)
        if abs(value) >= 2**63:
            raise NumberError(f"{what} {value!r} is too large for an integer")
    else:
        try:
            value = float(value)
        except OverflowError:  # a JSON integer beyond the float range
            raise NumberError(f"{what} {str(value)[:40]} overflows a float") from None
    _check_range(value, repr(value), what, lo, hi)
    return value
