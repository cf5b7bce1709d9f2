"""``mtaffect train CONFIG [key=value ...] --out DIR [--resume | --overwrite] [--device ...]``.

CONFIG is a recipe file or the name of a packaged one (cnn_teacher, cnn_student, gru_teacher,
gru_student). Under ``torchrun --nproc_per_node K $(which mtaffect) train ...`` the same command
trains with DDP.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EXAMPLES = """examples:
  mtaffect train cnn_teacher data.index=index.parquet --out runs/cnn_teacher
  mtaffect train cnn_student data.index=index.parquet stage.teacher=runs/cnn_teacher/best.safetensors \\
      --out runs/cnn_student
  mtaffect train cnn_teacher data.index=index.parquet --out runs/cnn_teacher --resume
  torchrun --standalone --nproc_per_node 4 $(which mtaffect) train cnn_teacher data.index=index.parquet \\
      --out runs/ddp
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLES
    parser.add_argument("config", help="recipe YAML, or a packaged recipe name (cnn_teacher, gru_student...)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides, YAML-typed (train.epochs=3, stage.shared_labels=false)",
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="run folder (checkpoint, metrics.csv, resume state)"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    mode.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (overrides train.device)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def run(args: argparse.Namespace) -> int:
    import yaml

    from mtaffect.config import load_config, resolve
    from mtaffect.train.stages import check_config, run_stage

    config = load_config(args.config, args.overrides)
    check_config(config)  # every section's keys, before anything prints or runs
    if args.print_config:
        print(yaml.safe_dump(resolve(config), sort_keys=False), end="")
        return 0
    from mtaffect.io import check_writable, remove_leftovers

    # outputs first: a read-only or full run folder fails now, before data and model are loaded
    check_writable(args.out / "metrics.csv")
    if args.resume and int(os.environ.get("RANK", "0")) == 0:
        for leftover in remove_leftovers(args.out):  # a save killed midway (last_state.pt, best...)
            print(f"removed the unfinished file {leftover}", file=sys.stderr)
    result = run_stage(config, args.out, resume=args.resume, overwrite=args.overwrite, device=args.device)
    summary = {
        "stage": result.stage,
        "checkpoint": str(result.checkpoint),
        "best_epoch": result.fit.best_epoch,
        "epochs_run": result.fit.epochs_run,
        "stopped_early": result.fit.stopped_early,
        "best_metrics": {k: round(v, 4) for k, v in result.fit.best_metrics.items()},
    }
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one summary (rank 0's)
        print(json.dumps(summary, indent=2))
    return 0
