"""Benchmark (issue 10): the GPU figures of training, the feature cache, evaluation and prediction.

Every figure comes from the project's own code on synthetic 112² JPEG faces written here:

* ``cnn_teacher`` / ``cnn_student``: the full loop (:func:`mtaffect.train.loop.fit`) over
  :class:`mtaffect.data.loading.FrameTaskData` (FaceReader decoding JPEGs in ``--loader-workers``
  processes, pinned), 3 task sets × N (one forward per set: per-source BatchNorm), device-side
  normalisation, bf16 autocast and channels_last on CUDA, fused Adam, the student with its frozen
  teacher; per ``--compile`` mode. img/s is timed between step ``--warm`` and the last step (a
  device sync closes the window); ``startup_s`` is the time to step ``--warm`` (compilation
  included). FLOPs per step are counted (``torch.utils.flop_counter``) and reported as a fraction
  of the chip's measured bf16 matmul rate (8192³; on CPU: the fp32 matmul rate, 1024³).
* ``feature_cache``: :func:`mtaffect.features.ensure_feature_cache` (9 draws) per worker count:
  distinct frames/s and crops/s (frames × draws).
* ``evaluate``: :func:`mtaffect.evaluate.predict_cnn_frames` per worker count, frames/s.
* ``predict``: ``mtaffect predict VIDEO --device cuda`` end to end (process start-up and model
  loading included), frames/s; only with ``--predict-checkpoint`` and ``--video``.

Without CUDA (and without ``--device cpu``) every GPU part is skipped with a message, exit 0.
CPU dry run (what the tests run)::

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_gpu.py --device cpu --tiny
    # on a GPU machine (benchmarks/gpu_run.sh runs it after the CUDA smoke checks):
    python benchmarks/bench_gpu.py --out results.json --predict-checkpoint CK --video VIDEO
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_loading import write_jpegs  # noqa: E402
from benchmarks.bench_train_loop import index_of  # noqa: E402

TASK_SETS = ("EXPR", "VA", "EXPR_VA")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device) -> tuple[float, str]:
    """Measured dense matmul FLOP/s: bf16 8192³ on CUDA, fp32 1024³ on CPU (the reference peak)."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    reps, t = 10 if device.type == "cuda" else 3, time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t), f"{dtype} {n}^3 matmul"


class _Timed:
    """TrainData wrapper: the time at step ``warm`` and after the last step (device synchronised)."""

    def __init__(self, data: Any, warm: int, device: torch.device) -> None:
        self.data, self.warm, self.device = data, warm, device
        self.t_begin = self.t_warm = self.t_end = 0.0

    def steps_per_epoch(self) -> int:
        return self.data.steps_per_epoch()

    def epoch(self, epoch: int, start_step: int = 0):
        self.t_begin = time.perf_counter()
        for step, batch in enumerate(self.data.epoch(epoch, start_step)):
            if step == self.warm:
                _sync(self.device)
                self.t_warm = time.perf_counter()
            yield batch
        _sync(self.device)
        self.t_end = time.perf_counter()


