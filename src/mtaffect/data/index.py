"""The frame index: every database's records in one table, with an auditable summary.

``build_index`` runs the native readers (``mtaffect.data.sources``), concatenates their records
(schema: ``mtaffect.data.records.COLUMNS``, docs/design.md) and computes the summary printed by
``mtaffect index`` and stored in the Parquet metadata:

* frames per database / split / label, and frames carrying both EXPR and VA labels;
* the Aff-Wild2 leakage report: tracks whose EXPR labels are in train and VA labels in
  validation (or the reverse), exact names, and what the ``cross_split`` policy did with them;
* test-list tracks that also carry train/validation labels (cross-task test overlap);
* skipped rows by database and reason (with a few examples).

``cross_split`` policies: ``"report"`` (default) lists the tracks and keeps every row;
``"exclude-train"`` also drops the *train* rows of those tracks, so that no face of a
validation track is trained on, for either task.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mtaffect import labels
from mtaffect.data.records import COLUMNS, Skips, empty_records
from mtaffect.data.sources import READERS, read_generic
from mtaffect.errors import InputFormatError, UserError
from mtaffect.io import atomic_path

__all__ = ["build_index", "read_index", "write_index", "summarize", "format_summary", "CROSS_SPLIT_POLICIES"]

INDEX_VERSION = 1
META_KEY = b"mtaffect"
CROSS_SPLIT_POLICIES = ("report", "exclude-train")

_ARROW_TYPES = {
    "string": pa.string(),
    "Int64": pa.int64(),
    "Float64": pa.float64(),
    "object": pa.list_(pa.float32()),
}


def _normalise_name(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def _generic_sources(generic: Sequence[Any]) -> list[tuple[str, Path]]:
    out: list[tuple[str, Path]] = []
    for item in generic:
        if isinstance(item, tuple):
            name, path = item
        else:
            path = Path(item)
            name = path.stem
        name = _normalise_name(str(name))
        if not name or name in READERS or name in {n for n, _ in out}:
            raise UserError(
                f"generic database name {name!r} is empty, taken by a native database or repeated"
            )
        out.append((name, Path(path)))
    return out


def build_index(
    roots: Mapping[str, str | Path],
    *,
    lenient: bool = False,
    generic: Sequence[str | Path | tuple[str, str | Path]] = (),
    cross_split: str = "report",
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read the native databases under ``roots`` (keys: affwild2, affectnet, expw, afew_va).

    ``generic``: user CSVs (see ``mtaffect.data.sources.generic``), each a path (named by its
    stem) or a ``(name, path)`` pair. ``lenient``: skip and count malformed lines instead of
    raising :class:`~mtaffect.errors.InputFormatError`. Returns ``(index, meta)`` with
    ``meta = {"roots": {database: absolute root}, "summary": {...}, "version": 1}``.
    """
    if cross_split not in CROSS_SPLIT_POLICIES:
        raise UserError(f"cross_split must be one of {CROSS_SPLIT_POLICIES}, not {cross_split!r}")
    skips = Skips(lenient=lenient)
    parts: list[pd.DataFrame] = []
    infos: dict[str, Any] = {}
    abs_roots: dict[str, str] = {}
    wanted = {_normalise_name(k): Path(v) for k, v in roots.items() if v is not None}
    for name in wanted:
        if name not in READERS:
            raise UserError(f"unknown database {name!r}; known: {', '.join(READERS)} (use generic= for CSVs)")
    for name in READERS:  # fixed order: the index is deterministic
        if name not in wanted:
            continue
        root = wanted[name]
        if not root.is_dir():
            raise UserError(f"{name} root {root} is not a folder")
        records, info = READERS[name](root, skips)
        parts.append(records)
        infos[name] = info
        abs_roots[name] = str(root.resolve())
    for name, csv_path in _generic_sources(generic):
        if not csv_path.is_file():
            raise UserError(f"generic CSV {csv_path} does not exist")
        records, info = read_generic(csv_path, name, skips)
        parts.append(records)
        infos[name] = info
        abs_roots[name] = str(csv_path.parent.resolve())
    if not parts:
        raise UserError(
            "no database given: pass at least one of --affwild2, --affectnet, --expw, --afew-va, --generic"
        )
    index = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)
    cross = _cross_split(infos.get("affwild2"))
    removed = 0
    if cross_split == "exclude-train" and (
        cross["expr_train_va_validation"] or cross["va_train_expr_validation"]
    ):
        tracks = set(cross["expr_train_va_validation"]) | set(cross["va_train_expr_validation"])
        drop = (index["database"] == "affwild2") & (index["split"] == "train") & index["track"].isin(tracks)
        drop = drop.to_numpy(dtype=bool)
        removed = int(drop.sum())
        index = index[~drop].reset_index(drop=True)
    cross["policy"] = cross_split
    cross["removed_train_rows"] = removed
    summary = summarize(index)
    summary["cross_split"] = cross
    summary["test_overlap"] = _test_overlap(infos.get("affwild2"))
    summary["skipped"] = skips.as_dict()
    summary["malformed"] = dict(sorted(skips.malformed_counts.items()))
    summary["skip_examples"] = skips.examples_dict()
    summary["sources"] = infos
    summary["lenient"] = lenient
    meta = {"roots": abs_roots, "summary": summary, "version": INDEX_VERSION}
    return index, meta


