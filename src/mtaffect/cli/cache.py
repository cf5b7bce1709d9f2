"""``mtaffect cache``: build the aligned face cache for the databases of a frame index, and optionally
the frame stores (every face of a split decoded once, memory-mapped)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

EXAMPLES = """examples:
  mtaffect cache --index index.parquet --out cache/
  mtaffect cache --index index.parquet --out cache/ --size 64 --workers 4 --format raw
  mtaffect cache --index index.parquet --out cache/ --frame-store store/   # + decode-once stores

The cache's location is written back into the index's metadata (unless --no-update-index), so
training finds the faces from the index alone. Rerunning the same command resumes an interrupted
build: finished shards are kept, and so are the finished chunks of a frame store whose source files
did not change (changed ones are rebuilt).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLES
    parser.add_argument("--index", type=Path, required=True, metavar="FILE.parquet", help="frame index")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="cache folder (created)")
    parser.add_argument("--size", type=int, default=112, help="face size in pixels (default 112)")
    parser.add_argument("--workers", type=int, default=2, help="parallel processes (default 2)")
    parser.add_argument("--format", dest="fmt", choices=("jpeg", "raw"), default="jpeg",
                        help="jpeg: compact, decoded on read (default); raw: uint8 arrays, memory-mapped")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    parser.add_argument("--shard-size", type=int, default=2048, help="faces per shard (default 2048)")
    parser.add_argument("--overwrite", action="store_true",
                        help="rebuild a cache that DIR holds with other settings (another --quality)")
    parser.add_argument("--frame-store", type=Path, default=None, metavar="DIR",
                        help="also decode every face of --store-splits once into DIR/<split>-<size>/ "
                        "(uint8, memory-mapped; about size*size*3 bytes per face): the feature cache, "
                        "evaluation and training then read faces without decoding")
    parser.add_argument("--store-splits", nargs="+", default=["train", "validation"], metavar="SPLIT",
                        help="splits given a frame store (default: train validation)")
    parser.add_argument("--no-update-index", action="store_true",
                        help="leave the index file alone (the metadata is in DIR/<fmt><size>/cache.json)")


def run(args: argparse.Namespace) -> int:
    from mtaffect.data.faces import build_face_cache
    from mtaffect.data.index import read_index, write_index
    from mtaffect.errors import UserError
    from mtaffect.io import check_writable

    if args.workers < 1 or args.shard_size < 1:
        raise UserError("--workers and --shard-size must be at least 1")
    if not 1 <= args.quality <= 100:
        raise UserError(f"--quality must be within 1..100, not {args.quality}")
    index, meta = read_index(args.index)
    # outputs first: a read-only cache folder or index fails now, not after the crops are built
    check_writable(args.out / f"{args.fmt}{args.size}" / "cache.json")
    if args.frame_store is not None:
        check_writable(args.frame_store / f"{args.store_splits[0]}-{args.size}" / "store.json")
    if not args.no_update_index:
        check_writable(args.index)
    start = time.perf_counter()
    meta = build_face_cache(index, meta, args.out, size=args.size, workers=args.workers, fmt=args.fmt,
                            quality=args.quality, shard_size=args.shard_size, overwrite=args.overwrite)
    info = meta["face_cache"]
    elapsed = time.perf_counter() - start
    print(f"face cache {info['path']}: {info['entries']} faces, {info['format']} {info['size']}px, "
          f"{elapsed:.1f} s")
    for database, counts in info["counts"].items():
        parts = ", ".join(f"{k} {v}" for k, v in counts.items())
        print(f"  {database:<10} {parts}")
    if info["skipped"]:
        print("unreadable faces are kept out of training and reported by FaceReader (never replaced):")
        for database, reasons in info["skipped"].items():
            print(f"  {database:<10} " + ", ".join(f"{k} {v}" for k, v in reasons.items()))
    direct = int((index["database"] == "affwild2").sum())
    if direct:
        print(f"  affwild2   {direct} rows read from cropped_aligned as released (not cached)")
    if args.frame_store is not None:
        from mtaffect.data.faces import build_frame_stores

        start = time.perf_counter()
        meta = build_frame_stores(index, meta, args.frame_store, splits=args.store_splits, size=args.size,
                                  workers=args.workers)
        for entry in meta["frame_stores"]:
            if entry["size"] == args.size and entry["split"] in args.store_splits:
                gib = entry["n"] * args.size * args.size * 3 / 2**30
                print(f"frame store {entry['path']}: {entry['n']} faces ({gib:.2f} GiB), "
                      f"{entry['unreadable']} unreadable (reported when read)")
        print(f"frame stores built in {time.perf_counter() - start:.1f} s")
    if not args.no_update_index:
        write_index(index, meta, args.index)
        print(f"index metadata updated: {args.index}")
    return 0
