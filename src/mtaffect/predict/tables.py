"""The per-frame prediction table and its streaming writers (CSV and Parquet).

One row per (frame, face). A frame in which no face is found still gets one row, with
``face_found = False`` and missing values (NA) in every face and prediction column, so a table
always accounts for every decoded frame.

Columns:

=====================  ===========  =============================================================
``input``              string       the input file (or stream) as given
``frame``              Int64        0-based decode index of the frame in the video (0 for images);
                                    add 1 for Aff-Wild2 ``cropped_aligned`` image numbers
``time``               Float64      presentation time in seconds (the container's PTS)
``track_id``           Int64        person track within the input (NA when no face)
``face_found``         boolean
``box_x0 … box_y1``    Float64      face box in source pixels
``det_score``          Float64      detector face probability of the box
``Neutral … Surprise`` Float64      the seven expression probabilities (``labels.EXPRESSIONS``)
``expression``         string       the most probable expression's name
``expression_index``   Int64        its index in ``EXPRESSIONS``
``valence, arousal``   Float64      in [-1, 1]
=====================  ===========  =============================================================

The CSV is appended and flushed chunk by chunk, so a crash keeps every row produced so far; the
Parquet file is written to a temporary name and renamed when the input is complete, so a
``.parquet`` file present means a finished input (what resuming checks).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mtaffect.labels import EXPRESSIONS

__all__ = ["COLUMNS", "DTYPES", "make_table", "empty_table", "TableWriter"]

BOX_COLUMNS = ("box_x0", "box_y0", "box_x1", "box_y1")
DTYPES: dict[str, str] = {
    "input": "string",
    "frame": "Int64",
    "time": "Float64",
    "track_id": "Int64",
    "face_found": "boolean",
    **{c: "Float64" for c in BOX_COLUMNS},
    "det_score": "Float64",
    **{name: "Float64" for name in EXPRESSIONS},
    "expression": "string",
    "expression_index": "Int64",
    "valence": "Float64",
    "arousal": "Float64",
}
COLUMNS: tuple[str, ...] = tuple(DTYPES)


def empty_table() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=t) for c, t in DTYPES.items()})


def make_table(
    *,
    input: str,
    frame: np.ndarray,
    time: np.ndarray,
    track_id: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    det_score: np.ndarray | None = None,
    probabilities: np.ndarray | None = None,
    valence: np.ndarray | None = None,
    arousal: np.ndarray | None = None,
) -> pd.DataFrame:
    """Rows for ``n`` faces (all arrays of length ``n``), or no-face rows when ``track_id`` is None."""
    n = len(frame)
    data: dict[str, object] = {
        "input": [input] * n,
        "frame": np.asarray(frame, np.int64),
        "time": np.asarray(time, np.float64),
    }
    if track_id is None:
        data["face_found"] = np.zeros(n, bool)
    else:
        probabilities = np.asarray(probabilities, np.float64).reshape(n, len(EXPRESSIONS))
        best = probabilities.argmax(axis=1) if n else np.zeros(0, np.int64)
        data.update(
            track_id=np.asarray(track_id, np.int64),
            face_found=np.ones(n, bool),
            **{c: np.asarray(boxes, np.float64).reshape(n, 4)[:, i] for i, c in enumerate(BOX_COLUMNS)},
            det_score=np.asarray(det_score, np.float64),
            **{name: probabilities[:, i] for i, name in enumerate(EXPRESSIONS)},
            expression=np.asarray(EXPRESSIONS, dtype=object)[best],
            expression_index=best,
            valence=np.asarray(valence, np.float64),
            arousal=np.asarray(arousal, np.float64),
        )
    df = pd.DataFrame(data)
    for c, t in DTYPES.items():
        df[c] = df[c].astype(t) if c in df else pd.Series(pd.NA, index=df.index, dtype=t)
    return df[list(COLUMNS)]


class TableWriter:
    """Stream tables to ``<stem>.csv`` (append + flush) and ``<stem>.parquet`` (renamed at the end).

    Use as a context manager; on an exception the Parquet temp file is removed and the CSV keeps
    the rows written so far.
    """

    def __init__(self, stem: str | Path, *, csv: bool = True, parquet: bool = True) -> None:
        self.stem = Path(stem)
        self.stem.parent.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.stem.with_suffix(".csv") if csv else None
        self.parquet_path = self.stem.with_suffix(".parquet") if parquet else None
        self._csv = open(self.csv_path, "w", encoding="utf-8", newline="") if csv else None
        self._header = True
        self._tmp = self.stem.parent / f".{self.stem.name}.parquet.partial" if parquet else None
        self._schema = pa.Schema.from_pandas(empty_table(), preserve_index=False)
        self._pq = pq.ParquetWriter(self._tmp, self._schema) if parquet else None
        self.rows = 0

    def write(self, df: pd.DataFrame) -> None:
        if df.empty:
            return
        if self._csv is not None:
            df.to_csv(self._csv, header=self._header, index=False, lineterminator="\n", float_format="%.6g")
            self._header = False
            self._csv.flush()
        if self._pq is not None:
            self._pq.write_table(pa.Table.from_pandas(df, schema=self._schema, preserve_index=False))
        self.rows += len(df)

    def close(self) -> None:
        if self._csv is not None:
            if self._header:  # no row at all: still a valid CSV with its header
                empty_table().to_csv(self._csv, index=False, lineterminator="\n")
            self._csv.close()
            self._csv = None
        if self._pq is not None:
            self._pq.close()
            self._pq = None
            os.replace(self._tmp, self.parquet_path)

    def abort(self) -> None:
        if self._csv is not None:
            self._csv.close()
            self._csv = None
        if self._pq is not None:
            self._pq.close()
            self._pq = None
        if self._tmp is not None and self._tmp.exists():
            self._tmp.unlink()

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
