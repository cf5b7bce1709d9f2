"""Benchmark (issue 20): ``Predictor.predict_video`` frames/s end to end, today's path and the new one.

    python -m benchmarks.bench_predict_device --device cuda --video .cache/media/WolfgangLanger_Pexels.mp4 \\
        --json FILE
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m benchmarks.bench_predict_device --device cpu --tiny \\
        --json FILE

Both paths run the same checkpoint (ResNet-50 in the FER+ caffe layout with random weights: the
timing does not depend on the weights; ``--tiny``: the tiny test CNN) on the same device, with the
defaults of ``mtaffect predict`` otherwise (detect every 5 frames, batches of 16):

* ``today``: the loop before issue 20: one thread runs tracking (MTCNN on the CPU, onnxruntime when
  installed, one frame at a time) and then the model (``overlap=False``, ``detector_device="cpu"``,
  ``detect_batch=1``);
* ``new``: the defaults since issue 20: tracking in its own thread beside the model, MTCNN's nets on
  the model's device when it is an accelerator, the scheduled detections batched ahead there
  (``Predictor(...)`` with no extra option).

Each path is run once to warm up (CUDA context, cuDNN choices, ONNX export), then ``--reps`` times,
alternating the paths; the value is frames / wall seconds of ``predict_video``, median of the reps
(model loading excluded: it happens before). ``--json`` writes a list of
``{"measure": "predict_fps", "path": "today"|"new", "value", "unit": "frames/s", "device", "settings"}``.
``--tiny`` (the CPU dry run) uses the tiny CNN and the first ``--max-frames`` (default 48) frames.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
PATHS = {
    "today": {"overlap": False, "detector_device": "cpu", "detect_batch": 1},
    "new": {},
}


def make_checkpoint(folder: Path, tiny: bool, kind: str) -> Path:
    import torch

    from mtaffect.checkpoint import save_checkpoint
    from mtaffect.models import create_model
    from mtaffect.testing import tiny_checkpoint

    path = folder / f"{'tiny' if tiny else 'r50'}_{kind}.safetensors"
    if path.is_file():
        return path
    if tiny:
        return tiny_checkpoint(path, kind=kind)
    torch.manual_seed(0)
    cnn = {"backbone": "resnet50_caffe"}
    save_checkpoint(path, create_model(kind, cnn if kind == "cnn" else {"cnn": cnn, "gru": {}}))
    return path


def run_once(predictor, video: str, max_frames: int | None) -> tuple[int, float]:
    """(frames, wall seconds) of one video through ``predictor`` (the first ``max_frames`` only)."""
    t0 = time.perf_counter()
    run = predictor.iter_video(video)
    frames = 0
    try:
        for chunk in run:
            frames = int(chunk["frame"].max()) + 1
            if max_frames is not None and frames >= max_frames:
                break
    finally:
        run.close()
    return frames, time.perf_counter() - t0


def settings_of(predictor, kind: str, checkpoint: Path) -> str:
    det = predictor.detector
    det_where = f"{getattr(det, 'device', 'cpu')}/{getattr(det, 'backend', type(det).__name__)}"
    return (
        f"checkpoint={checkpoint.stem} kind={kind} model={predictor.model.backend}@{predictor.model.device} "
        f"detector={det_where} overlap={predictor.overlap} detect_batch={predictor.detect_batch} "
        f"detect_every={predictor.detect_every} batch_size={predictor.batch_size}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="the model's device (cuda, cuda:1, cpu)")
    parser.add_argument("--video", default=str(ROOT / ".cache" / "media" / "WolfgangLanger_Pexels.mp4"))
    parser.add_argument("--json", default=None, help="write the figures here (a JSON list)")
    parser.add_argument("--tiny", action="store_true", help="CPU dry run: the tiny CNN, the first frames")
    parser.add_argument("--max-frames", type=int, default=None, help="only the first N frames (--tiny: 48)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--kind", choices=("cnn", "cnn_gru"), default="cnn")
    parser.add_argument("--work", default=str(ROOT / ".cache" / "bench"), help="folder of the checkpoints")
    args = parser.parse_args(argv)

    from mtaffect.predict.threads import prediction_threads

    prediction_threads()  # as `mtaffect predict` does, before torch loads OpenMP
    import torch

    from mtaffect.predict.predictor import Predictor

    if str(args.device).startswith("cuda") and not torch.cuda.is_available():
        print(f"bench_predict_device: no CUDA on this machine (asked for {args.device}); nothing measured")
        return 1
    max_frames = args.max_frames if args.max_frames is not None else (48 if args.tiny else None)
    os.environ.setdefault("MTAFFECT_CACHE", str(ROOT / ".cache" / "mtaffect"))
    folder = Path(args.work)
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = make_checkpoint(folder, args.tiny, args.kind)
    backend = "torch" if args.device != "cpu" else "auto"
    predictors = {
        path: Predictor.from_checkpoint(checkpoint, backend=backend, device=args.device, **options)
        for path, options in PATHS.items()
    }
    times: dict[str, list[float]] = {path: [] for path in PATHS}
    frames: dict[str, int] = {}
    for predictor in predictors.values():  # warm-up
        run_once(predictor, args.video, max_frames)
    for _ in range(args.reps):  # alternating, so both paths see the same host drift
        for path, predictor in predictors.items():
            n, seconds = run_once(predictor, args.video, max_frames)
            frames[path] = n
            times[path].append(n / seconds)
    device = str(predictors["new"].model.device)
    if device.startswith("cuda"):
        device += f" ({torch.cuda.get_device_name(torch.device(device))})"
    figures = []
    for path, predictor in predictors.items():
        value = statistics.median(times[path])
        figures.append({
            "measure": "predict_fps",
            "path": path,
            "value": round(value, 2),
            "unit": "frames/s",
            "device": device,
            "settings": settings_of(predictor, args.kind, checkpoint) + f" frames={frames[path]}",
        })  # fmt: skip
        print(
            f"{path}: {value:.1f} frames/s (reps {[round(t, 1) for t in times[path]]}); "
            f"{figures[-1]['settings']}"
        )
    print(f"new / today: {figures[1]['value'] / figures[0]['value']:.2f}")
    if args.json:
        target = Path(args.json)
        target.parent.mkdir(parents=True, exist_ok=True)
        from mtaffect.io import write_json

        write_json(target, figures)  # atomically: a reader never sees half a file
        print(f"figures: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
