"""The one training loop, shared by the four stages (CNN/GRU × teacher/student).

The loop knows nothing about images, windows, teachers or losses: it asks a *data* object for the
batches of an epoch, moves each batch to the device with the data's ``to_device``, calls the *task*
(``batch -> {"loss", parts...}``, :mod:`mtaffect.train.tasks`), backpropagates ``"loss"`` and steps the
optimizer (:func:`train_one_epoch`); :func:`fit` drives the epochs: at the end of each it validates,
logs, keeps the best checkpoint and writes the resume state. Per epoch (METHOD.md §5): validate, then
keep the checkpoint if ``abaw_sum`` = EXPR score + CCC_V + CCC_A improved; stop after ``patience``
epochs without improvement.

Files in the run folder: ``metrics.csv`` (one row per epoch: mean training losses, validation
metrics, time), TensorBoard scalars under ``tb/`` when the package is installed, ``last_state.pt``
(resume, :class:`mtaffect.train.state.ResumeState`: written at the end of every epoch and, with
``save_every_steps``, every that many steps inside an epoch, so that an interrupted long epoch
continues from its last such step instead of starting over), and whatever ``save_best`` writes (the
stage writes ``best.safetensors``).

Several processes (``torchrun``, :mod:`mtaffect.distributed`): each rank draws the same balanced
indices (same seed) and keeps every W-th draw (:class:`mtaffect.data.loading.FrameTaskData`), so the
ranks see disjoint samples and the effective batch is W × N per task set. The task (all the step's
forwards) runs in DDP, which averages gradients during ``backward``; rank 0 validates, logs and
writes the files, and broadcasts the validation metrics so that every rank stops at the same epoch.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import torch
from torch import nn

from mtaffect import distributed
from mtaffect.distributed import DistContext
from mtaffect.errors import UserError
from mtaffect.io import write_csv
from mtaffect.runtime import autocast
from mtaffect.train.compiled import CompiledStep, compile_step
from mtaffect.train.state import STATE_FILE, EarlyStopping, ResumeState

__all__ = ["TrainData", "FitOptions", "FitResult", "fit", "train_one_epoch", "SCORE_KEY"]

SCORE_KEY = "abaw_sum"
"""Validation score that selects the checkpoint: EXPR score + CCC_V + CCC_A (METHOD.md §5)."""

Losses = dict[str, torch.Tensor]
"""Named scalar losses (``"loss"`` and its parts), as a task returns them or an epoch sums them."""


class TrainData(Protocol):
    """What :func:`fit` needs from a stage's data."""

    def steps_per_epoch(self) -> int: ...

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Any]: ...


@dataclass
class FitOptions:
    """How :func:`fit` trains.

    epochs: at most this many (a resumed run continues up to it); patience: early stopping
        (``<= 0`` never stops early).
    device, amp_dtype: where the step runs, and the autocast dtype (bf16/fp16) or None; fp16 also
        uses a GradScaler. compile: ``off | default | reduce-overhead``, the step through
        ``torch.compile`` with an eager fallback (:mod:`mtaffect.train.compiled`); compile_cache:
        torch's on-disk compile cache folder, ``off``, or None = ``$MTAFFECT_COMPILE_CACHE`` /
        ``~/.cache/mtaffect/compile`` (:func:`~mtaffect.train.compiled.use_compile_cache`). Rank 0
        prints what it compiles and how long the first step took to stderr.
    resume: continue from ``run_dir/last_state.pt`` if it exists (exactly: same weights as an
        uninterrupted run with the same seed on CPU), mid-epoch if the state was written there.
    save_every_steps: also write the resume state after every this many steps of an epoch (0: only
        at epoch ends). The data's batches depend only on (seed, epoch, step, rank), so the resumed
        epoch asks for its remaining steps and carries on with the saved partial loss sums.
    progress, tensorboard: a progress bar per epoch and TensorBoard scalars (rank 0 only); desc:
        the run's name in the bar and in errors.
    """

    epochs: int
    patience: int = 5
    device: torch.device | str = "cpu"
    amp_dtype: torch.dtype | None = None
    compile: str = "off"
    compile_cache: str | None = None
    resume: bool = False
    save_every_steps: int = 0
    progress: bool = True
    tensorboard: bool = True
    desc: str = "train"


@dataclass
class FitResult:
    """Outcome of :func:`fit`: the best epoch's validation metrics and the per-epoch history."""

    best_epoch: int
    best_metrics: dict[str, float]
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)


