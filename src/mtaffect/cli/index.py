"""``mtaffect index``: read native databases into one frame index (Parquet) and print a summary."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mtaffect.errors import ExistingRunError, UserError

EXAMPLES = """examples:
  mtaffect index --affwild2 /data/Aff-Wild2 --affectnet /data/AffectNet --expw /data/ExpW \\
                 --afew-va /data/AFEW-VA --out index.parquet
  mtaffect index --generic my_faces.csv --generic-name mine --out mine.parquet
  mtaffect index --affwild2 /data/Aff-Wild2 --lenient --cross-split exclude-train --out index.parquet
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLES
    group = parser.add_argument_group("databases (each optional; give at least one)")
    group.add_argument(
        "--affwild2", type=Path, metavar="DIR", help="Aff-Wild2 root (annotations + cropped_aligned)"
    )
    group.add_argument("--affectnet", type=Path, metavar="DIR", help="AffectNet root (CSV or npy release)")
    group.add_argument("--expw", type=Path, metavar="DIR", help="ExpW root (label/label.lst + image/origin)")
    group.add_argument(
        "--afew-va", dest="afew_va", type=Path, metavar="DIR", help="AFEW-VA root (nested or flat)"
    )
    group.add_argument(
        "--generic",
        type=Path,
        action="append",
        default=[],
        metavar="CSV",
        help="a CSV of your own (image, expression and/or valence, arousal); repeatable",
    )
    group.add_argument(
        "--generic-name",
        action="append",
        default=[],
        metavar="NAME",
        help="database name for the matching --generic (default: the CSV file stem)",
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="FILE.parquet", help="frame index to write"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument(
        "--lenient",
        action="store_true",
        help="skip and count malformed lines instead of stopping at the first one",
    )
    parser.add_argument(
        "--cross-split",
        choices=("report", "exclude-train"),
        default="report",
        help="Aff-Wild2 tracks with EXPR labels in one split and VA labels in the other: "
        "'report' lists them and keeps every row; 'exclude-train' also drops their train rows",
    )
    parser.add_argument("--summary-json", type=Path, metavar="FILE", help="also write the summary as JSON")


def run(args: argparse.Namespace) -> int:
    from mtaffect.data.index import build_index, format_summary, write_index
    from mtaffect.io import check_writable, write_json

    if args.out.exists() and not args.overwrite:
        raise ExistingRunError(f"{args.out} exists; pass --overwrite to replace it")
    if len(args.generic_name) > len(args.generic):
        raise UserError("more --generic-name than --generic")
    generic = [
        (args.generic_name[i], path) if i < len(args.generic_name) else path
        for i, path in enumerate(args.generic)
    ]
    roots = {name: getattr(args, name) for name in ("affwild2", "affectnet", "expw", "afew_va")}
    roots = {k: v for k, v in roots.items() if v is not None}
    # outputs first: a read-only or missing destination fails now, before the databases are read
    check_writable(args.out)
    for leftover in args.out.parent.glob(f".{args.out.name}.*.tmp"):  # a killed earlier run's temporary
        leftover.unlink(missing_ok=True)
    if args.summary_json:
        check_writable(args.summary_json)
    start = time.perf_counter()
    index, meta = build_index(roots, lenient=args.lenient, generic=generic, cross_split=args.cross_split)
    write_index(index, meta, args.out)
    elapsed = time.perf_counter() - start
    print(format_summary(meta["summary"]))
    print(f"wrote {args.out} ({len(index)} rows) in {elapsed:.1f} s", file=sys.stderr)
    if args.summary_json:
        write_json(args.summary_json, meta["summary"])
    return 0
