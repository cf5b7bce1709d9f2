"""Several processes on one job, launched by ``torchrun``: the process group and its few collectives.

``torchrun --standalone --nproc_per_node 4 -m mtaffect train cnn_teacher ...`` (or ``... predict``)
sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`setup` then joins the process group (NCCL
on CUDA, gloo on CPU) and picks ``cuda:LOCAL_RANK`` (:func:`mtaffect.runtime.resolve_device`, which
refuses more processes on a machine than it has GPUs). One :class:`DistContext` says where this
process sits; every helper here is a no-op (or the identity) for a single process, so callers never
branch on whether a group exists.

Training wraps its step in DDP (:func:`wrap`: gradients averaged during ``backward``), validates on
rank 0 and sends the metrics to every rank (:func:`broadcast`) so that all stop at the same epoch;
prediction broadcasts rank 0's list of work and collects every rank's report entries (:func:`gather`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mtaffect.runtime import resolve_device

__all__ = [
    "DistContext", "barrier", "broadcast", "broadcast_buffers", "cleanup", "gather", "same_everywhere",
    "setup", "wrap",
]


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank of world, its rank on this machine, the device it runs on.

    ``DistContext()`` is a single process on the CPU; ``world > 1`` means a joined process group.
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @classmethod
    def from_env(cls) -> DistContext:
        """``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` as torchrun sets them (0 of 1 without torchrun),
        on the CPU and without joining any group (:func:`setup` does that)."""
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return cls(rank, world, int(os.environ.get("LOCAL_RANK", str(rank))))

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str | torch.device = "auto") -> DistContext:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1); else a single process.

    ``device`` as :func:`mtaffect.runtime.resolve_device` reads it, with this process's LOCAL_RANK.
    """
    env = DistContext.from_env()
    dev = resolve_device(device, env.local_rank)
    if env.active:
        import torch.distributed as dist

        if not dist.is_initialized():
            if dev.type == "cuda":
                torch.cuda.set_device(dev)
            backend = "nccl" if dev.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend, rank=env.rank, world_size=env.world)
    return DistContext(env.rank, env.world, env.local_rank, dev)


def wrap(module: nn.Module, ctx: DistContext) -> nn.Module:
    """The module each training step calls: ``module`` itself, or ``module`` in DDP when several
    processes train (DDP broadcasts rank 0's parameters here and averages gradients in backward)."""
    if not ctx.active:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def barrier(ctx: DistContext) -> None:
    """Wait until every rank gets here."""
    if ctx.active:
        import torch.distributed as dist

        dist.barrier()


def cleanup(ctx: DistContext) -> None:
    """Leave the process group (if one was joined)."""
    if ctx.active:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def broadcast(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` (any picklable object) on every rank."""
    if not ctx.active:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (also a barrier)."""
    if not ctx.active:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(module: nn.Module, ctx: DistContext) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics), in place.

    DDP broadcasts buffers at the start of each forward, so after an epoch's last step each rank
    holds the statistics of its own last batch; rank 0's are the ones validated and saved.
    """
    if not ctx.active:
        return
    import torch.distributed as dist

    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


def same_everywhere(flag: bool, ctx: DistContext) -> bool:
    """Whether every rank holds the same ``flag`` (e.g. "this file exists here")."""
    if not ctx.active:
        return True
    import torch.distributed as dist

    # a tensor on the context's device: NCCL reduces CUDA tensors only
    value = torch.tensor([float(flag)], device=ctx.device)
    low, high = value.clone(), value.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    return float(low) == float(high)
