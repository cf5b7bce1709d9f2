"""Whole chunks of frames read ahead in worker processes, in order: the decode side of the GRU feature
cache (:mod:`mtaffect.features`) and of ``mtaffect evaluate``.

Reading a face means decoding its JPEG; on a GPU machine one process decodes > 10× slower than the
CNN consumes (PERFORMANCE.md §5b). :func:`ordered_chunks` runs a chunk builder in a DataLoader's
worker processes (one torch thread each), keeps the chunks in order (so the results are those of the
single-process loop) and pins them on CUDA for asynchronous copies.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import torch

__all__ = ["default_workers", "ordered_chunks"]


def default_workers(device: torch.device | str) -> int:
    """Decoding processes when none are asked for: on CUDA up to 8 (the GPU outruns one decoder by
    > 10×), leaving a core to the main process; on CPU none (the CNN already uses every core)."""
    if torch.device(device).type != "cuda":
        return 0
    return max(0, min(8, (os.cpu_count() or 1) - 1))


class _Items(torch.utils.data.Dataset):
    """Item i = ``make(i)``: lets a DataLoader build whole chunks in worker processes."""

    def __init__(self, make: Callable[[int], Any], n: int) -> None:
        self.make, self.n = make, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        return self.make(i)


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)


def ordered_chunks(
    make: Callable[[int], Any], n: int, *, workers: int = 0, pin_memory: bool = False
) -> Iterator[Any]:
    """``make(0), make(1), ..., make(n - 1)`` in order; computed ahead in ``workers`` processes when
    > 0 (``make`` must then be picklable: a bound method, not a closure), tensors in pinned memory
    when ``pin_memory`` (for asynchronous copies to a GPU)."""
    if workers <= 0 and not pin_memory:
        yield from (make(i) for i in range(n))
        return
    loader = torch.utils.data.DataLoader(
        _Items(make, n),
        batch_size=None,
        shuffle=False,
        num_workers=max(0, workers),
        pin_memory=pin_memory,
        worker_init_fn=_one_thread if workers > 0 else None,
        prefetch_factor=2 if workers > 0 else None,
    )
    yield from loader
