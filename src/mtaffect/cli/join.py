"""``mtaffect join CNN GRU --out FILE``: a GRU-only checkpoint and its CNN → one CNN+GRU checkpoint.

The GRU stages write this file themselves (``cnn_gru.safetensors`` beside ``best.safetensors``);
``join`` is for a CNN and a GRU that come from elsewhere. ``predict``, ``export`` and ``evaluate``
also take the GRU-only file directly and find its CNN themselves.
"""

from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLES = """examples:
  mtaffect join runs/cnn_student/best.safetensors runs/gru_student/best.safetensors --out gru.safetensors
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLES
    parser.add_argument("cnn", type=Path, help="the CNN checkpoint whose embeddings the GRU reads")
    parser.add_argument("gru", type=Path, help="a GRU-only checkpoint (a GRU stage's best.safetensors)")
    parser.add_argument("--out", type=Path, required=True, help="the CNN+GRU checkpoint to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def run(args: argparse.Namespace) -> int:
    import sys
    import warnings

    from mtaffect.checkpoint import join_checkpoints

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        meta = join_checkpoints(args.cnn, args.gru, args.out, overwrite=args.overwrite)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    pre = meta["preprocessing"]
    print(
        f"wrote {args.out}: kind={meta['kind']} stage={meta.get('stage', '-')} input={pre['size']}px "
        f"(CNN {args.cnn}, GRU {args.gru})"
    )
    return 0
