"""``mtaffect predict INPUT... --checkpoint CKPT --out DIR``: per-frame expressions and valence/arousal.

INPUT: video files, images, folders, globs (quote them), ``webcam:N`` or a stream URL; with
``--cropped``: ``cropped_aligned`` folders (one track per folder of ``NNNNN.jpg``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXAMPLES = """examples:
  mtaffect predict interview.mp4 --checkpoint runs/gru_student/best.safetensors --out results/
  mtaffect predict 'clips/*.mp4' photos/ --checkpoint cnn_student.safetensors --out results/ --no-overlay
  mtaffect predict cropped_aligned/ --cropped --checkpoint gru_student.safetensors --out val_preds/
  torchrun --standalone --nproc_per_node 4 -m mtaffect predict corpus/ --checkpoint cnn.safetensors --out out/
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLES
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="videos, images, folders, globs, webcam:N, URLs"
    )
    parser.add_argument(
        "--checkpoint", required=True, help="a cnn, cnn_gru or GRU-only .safetensors checkpoint"
    )
    parser.add_argument(
        "--cnn",
        default=None,
        help="GRU-only checkpoints: the CNN whose embeddings they read "
        "(default: model.cnn_checkpoint of their training config, found relative to the run if moved)",
    )
    parser.add_argument("--out", required=True, help="output folder (see docs/predict.md for its layout)")
    parser.add_argument("--cropped", action="store_true", help="inputs are aligned crops (cropped_aligned)")
    parser.add_argument("--detector", default="mtcnn", choices=("mtcnn", "haar"), help="face detector")
    parser.add_argument(
        "--detect-every",
        type=int,
        default=5,
        metavar="N",
        help="full face detection every N frames, tracking in between (default 5)",
    )
    parser.add_argument(
        "--refresh-every",
        type=int,
        default=1,
        metavar="K",
        help="between detections, update tracked boxes every K frames and hold them in between "
        "(default 1; 3 with --detect-every 10 is the fast setting of BENCHMARKS.md)",
    )
    parser.add_argument("--min-face", type=float, default=40.0, metavar="PX", help="smallest face side (40)")
    parser.add_argument("--max-faces", type=int, default=None, help="at most this many people per video")
    parser.add_argument(
        "--smooth", type=float, default=0.0, help="box/landmark smoothing in [0, 1) (0 = off)"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="faces per model call (16)")
    parser.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "torch", "onnx"),
        help="auto = onnxruntime when installed (fast CPU path), else torch",
    )
    parser.add_argument(
        "--device",
        default=None,
        help="torch device for backend torch (cpu, cuda; default cpu, under torchrun cuda:LOCAL_RANK "
        "when CUDA is available)",
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for the model")
    parser.add_argument(
        "--no-overlap",
        action="store_true",
        help="track faces in the model's thread instead of beside it (same rows, slower)",
    )
    parser.add_argument(
        "--detect-batch",
        type=int,
        default=None,
        metavar="N",
        help="scheduled full detections computed together ahead (default 4 when the detector runs on "
        "an accelerator, 1 on the CPU)",
    )
    parser.add_argument(
        "--template",
        default=None,
        choices=("affwild2", "arcface"),
        help="crop template (default: the checkpoint's crop convention)",
    )
    parser.add_argument("--crop-scale", type=float, default=None, help="zoom the crop out (>1) or in (<1)")
    parser.add_argument("--debug-crops", action="store_true", help="also write the model's input crops")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--no-overlay", action="store_true", help="skip the overlay video")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="skip inputs already finished in --out")
    group.add_argument("--overwrite", action="store_true", help="empty --out first")


def run(args: argparse.Namespace) -> int:
    from mtaffect.predict.threads import prediction_threads

    prediction_threads()  # before torch loads OpenMP (imported just below): its wait policy counts

    from mtaffect import distributed

    ranks = distributed.DistContext.from_env()
    if not ranks.active:
        return _run(args, args.device or "cpu", ranks)
    # torchrun: one process per GPU (cuda:LOCAL_RANK, NCCL; more processes than GPUs are refused by
    # name) or per CPU share (gloo)
    ctx = distributed.setup(args.device or "auto")
    try:
        return _run(args, str(ctx.device), ctx)
    finally:
        distributed.cleanup(ctx)


def _run(args: argparse.Namespace, device: str, ranks) -> int:
    from mtaffect.predict.predictor import Predictor
    from mtaffect.predict.runner import predict_inputs

    predictor = Predictor.from_checkpoint(
        args.checkpoint,
        cnn=args.cnn,
        backend=args.backend,
        device=device,
        threads=args.threads,
        detector=args.detector,
        detect_every=args.detect_every,
        refresh_every=args.refresh_every,
        min_face=args.min_face,
        batch_size=args.batch_size,
        template=args.template,
        crop_scale=args.crop_scale,
        smooth=args.smooth,
        max_faces=args.max_faces,
        overlap=not args.no_overlap,
        detect_batch=args.detect_batch,
    )
    report = predict_inputs(
        predictor,
        args.inputs,
        args.out,
        cropped=args.cropped,
        plots=not args.no_plots,
        overlay=not args.no_overlay,
        debug_crops=args.debug_crops,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.quiet and sys.stderr.isatty() and ranks.rank == 0,
        ranks=ranks,
    )
    entries = report["inputs"]
    bad = [e for e in entries if e["status"] not in ("ok",)]
    if ranks.rank != 0:  # rank 0 prints the summary of the merged report
        return 1 if bad else 0
    out = Path(args.out)  # joined as paths: "--out val/" must not print "val//clip"
    for e in entries:
        if e["status"] in ("ok", "partial") and e.get("frames") is not None:
            fps = e.get("frames_per_second")
            speed = f", {fps:.1f} frames/s" if fps else ""
            print(
                f"{e['input']}: {e['frames']} frames, {e.get('faces', 0)} faces, "
                f"{e.get('tracks', 1)} tracks{speed} -> {out / e['output']}"
            )
        elif e["status"] == "ok":
            print(f"{e['input']}: {e.get('faces', 0)} faces -> {out / e['output']}")
    shards = f" (merged from {ranks.world} ranks)" if ranks.active else ""
    print(f"backend: {report['backend']}; report: {out / 'report.json'}{shards}")
    return 1 if bad else 0
