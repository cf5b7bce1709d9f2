"""``mtaffect convert``: FER+ / the authors' ``.pth`` weights (or a ``.zip`` holding one) → an
mtaffect checkpoint. The layout is recognised from the keys unless ``--from`` names it."""

from __future__ import annotations

import argparse
from pathlib import Path

from mtaffect.errors import ExistingRunError

EXAMPLES = """examples:
  mtaffect convert authors_model.zip --out authors.safetensors        # CNN or CNN+GRU, recognised
  mtaffect convert --from ferplus resnet50_ferplus_dag.pth --out ferplus.safetensors
  mtaffect convert --from authors-cnn net_epoch_student_0_id_resnet50.pth --out authors_cnn.safetensors
  mtaffect convert --from authors-gru net_epoch_student_0_id_resnet50_GRU.pth --out authors_gru.safetensors
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mtaffect.convert import SOURCES

    parser.epilog = EXAMPLES
    parser.add_argument(
        "src",
        type=Path,
        help="the .pth/.pt file, or a .zip holding one (read with torch.load(weights_only=True))",
    )
    parser.add_argument(
        "--from",
        dest="source",
        default="auto",
        choices=("auto", *SOURCES),
        help="layout of SRC (default auto: recognised from its keys)",
    )
    parser.add_argument("--out", type=Path, required=True, help="checkpoint to write (.safetensors)")
    parser.add_argument(
        "--member", default=None, help="a .zip holding several .pth/.pt files: the one to convert"
    )
    parser.add_argument(
        "--drop-classifier",
        action="store_true",
        help="ferplus only: leave out the FER+ 8-class classifier (the multitask heads never use it)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def run(args: argparse.Namespace) -> int:
    from mtaffect.convert import convert

    if args.out.exists() and not args.overwrite:
        raise ExistingRunError(f"{args.out} exists; pass --overwrite to replace it")
    meta = convert(
        args.source, args.src, args.out, keep_classifier=not args.drop_classifier, member=args.member
    )
    cnn = meta["model"].get("cnn", {})
    origin = meta["converted_from"]
    inside = f"{origin['file']}!{origin['member']}" if origin.get("member") else origin["file"]
    how = " (recognised from its keys)" if args.source == "auto" else ""
    print(
        f"wrote {args.out}: {origin['source']}{how} "
        f"kind={meta['kind']} backbone={cnn.get('backbone', '-')} stage={meta['stage']} "
        f"input={meta['preprocessing']['size']}px mean={meta['preprocessing']['mean']} "
        f"(from {inside}, sha256 {origin['sha256'][:12]}…); details: mtaffect info {args.out}"
    )
    return 0