def _models(args: argparse.Namespace, device: torch.device):
    from mtaffect.models.cnn import CNNConfig, MultitaskCNN

    def make(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        model = MultitaskCNN(CNNConfig(backbone=args.backbone)).to(device)
        return model.to(memory_format=torch.channels_last)

    return make


def loop_rate(args, device, root: Path, names: list[str], stage: str, mode: str) -> dict[str, Any]:
    """One epoch of the full loop of ``stage`` (cnn_teacher | cnn_student) under compile ``mode``."""
    from torch.utils.flop_counter import FlopCounterMode

    from mtaffect.data.faces import FaceReader
    from mtaffect.data.loading import FrameTaskData, ImagePreparer, LabelArrays, TaskSource
    from mtaffect.data.tasks import sampling_weights
    from mtaffect.losses import LossConfig
    from mtaffect.models.preprocessing import Preprocessing
    from mtaffect.train.compiled import adam
    from mtaffect.train.loop import FitOptions, fit
    from mtaffect.train.tasks import DistillationTask, SupervisedTask

    n_rows = args.batch * (args.steps + 1)
    rows = [names[i % len(names)] for i in range(n_rows)]  # files repeat: the decode cost does not
    index = index_of(rows)
    reader = FaceReader(index, {"roots": {"affwild2": str(root)}}, args.size)
    labels = LabelArrays.from_frame(index)
    sources = {t: TaskSource(reader, labels, sampling_weights(t, index)) for t in TASK_SETS}
    data = FrameTaskData(sources, batch_per_task=args.batch, size=args.size, workers=args.loader_workers,
                         max_steps=args.steps, pin_memory=device.type == "cuda")
    make = _models(args, device)
    model = make(0)
    if stage == "cnn_teacher":
        task = SupervisedTask(model, LossConfig())
    else:
        task = DistillationTask(model, make(1).eval(), LossConfig())
    prepare = ImagePreparer(Preprocessing(size=args.size), channels_last=True)
    amp = torch.bfloat16 if device.type == "cuda" else None
    optimizer = adam(model.parameters(), lr=1e-4, betas=(0.5, 0.999), device=device)
    # FLOPs of one step (forward + backward of every task set, the teacher's forwards included)
    batch = prepare(next(iter(data.epoch(0))), device)
    with FlopCounterMode(display=False) as counter:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            task(batch)["loss"].backward()
    optimizer.zero_grad(set_to_none=True)
    flops = counter.get_total_flops()
    timed = _Timed(data, args.warm, device)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        options = FitOptions(epochs=1, device=device, amp_dtype=amp, compile=mode, save_every_steps=0,
                             progress=False, tensorboard=False)
        fit(task, timed, optimizer, run_dir=run_dir, options=options, to_device=prepare)
    timed_steps = args.steps - args.warm
    seconds = timed.t_end - timed.t_warm
    return {
        "img_s": round(3 * args.batch * timed_steps / seconds, 1),
        "steps_s": round(timed_steps / seconds, 2),
        "startup_s": round(timed.t_warm - t0, 1),
        "gflop_per_step": round(flops / 1e9, 2),
        "tflop_s": float(f"{flops * timed_steps / seconds / 1e12:.4g}"),
    }


def cache_rate(args, device, root: Path, names: list[str], workers: int) -> dict[str, Any]:
    from mtaffect.features import ensure_feature_cache

    index = index_of(names)
    model = _models(args, device)(2).eval()
    prep = {"size": args.size, "mean": [131.0912, 103.8827, 91.4953], "std": [1.0, 1.0, 1.0]}
    with tempfile.TemporaryDirectory() as folder:
        _sync(device)
        t = time.perf_counter()
        cache = ensure_feature_cache(model, index, {"roots": {"affwild2": str(root)}}, folder,
                                     size=args.size, batch_size=args.chunk, device=device, progress=False,
                                     preprocessing_meta=prep, workers=workers)
        _sync(device)
        seconds = time.perf_counter() - t
        n_draws = len(cache.draws)
    return {"frames_s": round(len(names) / seconds, 1), "crops_s": round(len(names) * n_draws / seconds, 1),
            "draws": n_draws}


def evaluate_rate(args, device, root: Path, names: list[str], workers: int) -> dict[str, Any]:
    import mtaffect.evaluate.frames as evaluate
    from mtaffect.models.preprocessing import Preprocessing

    index = index_of(names)
    model = _models(args, device)(3).eval()
    # streamed, as `mtaffect evaluate` on a split too big to keep in memory
    limit, evaluate.IN_MEMORY_LIMIT = evaluate.IN_MEMORY_LIMIT, 0
    try:
        _sync(device)
        t = time.perf_counter()
        evaluate.predict_cnn_frames(model, index, {"roots": {"affwild2": str(root)}},
                                    preprocessing=Preprocessing(size=args.size), batch_size=args.chunk,
                                    device=device, workers=workers)
        _sync(device)
        seconds = time.perf_counter() - t
    finally:
        evaluate.IN_MEMORY_LIMIT = limit
    return {"frames_s": round(len(names) / seconds, 1)}


def predict_rate(args, device) -> dict[str, Any]:
    import av

    with av.open(args.video) as container:
        frames = sum(1 for _ in container.decode(video=0))
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "mtaffect", "predict", args.video, "--checkpoint",
                   args.predict_checkpoint, "--out", out, "--backend", "torch", "--device", str(device),
                   "--batch-size", "64", "--no-overlay", "--no-plots", "--quiet"]
        t = time.perf_counter()
        subprocess.run(command, check=True)
        seconds = time.perf_counter() - t
    return {"frames": frames, "frames_s_end_to_end": round(frames / seconds, 1), "seconds": round(seconds, 1)}


