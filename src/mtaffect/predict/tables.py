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
``face_source``        string       where the box comes from: ``detected`` (full detector on this
                                    frame), ``refreshed`` (O-Net re-checked it on this frame) or
                                    ``held`` (carried unchanged from ``check_frame``); NA for crops
``check_frame``        Int64        the frame of the network check that gave the box and
                                    ``det_score`` (= ``frame`` unless held)
``box_change``         Float64      held rows: mean grey change of the box region since
                                    ``check_frame``, in [0, 1] (a larger change triggers an O-Net
                                    re-check instead of a hold); 0 on detected and refreshed rows
=====================  ===========  =============================================================

The last three columns come after ``arousal`` so the earlier columns keep their positions.

Both files are streamed chunk by chunk under temporary names and renamed into place when the
input is complete, so a ``predictions.csv`` or ``.parquet`` present is always a whole table. The
CSV's temporary name is ``predictions.partial.csv`` (appended and flushed: after a crash or Ctrl-C
it holds every row produced so far); ``runner`` decides what counts as finished (``done.json``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mtaffect.labels import EXPRESSIONS

__all__ = ["COLUMNS", "DTYPES", "make_table", "empty_table", "frame_rows", "TableWriter"]

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
    "face_source": "string",
    "check_frame": "Int64",
    "box_change": "Float64",
}
FACE_SOURCES = ("detected", "refreshed", "held")
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
    face_source: np.ndarray | str | None = "detected",
    check_frame: np.ndarray | None = None,
    box_change: np.ndarray | None = None,
) -> pd.DataFrame:
    """Rows for ``n`` faces (all arrays of length ``n``), or no-face rows when ``track_id`` is None.

    Face rows default to ``face_source="detected"``, ``check_frame=frame``, ``box_change=0`` (a
    photo); ``face_source=None`` leaves the three NA (aligned crops: no detector ran).
    """
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
        if face_source is not None:
            data.update(
                face_source=np.broadcast_to(np.asarray(face_source, dtype=object), (n,)),
                check_frame=data["frame"] if check_frame is None else np.asarray(check_frame, np.int64),
                box_change=np.zeros(n) if box_change is None else np.asarray(box_change, np.float64),
            )
    df = pd.DataFrame(data)
    for c, t in DTYPES.items():
        df[c] = df[c].astype(t) if c in df else pd.Series(pd.NA, index=df.index, dtype=t)
    return df[list(COLUMNS)]


def frame_rows(name: str, records: list[tuple[int, int, object]]) -> pd.DataFrame:
    """The table of a video's finished records, in (frame, track_id) order.

    A record is ``(frame, track_id, (face, values))`` for a face (``face`` with ``frame``, ``time``,
    ``track_id``, ``box``, ``score``, ``source``, ``check_frame``, ``change``; ``values`` the 7
    probabilities, valence, arousal) or ``(frame, -1, time)`` for a frame without a face.
    """
    faces = [r[2] for r in records if r[1] >= 0]
    empty = [r for r in records if r[1] < 0]
    parts = []
    if faces:
        vals = np.stack([v for _, v in faces])
        parts.append(
            make_table(
                input=name,
                frame=np.array([f.frame for f, _ in faces]),
                time=np.array([f.time for f, _ in faces]),
                track_id=np.array([f.track_id for f, _ in faces]),
                boxes=np.stack([f.box for f, _ in faces]),
                det_score=np.array([f.score for f, _ in faces]),
                probabilities=vals[:, :7],
                valence=vals[:, 7],
                arousal=vals[:, 8],
                face_source=np.array([f.source for f, _ in faces], dtype=object),
                check_frame=np.array([f.check_frame for f, _ in faces]),
                box_change=np.array([f.change for f, _ in faces]),
            )
        )
    if empty:
        parts.append(
            make_table(
                input=name, frame=np.array([r[0] for r in empty]), time=np.array([r[2] for r in empty])
            )
        )
    df = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    return df.sort_values(["frame", "track_id"], kind="stable", na_position="first").reset_index(drop=True)


class TableWriter:
    """Stream tables to ``<stem>.csv`` and ``<stem>.parquet``, both renamed into place at the end.

    Use as a context manager; on an exception the Parquet temp file is removed and
    ``<stem>.partial.csv`` keeps the rows written so far (never under the final name).
    """

    def __init__(self, stem: str | Path, *, csv: bool = True, parquet: bool = True) -> None:
        self.stem = Path(stem)
        self.stem.parent.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.stem.with_suffix(".csv") if csv else None
        self.parquet_path = self.stem.with_suffix(".parquet") if parquet else None
        self.partial_csv = self.stem.with_name(f"{self.stem.name}.partial.csv") if csv else None
        self._csv = open(self.partial_csv, "w", encoding="utf-8", newline="") if csv else None
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
            os.replace(self.partial_csv, self.csv_path)
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
