"""Multi-GPU (or multi-process CPU) training with PyTorch DDP, launched by ``torchrun``.

``torchrun --standalone --nproc_per_node 4 $(which mtaffect) train cnn_teacher ...`` sets ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`setup` then joins the process group (NCCL on CUDA, gloo
on CPU) and picks ``cuda:LOCAL_RANK``. Each rank draws the same balanced indices (same seed) and
keeps every W-th draw (:class:`mtaffect.data.loading.FrameTaskData`), so the ranks see disjoint
samples and the effective batch is W × N per task set. The task module (all the step's forwards)
is wrapped in DDP, which averages gradients during ``backward``; rank 0 validates, logs and writes
checkpoints, and broadcasts the validation metrics so that every rank stops at the same epoch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from mtaffect.runtime import resolve_device

__all__ = ["DistContext", "setup", "wrap", "barrier", "cleanup"]


@dataclass
class DistContext:
    """Where this process sits: rank of world, the device it trains on, whether DDP is active."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str = "auto") -> DistContext:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1); else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    dev = resolve_device(device, local_rank)
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            backend = "nccl" if dev.type == "cuda" else "gloo"
            if dev.type == "cuda":
                torch.cuda.set_device(dev)
            dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistContext(rank, world, local_rank, dev)


def wrap(task: nn.Module, ctx: DistContext) -> nn.Module:
    """The module each step calls: ``task`` itself, or ``task`` in DDP when several processes train."""
    if not ctx.active:
        return task
    from torch.nn.parallel import DistributedDataParallel

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(task, device_ids=ids)


def barrier(ctx: DistContext) -> None:
    if ctx.active:
        import torch.distributed as dist

        dist.barrier()


def cleanup(ctx: DistContext) -> None:
    """Leave the process group (only if this module joined one)."""
    if ctx.active:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
