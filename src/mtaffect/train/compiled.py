"""The training step without launch-bound overheads: an optional compiled step and the fused optimizer.

At the paper's shapes (3 task sets × 64 frames, one forward per set) a GPU waits on kernel launches
and host work, not on arithmetic (PERFORMANCE.md §5b). Two levers live here:

* :func:`compile_step` wraps the module the loop calls each step (the task, or the task in DDP) in
  ``torch.compile`` (``train.compile: default | reduce-overhead``; the latter adds CUDA graphs).
  The task's forward — every task set's separate forward (per-source BatchNorm), the frozen teacher,
  the losses — is traced as it is, so the step computes the same thing as in eager mode.
  Compilation is lazy (at the first step) and happens once per run; where it is unavailable or
  fails, the step warns once and runs eagerly from then on (:class:`CompiledStep`). The first step
  logs what is compiled and, once its backward has run, how long that took and whether torch's
  on-disk caches already held the graphs.
* :func:`use_compile_cache` points torch's own on-disk compile caches (inductor's FX graph cache,
  the AOTAutograd cache, Triton kernels, autotuning results) at a folder the run controls, default
  ``$MTAFFECT_CACHE/compile`` (``~/.cache/mtaffect/compile``), so that a later run of the same step
  on the same torch and device loads the compiled graphs instead of compiling them again.
* :func:`adam` builds the paper's Adam with ``fused=True`` on CUDA (one kernel for all parameters
  instead of several per tensor), plain elsewhere.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtaffect.errors import UserError

__all__ = [
    "COMPILE_CACHE_ENV",
    "COMPILE_MODES",
    "CompileStartup",
    "CompiledStep",
    "CompileFallbackWarning",
    "adam",
    "compile_cache_dir",
    "compile_step",
    "use_compile_cache",
]

COMPILE_MODES = ("off", "default", "reduce-overhead")

COMPILE_CACHE_ENV = "MTAFFECT_COMPILE_CACHE"
"""Environment variable: the compile cache folder, or ``off`` (no on-disk compile cache)."""

# torch's counters of its on-disk caches: (forward + backward) graphs loaded / compiled
_HIT_COUNTERS = (("inductor", "fxgraph_cache_hit"),)
_MISS_COUNTERS = (("inductor", "fxgraph_cache_miss"), ("inductor", "fxgraph_cache_bypass"))


class CompileFallbackWarning(RuntimeWarning):
    """torch.compile was asked for but could not be used: the step runs eagerly."""


def check_mode(mode: Any) -> str:
    """``train.compile`` as one of :data:`COMPILE_MODES` (YAML's bare ``off``/``false`` reads as False)."""
    if mode is False or mode is None:
        return "off"
    if mode not in COMPILE_MODES:
        raise UserError(f"train.compile={mode!r}: use one of {', '.join(COMPILE_MODES)}")
    return str(mode)


def compile_cache_dir(setting: str | os.PathLike[str] | None = None) -> Path | None:
    """The folder of torch's on-disk compile caches for this run, or None for ``off``.

    ``setting``: a folder, ``"off"``, or None/"" = ``$MTAFFECT_COMPILE_CACHE`` if set, else
    ``TORCHINDUCTOR_CACHE_DIR`` where the user set it (torch's own knob), else
    ``$MTAFFECT_CACHE/compile`` (default ``~/.cache/mtaffect/compile``).
    """
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    from mtaffect.export import cache_dir

    chosen = str(setting) if setting not in (None, "") else os.environ.get(COMPILE_CACHE_ENV, "")
    if chosen == "off":
        return None
    if chosen:
        return Path(chosen).expanduser().absolute()
    # torch writes its default back into TORCHINDUCTOR_CACHE_DIR once it has used it: only a value
    # other than that default is the user's choice
    torch_dir = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if torch_dir and os.path.abspath(torch_dir) != os.path.abspath(default_cache_dir()):
        return Path(torch_dir).absolute()
    return (cache_dir() / "compile").absolute()


def _check_owned(folder: Path) -> None:
    """Refuse a cache folder another user owns or others may write (group or world): torch loads
    pickles from it, so anyone who can write there could plant code that this process runs."""
    if not hasattr(os, "getuid"):  # Windows: no POSIX owner to compare
        return
    info = folder.stat()
    why = "torch loads pickled compiled code from it, so it must be a folder only you write"
    if info.st_uid != os.getuid():
        raise UserError(
            f"compile cache {folder}: owned by uid {info.st_uid}, not this process's {os.getuid()}; "
            f"{why}: set {COMPILE_CACHE_ENV} to such a folder, or to off"
        )
    if info.st_mode & 0o022:
        others = "anyone" if info.st_mode & 0o002 else "its group"
        raise UserError(
            f"compile cache {folder}: writable by {others} (mode {info.st_mode & 0o777:03o}); {why}: "
            f"run chmod go-w {folder}, or set {COMPILE_CACHE_ENV} to another folder, or to off"
        )


def use_compile_cache(setting: str | os.PathLike[str] | None = None) -> Path | None:
    """Point torch's on-disk compile caches at :func:`compile_cache_dir` (``setting``); returns it.

    Process-wide (``TORCHINDUCTOR_CACHE_DIR`` and torch's cache switches): the last call wins. The
    folder is created private (0o700) and must belong to this user and be writable by no one else,
    group or world (:class:`~mtaffect.errors.UserError` otherwise): its entries are pickles that
    torch loads, so only a folder this user's own runs wrote is ever read. ``off`` switches the FX graph and
    AOTAutograd caches off (every run compiles from scratch) and returns None.
    """
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    folder = compile_cache_dir(setting)
    inductor_config.fx_graph_cache = folder is not None
    functorch_config.enable_autograd_cache = folder is not None
    if folder is None:
        return None
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    _check_owned(folder)
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR") != str(folder):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
        try:  # torch memoises some paths under the old folder (private API: best effort)
            from torch._inductor.utils import clear_caches

            clear_caches()
        except (ImportError, AttributeError):
            pass
    return folder


def _cache_counts() -> tuple[int, int]:
    """torch's running totals of graphs loaded from / compiled past its on-disk FX graph cache."""
    from torch._dynamo.utils import counters

    hits = sum(counters[group][name] for group, name in _HIT_COUNTERS)
    misses = sum(counters[group][name] for group, name in _MISS_COUNTERS)
    return hits, misses


@dataclass
class CompileStartup:
    """How the first compiled step went: ``seconds`` from its start to the end of its backward
    (compilation and that one step's work), graphs ``loaded`` from the cache and ``compiled``."""

    seconds: float
    loaded: int
    compiled: int
    cache: Path | None
    failed: bool = False

    @property
    def state(self) -> str:
        """``cache hit`` | ``cache miss`` | ``partial cache hit`` | ``cache off`` | ``not cached``."""
        if self.cache is None:
            return "cache off"
        if self.loaded == self.compiled == 0:
            return "not cached"  # a backend without inductor's caches (aot_eager, eager)
        if self.compiled == 0:
            return "cache hit"
        return "cache miss" if self.loaded == 0 else "partial cache hit"


class CompiledStep:
    """Calls ``compiled(batch)``; on the first failure warns once and calls ``eager(batch)`` for good.

    A failure while tracing or compiling is raised before the compiled code runs, so the same batch
    is then run eagerly: no step is lost. (Where the step has graph breaks, a graph before the
    failing one may already have run once, so BatchNorm statistics would see that batch twice.)
    ``mark_step`` (CUDA graphs) tells the graph trees that a new training step begins, so the
    previous step's outputs may be overwritten.

    ``log`` (a line → None; None = silent) gets "compiling the NAME step (mode=…, cache=…)…" at the
    first call and "NAME: compiled in N s (cache hit|miss|…)" after the first backward
    (:meth:`first_backward`); :attr:`startup` keeps the figures. CUDA graphs are recorded at the
    next steps, after that line.
    """

    def __init__(
        self,
        eager: nn.Module,
        compiled: Any,
        mode: str,
        *,
        mark_step: bool = False,
        name: str = "training",
        cache: Path | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.eager, self.compiled, self.mode = eager, compiled, mode
        self.mark_step = mark_step
        self.name, self.cache, self.log = name, cache, log
        self.failed: str | None = None
        self.backward_proven = False
        self.startup: CompileStartup | None = None
        self._started: tuple[float, int, int] | None = None  # (perf_counter, hits, misses) at step 1

    def _begin(self) -> None:
        if self._started is None:
            where = self.cache if self.cache is not None else "off"
            self._say(f"compiling the {self.name} step (mode={self.mode}, cache={where})…")
            self._started = (time.perf_counter(), *_cache_counts())

    def _finish(self) -> None:
        if self._started is None or self.startup is not None:
            return
        t0, hits, misses = self._started
        now_hits, now_misses = _cache_counts()
        self.startup = CompileStartup(
            seconds=time.perf_counter() - t0,
            loaded=now_hits - hits,
            compiled=now_misses - misses,
            cache=self.cache,
            failed=self.failed is not None,
        )
        seconds = f"{self.startup.seconds:.1f} s"
        if self.failed is None:
            self._say(f"{self.name}: compiled in {seconds} ({self.startup.state})")
        else:
            self._say(f"{self.name}: torch.compile failed after {seconds}; the step runs eagerly")

    def _say(self, line: str) -> None:
        if self.log is not None:
            self.log(line)

    def __call__(self, batch: Any) -> Any:
        self._begin()
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
            self._finish()
            return losses
        try:
            backward(losses["loss"])
            self._finish()
            return losses
        except torch.OutOfMemoryError:
            raise  # memory, not the compiler: eager would not fit either, and the user must see it
        except Exception as error:  # noqa: BLE001 - any compiler failure: eager is the fallback
            self._fall_back(error)
        self._finish()
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
    trainer: nn.Module,
    mode: Any,
    device: torch.device | str,
    *,
    backend: str = "inductor",
    name: str = "training",
    cache: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> nn.Module | CompiledStep:
    """The callable the loop runs per step: ``trainer`` itself (``mode`` "off") or a :class:`CompiledStep`.

    ``backend`` is torch.compile's (tests use "aot_eager", which needs no C compiler). ``cache``:
    the on-disk compile cache (:func:`use_compile_cache`: a folder, ``off``, None = the default).
    ``name`` and ``log``: the start-up lines (:class:`CompiledStep`). Where ``torch.compile``
    cannot even be set up, warns and returns ``trainer`` (eager).
    """
    mode = check_mode(mode)
    if mode == "off":
        return trainer
    device = torch.device(device)
    folder = use_compile_cache(cache)
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
    return CompiledStep(trainer, compiled, mode, mark_step=graphs, name=name, cache=folder, log=log)


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