class _EpochLog:
    """``metrics.csv`` (the whole history, rewritten each epoch) and optional TensorBoard scalars
    under ``tb/`` (silently absent when the package is not installed)."""

    def __init__(self, run_dir: Path, tensorboard: bool) -> None:
        self.csv = run_dir / "metrics.csv"
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(run_dir / "tb"))
            except Exception:  # noqa: BLE001 - tensorboard missing or broken: CSV is the record
                self.writer = None

    def write(self, history: list[dict[str, Any]]) -> None:
        """Rewrite the CSV with every row so far; the last row's numbers go to TensorBoard."""
        write_csv(pd.DataFrame(history), self.csv)
        if self.writer is None:
            return
        row = history[-1]
        for key, value in row.items():
            if isinstance(value, (int, float)) and key != "epoch":
                self.writer.add_scalar(key.replace("_", "/", 1), value, row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", disable=not enabled, dynamic_ncols=True, leave=False)


def _log_line(line: str) -> None:
    """A line on stderr that leaves the progress bar intact (the compile start-up lines)."""
    from tqdm.auto import tqdm

    tqdm.write(line, file=sys.stderr)


def train_one_epoch(
    step_fn: Callable[[Any], Losses],
    data: TrainData,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    epoch: int,
    options: FitOptions,
    *,
    to_device: Callable[[Any, torch.device], Any] | None = None,
    start: int = 0,
    sums: Losses | None = None,
    show_progress: bool = True,
    after_step: Callable[[int, Losses], None] | None = None,
) -> tuple[Losses, int]:
    """Run the steps of ``epoch`` from step ``start``; returns the epoch's summed named losses (0-d
    tensors on the device, ``sums`` included) and the number of steps done (``start`` included).

    step_fn: ``batch -> losses`` (the task, in DDP and/or compiled); the caller sets train mode.
    after_step: called with (steps done, sums so far) after each step (mid-epoch resume states).
    Raises FloatingPointError naming the epoch and step on a non-finite loss.
    """
    device = torch.device(options.device)
    sums = dict(sums or {})
    # reading the loss forces a host-device sync: every step on CPU (free), every 10th on CUDA,
    # where the running sum reveals a non-finite loss of any step since the last check; the same
    # read feeds the progress bar, so the step itself never waits for the device
    check_every = 10 if device.type == "cuda" else 1
    done = start
    desc = f"{options.desc} epoch {epoch + 1}/{options.epochs}"
    bar = _progress(data.steps_per_epoch(), desc, show_progress)
    bar.update(start)
    for step, batch in enumerate(data.epoch(epoch, start), start=start):
        if to_device is not None:
            batch = to_device(batch, device)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, options.amp_dtype):
            losses = step_fn(batch)
        backward_done = isinstance(step_fn, CompiledStep) and not step_fn.backward_proven
        if backward_done:  # the compiled backward is built here; a failure falls back to eager
            losses = step_fn.first_backward(
                batch,
                losses,
                lambda loss: scaler.scale(loss).backward(),
                lambda: autocast(device, options.amp_dtype),
            )
        for key, value in losses.items():
            if torch.is_tensor(value) and value.dim() == 0:
                sums[key] = sums.get(key, 0.0) + value.detach().float()
        running = float(sums["loss"]) if step % check_every == 0 else 0.0
        if not math.isfinite(running):
            raise FloatingPointError(
                f"{options.desc}: non-finite loss by epoch {epoch + 1}, step {step + 1}; this step's parts: "
                + ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items() if v.dim() == 0)
            )
        if not backward_done:
            scaler.scale(losses["loss"]).backward()
        scaler.step(optimizer)
        scaler.update()
        done += 1
        bar.update(1)
        if step % 10 == 0:  # the epoch's mean loss so far (a check step: no extra sync)
            bar.set_postfix(loss=f"{running / (step + 1):.4f}")
        if after_step is not None:
            after_step(done, sums)
    bar.close()
    return sums, done


def _start_state(
    state_path: Path,
    options: FitOptions,
    dist: DistContext,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
) -> ResumeState:
    """A fresh position, or the one ``last_state.pt`` holds when resuming (loaded into the objects)."""
    stopper = EarlyStopping(options.patience)
    if not options.resume:
        return ResumeState(stopper)
    found = state_path.exists()
    # every rank of a resumed DDP run must read the same file (rank 0 writes it): on several
    # machines the run folder must be shared, else ranks would continue from different points
    if not distributed.same_everywhere(found, dist):
        raise UserError(
            f"--resume: {state_path} exists on some ranks only (this rank {dist.rank}: "
            f"{'found' if found else 'missing'}); on several machines --out must be a folder "
            "every node reads (a shared file system)"
        )
    if not found:
        return ResumeState(stopper)
    return ResumeState.from_file(state_path, stopper=stopper, model=model, optimizer=optimizer, scaler=scaler)


def _validate(
    task: nn.Module, validate: Callable[[nn.Module], dict[str, float]] | None, dist: DistContext
) -> dict[str, float]:
    """Rank 0's validation metrics (``{}`` without a validator), on every rank."""
    metrics: dict[str, float] = {}
    if dist.is_main:
        task.eval()
        metrics = dict(validate(task.model)) if validate is not None else {}
    return distributed.broadcast(metrics, dist)


def _epoch_row(epoch: int, steps: int, sums: Losses, metrics: dict[str, float]) -> dict[str, Any]:
    """The epoch's row of ``metrics.csv`` so far: mean training losses, validation metrics."""
    row: dict[str, Any] = {"epoch": epoch + 1, "steps": steps}
    row.update({f"train_{k}": float(v) / max(1, steps) for k, v in sums.items()})
    row.update({f"val_{k}": float(v) for k, v in metrics.items()})
    return row