def _cross_split(info: dict[str, Any] | None) -> dict[str, Any]:
    tracks = (info or {}).get("tracks", {})

    def of(key: str) -> set[str]:
        return set(tracks.get(key, ()))

    return {
        "expr_train_va_validation": sorted(of("EXPR/train") & of("VA/validation")),
        "va_train_expr_validation": sorted(of("VA/train") & of("EXPR/validation")),
        "shared_tracks": {
            split: len(of(f"EXPR/{split}") & of(f"VA/{split}")) for split in ("train", "validation")
        },
    }


def _test_overlap(info: dict[str, Any] | None) -> dict[str, list[str]]:
    if not info:
        return {}
    labelled = {t for tracks in info.get("tracks", {}).values() for t in tracks}
    return {name: sorted(set(tracks) & labelled) for name, tracks in info.get("test_lists", {}).items()}


def summarize(index: pd.DataFrame) -> dict[str, Any]:
    """Frames per database / split / label: rows, expression histogram, VA rows, rows with both."""
    frames: dict[str, Any] = {}
    if len(index) == 0:
        return {"frames": frames, "rows": 0}
    expr = index["expression"].to_numpy(dtype=np.float64, na_value=np.nan)
    has_va = index["valence"].notna().to_numpy(dtype=bool)
    db_codes, dbs = pd.factorize(index["database"], sort=False)
    split_codes, splits = pd.factorize(index["split"], sort=False)
    track_codes, _ = pd.factorize(index["track"], sort=False)
    for d, database in enumerate(dbs):
        for s, split in enumerate(splits):
            mask = (db_codes == d) & (split_codes == s)
            n = int(mask.sum())
            if n == 0:
                continue
            e = expr[mask]
            hist = np.bincount(e[~np.isnan(e)].astype(np.int64), minlength=len(labels.EXPRESSIONS_8))
            entry = {
                "rows": n,
                "expression": {labels.EXPRESSIONS_8[i]: int(c) for i, c in enumerate(hist) if c or i < 7},
                "expression_rows": int((~np.isnan(e)).sum()),
                "va_rows": int(has_va[mask].sum()),
                "both_rows": int((~np.isnan(e) & has_va[mask]).sum()),
                "tracks": int(np.unique(track_codes[mask]).size),
            }
            frames.setdefault(str(database), {})[str(split)] = entry
    return {"frames": frames, "rows": int(len(index))}


