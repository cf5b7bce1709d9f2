"""``mtaffect evaluate CKPT --index FILE``: ABAW metrics per database and task, every frame once."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a CNN, GRU or CNN+GRU checkpoint (.safetensors)")
    parser.add_argument("--index", required=True, help="frame index (Parquet) written by `mtaffect index`")
    parser.add_argument("--split", default="validation", help="split to evaluate (default: validation)")
    parser.add_argument("--databases", nargs="+", default=None, help="only these databases (default: all)")
    parser.add_argument(
        "--out",
        default=None,
        help="folder for scores.csv/json, predictions.parquet, confusion.png (default: print only)",
    )
    parser.add_argument(
        "--cnn",
        default=None,
        help="GRU checkpoints: the CNN whose embeddings they read "
        "(default: model.cnn_checkpoint of their training config, found relative to the run if moved)",
    )
    parser.add_argument(
        "--features", default=None, help="GRU checkpoints: feature-cache folder to reuse/fill"
    )
    parser.add_argument(
        "--stride", type=int, default=None, help="GRU window stride (default: the config's eval_stride, 32)"
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from mtaffect.evaluate import evaluate_checkpoint, format_table, write_report

    result = evaluate_checkpoint(
        args.checkpoint,
        args.index,
        split=args.split,
        databases=args.databases,
        cnn=args.cnn,
        features=args.features,
        stride=args.stride,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.no_progress,
    )
    print(f"{args.checkpoint} ({result.kind}) on {args.split}:")
    print(format_table(result.table))
    for reason, count in result.skipped.items():
        if count:
            print(f"skipped {count} frames: {reason}")
    if args.out:
        paths = write_report(result, args.out, checkpoint=str(args.checkpoint))
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
