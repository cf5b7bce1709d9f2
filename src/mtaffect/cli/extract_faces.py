"""``mtaffect extract-faces VIDEOS --out DIR``: ``cropped_aligned``-style face folders from raw videos."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  mtaffect extract-faces videos/ --out cropped_aligned/
  mtaffect extract-faces 'raw/*.mp4' --out crops/ --size 224 --template arcface
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLES
    parser.add_argument("videos", nargs="+", help="video files, folders or globs")
    parser.add_argument("--out", required=True, help="output folder: <track>/NNNNN.jpg (1-based frames)")
    parser.add_argument("--size", type=int, default=112, help="crop side in pixels (112)")
    parser.add_argument(
        "--template", default="affwild2", choices=("affwild2", "arcface"), help="crop template"
    )
    parser.add_argument("--crop-scale", type=float, default=1.0, help="zoom the crop out (>1) or in (<1)")
    parser.add_argument("--detector", default="mtcnn", choices=("mtcnn", "haar"))
    parser.add_argument("--detect-every", type=int, default=5, metavar="N", help="detect every N frames (5)")
    parser.add_argument("--min-face", type=float, default=40.0, metavar="PX", help="smallest face side (40)")
    parser.add_argument("--max-faces", type=int, default=None, help="at most this many people per video")
    parser.add_argument("--min-frames", type=int, default=5, help="drop people seen in fewer frames (5)")


def run(args: argparse.Namespace) -> int:
    from mtaffect.predict.threads import prediction_threads

    prediction_threads()  # before torch loads OpenMP (imported just below): its wait policy counts
    from mtaffect.predict.extract import extract_faces

    report = extract_faces(
        args.videos,
        args.out,
        size=args.size,
        template=args.template,
        crop_scale=args.crop_scale,
        detector=args.detector,
        detect_every=args.detect_every,
        min_face=args.min_face,
        max_faces=args.max_faces,
        min_frames=args.min_frames,
    )
    bad = 0
    for video, entry in report["videos"].items():
        tracks = ", ".join(f"{k} ({v} frames)" for k, v in entry.get("tracks", {}).items()) or "no face"
        print(f"{video}: {entry['status']}: {tracks}")
        bad += entry["status"] != "done"
    return 1 if bad else 0