def _try(results: dict, key: str, fn, *a) -> None:
    try:
        results[key] = fn(*a)
    except Exception as error:  # noqa: BLE001 - one failed figure must not hide the others
        results[key] = {"error": f"{type(error).__name__}: {error}"[:300]}
    print(f"{key}: {results[key]}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda (default; skipped without CUDA) | cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny network and sizes (a CPU dry run)")
    parser.add_argument("--backbone", default="resnet50_caffe")
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=64, help="N per task set (paper: 64)")
    parser.add_argument("--steps", type=int, default=300, help="loop steps per measurement")
    parser.add_argument("--warm", type=int, default=30, help="steps before the timed window")
    parser.add_argument("--compile", default="off,reduce-overhead", help="train.compile modes, comma list")
    parser.add_argument("--loader-workers", type=int, default=10)
    parser.add_argument("--frames", type=int, default=8192, help="distinct frames for cache/evaluate")
    parser.add_argument("--chunk", type=int, default=256, help="cache chunk / evaluation batch")
    parser.add_argument("--workers", default="0,4,8,14", help="decode worker counts, comma-separated")
    parser.add_argument("--predict-checkpoint", default=None)
    parser.add_argument("--video", default=None)
    parser.add_argument("--parts", default="loop,cache,evaluate,predict", help="what to measure, comma list")
    parser.add_argument("--stages", default="cnn_teacher,cnn_student", help="loop: which stages, comma list")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.tiny:
        args.backbone, args.size, args.batch, args.steps, args.warm = "resnet_tiny", 48, 8, 4, 1
        args.frames, args.chunk, args.loader_workers = 48, 16, 0
        args.workers, args.compile = "0,1", "off"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("CUDA is not available here: the GPU figures are skipped (use --device cpu for a dry run)")
        return 0
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "settings": {k: v for k, v in vars(args).items() if k not in ("out",)},
    }
    peak, what = matmul_rate(device)
    results["peak_tflop_s"] = round(peak / 1e12, 2)
    results["peak_what"] = what
    print(f"reference rate: {results['peak_tflop_s']} TFLOP/s ({what})", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        names = write_jpegs(root, args.frames)
        parts = set(args.parts.split(","))
        for mode in args.compile.split(",") if "loop" in parts else ():
            for stage in args.stages.split(","):
                key = f"{stage}_compile_{mode}"
                _try(results, key, loop_rate, args, device, root, names, stage, mode)
                if "tflop_s" in results[key]:
                    fraction = results[key]["tflop_s"] * 1e12 / peak
                    results[key]["fraction_of_peak"] = float(f"{fraction:.3g}")
        for workers in (int(w) for w in args.workers.split(",")):
            measures = (("cache", "feature_cache", cache_rate), ("evaluate", "evaluate", evaluate_rate))
            for part, name, fn in measures:
                if part in parts:
                    _try(results, f"{name}_workers_{workers}", fn, args, device, root, names, workers)
    if "predict" not in parts:
        pass
    elif args.predict_checkpoint and args.video:
        _try(results, "predict", predict_rate, args, device)
    else:
        print("predict: skipped (needs --predict-checkpoint and --video)")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
