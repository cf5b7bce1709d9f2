"""The ground-truth frame table, in the frame-index schema of docs/design.md (same columns, dtypes)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

STRING_COLUMNS = ("database", "split", "track", "image", "source_code")
INT_COLUMNS = ("frame", "expression", "face_id")
FLOAT_COLUMNS = ("valence", "arousal", "box_x0", "box_y0", "box_x1", "box_y1")
COLUMNS = (
    "database", "split", "track", "frame", "image", "expression", "valence", "arousal", "source_code",
    "face_id", "box_x0", "box_y0", "box_x1", "box_y1", "landmarks",
)
SORT_KEY = ["database", "split", "track", "frame", "face_id", "image"]


class TableBuilder:
    """Collects rows column-wise (cheap at Aff-Wild2 scale) and builds the typed DataFrame."""

    def __init__(self) -> None:
        self._parts: list[dict[str, Sequence | np.ndarray]] = []

    def add(self, n: int, **columns: object) -> None:
        """Add ``n`` rows; each column is a scalar (broadcast) or a sequence of length ``n``."""
        if n == 0:
            return
        part: dict[str, Sequence | np.ndarray] = {}
        for name in COLUMNS:
            value = columns.pop(name, None)
            if value is None or np.isscalar(value) or isinstance(value, str):
                part[name] = [value] * n
            else:
                part[name] = value  # type: ignore[assignment]
                if len(value) != n:  # type: ignore[arg-type]
                    raise ValueError(f"column {name}: {len(value)} values for {n} rows")  # type: ignore[arg-type]
        if columns:
            raise TypeError(f"unknown columns {sorted(columns)}")
        self._parts.append(part)

    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame with the index dtypes, sorted by :data:`SORT_KEY`."""
        return to_frame(self._parts)


def _concat(parts: list[Mapping[str, Sequence | np.ndarray]], name: str) -> list:
    out: list = []
    for part in parts:
        values = part[name]
        out.extend(values.tolist() if isinstance(values, np.ndarray) else values)
    return out


def to_frame(parts: list[Mapping[str, Sequence | np.ndarray]]) -> pd.DataFrame:
    """Typed, sorted frame table from column-wise parts (see :class:`TableBuilder`)."""
    data: dict[str, pd.Series] = {}
    for name in STRING_COLUMNS:
        data[name] = pd.Series(_concat(parts, name), dtype="string")
    for name in INT_COLUMNS:
        data[name] = pd.Series(_concat(parts, name), dtype="Int64")
    for name in FLOAT_COLUMNS:
        values = [np.nan if v is None else v for v in _concat(parts, name)]
        series = pd.Series(values, dtype="Float64")
        data[name] = series.mask(pd.Series(values).isna())
    marks: list = []
    for part in parts:
        for value in part["landmarks"]:
            marks.append(None if value is None else np.asarray(value, dtype=np.float32).reshape(-1))
    data["landmarks"] = pd.Series(marks, dtype=object)
    df = pd.DataFrame({name: data[name] for name in COLUMNS})
    return df.sort_values(SORT_KEY, kind="stable", na_position="first").reset_index(drop=True)
