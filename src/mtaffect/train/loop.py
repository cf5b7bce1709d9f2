"""The one training loop, shared by the four stages (CNN/GRU × teacher/student).

:func:`fit` knows nothing about images, windows, teachers or losses: it asks a *data* object for the
batches of an epoch, moves each batch to the device with the data's ``to_device``, calls the *task*
(``batch -> {"loss", parts...}``, :mod:`mtaffect.train.tasks`), backpropagates ``"loss"``, steps the
optimizer, and at the end of each epoch validates, logs, keeps the best checkpoint and writes the
resume state. Per epoch (METHOD.md §5): validate, then keep the checkpoint if
``abaw_sum`` = EXPR score + CCC_V + CCC_A improved; stop after ``patience`` epochs without improvement.

Files in the run folder: ``metrics.csv`` (one row per epoch: mean training losses, validation
metrics, time), TensorBoard scalars under ``tb/`` when the package is installed, ``last_state.pt``
(resume: written at the end of every epoch and, with ``save_every_steps``, every that many steps
inside an epoch, so that an interrupted long epoch continues from its last such step instead of
starting over), and whatever ``save_best`` writes (the stage writes ``best.safetensors``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import torch
from torch import nn

from mtaffect.errors import UserError
from mtaffect.io import write_csv
from mtaffect.runtime import autocast
from mtaffect.train.compiled import compile_step
from mtaffect.train.state import STATE_FILE, EarlyStopping, load_state, restore_rng, save_state

__all__ = ["TrainData", "FitResult", "fit", "SCORE_KEY"]

SCORE_KEY = "abaw_sum"
"""Validation score that selects the checkpoint: EXPR score + CCC_V + CCC_A (METHOD.md §5)."""


class TrainData(Protocol):
    """What :func:`fit` needs from a stage's data."""

    def steps_per_epoch(self) -> int: ...

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Any]: ...


@dataclass
class FitResult:
    """Outcome of :func:`fit`: the best epoch's validation metrics and the per-epoch history."""

    best_epoch: int
    best_metrics: dict[str, float]
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)


def _is_main(rank: int) -> bool:
    return rank == 0


def _sync_buffers(model: nn.Module, world: int) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics) at the end of an epoch.

    DDP broadcasts buffers at the start of each forward, so after the last step each rank holds the
    statistics of its own last batch; rank 0's are the ones validated and saved.
    """
    if world <= 1:
        return
    import torch.distributed as dist

    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def _same_state_everywhere(state_path: Path, device: torch.device, rank: int) -> None:
    """Every rank of a resumed DDP run must read the same ``last_state.pt`` (rank 0 writes it): on
    several machines the run folder must be shared, else ranks would continue from different points."""
    import torch.distributed as dist

    found = torch.tensor([float(state_path.exists())], device=device)
    low, high = found.clone(), found.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if float(low) != float(high):
        raise UserError(
            f"--resume: {state_path} exists on some ranks only (this rank {rank}: "
            f"{'found' if found.item() else 'missing'}); on several machines --out must be a folder "
            "every node reads (a shared file system)"
        )


def _broadcast(obj: Any, world: int) -> Any:
    """Rank 0's object on every rank (validation runs on rank 0 only)."""
    if world <= 1:
        return obj
    import torch.distributed as dist

    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


class _TensorBoard:
    """Optional TensorBoard scalars; silently absent when the package is not installed."""

    def __init__(self, folder: Path, enabled: bool) -> None:
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(folder))
            except Exception:  # noqa: BLE001 - tensorboard missing or broken: CSV is the record
                self.writer = None

    def log(self, row: dict[str, Any], epoch: int) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if isinstance(value, (int, float)) and key != "epoch":
                self.writer.add_scalar(key.replace("_", "/", 1), value, epoch)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", disable=not enabled, dynamic_ncols=True, leave=False)


