"""Cost of the losses, metrics and window stitching on this machine (1 thread, quiet repetitions).

Run: ``OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m benchmarks.bench_losses_metrics``
Prints a Markdown table; figures go to benchmarks/RESULTS_losses_metrics.md with this command.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch
from sklearn import metrics as skm

from benchmarks._timing import time_quiet
from mtaffect import metrics
from mtaffect.losses import LossConfig, student_objective, teacher_objective
from mtaffect.models.outputs import Outputs, Targets
from mtaffect.windows import plan_windows, stitch


def _cpu_seconds(fn, reps: int, min_seconds: float = 0.1) -> float:
    """Median CPU time of this process per call (less sensitive than wall time to other processes on
    a shared machine, though still slowed by cache and hyper-thread sharing)."""
    samples = []
    for _ in range(reps):
        calls, start_cpu, start_wall = 0, time.process_time(), time.perf_counter()
        while True:
            fn()
            calls += 1
            if time.perf_counter() - start_wall >= min_seconds:
                break
        samples.append((time.process_time() - start_cpu) / calls)
    return statistics.median(samples)


def measure(fn, reps: int, min_seconds: float = 0.0) -> tuple[float, float, str]:
    """(wall median s, CPU median s, "kept/total quiet") of ``fn``."""
    wall = time_quiet(fn, reps=reps, min_seconds=min_seconds)
    return wall.median_s, _cpu_seconds(fn, reps, max(min_seconds, 0.1)), f"{wall.kept}/{wall.total} quiet"


def _outputs(n: int, seed: int, grad: bool) -> Outputs:
    g = torch.Generator().manual_seed(seed)
    return Outputs(
        *(torch.randn(n, c, generator=g).requires_grad_(grad) for c in (7, 20, 20)),
    )


def _targets(n: int, seed: int, task_set: str, shared_fraction: float) -> Targets:
    g = torch.Generator().manual_seed(1000 + seed)
    shared = torch.rand(n, generator=g) < shared_fraction
    has_expr = torch.ones(n, dtype=torch.bool) if task_set != "VA" else shared
    has_va = torch.ones(n, dtype=torch.bool) if task_set != "EXPR" else shared
    return Targets(
        torch.randint(0, 7, (n,), generator=g),
        has_expr,
        torch.rand(n, generator=g) * 2 - 1,
        torch.rand(n, generator=g) * 2 - 1,
        has_va,
    )


Row = tuple[str, float, float, str]  # what, wall s, CPU s, notes


def bench_objectives(rows: list[Row], reps: int) -> None:
    cfg = LossConfig()
    shapes = (
        ("CNN step: 3 task sets x 64 frames", ("EXPR", "VA", "EXPR_VA"), 64),
        ("GRU step: 2 task sets x 16 windows x 32 = 512 frames", ("EXPR", "VA"), 512),
    )
    for label, task_sets, n in shapes:
        student = {t: _outputs(n, i, True) for i, t in enumerate(task_sets)}
        teacher = {t: _outputs(n, 10 + i, False) for i, t in enumerate(task_sets)}
        targets = {t: _targets(n, i, t, 0.3) for i, t in enumerate(task_sets)}

        def run_teacher(student=student, targets=targets) -> None:
            teacher_objective(student, targets, cfg)["loss"].backward()

        def run_student(student=student, teacher=teacher, targets=targets) -> None:
            student_objective(student, teacher, targets, cfg)["loss"].backward()

        for name, fn in (("teacher_objective", run_teacher), ("student_objective", run_student)):
            wall, cpu, quiet = measure(fn, reps, 0.2)
            rows.append((f"{name} forward+backward, {label}", wall, cpu, quiet))


def bench_gru_step_share(rows: list[Row], reps: int) -> None:
    """The GRU student step the loss belongs to: teacher GRU (no grad) + student GRU fwd+bwd + loss."""
    from mtaffect.models.gru import TemporalModel

    torch.manual_seed(0)
    student_net, teacher_net = TemporalModel(), TemporalModel().eval()
    task_sets = ("EXPR", "VA")
    inputs = {t: {h: torch.randn(16, 32, 128) for h in ("EXPR", "VA")} for t in task_sets}
    targets = {t: _targets(512, i, t, 0.3) for i, t in enumerate(task_sets)}
    cfg = LossConfig()

    def step(with_loss: bool) -> None:
        with torch.no_grad():
            teacher = {t: teacher_net(inputs[t]) for t in task_sets}
        student = {t: student_net(inputs[t]) for t in task_sets}
        if with_loss:
            loss = student_objective(student, teacher, targets, cfg)["loss"]
        else:  # stand-in with the same backward through the networks
            loss = sum(o.expression.sum() + o.valence.sum() + o.arousal.sum() for o in student.values())
        loss.backward()

    full = measure(lambda: step(True), reps, 0.2)
    bare = measure(lambda: step(False), reps, 0.2)
    share = (full[1] - bare[1]) / full[1]
    what = "GRU student step (2 task sets x 16 x 32 frames: teacher GRU + student GRU fwd+bwd)"
    rows.append((f"{what} with student_objective", *full))
    rows.append(
        (
            f"{what} with a trivial sum as loss",
            bare[0],
            bare[1],
            f"{bare[2]}; objective share of the step's CPU time = {share:.0%}",
        )
    )


def bench_metrics(rows: list[Row], reps: int) -> None:
    n = 1_000_000
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 7, n)
    y_pred = np.where(rng.random(n) < 0.5, y_true, rng.integers(0, 7, n))
    ours = measure(lambda: metrics.expr_score(y_true, y_pred), reps)
    sk = measure(
        lambda: (skm.f1_score(y_true, y_pred, average="macro"), skm.accuracy_score(y_true, y_pred)), reps
    )
    rows.append(("expr_score, 1M frames", *ours))
    rows.append(
        (
            "sklearn f1_score(macro) + accuracy_score, 1M frames",
            sk[0],
            sk[1],
            f"{sk[2]}; CPU-time ratio sklearn/ours = {sk[1] / ours[1]:.1f}x",
        )
    )
    tv, pv, ta, pa = (rng.uniform(-1, 1, n) for _ in range(4))
    rows.append(
        (
            "va_scores (CCC, PCC, RMSE, SAGR for V and A), 1M frames",
            *measure(lambda: metrics.va_scores(tv, pv, ta, pa), reps),
        )
    )


def bench_windows(rows: list[Row], reps: int) -> None:
    n = 100_000  # about an hour of video at 30 fps
    frames = np.flatnonzero(np.random.default_rng(1).random(n + 500) > 0.005)[:n]  # ~0.5 % missing faces
    w = plan_windows(frames, 32, 32, mode="predict")
    values = np.random.default_rng(2).normal(size=(len(w), 32, 47)).astype(np.float32)
    rows.append(
        (
            f"plan_windows, {n} frames with gaps ({len(w)} windows)",
            *measure(lambda: plan_windows(frames, 32, 32, mode="predict"), reps),
        )
    )
    rows.append((f"stitch (W={len(w)}, 32, 47) -> ({n}, 47)", *measure(lambda: stitch(values, w), reps)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows: list[tuple[str, str, str]] = []
    bench_objectives(rows, args.reps)
    bench_gru_step_share(rows, args.reps)
    bench_metrics(rows, args.reps)
    bench_windows(rows, args.reps)
    print(f"torch {torch.__version__}, numpy {np.__version__}, 1 thread\n")
    print("| what | wall median | CPU median | notes (quiet repetitions of the wall timing) |")
    print("|---|---|---|---|")
    for what, wall, cpu, notes in rows:
        print(f"| {what} | {wall * 1e3:.2f} ms | {cpu * 1e3:.2f} ms | {notes} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
