"""Cost of the losses, metrics and window stitching on this machine (1 thread, quiet repetitions).

Run: ``OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m benchmarks.bench_losses_metrics``
Prints a Markdown table; figures go to benchmarks/RESULTS_losses_metrics.md with this command.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from sklearn import metrics as skm

from benchmarks._timing import time_quiet
from mtaffect import metrics
from mtaffect.losses import LossConfig, student_objective, teacher_objective
from mtaffect.models.outputs import Outputs, Targets
from mtaffect.windows import plan_windows, stitch


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


def bench_objectives(rows: list[tuple[str, str, str]], reps: int) -> None:
    cfg = LossConfig()
    for label, task_sets, n in (
        ("CNN step: 3 task sets x 64 frames", ("EXPR", "VA", "EXPR_VA"), 64),
        ("GRU step: 2 task sets x 16 windows x 32 = 512 frames", ("EXPR", "VA"), 512),
    ):
        student = {t: _outputs(n, i, True) for i, t in enumerate(task_sets)}
        teacher = {t: _outputs(n, 10 + i, False) for i, t in enumerate(task_sets)}
        targets = {t: _targets(n, i, t, 0.3) for i, t in enumerate(task_sets)}

        def run_teacher(student=student, targets=targets) -> None:
            teacher_objective(student, targets, cfg)["loss"].backward()

        def run_student(student=student, teacher=teacher, targets=targets) -> None:
            student_objective(student, teacher, targets, cfg)["loss"].backward()

        for name, fn in (("teacher_objective", run_teacher), ("student_objective", run_student)):
            t = time_quiet(fn, reps=reps, min_seconds=0.2)
            rows.append(
                (
                    f"{name} forward+backward, {label}",
                    f"{t.median_s * 1e3:.2f} ms",
                    f"{t.kept}/{t.total} quiet",
                )
            )


def bench_metrics(rows: list[tuple[str, str, str]], reps: int) -> None:
    n = 1_000_000
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 7, n)
    y_pred = np.where(rng.random(n) < 0.5, y_true, rng.integers(0, 7, n))
    ours = time_quiet(lambda: metrics.expr_score(y_true, y_pred), reps=reps)
    sk = time_quiet(
        lambda: (skm.f1_score(y_true, y_pred, average="macro"), skm.accuracy_score(y_true, y_pred)), reps=reps
    )
    rows.append(("expr_score, 1M frames", f"{ours.median_s * 1e3:.1f} ms", f"{ours.kept}/{ours.total} quiet"))
    rows.append(
        (
            "sklearn f1_score(macro) + accuracy_score, 1M frames",
            f"{sk.median_s * 1e3:.1f} ms",
            f"{sk.kept}/{sk.total} quiet; ratio sklearn/ours = {sk.median_s / ours.median_s:.1f}x",
        )
    )
    tv, pv, ta, pa = (rng.uniform(-1, 1, n) for _ in range(4))
    va = time_quiet(lambda: metrics.va_scores(tv, pv, ta, pa), reps=reps)
    rows.append(
        (
            "va_scores (CCC, PCC, RMSE, SAGR x 2), 1M frames",
            f"{va.median_s * 1e3:.1f} ms",
            f"{va.kept}/{va.total} quiet",
        )
    )


def bench_windows(rows: list[tuple[str, str, str]], reps: int) -> None:
    n = 100_000  # about an hour of video at 30 fps
    frames = np.flatnonzero(np.random.default_rng(1).random(n + 500) > 0.005)[:n]  # ~0.5 % missing faces
    plan = time_quiet(lambda: plan_windows(frames, 32, 32, mode="predict"), reps=reps)
    w = plan_windows(frames, 32, 32, mode="predict")
    values = np.random.default_rng(2).normal(size=(len(w), 32, 47)).astype(np.float32)
    st = time_quiet(lambda: stitch(values, w), reps=reps)
    rows.append(
        (
            f"plan_windows, {n} frames with gaps ({len(w)} windows)",
            f"{plan.median_s * 1e3:.1f} ms",
            f"{plan.kept}/{plan.total} quiet",
        )
    )
    rows.append(
        (
            f"stitch (W={len(w)}, 32, 47) -> ({n}, 47)",
            f"{st.median_s * 1e3:.1f} ms",
            f"{st.kept}/{st.total} quiet",
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows: list[tuple[str, str, str]] = []
    bench_objectives(rows, args.reps)
    bench_metrics(rows, args.reps)
    bench_windows(rows, args.reps)
    print(f"torch {torch.__version__}, numpy {np.__version__}, 1 thread\n")
    print("| what | median | notes |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