def fit(
    task: nn.Module,
    data: TrainData,
    optimizer: torch.optim.Optimizer,
    *,
    run_dir: str | Path,
    epochs: int,
    patience: int = 5,
    validate: Callable[[nn.Module], dict[str, float]] | None = None,
    save_best: Callable[[dict[str, float], int], None] | None = None,
    to_device: Callable[[Any, torch.device], Any] | None = None,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    resume: bool = False,
    save_every_steps: int = 0,
    progress: bool = True,
    tensorboard: bool = True,
    trainer: nn.Module | None = None,
    compile: str = "off",
    rank: int = 0,
    world: int = 1,
    desc: str = "train",
) -> FitResult:
    """Train ``task.model`` with ``task`` on ``data`` for up to ``epochs`` epochs; resumable.

    task: a module with ``.model`` (the trained network, saved and validated) whose ``forward(batch)``
        returns named losses including ``"loss"``. trainer: the module actually called per step
        (``task`` wrapped in DDP), default ``task``. compile: ``off | default | reduce-overhead``,
        the step through ``torch.compile`` with an eager fallback (:mod:`mtaffect.train.compiled`).
    validate: ``model -> metrics`` with key ``abaw_sum`` (rank 0 only); None = select by training loss.
    save_best: called on rank 0 with (metrics, epoch) when the score improves.
    to_device: ``(batch, device) -> batch`` (e.g. uint8 → normalised float on the device).
    amp_dtype: autocast dtype (bf16/fp16) or None; fp16 also uses a GradScaler.
    resume: continue from ``run_dir/last_state.pt`` if it exists (exactly: same weights as an
        uninterrupted run with the same seed on CPU), mid-epoch if the state was written there.
    save_every_steps: also write the resume state after every this many steps of an epoch (0: only
        at epoch ends). The data's batches depend only on (seed, epoch, step, rank), so the resumed
        epoch asks for its remaining steps and carries on with the saved partial loss sums.
    """
    run_dir = Path(run_dir)
    device = torch.device(device)
    model = task.model
    step_fn = compile_step(trainer or task, compile, device)  # compiled lazily, once, at the first step
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    stopper = EarlyStopping(patience)
    history: list[dict[str, Any]] = []
    start_epoch = start_step = 0
    partial: dict[str, Any] = {}  # a mid-epoch state: the interrupted epoch's loss sums and time
    state_path = run_dir / STATE_FILE
    if resume and world > 1:
        _same_state_everywhere(state_path, device, rank)
    if resume and state_path.exists():
        state = load_state(state_path)  # on the CPU; load_state_dict moves it
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        stopper.load_state_dict(state["early_stopping"])
        history = list(state["history"])
        start_epoch = int(state["epoch"])
        start_step = int(state.get("step", 0))
        partial = {"sums": dict(state.get("sums", {})), "seconds": float(state.get("seconds", 0.0))}
        restore_rng(state["rng"])

    board = _TensorBoard(run_dir / "tb", tensorboard and _is_main(rank))

    def save_resume(**position: Any) -> None:
        """``last_state.pt`` with everything to continue at ``position`` (epoch, step, ...)."""
        save_state(
            state_path,
            model=model.state_dict(),
            optimizer=optimizer.state_dict(),
            scaler=scaler.state_dict(),
            early_stopping=stopper.state_dict(),
            history=history,
            **position,
        )

    steps = data.steps_per_epoch()
    if steps <= 0:
        raise UserError(f"{desc}: an epoch has no training step (fewer samples than one batch per task set)")
    # reading the loss forces a host-device sync: every step on CPU (free), every 10th on CUDA,
    # where the running sum reveals a non-finite loss of any step since the last check; the same
    # read feeds the progress bar, so the step itself never waits for the device
    check_every = 10 if device.type == "cuda" else 1
    try:
        for epoch in range(start_epoch, epochs):
            if stopper.should_stop:  # a run that stopped early stays stopped; more epochs may be added
                break
            first = start_step if epoch == start_epoch else 0
            t0 = time.perf_counter() - (partial.get("seconds", 0.0) if first else 0.0)
            task.train()
            sums: dict[str, torch.Tensor] = (
                {k: v.to(device) for k, v in partial["sums"].items()} if first else {}
            )
            done_steps = first
            bar = _progress(steps, f"{desc} epoch {epoch + 1}/{epochs}", progress and _is_main(rank))
            bar.update(first)
            for step, batch in enumerate(data.epoch(epoch, first), start=first):
                if to_device is not None:
                    batch = to_device(batch, device)
                optimizer.zero_grad(set_to_none=True)
                with autocast(device, amp_dtype):
                    losses = step_fn(batch)
                loss = losses["loss"]
                for key, value in losses.items():
                    if torch.is_tensor(value) and value.dim() == 0:
                        sums[key] = sums.get(key, 0.0) + value.detach().float()
                running = float(sums["loss"]) if step % check_every == 0 else 0.0
                if not math.isfinite(running):
                    raise FloatingPointError(
                        f"{desc}: non-finite loss by epoch {epoch + 1}, step {step + 1}; this step's parts: "
                        + ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items() if v.dim() == 0)
                    )
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                done_steps += 1
                bar.update(1)
                if step % 10 == 0:  # the epoch's mean loss so far (a check step: no extra sync)
                    bar.set_postfix(loss=f"{running / (step + 1):.4f}")
                if save_every_steps > 0 and done_steps % save_every_steps == 0 and done_steps < steps:
                    if _is_main(rank):  # mid-epoch: the epoch in progress, its steps, sums and time
                        save_resume(
                            epoch=epoch,
                            step=done_steps,
                            sums={k: v.detach().cpu() for k, v in sums.items()},
                            seconds=time.perf_counter() - t0,
                            finished=False,
                        )
            bar.close()
            _sync_buffers(model, world)
            n_steps = max(1, done_steps)
            row: dict[str, Any] = {"epoch": epoch + 1, "steps": done_steps}
            row.update({f"train_{k}": float(v) / n_steps for k, v in sums.items()})
            metrics: dict[str, float] = {}
            if _is_main(rank):
                task.eval()
                metrics = dict(validate(model)) if validate is not None else {}
            metrics = _broadcast(metrics, world)
            row.update({f"val_{k}": float(v) for k, v in metrics.items()})
            score = float(metrics.get(SCORE_KEY, -row.get("train_loss", math.inf)))
            # a NaN or infinite score (a non-finite label, an empty task) never selects a checkpoint
            improved = stopper.update(score if math.isfinite(score) else math.nan, epoch + 1)
            row["best"] = improved
            row["seconds"] = round(time.perf_counter() - t0, 3)
            history.append(row)
            if _is_main(rank):
                if improved and save_best is not None:
                    save_best(metrics, epoch + 1)
                write_csv(pd.DataFrame(history), run_dir / "metrics.csv")
                board.log(row, epoch + 1)
                done = stopper.should_stop or epoch + 1 >= epochs
                save_resume(epoch=epoch + 1, step=0, finished=done)
            if world > 1:
                import torch.distributed as dist

                dist.barrier()
    finally:
        board.close()
    if history and stopper.best_epoch < 0:  # no checkpoint was ever saved: never report one
        raise UserError(
            f"{desc}: no epoch had a finite validation score ({SCORE_KEY} = "
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
