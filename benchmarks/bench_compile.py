"""Benchmark (issue 20, item 4): the compiled training step's start-up, cold vs warm compile cache.

Each measurement is a fresh process (no in-memory compile state carries over) that builds the CNN
stage's task (ResNet-50 FER+ layout at 112, 3 task sets × 64, bf16 autocast and channels_last on
CUDA, fused Adam; the student with its frozen teacher), one batch decoded from synthetic JPEGs and
kept on the device, and runs :func:`mtaffect.train.loop.train_one_epoch` over that batch through
:func:`mtaffect.train.compiled.compile_step` (``train.compile`` = each ``--modes``), as ``fit`` does.

* ``today``: the step's first run on a machine whose compile cache is empty (a fresh folder): what
  every run on a fresh GPU machine paid before (the H200's 111 s / 155 s, BENCHMARKS.md issue 10).
* ``new``: the same step's second run with the same cache folder (``MTAFFECT_COMPILE_CACHE``):
  torch loads the forward and backward graphs it stored the first time.

Figures per (stage, mode): ``start-up`` = wall time from ``compile_step`` to the end of step
``--warm`` (device synchronised; CUDA graphs are recorded in steps 2–3), ``first step`` = what the
log line "compiled in N s" says (step 1, forward + backward, compilation included), and the graphs
loaded/compiled; plus the eager step's start-up to step ``--warm`` for reference. Data loading is
not part of any figure (one batch, reused).

JSON (``--json``): a list of {"measure", "path": "today"|"new", "value", "unit", "device",
"settings"} rows, rewritten after every measurement (a cut-off run keeps what it measured);
``benchmarks/gpu_summary.py`` prints them side by side. CPU dry run (inductor's C++ backend; tiny
network, 48 px, 8 per task set)::

    .venv/bin/python -m benchmarks.bench_compile --device cpu --tiny --json /tmp/compile.json
    # on a GPU machine (benchmarks/gpu_short_run3.sh):
    python -m benchmarks.bench_compile --device cuda --json $OUT/compile.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TASK_SETS = ("EXPR", "VA", "EXPR_VA")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _SameBatch:
    """TrainData of ``steps`` steps that all yield one batch already on the device."""

    def __init__(self, batch: Any, steps: int) -> None:
        self.batch, self.steps = batch, steps

    def steps_per_epoch(self) -> int:
        return self.steps

    def epoch(self, epoch: int, start_step: int = 0):
        for _ in range(start_step, self.steps):
            yield self.batch


def _batch(args: argparse.Namespace, device: torch.device, folder: Path) -> Any:
    """One training batch (3 task sets × ``--batch``) from synthetic JPEG faces, on the device."""
    from benchmarks.bench_loading import write_jpegs
    from benchmarks.bench_train_loop import index_of
    from mtaffect.data.faces import FaceReader
    from mtaffect.data.loading import FrameTaskData, ImagePreparer, LabelArrays, TaskSource
    from mtaffect.data.tasks import sampling_weights
    from mtaffect.models.preprocessing import Preprocessing

    names = write_jpegs(folder, 3 * args.batch)
    index = index_of(names)
    reader = FaceReader(index, {"roots": {"affwild2": str(folder)}}, args.size)
    labels = LabelArrays.from_frame(index)
    sources = {t: TaskSource(reader, labels, sampling_weights(t, index)) for t in TASK_SETS}
    data = FrameTaskData(sources, batch_per_task=args.batch, size=args.size, workers=0, max_steps=1)
    prepare = ImagePreparer(Preprocessing(size=args.size), channels_last=True)
    return prepare(next(iter(data.epoch(0))), device)


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One run of the step (this process): the timings as a dict, printed as the last stdout line."""
    from mtaffect.losses import LossConfig
    from mtaffect.models.cnn import CNNConfig, MultitaskCNN
    from mtaffect.train.compiled import CompiledStep, adam, compile_step
    from mtaffect.train.loop import FitOptions, train_one_epoch
    from mtaffect.train.tasks import DistillationTask, SupervisedTask

    device = torch.device(args.device)

    def make(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        model = MultitaskCNN(CNNConfig(backbone=args.backbone)).to(device)
        return model.to(memory_format=torch.channels_last)

    with tempfile.TemporaryDirectory() as folder:
        batch = _batch(args, device, Path(folder))
    model = make(0)
    if args.stage == "cnn_teacher":
        task = SupervisedTask(model, LossConfig())
    else:
        task = DistillationTask(model, make(1).eval(), LossConfig())
    task.train()
    optimizer = adam(model.parameters(), lr=1e-4, betas=(0.5, 0.999), device=device)
    amp = torch.bfloat16 if device.type == "cuda" else None
    options = FitOptions(epochs=1, device=device, amp_dtype=amp, compile=args.mode, progress=False,
                         tensorboard=False, desc=args.stage)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    done: list[float] = []

    def after_step(steps: int, sums: Any) -> None:
        _sync(device)
        done.append(time.perf_counter())

    _sync(device)
    t0 = time.perf_counter()
    step_fn = compile_step(task, args.mode, device, name=args.stage,
                           log=lambda line: print(line, file=sys.stderr, flush=True))
    train_one_epoch(step_fn, _SameBatch(batch, args.warm), optimizer, scaler, 0, options,
                    show_progress=False, after_step=after_step)
    result: dict[str, Any] = {"startup_s": done[-1] - t0}
    if len(done) > 1:
        result["step_s"] = done[-1] - done[-2]
    if isinstance(step_fn, CompiledStep) and step_fn.startup is not None:
        s = step_fn.startup
        result.update(first_step_s=s.seconds, loaded=s.loaded, compiled=s.compiled, state=s.state,
                      failed=step_fn.failed)
    return result


def _run_child(args: argparse.Namespace, stage: str, mode: str, cache: Path | None) -> dict[str, Any]:
    """:func:`child` in a fresh process with compile cache ``cache`` (None: off)."""
    command = [sys.executable, "-m", "benchmarks.bench_compile", "--child", "--device", args.device,
               "--stage", stage, "--mode", mode, "--warm", str(args.warm), "--backbone", args.backbone,
               "--size", str(args.size), "--batch", str(args.batch)]
    env = dict(os.environ, **{"MTAFFECT_COMPILE_CACHE": str(cache) if cache is not None else "off"})
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    try:
        out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.child_timeout,
                             cwd=Path(__file__).resolve().parents[1])
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {args.child_timeout} s"}
    for line in [line for line in out.stderr.splitlines() if "compil" in line][-4:]:  # the start-up lines
        print(f"    {line}", flush=True)
    if out.returncode != 0 or not out.stdout.strip():
        return {"error": f"exit {out.returncode}: " + out.stderr.strip()[-600:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


class _Rows:
    """The JSON rows, rewritten (atomically) after each addition."""

    def __init__(self, path: str | None, device: str, settings: str) -> None:
        self.path, self.device, self.settings, self.rows = path, device, settings, []

    def add(self, measure: str, path: str, value: float | None, unit: str) -> None:
        if value is None:
            return
        self.rows.append({"measure": measure, "path": path, "value": round(float(value), 3), "unit": unit,
                          "device": self.device, "settings": self.settings})
        if self.path:
            from mtaffect.io import write_json

            write_json(self.path, self.rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda (default; skipped without CUDA) | cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny network and sizes (a CPU dry run)")
    parser.add_argument("--backbone", default="resnet50_caffe")
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=64, help="N per task set (paper: 64)")
    parser.add_argument("--warm", type=int, default=5, help="start-up = time to the end of this step")
    parser.add_argument("--stages", default="cnn_teacher,cnn_student")
    parser.add_argument("--modes", default="reduce-overhead", help="train.compile modes, comma list")
    parser.add_argument("--child-timeout", type=int, default=400, help="seconds per measuring process")
    parser.add_argument("--json", default=None, help="write the rows here (rewritten after each)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stage", default="cnn_teacher", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="reduce-overhead", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tiny:
        args.backbone, args.size, args.batch = "resnet_tiny", 48, 8
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("CUDA is not available here: the compile start-up is not measured (--device cpu for a dry run)")
        return 0
    if args.child:
        print(json.dumps(child(args)))
        return 0
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    settings = (f"torch {torch.__version__}, {args.backbone} @{args.size}, 3 x {args.batch}, "
                f"start-up to step {args.warm}; today: empty cache, new: second run on the stored cache")
    rows = _Rows(args.json, name, settings)
    print(f"compile start-up on {name}: {settings}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for stage in args.stages.split(","):
            eager = _run_child(args, stage, "off", None)
            print(f"{stage} eager: {eager}", flush=True)
            rows.add(f"{stage} eager start-up (to step {args.warm})", "today", eager.get("startup_s"), "s")
            for mode in args.modes.split(","):
                cache = Path(tmp) / f"{stage}-{mode}"
                for path in ("today", "new"):  # today: the empty folder's first run; new: the second
                    result = _run_child(args, stage, mode, cache)
                    print(f"{stage} {mode} {path}: {result}", flush=True)
                    label = f"{stage} compile={mode}"
                    rows.add(f"{label} start-up (to step {args.warm})", path, result.get("startup_s"), "s")
                    rows.add(f"{label} first step (compiled in)", path, result.get("first_step_s"), "s")
                    rows.add(f"{label} graphs compiled", path, result.get("compiled"), "graphs")
                    rows.add(f"{label} steady step", path, result.get("step_s"), "s")
    if args.json:
        print(f"wrote {args.json} ({len(rows.rows)} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
