"""Benchmark (issue 20, item 1): GRU feature cache and evaluation frames/s, today's path vs the frame store.

* ``today``: faces decoded from their JPEG files (:class:`mtaffect.data.faces.FaceReader`) in the
  device's default decode workers, the draws / the evaluation crop warped by OpenCV in those workers.
* ``new``: the same faces read from a frame store (:func:`mtaffect.data.faces.build_frame_store`,
  built once before the timing, its build rate printed), warped on the device (exact tensor warp) on
  CUDA, by OpenCV on the CPU (the defaults of ``ensure_feature_cache`` / ``predict_cnn_frames``).

Both run the project's own functions on the same synthetic 112² JPEG faces and the same randomly
initialised CNN (ResNet-50, FER+ caffe layout; ``--tiny``: resnet_tiny at 48 px, few frames), on the
same device, repetitions interleaved (today, new, today, new, ...); the value is the median.
Evaluation streams its batches (as ``mtaffect evaluate`` on a split too large to keep in memory).

    python -m benchmarks.bench_store --device cuda --json $OUT/store.json
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m benchmarks.bench_store --tiny --device cpu --json store.json

The JSON file is a list of ``{"measure": "gru_cache_fps" | "evaluate_fps", "path": "today" | "new",
"value": frames/s, "unit": "frames/s", "device": str, "settings": str}``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_loading import write_jpegs  # noqa: E402
from benchmarks.bench_train_loop import index_of  # noqa: E402
from mtaffect.io import write_json  # noqa: E402

MEAN = [131.0912, 103.8827, 91.4953]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _model(backbone: str, seed: int, device: torch.device) -> torch.nn.Module:
    from mtaffect.models.cnn import CNNConfig, MultitaskCNN

    torch.manual_seed(seed)
    return MultitaskCNN(CNNConfig(backbone=backbone)).to(device).eval()


def cache_fps(model, index, meta, args, device, folder: Path) -> float:
    """Frames/s of one fresh feature cache (9 draws) of ``index`` into ``folder``."""
    from mtaffect.features import ensure_feature_cache

    _sync(device)
    start = time.perf_counter()
    prep = {"size": args.size, "mean": MEAN, "std": [1.0] * 3}
    ensure_feature_cache(model, index, meta, folder, size=args.size, batch_size=args.chunk, device=device,
                         progress=False, preprocessing_meta=prep)
    _sync(device)
    return len(index) / (time.perf_counter() - start)


def evaluate_fps(model, index, meta, args, device) -> float:
    """Frames/s of :func:`predict_cnn_frames` on ``index``, streamed."""
    import mtaffect.evaluate.frames as frames
    from mtaffect.models.preprocessing import Preprocessing

    limit, frames.IN_MEMORY_LIMIT = frames.IN_MEMORY_LIMIT, 0
    try:
        _sync(device)
        start = time.perf_counter()
        prep = Preprocessing(size=args.size, mean=tuple(MEAN))
        frames.predict_cnn_frames(model, index, meta, preprocessing=prep, batch_size=args.chunk,
                                  device=device)
        _sync(device)
        return len(index) / (time.perf_counter() - start)
    finally:
        frames.IN_MEMORY_LIMIT = limit


def read_rates(n: int, size: int) -> None:
    """Print FaceReader's cost on ``n`` synthetic JPEG faces: opening it (with a store: the source
    checks), and random batches of 256 in faces per CPU-second and per wall second, JPEG vs store,
    two interleaved rounds; and the store's build rate. Printed only (not in the JSON file)."""
    import numpy as np

    from mtaffect.data.faces import FaceReader, build_frame_store

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "faces").mkdir()
        index = index_of(write_jpegs(root / "faces", n))
        meta = {"roots": {"affwild2": str(root / "faces")}}
        start = time.perf_counter()
        store = build_frame_store(index, meta, root / "store", size=size, progress=False)
        print(f"reads: store built at {n / (time.perf_counter() - start):.0f} faces/s (one process)")
        stored = dict(meta, frame_stores=[{"path": str(store.path), "split": "train", "size": size}])
        readers = {}
        for path, m in (("jpeg", meta), ("store", stored)):
            start = time.perf_counter()
            readers[path] = FaceReader(index, m, size)
            per_row = (time.perf_counter() - start) * 1e6 / n
            print(f"reads: FaceReader({path}) opened in {per_row:.2f} µs per row")
        rng = np.random.default_rng(0)
        for round_ in range(2):
            for path, reader in readers.items():
                batches = [np.sort(rng.choice(n, 256, replace=False)) for _ in range(20)]
                cpu, wall = time.process_time(), time.perf_counter()
                for rows in batches:
                    reader.read(rows)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                print(f"reads: round {round_} {path:<5} {20 * 256 / cpu:.0f} faces/CPU-s, "
                      f"{20 * 256 / wall:.0f} faces/s wall")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda (default) | cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny network, 48 px, few frames (a CPU dry run)")
    parser.add_argument("--frames", type=int, default=None, help="distinct frames (default 16384; tiny 96)")
    parser.add_argument("--backbone", default="resnet50_caffe")
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--chunk", type=int, default=256, help="feature-cache chunk / evaluation batch")
    parser.add_argument("--reps", type=int, default=1, help="interleaved repetitions per path (median)")
    parser.add_argument("--json", default=None, metavar="FILE", help="write the figures here")
    parser.add_argument("--reads", type=int, default=0, metavar="N",
                        help="only print FaceReader's read rates, JPEG vs store, on N faces (CPU)")
    args = parser.parse_args(argv)
    if args.reads:
        read_rates(args.reads, args.size)
        return 0
    if args.tiny:
        args.backbone, args.size, args.chunk = "resnet_tiny", 48, 32
    frames = args.frames or (96 if args.tiny else 16384)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("CUDA is not available here: nothing measured (use --device cpu for a dry run)")
        return 0
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    from mtaffect.data.faces import build_frame_store
    from mtaffect.data.prefetch import default_workers

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    values: dict[tuple[str, str], list[float]] = {}
    workers = default_workers(device)
    warps = "device (exact tensor warp)" if device.type == "cuda" else "OpenCV, in the readers"
    how = {"today": f"JPEG decode in {workers} workers, OpenCV warps in the readers",
           "new": f"frame store read in {workers} workers, warps: {warps}"}

    def rows() -> list[dict[str, Any]]:
        out = []
        for (measure, path), v in values.items():
            settings = (f"{args.backbone}@{args.size}, {frames} frames, chunk {args.chunk}, "
                        + ("9 draws, " if measure == "gru_cache_fps" else "")
                        + f"{how[path]}, median of {len(v)} interleaved reps (worker start-up included)")
            out.append({"measure": measure, "path": path, "value": round(statistics.median(v), 1),
                        "unit": "frames/s", "device": name, "settings": settings})
        return out

    def record(measure: str, path: str, value: float) -> None:
        values.setdefault((measure, path), []).append(value)
        if args.json:  # after every figure: a run cut by its time limit keeps what it measured
            write_json(args.json, rows())

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "faces").mkdir()
        names = write_jpegs(root / "faces", frames)
        index = index_of(names)
        meta = {"roots": {"affwild2": str(root / "faces")}}
        start = time.perf_counter()
        store = build_frame_store(index, meta, root / "store", size=args.size, progress=False,
                                  workers=workers)
        build = frames / (time.perf_counter() - start)
        print(f"frame store: {store.n} faces of {args.size} px built at {build:.0f} faces/s (untimed below)")
        stored = dict(meta, frame_stores=[{"path": str(store.path), "split": "train", "size": args.size}])
        model = _model(args.backbone, 2, device)
        warm = index.iloc[: args.chunk]  # cuDNN autotuning out of the timed runs
        cache_fps(model, warm, stored, args, device, root / "warm")
        evaluate_fps(model, warm, stored, args, device)
        for rep in range(args.reps):
            for path, m in (("today", meta), ("new", stored)):
                fps = cache_fps(model, index, m, args, device, root / f"cache-{path}-{rep}")
                record("gru_cache_fps", path, fps)
                evaluated = evaluate_fps(model, index, m, args, device)
                record("evaluate_fps", path, evaluated)
                print(f"rep {rep} {path}: cache {fps:.1f}, evaluate {evaluated:.1f} frames/s", flush=True)
    for measure in ("gru_cache_fps", "evaluate_fps"):  # interleaved pairs: robust to a drifting host
        pairs = [n / t for t, n in zip(values[measure, "today"], values[measure, "new"])]
        print(f"{measure}: new/today per interleaved pair " + ", ".join(f"{p:.2f}" for p in pairs))
    for r in rows():
        print(f"{r['measure']:<14} {r['path']:<6} {r['value']:>10.1f} {r['unit']}  "
              f"({r['device']}; {r['settings']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
