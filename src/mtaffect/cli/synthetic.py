"""``mtaffect synthetic``: write the built-in synthetic databases in their native formats."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

EXAMPLES = """examples:
  mtaffect synthetic --out data/synthetic --preset demo
  mtaffect index --affwild2 data/synthetic/affwild2 --affectnet data/synthetic/affectnet \\
                 --expw data/synthetic/expw --afew-va data/synthetic/afew_va --out data/index.parquet
  mtaffect synthetic --out /tmp/video --video clip.mp4 --video-frames 500
"""

DATABASES = ("affwild2", "affectnet", "expw", "afew_va")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mtaffect.data.synthetic import PRESETS, QUIRKS

    parser.epilog = EXAMPLES
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to write")
    parser.add_argument("--preset", choices=tuple(PRESETS), default="tiny",
                        help="tiny (tests: a few hundred frames), demo (CPU demo), large (Aff-Wild2 scale)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
    parser.add_argument("--quirk", action="append", default=[], choices=QUIRKS,
                        help="add an optional quirk (malformed_line: a truncated AffectNet CSV row)")
    parser.add_argument("--overwrite", action="store_true", help="empty --out first if it holds files")
    parser.add_argument("--no-truth", action="store_true",
                        help="do not write DIR/truth.parquet (the ground-truth frame index)")
    parser.add_argument("--video", type=Path, metavar="FILE.mp4",
                        help="write only a synthetic face video (+ FILE.truth.csv) instead of the databases")
    parser.add_argument("--video-frames", type=int, default=300, metavar="N", help="frames of --video")
    parser.add_argument("--video-size", type=int, default=112, metavar="PX", help="frame size of --video")


def run(args: argparse.Namespace) -> int:
    from mtaffect.data.synthetic import write_databases, write_video
    from mtaffect.io import write_csv

    start = time.perf_counter()
    if args.video is not None:
        video = args.video if args.video.is_absolute() else args.out / args.video
        truth = write_video(video, n_frames=args.video_frames, seed=args.seed, size=args.video_size)
        truth_path = video.with_suffix(".truth.csv")
        write_csv(truth, truth_path)
        print(f"wrote {video} ({len(truth)} frames) and its truth {truth_path} in "
              f"{time.perf_counter() - start:.1f} s")
        return 0
    truth = write_databases(args.out, preset=args.preset, seed=args.seed, quirks=tuple(args.quirk) or None,
                            overwrite=args.overwrite, verbose=True)
    counts = truth.groupby(["database", "split"], sort=True).size()
    print(f"synthetic databases ({args.preset}, seed {args.seed}) in {args.out}, "
          f"{time.perf_counter() - start:.1f} s; ground-truth rows:")
    for (database, split), n in counts.items():
        print(f"  {database:<10} {split:<10} {n:>9}")
    if not args.no_truth:
        from mtaffect.data.index import write_index

        roots = {db: str((args.out / db).resolve()) for db in DATABASES}
        meta = {"roots": roots, "summary": {"rows": len(truth)}, "version": 1,
                "synthetic": {"preset": args.preset, "seed": args.seed, "quirks": list(args.quirk)}}
        write_index(truth, meta, args.out / "truth.parquet")
        print(f"ground truth: {args.out / 'truth.parquet'} (the frame index `mtaffect index` must reproduce)")
    flags = " ".join(f"--{db.replace('_', '-')} {args.out / db}" for db in DATABASES)
    print(f"next: mtaffect index {flags} --out {args.out / 'index.parquet'}")
    return 0