def fit(
    task: nn.Module,
    data: TrainData,
    optimizer: torch.optim.Optimizer,
    *,
    run_dir: str | Path,
    options: FitOptions,
    validate: Callable[[nn.Module], dict[str, float]] | None = None,
    save_best: Callable[[dict[str, float], int], None] | None = None,
    to_device: Callable[[Any, torch.device], Any] | None = None,
    dist: DistContext | None = None,
) -> FitResult:
    """Train ``task.model`` with ``task`` on ``data`` for up to ``options.epochs`` epochs; resumable.

    task: a module with ``.model`` (the trained network, saved and validated) whose ``forward(batch)``
        returns named losses including ``"loss"``; with ``dist`` of several processes it runs in DDP.
    validate: ``model -> metrics`` with key ``abaw_sum`` (rank 0 only); None = select by training loss.
    save_best: called on rank 0 with (metrics, epoch) when the score improves.
    to_device: ``(batch, device) -> batch`` (e.g. uint8 → normalised float on the device).
    dist: this process's place among torchrun's (:func:`mtaffect.distributed.setup`); None = alone.
    """
    run_dir = Path(run_dir)
    device = torch.device(options.device)
    dist = dist or DistContext(device=device)
    model = task.model
    # the module each step calls: compiled lazily, once, at the first step
    step_fn = compile_step(
        distributed.wrap(task, dist), options.compile, device,
        name=options.desc, cache=options.compile_cache, log=_log_line if dist.is_main else None,
    )
    scaler = torch.amp.GradScaler(device.type, enabled=options.amp_dtype == torch.float16)
    state_path = run_dir / STATE_FILE
    state = _start_state(state_path, options, dist, model, optimizer, scaler)
    stopper, history = state.stopper, state.history
    steps = data.steps_per_epoch()
    if steps <= 0:
        raise UserError(
            f"{options.desc}: an epoch has no training step (fewer samples than one batch per task set)"
        )
    start_epoch, start_step, partial = state.epoch, state.step, (state.sums, state.seconds)
    log = _EpochLog(run_dir, options.tensorboard and dist.is_main)
    try:
        for epoch in range(start_epoch, options.epochs):
            if stopper.should_stop:  # a run that stopped early stays stopped; more epochs may be added
                break
            first = start_step if epoch == start_epoch else 0
            t0 = time.perf_counter() - (partial[1] if first else 0.0)

            def save_mid_epoch(done: int, sums: Losses, epoch: int = epoch, t0: float = t0) -> None:
                """The resume state every ``save_every_steps`` steps (not at the epoch's end)."""
                every = options.save_every_steps
                if every > 0 and done % every == 0 and done < steps and dist.is_main:
                    state.epoch, state.step = epoch, done
                    state.sums = {k: v.detach().cpu() for k, v in sums.items()}
                    state.seconds = time.perf_counter() - t0
                    state.save(state_path, model=model, optimizer=optimizer, scaler=scaler, finished=False)

            task.train()
            sums, done = train_one_epoch(
                step_fn, data, optimizer, scaler, epoch, options,
                to_device=to_device,
                start=first,
                sums={k: v.to(device) for k, v in partial[0].items()} if first else {},
                show_progress=options.progress and dist.is_main,
                after_step=save_mid_epoch,
            )
            distributed.broadcast_buffers(model, dist)
            metrics = _validate(task, validate, dist)
            row = _epoch_row(epoch, done, sums, metrics)
            score = float(metrics.get(SCORE_KEY, -row.get("train_loss", math.inf)))
            # a NaN or infinite score (a non-finite label, an empty task) never selects a checkpoint
            row["best"] = stopper.update(score if math.isfinite(score) else math.nan, epoch + 1)
            row["seconds"] = round(time.perf_counter() - t0, 3)
            history.append(row)
            state.epoch, state.step, state.sums, state.seconds = epoch + 1, 0, {}, 0.0
            if dist.is_main:
                if row["best"] and save_best is not None:
                    save_best(metrics, epoch + 1)
                log.write(history)
                finished = stopper.should_stop or epoch + 1 >= options.epochs
                state.save(state_path, model=model, optimizer=optimizer, scaler=scaler, finished=finished)
            distributed.barrier(dist)
    finally:
        log.close()
    if history and stopper.best_epoch < 0:  # no checkpoint was ever saved: never report one
        raise UserError(
            f"{options.desc}: no epoch had a finite validation score ({SCORE_KEY} = "
            f"{history[-1].get('val_' + SCORE_KEY, 'nan')}), so no best checkpoint was written; "
            f"see {run_dir / 'metrics.csv'} and check the validation labels"
        )
    best = next((r for r in history if r["epoch"] == stopper.best_epoch), {})
    best_metrics = {k[4:]: v for k, v in best.items() if k.startswith("val_")}
    return FitResult(
        best_epoch=stopper.best_epoch,
        best_metrics=best_metrics,
        epochs_run=len(history),
        stopped_early=stopper.should_stop,
        history=history,
    )
