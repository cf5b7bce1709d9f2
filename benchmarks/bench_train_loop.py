"""Benchmark (a): throughput of the full CNN training loop vs the bare model on the same batch shapes.

Full loop: :func:`mtaffect.train.loop.fit` with the real pieces of the ``cnn_teacher`` stage —
:class:`mtaffect.data.faces.FaceReader` decoding 112² JPEGs, balanced sampling, batched uint8
augmentation, three task sets of N each forwarded separately, device-side normalisation,
:func:`mtaffect.losses.teacher_objective`, Adam (1e-4, betas 0.5/0.999), progress bar, per-epoch
CSV, resume state (validation excluded: it is per epoch, not per step).

Bare model: the same network, the same three forwards of N pre-made normalised channels_last
tensors, a trivial loss (sum of the outputs' means), backward and the same Adam step — no data, no
real losses, no logging.

Both in this process, 1 torch thread, channels_last; bare and full alternate (A/B pairs) and each
repetition records the foreign CPU load (``time_quiet``); the figure is the median full / bare ratio
over quiet pairs (target ≥ 90 %).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_train_loop.py --backbone resnet_small
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_train_loop.py --backbone resnet50_caffe
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._timing import time_quiet  # noqa: E402
from benchmarks.bench_loading import write_jpegs  # noqa: E402
from mtaffect.data.faces import FaceReader  # noqa: E402
from mtaffect.data.loading import FrameTaskData, ImagePreparer, LabelArrays, TaskSource  # noqa: E402
from mtaffect.data.tasks import sampling_weights  # noqa: E402
from mtaffect.losses import LossConfig  # noqa: E402
from mtaffect.models.cnn import CNNConfig, MultitaskCNN  # noqa: E402
from mtaffect.models.preprocessing import Preprocessing  # noqa: E402
from mtaffect.train.loop import FitOptions, fit  # noqa: E402
from mtaffect.train.tasks import SupervisedTask  # noqa: E402

TASK_SETS = ("EXPR", "VA", "EXPR_VA")


def index_of(names: list[str], seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(names)
    return pd.DataFrame(
        {
            "database": "affwild2",
            "split": "train",
            "track": "bench",
            "frame": pd.array(np.arange(1, n + 1), dtype="Int64"),
            "image": names,
            "expression": pd.array(rng.integers(0, 7, n), dtype="Int64"),
            "valence": pd.array(rng.uniform(-1, 1, n), dtype="Float64"),
            "arousal": pd.array(rng.uniform(-1, 1, n), dtype="Float64"),
            "face_id": pd.array([pd.NA] * n, dtype="Int64"),
            "landmarks": [None] * n,
            **{k: pd.array([pd.NA] * n, dtype="Float64") for k in ("box_x0", "box_y0", "box_x1", "box_y1")},
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="resnet_small")
    parser.add_argument("--batch", type=int, default=64, help="N per task set")
    parser.add_argument("--steps", type=int, default=3, help="steps per timed repetition")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument(
        "--marginal", action="store_true", help="also the per-step cost without epoch-end work"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    device = torch.device("cpu")
    prep = Preprocessing(size=112)

    torch.manual_seed(0)
    model = MultitaskCNN(CNNConfig(backbone=args.backbone)).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.5, 0.999))

    # ---- bare: three forwards of pre-made tensors, trivial loss, backward, Adam
    gen = torch.Generator().manual_seed(0)
    inputs = [
        prep.apply(
            torch.randint(0, 256, (args.batch, 112, 112, 3), generator=gen, dtype=torch.uint8),
            channels_last=True,
        )
        for _ in TASK_SETS
    ]

    def bare() -> None:
        model.train()
        for _ in range(args.steps):
            optimizer.zero_grad(set_to_none=True)
            loss = sum(
                o.expression.mean() + o.valence.mean() + o.arousal.mean() for o in (model(x) for x in inputs)
            )
            loss.backward()
            optimizer.step()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "faces"
        root.mkdir()
        index = index_of(write_jpegs(root, args.images))
        reader = FaceReader(index, {"roots": {"affwild2": str(root)}}, 112)
        labels = LabelArrays.from_frame(index)
        sources = {t: TaskSource(reader, labels, sampling_weights(t, index)) for t in TASK_SETS}
        task = SupervisedTask(model, LossConfig())
        runs = iter(range(10**6))

        def full(steps: int = args.steps) -> None:
            data = FrameTaskData(sources, batch_per_task=args.batch, size=112, seed=0, max_steps=steps)
            fit(
                task,
                data,
                optimizer,
                run_dir=Path(tmp) / f"run{next(runs)}",
                options=FitOptions(epochs=1, device=device, progress=True, tensorboard=False),
                validate=None,
                to_device=ImagePreparer(prep, channels_last=True),
            )

        images = args.steps * len(TASK_SETS) * args.batch
        bare(), full()  # warm-up

        def cpu_seconds(fn) -> float:
            t0 = time.process_time()
            fn()
            return time.process_time() - t0

        # interleaved A/B pairs (PERFORMANCE.md §0). Two clocks: wall time of quiet repetitions
        # (time_quiet), and this process's CPU time, which other processes on the shared VM cannot
        # inflate (1 thread, no workers: all the loop's work is in this process).
        pairs = []
        for _ in range(args.reps):
            b = time_quiet(bare, reps=1, warmup=0, max_tries=3)
            f = time_quiet(full, reps=1, warmup=0, max_tries=3)
            pairs.append((b.median_s, f.median_s, b.kept + f.kept == 2, cpu_seconds(bare), cpu_seconds(full)))
        quiet = [p for p in pairs if p[2]] or pairs
        wall_ratio = statistics.median(p[0] / p[1] for p in quiet)
        cpu_ratio = statistics.median(p[3] / p[4] for p in pairs)
        bare_wall = images / statistics.median(p[0] for p in quiet)
        full_wall = images / statistics.median(p[1] for p in quiet)
        bare_cpu = images / statistics.median(p[3] for p in pairs)
        full_cpu = images / statistics.median(p[4] for p in pairs)
        print(
            f"backbone {args.backbone} @112, N = {args.batch} per task set x 3, {args.steps} steps/rep, "
            f"1 thread, {args.reps} interleaved pairs"
        )
        print(
            f"per CPU-second: bare {bare_cpu:.1f} img/s, full loop {full_cpu:.1f} img/s, "
            f"full / bare = {cpu_ratio:.1%} (median of pair ratios)"
        )
        print(
            f"wall, quiet reps: bare {bare_wall:.1f} img/s, full loop {full_wall:.1f} img/s, "
            f"full / bare = {wall_ratio:.1%} (median of {len(quiet)} quiet pairs)"
        )
        if args.marginal:
            # per-step cost of the loop without its once-per-epoch work (resume state, CSV):
            # CPU(fit of 2k steps) - CPU(fit of k steps), against the bare model's k steps
            ratios = []
            for _ in range(args.reps):
                base = cpu_seconds(bare)
                marginal = cpu_seconds(lambda: full(2 * args.steps)) - cpu_seconds(lambda: full(args.steps))
                ratios.append(base / marginal)
            print(
                f"per CPU-second, marginal per step (epoch-end work excluded): full / bare = "
                f"{statistics.median(ratios):.1%} (median of {len(ratios)})"
            )
        print("target: full / bare >= 90 %")


if __name__ == "__main__":
    main()
