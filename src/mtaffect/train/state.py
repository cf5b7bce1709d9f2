"""Everything a run needs to continue exactly after an interruption, and early stopping.

``last_state.pt`` is written (atomically) at the end of every epoch, and optionally every few steps
inside one. It holds only tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(..., weights_only=True)`` (no unpickling of arbitrary objects): model and optimizer
state, the GradScaler state, the early-stopping state, the per-epoch history, the position (epoch,
step; mid-epoch also the epoch's partial loss sums and seconds), and the python / numpy / torch (and
CUDA) random states. :class:`ResumeState` is the loop's view of that file.
The data pipeline needs no saved state: its draws depend only on (seed, epoch, step, rank).

A state resumes on any device, whatever device wrote it: it is always read onto the CPU (RNG states
must be CPU byte tensors; ``load_state_dict`` of the model and the optimizer then moves weights and
moments onto the parameters' device), and CUDA RNG states are restored for the GPUs that exist.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtaffect.errors import InputFormatError
from mtaffect.io import atomic_path

__all__ = [
    "EarlyStopping", "ResumeState", "capture_rng", "restore_rng", "save_state", "load_state", "STATE_FILE"
]

STATE_FILE = "last_state.pt"
STATE_FORMAT = 1


@dataclass
class EarlyStopping:
    """Stop after ``patience`` epochs without improvement of a score (higher is better).

    The paper stops after 5 epochs without improvement of EXPR score + CCC_V + CCC_A; the
    authors' code uses 6. ``patience <= 0`` never stops early.
    """

    patience: int = 5
    best: float = float("-inf")
    best_epoch: int = -1
    bad_epochs: int = 0

    def update(self, score: float, epoch: int) -> bool:
        """Record the score of ``epoch``; True when it is a new best."""
        if score == score and score > self.best:  # NaN never improves
            self.best, self.best_epoch, self.bad_epochs = float(score), int(epoch), 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, float | int]:
        return {
            "patience": self.patience,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state["best"])
        self.best_epoch = int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])


def capture_rng() -> dict[str, Any]:
    """The python, numpy and torch random states as tensors and numbers."""
    version, mt, gauss = random.getstate()
    # the legacy global numpy generator is what third-party code may use, so that is what we save
    np_name, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "python_version": int(version),
        "python": torch.tensor(mt, dtype=torch.int64),
        "python_gauss": gauss,
        "numpy_name": str(np_name),
        "numpy": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
        "numpy_pos": int(np_pos),
        "numpy_has_gauss": int(np_has_gauss),
        "numpy_cached": float(np_cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    mt = tuple(int(v) for v in state["python"].cpu().tolist())
    random.setstate((state["python_version"], mt, state["python_gauss"]))
    legacy = (
        state["numpy_name"],
        state["numpy"].cpu().numpy().astype(np.uint32),
        state["numpy_pos"],
        state["numpy_has_gauss"],
        state["numpy_cached"],
    )
    np.random.set_state(legacy)  # noqa: NPY002
    torch.set_rng_state(_cpu_bytes(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        # one state per GPU of the run that wrote it; a machine with fewer GPUs restores the first ones
        cuda_states = [_cpu_bytes(s) for s in state["cuda"]][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda_states)


def _cpu_bytes(tensor: torch.Tensor) -> torch.Tensor:
    """An RNG state as torch wants it: a contiguous uint8 tensor on the CPU."""
    return tensor.detach().to("cpu", torch.uint8).contiguous()


def save_state(path: str | Path, **state: Any) -> None:
    """Atomically write a resume state (model/optimizer state dicts, counters, history...) + RNG."""
    payload = {"format": STATE_FORMAT, **state, "rng": capture_rng()}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a resume state onto the CPU with ``weights_only=True``; errors name the file.

    Always the CPU, whichever device wrote it or will train next: loading onto the training device
    would put the RNG states on a GPU (where ``restore_rng`` cannot read them) and would fail for a
    state written on a GPU that this machine lacks.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputFormatError(path, "no resume state here (was the run started?)") from None
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user-facing problem
        raise InputFormatError(path, f"unreadable resume state: {err}") from err
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise InputFormatError(path, f"not an mtaffect resume state (format {STATE_FORMAT} expected)")
    return state


@dataclass
class ResumeState:
    """Where a run stands, as ``last_state.pt`` records it (the weights and optimizer live in their
    own objects: :meth:`from_file` loads into them, :meth:`save` reads them).

    ``epoch`` counts finished epochs, or names the epoch in progress when ``step`` > 0; then
    ``sums`` (CPU scalar tensors, the epoch's summed named losses so far) and ``seconds`` (its
    time so far) let the resumed epoch report the same means and time as an uninterrupted one.
    """

    stopper: EarlyStopping
    history: list[dict[str, Any]] = field(default_factory=list)
    epoch: int = 0
    step: int = 0
    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    seconds: float = 0.0

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        *,
        stopper: EarlyStopping,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
    ) -> ResumeState:
        """Load ``path`` into ``model``, ``optimizer``, ``scaler`` and ``stopper`` (whose patience
        stays the caller's), restore the random states, and return the position."""
        state = load_state(path)  # on the CPU; load_state_dict moves it
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        stopper.load_state_dict(state["early_stopping"])
        position = cls(
            stopper,
            history=list(state["history"]),
            epoch=int(state["epoch"]),
            step=int(state.get("step", 0)),
            sums=dict(state.get("sums", {})),
            seconds=float(state.get("seconds", 0.0)),
        )
        restore_rng(state["rng"])
        return position

    def save(
        self,
        path: str | Path,
        *,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        finished: bool,
    ) -> None:
        """Write the state at this position (atomically, with the current random states).

        ``finished``: the run has nothing left to do (last epoch, or stopped early).
        """
        position: dict[str, Any] = {"epoch": self.epoch, "step": self.step}
        if self.step > 0:  # mid-epoch: what the epoch in progress has summed and spent so far
            position.update(sums=self.sums, seconds=self.seconds)
        save_state(
            path,
            model=model.state_dict(),
            optimizer=optimizer.state_dict(),
            scaler=scaler.state_dict(),
            early_stopping=self.stopper.state_dict(),
            history=self.history,
            **position,
            finished=finished,
        )
