"""``mtaffect demo [--out DIR] [--overwrite | --resume] [--tables N[,N]]``: the recipe on synthetic data."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    mode.add_argument("--resume", action="store_true", help="continue an interrupted demo in --out")
    parser.add_argument(
        "--config", default="demo", help="recipe diff for every run (default: configs/demo.yaml)"
    )
    parser.add_argument("--preset", default="demo", help="synthetic database size: tiny | demo | large")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tables",
        type=_tables,
        default=[1, 2, 3],
        metavar="N[,N]",
        help="which of Tables 1-3 to train, e.g. 3 or 1,3 (default: all; Table 3's chain, the final model, "
        "always runs)",
    )
    parser.add_argument("--device", default="cpu", help="cpu (default) | auto | cuda")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run")


def _tables(text: str) -> list[int]:
    """``"1,3"`` → [1, 3]: one comma-separated value, so that key=value overrides after it stay overrides."""
    try:
        tables = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"tables are 1-3 separated by commas, not {text!r}") from None
    if not tables or set(tables) - {1, 2, 3}:
        raise argparse.ArgumentTypeError(f"tables are 1, 2 or 3, not {text!r}")
    return tables


def run(args: argparse.Namespace) -> int:
    from mtaffect.demo import run_demo

    result = run_demo(
        args.out,
        overwrite=args.overwrite,
        resume=args.resume,
        preset=args.preset,
        config=args.config,
        overrides=args.overrides,
        seed=args.seed,
        tables=args.tables,
        device=args.device,
    )
    print(f"results in {result.out_dir} (summary.json, runs/ablations.md, evaluation/, video/)")
    return 0 if result.passed else 1
