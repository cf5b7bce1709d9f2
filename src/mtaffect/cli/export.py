"""``mtaffect export``: a checkpoint → ONNX (fp32, optionally an int8 copy), with a parity check."""

from __future__ import annotations

import argparse
from pathlib import Path

from mtaffect.errors import ExistingRunError, InputFormatError, UserError

EXAMPLES = """examples:
  mtaffect export cnn_student.safetensors --out cnn.onnx --check
  mtaffect export runs/gru_student/best.safetensors --seq-len 32 --out cnn_gru.onnx --check
  mtaffect export cnn_student.safetensors --out cnn.onnx --int8 cnn_int8.onnx --calibration faces/
"""
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


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


def load_calibration(path: Path, size: int, limit: int) -> tuple:
    """uint8 RGB crops (N, size, size, 3) from a folder of images or a .npy file, and the skipped files."""
    import cv2
    import numpy as np

    if path.suffix == ".npy":
        images = np.load(path, allow_pickle=False)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise InputFormatError(
                path, f"expected a uint8 array (N, H, W, 3), got {images.dtype} {images.shape}"
            )
        return images[:limit], []
    if not path.is_dir():
        raise InputFormatError(path, "calibration source is neither a folder of images nor a .npy file")
    crops, skipped = [], []
    for file in sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        image = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if image is None:
            skipped.append(file)
            continue
        if image.shape[:2] != (size, size):
            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        crops.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        if len(crops) >= limit:
            break
    if not crops:
        raise InputFormatError(path, "no readable images for calibration")
    return np.stack(crops), skipped


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from mtaffect.checkpoint import load_model
    from mtaffect.export import OnnxModel, export_onnx, quantize_int8

    for target in (args.out, args.int8):
        if target is not None and target.exists() and not args.overwrite:
            raise ExistingRunError(f"{target} exists; pass --overwrite to replace it")
    if args.int8 is not None and args.calibration is None:
        raise UserError("--int8 needs --calibration (face crops: the activation ranges come from them)")
    model, meta = load_model(args.checkpoint, cnn=args.cnn)  # a GRU-only checkpoint: joined with its CNN
    kind = args.kind or meta["kind"]
    export_onnx(
        model,
        args.out,
        kind=kind,
        seq_len=args.seq_len,
        opset=args.opset,
        preprocessing=meta["preprocessing"],
    )
    print(f"wrote {args.out} ({kind}, input {meta['preprocessing'].size}px, opset {args.opset})")
    status = 0
    if args.check:
        onnx_model = OnnxModel(args.out)
        size = meta["preprocessing"].size
        shape = (2, size, size, 3) if kind == "cnn" else (1, min(args.seq_len, 8), size, size, 3)
        images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        x = meta["preprocessing"].apply(images)  # inputs as real crops look after preprocessing
        reference = model.cnn if kind == "cnn" and meta["kind"] == "cnn_gru" else model
        with torch.no_grad():
            ours = reference(x)
        got = onnx_model(x)
        fields = ("expression", "valence", "arousal")
        diff = max((getattr(got, f) - getattr(ours, f)).abs().max().item() for f in fields)
        scale = max(getattr(ours, f).abs().max().item() for f in fields)
        ok = diff <= 1e-4 or diff <= 1e-6 * scale  # float32 rounding grows with the logits' size
        print(
            f"parity: max |onnxruntime - torch| = {diff:.2e} over logits of magnitude up to {scale:.3g} "
            f"({'ok' if ok else 'FAILED'})"
        )
        status = 0 if ok else 1
    if args.int8 is not None:
        crops, skipped = load_calibration(
            args.calibration, meta["preprocessing"].size, args.calibration_count
        )
        batches = [meta["preprocessing"].apply_numpy(crops[i : i + 32]) for i in range(0, len(crops), 32)]
        quantize_int8(args.out, args.int8, batches)
        fp32, int8 = OnnxModel(args.out), OnnxModel(args.int8)
        probe = batches[0]
        a, b = fp32.predict(probe), int8.predict(probe)
        agree = float((a["expression"] == b["expression"]).float().mean())
        drift = float(np.abs((a["valence"] - b["valence"]).numpy()).max())
        print(
            f"wrote {args.int8} (int8, calibrated on {len(crops)} crops, {len(skipped)} unreadable skipped); "
            f"on {len(probe)} calibration crops: expression agreement {agree:.1%}, "
            f"max valence drift {drift:.3f}"
        )
    return status
