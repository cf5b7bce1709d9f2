"""``mtaffect export``: a checkpoint → ONNX (fp32, optionally an int8 copy), with a parity check."""

from __future__ import annotations

import argparse
from pathlib import Path

from mtaffect.errors import ExistingRunError, UserError

EXAMPLES = """examples:
  mtaffect export cnn_student.safetensors --out cnn.onnx --check
  mtaffect export runs/gru_student/best.safetensors --seq-len 32 --out cnn_gru.onnx --check
  mtaffect export cnn_student.safetensors --out cnn.onnx --int8 cnn_int8.onnx --calibration faces/
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLES
    parser.add_argument(
        "checkpoint", type=Path, help="an mtaffect checkpoint (.safetensors): cnn, cnn_gru or GRU-only"
    )
    parser.add_argument(
        "--cnn",
        type=Path,
        default=None,
        help="GRU-only checkpoints: the CNN whose embeddings they read (default: the training config's)",
    )
    parser.add_argument("--out", type=Path, required=True, help="the fp32 .onnx file to write")
    parser.add_argument(
        "--kind", choices=("cnn", "cnn_gru"), default=None, help="graph to export (default: the checkpoint's)"
    )
    parser.add_argument(
        "--seq-len", type=int, default=32, help="example sequence length for cnn_gru (time stays dynamic)"
    )
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument(
        "--int8", type=Path, default=None, help="also write a static int8 (QDQ) copy of the CNN graph"
    )
    parser.add_argument(
        "--calibration",
        type=Path,
        default=None,
        help="face crops for int8 calibration: a folder of images or a .npy uint8 array (N, H, W, 3)",
    )
    parser.add_argument(
        "--calibration-count", type=int, default=256, help="at most this many calibration crops"
    )
    parser.add_argument(
        "--check", action="store_true", help="compare onnxruntime with torch on random inputs"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


def run(args: argparse.Namespace) -> int:
    from mtaffect.checkpoint import load_model
    from mtaffect.export import calibration_batches, check_parity, export_onnx, int8_agreement, quantize_int8
    from mtaffect.predict.calibration import load_calibration

    for target in (args.out, args.int8):
        if target is not None and target.exists() and not args.overwrite:
            raise ExistingRunError(f"{target} exists; pass --overwrite to replace it")
    if args.int8 is not None and args.calibration is None:
        raise UserError("--int8 needs --calibration (face crops: the activation ranges come from them)")
    model, meta = load_model(args.checkpoint, cnn=args.cnn)  # a GRU-only checkpoint: joined with its CNN
    kind = args.kind or meta["kind"]
    preprocessing = meta["preprocessing"]
    export_onnx(
        model, args.out, kind=kind, seq_len=args.seq_len, opset=args.opset, preprocessing=preprocessing
    )
    print(f"wrote {args.out} ({kind}, input {preprocessing.size}px, opset {args.opset})")
    status = 0
    if args.check:
        parity = check_parity(model, args.out, preprocessing, kind=kind, seq_len=args.seq_len)
        print(
            f"parity: max |onnxruntime - torch| = {parity.max_diff:.2e} over logits of magnitude up to "
            f"{parity.scale:.3g} ({'ok' if parity.ok else 'FAILED'})"
        )
        status = 0 if parity.ok else 1
    if args.int8 is not None:
        crops, skipped = load_calibration(args.calibration, preprocessing.size, args.calibration_count)
        batches = calibration_batches(crops, preprocessing)
        quantize_int8(args.out, args.int8, batches)
        agreement = int8_agreement(args.out, args.int8, batches[0])
        print(
            f"wrote {args.int8} (int8, calibrated on {len(crops)} crops, {len(skipped)} unreadable skipped); "
            f"on {agreement.crops} calibration crops: expression agreement {agreement.expression:.1%}, "
            f"max valence drift {agreement.valence_drift:.3f}"
        )
    return status
