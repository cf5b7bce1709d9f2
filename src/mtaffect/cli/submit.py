"""``mtaffect submit``: write ABAW submission files from prediction tables, or validate a submission."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mtaffect.errors import UserError

EXAMPLES = """examples:
  mtaffect submit --predictions preds/ --format abaw2 --task VA \\
      --test-list test_set_VA_Challenge.txt --videos Aff-Wild2/videos --out submission/
  mtaffect submit --predictions preds/ --format abaw5 --task EXPR --test-list names.txt \\
      --example CVPR_5th_ABAW_Expr_test_set_example.txt --out submission/
  mtaffect submit --validate submission/VA_Set --task VA --test-list test_set_VA_Challenge.txt
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLES
    parser.add_argument("--predictions", nargs="+", help="`mtaffect predict` output folders or table files")
    parser.add_argument("--format", choices=("abaw2", "abaw5"), default="abaw2", help="file layout")
    parser.add_argument("--task", required=True, type=str.upper, choices=("EXPR", "VA"))
    parser.add_argument("--test-list", help="track names, one per line (the organisers' test list)")
    parser.add_argument("--out", help="output folder")
    parser.add_argument("--folder-name", default=None, help="abaw2 sub-folder (default EXPR_Set / VA_Set)")
    parser.add_argument("--frame-counts", help="file of 'track,frames' lines (first source of frame counts)")
    parser.add_argument("--annotations", help="folder searched for <track>.txt annotation files (row counts)")
    parser.add_argument("--videos", help="folder searched for raw videos (frame count by full decode)")
    parser.add_argument("--example", help="abaw5: the organisers' example file (header, rows and order)")
    parser.add_argument(
        "--validate", metavar="PATH", help="check a submission folder/file instead of writing"
    )


def run(args: argparse.Namespace) -> int:
    from mtaffect.data.sources.testlists import read_test_list
    from mtaffect.predict import submission as sub

    counts = sub.read_frame_counts(args.frame_counts) if args.frame_counts else {}
    tests = read_test_list(args.test_list, allow_empty=False) if args.test_list else None
    if args.validate:
        problems = sub.validate_submission(
            args.validate, args.task, test_list=tests, frame_counts=counts or None, example=args.example
        )
        for p in problems:
            print(p)
        print(f"{args.validate}: {'valid' if not problems else f'{len(problems)} problems'}")
        return 1 if problems else 0
    if not (args.predictions and args.out and tests):
        raise UserError("writing a submission needs --predictions, --test-list and --out (or use --validate)")
    inputs = sub.SubmissionInputs(
        tables=sub.load_predictions([Path(p) for p in args.predictions]),
        frame_counts=counts,
        annotations=Path(args.annotations) if args.annotations else None,
        videos=Path(args.videos) if args.videos else None,
    )
    if args.format == "abaw2":
        target = sub.write_abaw2(tests, inputs, args.task, args.out, folder=args.folder_name)
    else:
        name = Path(args.example).name if args.example else f"{args.task}_predictions.txt"
        target = sub.write_abaw5(tests, inputs, args.task, Path(args.out) / name, example=args.example)
    for w in inputs.warnings:
        print(f"warning: {w}", file=sys.stderr)
    problems = sub.validate_submission(
        target, args.task, test_list=tests, frame_counts=None, example=args.example
    )
    for p in problems:
        print(p, file=sys.stderr)
    print(f"wrote {target} ({len(tests)} tracks); validation: {'ok' if not problems else 'FAILED'}")
    return 1 if problems else 0
