"""One side-by-side table of the prepared GPU run's benchmarks (benchmarks/gpu_short_run3.sh).

Reads the JSON files that ``bench_store``, ``bench_predict_device`` and ``bench_compile`` write: each
a list of rows ``{"measure": str, "path": "today"|"new", "value": float, "unit": str, "device": str,
"settings": str}``; prints one Markdown table (a row per measure and device: today, new, new/today)
and each file's settings. A file that cannot be read or is not such a list is named with the
reason (and the line, for broken JSON) and left out; the others are still printed, and the exit
status is then 1::

    python benchmarks/gpu_summary.py $OUT/store.json $OUT/predict.json $OUT/compile.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

PATHS = ("today", "new")
FIELDS = {"measure": str, "path": str, "value": (int, float), "unit": str, "device": str, "settings": str}


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of one file; ValueError naming the file (and line or row) when it is not the contract."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: line {error.lineno}: not JSON ({error.msg})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot be read ({error})") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of rows, found {type(data).__name__}")
    for number, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: row {number}: expected an object, found {type(row).__name__}")
        for key, kind in FIELDS.items():
            if not isinstance(row.get(key), kind) or isinstance(row.get(key), bool):
                what = "a number" if key == "value" else "a string"
                raise ValueError(f"{path}: row {number}: {key!r} missing or not {what}")
        if row["path"] not in PATHS:
            raise ValueError(f"{path}: row {number}: path {row['path']!r} is neither 'today' nor 'new'")
    return data


def _number(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: measure | device | today | new | unit | new/today, in the rows' first-seen order."""
    cells: dict[tuple[str, str, str], dict[str, float]] = {}
    for row in rows:
        # a measure written twice for one path (a rerun appended): the later row wins
        cells.setdefault((row["measure"], row["device"], row["unit"]), {})[row["path"]] = float(row["value"])
    lines = ["| measure | device | today | new | unit | new / today |", "|---|---|---|---|---|---|"]
    for (measure, device, unit), values in cells.items():
        today, new = values.get("today"), values.get("new")
        ratio = f"{new / today:.2f}×" if today and new is not None else "—"
        lines.append(f"| {measure} | {device} | {_number(today)} | {_number(new)} | {unit} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("files", nargs="+", help="JSON files of rows")
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    settings: list[str] = []
    failed = 0
    for name in args.files:
        try:
            found = read_rows(name)
        except ValueError as error:
            print(f"gpu_summary: {error}", file=sys.stderr)
            failed += 1
            continue
        rows.extend(found)
        for text in dict.fromkeys(row["settings"] for row in found):
            settings.append(f"* {Path(name).name}: {text}")
    if rows:
        print(table(rows))
        print()
        print("\n".join(settings))
    else:
        print("gpu_summary: no rows to show", file=sys.stderr)
    if failed:
        print(f"gpu_summary: {failed} of {len(args.files)} files left out (above)", file=sys.stderr)
    return 1 if failed or not rows else 0


if __name__ == "__main__":
    raise SystemExit(main())
