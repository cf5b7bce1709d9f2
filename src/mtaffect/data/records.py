"""Frame records: the index schema every reader emits, skip accounting and path safety.

A reader returns a ``pandas.DataFrame`` whose columns are :data:`COLUMNS` (the frame-index
schema of docs/design.md) and decodes no image. Readers build plain numpy columns and call
:func:`make_records`, which fills absent columns with missing values and fixes the dtypes, so
every reader's output concatenates cleanly into the index.

Bad input is handled in one place, :class:`Skips`:

* *malformed* lines (wrong field count, unparsable numbers, unknown codes) raise
  :class:`~mtaffect.errors.InputFormatError` naming the file and line in strict mode, and are
  skipped and counted by reason in lenient mode;
* *data quirks* that the databases are known to contain (unannotated rows, missing images,
  images beyond the last annotation row, excluded classes) are always counted, never raised.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from mtaffect.errors import InputFormatError
from mtaffect.labels import EXPRESSIONS_8, NUM_EXPRESSIONS

__all__ = [
    "COLUMNS",
    "KEY_COLUMNS",
    "Skips",
    "make_records",
    "empty_records",
    "has_expression",
    "has_va",
    "check_relative_paths",
    "read_text_lines",
    "split_lines",
    "string_array",
]

COLUMNS: dict[str, str] = {
    "database": "string",
    "split": "string",
    "track": "string",
    "frame": "Int64",
    "image": "string",
    "expression": "Int64",
    "valence": "Float64",
    "arousal": "Float64",
    "source_code": "string",
    "face_id": "Int64",
    "box_x0": "Float64",
    "box_y0": "Float64",
    "box_x1": "Float64",
    "box_y1": "Float64",
    "landmarks": "object",
}
"""Frame-index columns and their pandas dtypes (docs/design.md). ``landmarks`` holds float32
arrays of 136 values (68 × (x, y)) or None, stored in Parquet as ``list<float32>``."""

KEY_COLUMNS: tuple[str, ...] = ("database", "split", "track", "frame", "image")
"""One row per (database, split, image); these columns identify a row."""

MAX_EXAMPLES = 5  # examples kept per skip reason, for the summary


class Skips:
    """Counts skipped rows by (database, reason) and enforces the strict/lenient policy.

    ``malformed(...)`` is for lines that do not follow the format: it raises in strict mode.
    ``count(...)`` is for known data quirks: always counted, never raised.
    """

    def __init__(self, lenient: bool = False) -> None:
        self.lenient = lenient
        self.counts: Counter[tuple[str, str]] = Counter()
        self.malformed_counts: Counter[str] = Counter()
        """database -> lines (or entries) skipped because they break the format (lenient mode)"""
        self.examples: dict[tuple[str, str], list[str]] = {}

    def count(self, database: str, reason: str, n: int = 1, example: str | None = None) -> None:
        """Record ``n`` rows skipped (or kept without a label) for ``reason``."""
        if n <= 0:
            return
        key = (database, reason)
        self.counts[key] += int(n)
        if example is not None:
            bucket = self.examples.setdefault(key, [])
            if len(bucket) < MAX_EXAMPLES:
                bucket.append(example)

    def malformed(
        self, database: str, path: str | Path, line: int | None, message: str, reason: str = "malformed_line"
    ) -> None:
        """A line that breaks the format: raise (strict) or count it under ``reason`` (lenient)."""
        if not self.lenient:
            raise InputFormatError(path, message, line)
        where = f"{path}:{line}" if line is not None else str(path)
        self.count(database, reason, 1, f"{where}: {message}")
        self.malformed_counts[database] += 1

    def as_dict(self) -> dict[str, dict[str, int]]:
        """``{database: {reason: count}}``, sorted for stable output."""
        out: dict[str, dict[str, int]] = {}
        for (database, reason), n in sorted(self.counts.items()):
            out.setdefault(database, {})[reason] = n
        return out

    def examples_dict(self) -> dict[str, dict[str, list[str]]]:
        out: dict[str, dict[str, list[str]]] = {}
        for (database, reason), items in sorted(self.examples.items()):
            out.setdefault(database, {})[reason] = list(items)
        return out


def string_array(
    codes: np.ndarray, values: Sequence[str], mask: np.ndarray | None = None
) -> pd.arrays.ArrowStringArray:
    """``values[codes]`` as a pandas "string" array, built in C (no Python str per row).

    ``mask`` marks missing entries. Used for repetitive columns (database, split, track).
    """
    indices = pa.array(np.asarray(codes, dtype=np.int32), mask=mask)
    dictionary = pa.DictionaryArray.from_arrays(indices, pa.array(list(values), pa.string()))
    return pd.arrays.ArrowStringArray(dictionary.cast(pa.string()))


def _as_column(values: Any, dtype: str, n: int) -> Any:
    if isinstance(values, pd.api.extensions.ExtensionArray) and str(values.dtype) == dtype:
        return values
    if isinstance(values, str) and dtype == "string":
        return string_array(np.zeros(n, np.int32), [values])
    if values is None:
        if dtype == "object":
            return np.full(n, None, dtype=object)
        if dtype == "Int64":
            return pd.arrays.IntegerArray(np.zeros(n, np.int64), np.ones(n, dtype=bool))
        if dtype == "Float64":
            return pd.arrays.FloatingArray(np.zeros(n, np.float64), np.ones(n, dtype=bool))
        return pd.array(np.full(n, None, dtype=object), dtype=dtype)
    if np.isscalar(values) or isinstance(values, str):
        values = np.full(n, values, dtype=object if isinstance(values, str) else None)
    if dtype == "object":
        return values
    if dtype in ("Int64", "Float64"):
        arr = np.asarray(values)
        if arr.dtype.kind == "f":  # NaN marks missing
            mask = np.isnan(arr)
            if dtype == "Int64":
                return pd.arrays.IntegerArray(np.where(mask, 0, arr).astype(np.int64), mask)
            return pd.arrays.FloatingArray(arr.astype(np.float64), mask)
        if arr.dtype.kind in "iub":
            if dtype == "Int64":
                return pd.arrays.IntegerArray(arr.astype(np.int64), np.zeros(len(arr), dtype=bool))
            return pd.arrays.FloatingArray(arr.astype(np.float64), np.zeros(len(arr), dtype=bool))
    return pd.array(values, dtype=dtype)


def make_records(n: int | None = None, **columns: Any) -> pd.DataFrame:
    """A DataFrame in the index schema from per-column arrays (absent columns become missing).

    Float arrays given for Int64/Float64 columns use NaN for "missing"; a scalar is broadcast.
    """
    if n is None:
        lengths = {len(v) for v in columns.values() if v is not None and not np.isscalar(v)}
        if len(lengths) != 1:
            raise ValueError(f"cannot infer the number of records from column lengths {sorted(lengths)}")
        n = lengths.pop()
    unknown = set(columns) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown record columns: {sorted(unknown)}")
    data = {name: _as_column(columns.get(name), dtype, n) for name, dtype in COLUMNS.items()}
    df = pd.DataFrame(data, copy=False)
    wrong = {k: v for k, v in COLUMNS.items() if v != "object" and str(df[k].dtype) != v}
    return df.astype(wrong) if wrong else df


def empty_records() -> pd.DataFrame:
    """An empty DataFrame with the index columns and dtypes."""
    return make_records(0)


def has_expression(df: pd.DataFrame, *, other: bool = False) -> np.ndarray:
    """Boolean mask (len(df),): rows whose ``expression`` is one of the 7 classes (0..6), or also 7
    (Other, ABAW3+) when ``other``. NA, and any code outside the vocabulary, is "no label"."""
    codes = df["expression"].to_numpy(dtype=np.float64, na_value=np.nan)  # NaN compares False below
    upper = len(EXPRESSIONS_8) if other else NUM_EXPRESSIONS
    return (codes >= 0) & (codes < upper)


def has_va(df: pd.DataFrame) -> np.ndarray:
    """Boolean mask (len(df),): rows carrying both a valence and an arousal label."""
    return (df["valence"].notna() & df["arousal"].notna()).to_numpy(dtype=bool)


_ESCAPE = re.compile(r"(?:^|/)\.\.(?:/|$)")
_ABSOLUTE = re.compile(r"^(?:/|[A-Za-z]:)")
_CONTROL = r"[\x00-\x1f\x7f]"  # NUL and other control characters: no file system path holds them


def check_relative_paths(
    paths: pd.Series, *, database: str, file: str | Path, lines: np.ndarray, skips: Skips
) -> np.ndarray:
    """Boolean mask of paths that stay inside the database root (POSIX-normalised in place).

    Absolute paths and paths with a ``..`` component are rejected (``path_escapes_root``), so are
    paths holding a NUL byte or another control character (``bad_path``): an error naming the
    file and line in strict mode, a counted skip in lenient mode.
    """
    control = paths.str.contains(_CONTROL, regex=True).fillna(False).to_numpy(dtype=bool)
    bad = paths.str.match(_ABSOLUTE.pattern) | paths.str.contains(_ESCAPE.pattern, regex=True)
    bad = bad.fillna(False).to_numpy(dtype=bool) & ~control
    for i in np.flatnonzero(control | bad):
        if control[i]:
            message = f"image path {paths.iloc[i][:60]!r} holds a control character (NUL, CR...)"
            reason = "bad_path"
        else:
            message = f"image path {paths.iloc[i]!r} escapes the database root (absolute or '..')"
            reason = "path_escapes_root"
        skips.malformed(database, file, int(lines[i]), message, reason=reason)
    return ~(bad | control)


def split_lines(text: str) -> list[str]:
    """Lines of ``text`` split at LF, CRLF or a lone CR, and nowhere else.

    ``str.splitlines`` also splits at form feeds, vertical tabs, U+0085 and U+2028, which no
    editor counts as line ends: line numbers in messages would drift from the user's.
    """
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def read_text_lines(path: str | Path) -> list[str]:
    """Lines of a text file: UTF-8 with or without BOM, LF/CRLF/CR line ends, trailing spaces stripped.

    Physical line numbers are preserved (line i of the file is element i - 1); trailing blank
    lines are dropped.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise InputFormatError(path, f"cannot read: {err.strerror or err}") from err
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputFormatError(path, f"not UTF-8 text ({err.reason} at byte {err.start})") from err
    lines = [line.rstrip() for line in split_lines(text)]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def merge_counts(target: dict[str, Any], extra: Mapping[str, Any]) -> None:
    """Add nested integer counts of ``extra`` into ``target``."""
    for key, value in extra.items():
        if isinstance(value, Mapping):
            merge_counts(target.setdefault(key, {}), value)
        else:
            target[key] = target.get(key, 0) + value
