"""The tally of the last ``make fuzz`` as the Markdown tables of docs/reliability.md.

Usage: ``python benchmarks/fuzz_report.py .cache/fuzz`` (reads ``readers.json`` written by
tests/test_fuzz_formats.py and ``kills.json`` written by tests/test_fuzz_kills.py).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

OUTCOMES = ("clean", "clean_error", "crash", "hang", "wrong")


def readers_table(rows: list[dict]) -> str:
    counts: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(OUTCOMES, 0))
    for row in rows:
        counts[(row["format"], row["mode"])][row["outcome"]] += row["count"]
    lines = [
        "| format | mode | inputs | clean | clean error | crash | hang | silently wrong |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    total = dict.fromkeys(OUTCOMES, 0)
    for (fmt, mode), c in sorted(counts.items()):
        cells = " | ".join(str(c[o]) for o in OUTCOMES)
        lines.append(f"| {fmt} | {mode} | {sum(c.values())} | {cells} |")
        for o in OUTCOMES:
            total[o] += c[o]
    cells = " | ".join(str(total[o]) for o in OUTCOMES)
    lines.append(f"| **all** | | **{sum(total.values())}** | {cells} |")
    return "\n".join(lines)


def kills_table(rows: list[dict]) -> str:
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        counts[row["command"]][row["outcome"]] += row["count"]
    lines = [
        "| command | runs killed | finished before the kill | reruns matching the uninterrupted run |",
        "|---|---:|---:|---:|",
    ]
    for command, c in sorted(counts.items()):
        runs = c["killed"] + c["finished_before_the_kill"]
        early, matched = c["finished_before_the_kill"], c["rerun_matched"]
        lines.append(f"| mtaffect {command} | {c['killed']} | {early} | {matched}/{runs} |")
    return "\n".join(lines)


def main(folder: str) -> None:
    root = Path(folder)
    readers = json.loads((root / "readers.json").read_text())
    print(readers_table(readers["readers"]))
    for failure in readers.get("failures", []):
        print("FAILURE:", failure)
    if (root / "kills.json").exists():
        print()
        print(kills_table(json.loads((root / "kills.json").read_text())))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".cache/fuzz")
