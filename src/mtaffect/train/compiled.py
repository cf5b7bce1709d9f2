"""The training step without launch-bound overheads: an optional compiled step and the fused optimizer.

At the paper's shapes (3 task sets × 64 frames, one forward per set) a GPU waits on kernel launches
and host work, not on arithmetic (PERFORMANCE.md §5b). Two levers live here:

* :func:`compile_step` wraps the module the loop calls each step (the task, or the task in DDP) in
  ``torch.compile`` (``train.compile: default | reduce-overhead``; the latter adds CUDA graphs).
  The task's forward — every task set's separate forward (per-source BatchNorm), the frozen teacher,
  the losses — is traced as it is, so the step computes the same thing as in eager mode.
  Compilation is lazy (at the first step) and happens once per run; where it is unavailable or
  fails, the step warns once and runs eagerly from then on (:class:`CompiledStep`).
* :func:`adam` builds the paper's Adam with ``fused=True`` on CUDA (one kernel for all parameters
  instead of several per tensor), plain elsewhere.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from mtaffect.errors import UserError

__all__ = ["COMPILE_MODES", "CompiledStep", "CompileFallbackWarning", "adam", "compile_step"]

COMPILE_MODES = ("off", "default", "reduce-overhead")


class CompileFallbackWarning(RuntimeWarning):
    """torch.compile was asked for but could not be used: the step runs eagerly."""


def check_mode(mode: Any) -> str:
    """``train.compile`` as one of :data:`COMPILE_MODES` (YAML's bare ``off``/``false`` reads as False)."""
    if mode is False or mode is None:
        return "off"
    if mode not in COMPILE_MODES:
        raise UserError(f"train.compile={mode!r}: use one of {', '.join(COMPILE_MODES)}")
    return str(mode)


class CompiledStep:
    """Calls ``compiled(batch)``; on the first failure warns once and calls ``eager(batch)`` for good.

    A failure while tracing or compiling is raised before the compiled code runs, so the same batch
    is then run eagerly: no step is lost. (Where the step has graph breaks, a graph before the
    failing one may already have run once, so BatchNorm statistics would see that batch twice.)
    ``mark_step`` (CUDA graphs) tells the graph trees that a new training step begins, so the
    previous step's outputs may be overwritten.
    """

    def __init__(self, eager: nn.Module, compiled: Any, mode: str, *, mark_step: bool = False) -> None:
        self.eager, self.compiled, self.mode = eager, compiled, mode
        self.mark_step = mark_step
        self.failed: str | None = None
        self.backward_proven = False

    def __call__(self, batch: Any) -> Any:
        if self.failed is None:
            try:
                if self.mark_step:
                    torch.compiler.cudagraph_mark_step_begin()
                return self.compiled(batch)
            except Exception as error:  # noqa: BLE001 - any compiler failure: eager is the fallback
                self._fall_back(error)
        return self.eager(batch)

    def first_backward(
        self, batch: Any, losses: Any, backward: Callable[[torch.Tensor], None], autocast: Callable[[], Any]
    ) -> Any:
        """Run the first step's ``backward(losses["loss"])``; returns the losses the step keeps.

        AOTAutograd compiles the backward graph lazily, inside this first ``backward``: a compiler
        failure surfaces here, not in :meth:`__call__`. It falls back the same way: warn once, clear
        the partial gradients, run the batch eagerly (forward under ``autocast()``, then backward).
        BatchNorm statistics then see this one batch twice.
        """
        self.backward_proven = True
        if self.failed is not None:  # the forward already fell back: these are eager losses
            backward(losses["loss"])
            return losses
        try:
            backward(losses["loss"])
            return losses
        except torch.OutOfMemoryError:
            raise  # memory, not the compiler: eager would not fit either, and the user must see it
        except Exception as error:  # noqa: BLE001 - any compiler failure: eager is the fallback
            self._fall_back(error)
        for parameter in self.eager.parameters():
            parameter.grad = None
        with autocast():
            losses = self.eager(batch)
        backward(losses["loss"])
        return losses

    def _fall_back(self, error: Exception) -> None:
        self.failed = f"{type(error).__name__}: {error}".splitlines()[0][:300]
        warnings.warn(
            f"train.compile={self.mode}: torch.compile failed ({self.failed}); "
            "training continues in eager mode",
            CompileFallbackWarning,
            stacklevel=3,
        )


def compile_step(
    trainer: nn.Module, mode: Any, device: torch.device | str, *, backend: str = "inductor"
) -> nn.Module | CompiledStep:
    """The callable the loop runs per step: ``trainer`` itself (``mode`` "off") or a :class:`CompiledStep`.

    ``backend`` is torch.compile's (tests use "aot_eager", which needs no C compiler). Where
    ``torch.compile`` cannot even be set up, warns and returns ``trainer`` (eager).
    """
    mode = check_mode(mode)
    if mode == "off":
        return trainer
    device = torch.device(device)
    options: dict[str, Any] = {"backend": backend}
    if backend == "inductor":
        options["mode"] = None if mode == "default" else mode
    try:
        compiled = torch.compile(trainer, **options)
    except Exception as error:  # noqa: BLE001 - e.g. an unsupported Python or platform
        warnings.warn(
            f"train.compile={mode}: torch.compile is unavailable ({type(error).__name__}: {error}); "
            "training runs in eager mode",
            CompileFallbackWarning,
            stacklevel=2,
        )
        return trainer
    graphs = mode == "reduce-overhead" and device.type == "cuda" and backend == "inductor"
    return CompiledStep(trainer, compiled, mode, mark_step=graphs)


def adam(
    params: Iterable[nn.Parameter],
    *,
    lr: float,
    betas: tuple[float, float],
    weight_decay: float = 0.0,
    device: torch.device | str = "cpu",
) -> torch.optim.Adam:
    """The paper's Adam; ``fused=True`` on CUDA (the same update in one kernel launch per step)."""
    params = list(params)
    if torch.device(device).type == "cuda":
        try:
            return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=True)
        except (RuntimeError, TypeError, ValueError):  # a torch or dtype without the fused kernel
            pass
    return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)
