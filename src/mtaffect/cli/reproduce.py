"""``mtaffect reproduce --index FILE --seeds N``: the paper's Tables 1–3 as mean ± std over seeds."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  mtaffect reproduce --index index.parquet --seeds 3 --out runs/ablations
  mtaffect reproduce --index index.parquet --seeds 1 --base demo --tables 1 2 train.epochs=2
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLES
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides for every run (train.epochs=10, train.device=cuda)",
    )
    parser.add_argument("--index", required=True, help="frame index (Parquet) from `mtaffect index`")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds per run (0..N-1; default 3)")
    parser.add_argument(
        "--base", default=None, help="a recipe diff applied to every stage (file or packaged name, e.g. demo)"
    )
    parser.add_argument(
        "--tables",
        type=int,
        nargs="+",
        default=[1, 2, 3],
        choices=[1, 2, 3],
        help="which tables (their dependencies run too; default: all)",
    )
    parser.add_argument(
        "--out",
        default="runs/reproduce",
        help="folder of the runs and tables; rerun to resume (default: runs/reproduce)",
    )
    parser.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N")


def run(args: argparse.Namespace) -> int:
    from mtaffect.train.reproduce import reproduce

    result = reproduce(
        args.index,
        args.out,
        seeds=args.seeds,
        base=args.base,
        overrides=args.overrides,
        tables=args.tables,
        device=args.device,
    )
    print(result.markdown)
    print(f"wrote {result.out_dir / 'ablations.md'}, ablations.csv, ablations.json")
    return 0