def format_summary(summary: Mapping[str, Any]) -> str:
    """The human-readable summary table printed by ``mtaffect index``."""
    lines = []
    names = [n[:3] for n in labels.EXPRESSIONS_8]
    head = (
        f"{'database':<10} {'split':<10} {'rows':>9} {'tracks':>7} {'EXPR':>9} {'VA':>9} {'both':>9}  "
        + " ".join(f"{n:>7}" for n in names)
    )
    lines += ["frames per database / split / label", head, "-" * len(head)]
    for database, splits in summary.get("frames", {}).items():
        for split, e in splits.items():
            hist = " ".join(f"{e['expression'].get(n, 0):>7}" for n in labels.EXPRESSIONS_8)
            lines.append(
                f"{database:<10} {split:<10} {e['rows']:>9} {e['tracks']:>7} {e['expression_rows']:>9} "
                f"{e['va_rows']:>9} {e['both_rows']:>9}  {hist}"
            )
    cross = summary.get("cross_split")
    if cross:
        shared = cross.get("shared_tracks", {})
        lines += [
            "",
            f"Aff-Wild2 tracks with EXPR and VA files in the same split: train {shared.get('train', 0)}, "
            f"validation {shared.get('validation', 0)} (their frames carry both labels: 'both' above)",
        ]
        a, b = cross["expr_train_va_validation"], cross["va_train_expr_validation"]
        lines.append(
            f"leakage report (policy {cross['policy']}): {len(a)} tracks EXPR-train & VA-validation, "
            f"{len(b)} tracks VA-train & EXPR-validation; train rows removed: {cross['removed_train_rows']}"
        )
        for label, tracks in (("EXPR-train & VA-validation", a), ("VA-train & EXPR-validation", b)):
            if tracks:
                shown = ", ".join(tracks[:12]) + (f", ... (+{len(tracks) - 12})" if len(tracks) > 12 else "")
                lines.append(f"  {label}: {shown}")
    overlap = {k: v for k, v in summary.get("test_overlap", {}).items() if v}
    for name, tracks in overlap.items():
        lines.append(
            f"test list {name}: {len(tracks)} tracks also have train/validation labels: "
            + ", ".join(tracks[:8])
            + (" ..." if len(tracks) > 8 else "")
        )
    malformed = summary.get("malformed", {})
    if malformed:  # lenient mode: lines that break their format, skipped (reasons below)
        counts = ", ".join(f"{database} {n}" for database, n in malformed.items())
        lines += ["", f"malformed lines skipped (--lenient): {counts}"]
    skipped = summary.get("skipped", {})
    if skipped:
        lines += ["", "skipped or unlabelled rows by reason"]
        for database, reasons in skipped.items():
            for reason, n in reasons.items():
                lines.append(f"  {database:<10} {reason:<36} {n:>9}")
    lines.append(f"\ntotal rows: {summary.get('rows', 0)}")
    return "\n".join(lines)


def _arrow_schema(df: pd.DataFrame) -> pa.Schema:
    fields = []
    for name in df.columns:
        if name in COLUMNS:
            fields.append(pa.field(name, _ARROW_TYPES[COLUMNS[name]]))
        else:
            fields.append(pa.Schema.from_pandas(df[[name]], preserve_index=False).field(name))
    return pa.schema(fields)


def write_index(df: pd.DataFrame, meta: Mapping[str, Any], path: str | Path) -> None:
    """Write the index to Parquet atomically, ``meta`` as JSON under the key ``mtaffect``."""
    table = pa.Table.from_pandas(df.reset_index(drop=True), schema=_arrow_schema(df), preserve_index=False)
    metadata = dict(table.schema.metadata or {})
    metadata[META_KEY] = json.dumps(dict(meta), default=str).encode()
    table = table.replace_schema_metadata(metadata)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_index(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read an index written by :func:`write_index`: (DataFrame with the schema dtypes, meta)."""
    path = Path(path)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise InputFormatError(path, f"not a readable Parquet frame index ({err})") from err
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise InputFormatError(path, "no 'mtaffect' metadata: not written by `mtaffect index`")
    meta = json.loads(raw)
    df = table.to_pandas()
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise InputFormatError(path, f"missing index columns {missing}")
    df = df.astype({k: v for k, v in COLUMNS.items() if v != "object"})
    if len(df) == 0:
        df = pd.concat([empty_records(), df[[c for c in df.columns if c not in COLUMNS]]], axis=1)
    return df, meta
