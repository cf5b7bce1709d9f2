"""Where a model runs: device resolution, the AMP policy, the inference context, weight hashing.

One home for these ideas (ARCHITECTURE.md): training, feature extraction, evaluation and prediction
all call these functions, so "auto" means the same device, the same autocast dtype and the same
weights identity everywhere. Nothing here knows about databases, stages or checkpoints' meaning.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from mtaffect.errors import UserError

__all__ = [
    "AMP_REQUESTS", "amp_dtype", "autocast", "file_sha256", "inference", "resolve_device", "weights_sha256"
]

AMP_REQUESTS = ("auto", "bf16", "fp16", "off")


def resolve_device(request: str | torch.device = "auto", local_rank: int | None = None) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` → ``cuda:LOCAL_RANK`` (torchrun's process on
    this machine: ``local_rank``, default the ``LOCAL_RANK`` variable, else 0); ``cuda:N``, ``cpu`` and
    other device types torch knows (``mps``, ``xpu``) as given. A ``torch.device`` passes through.

    Refuses CUDA where there is none, and more torchrun processes on a machine than it has GPUs
    (two processes on one GPU would silently halve the speed and double the memory).
    """
    if isinstance(request, torch.device):
        return request
    if request == "auto":
        request = "cuda" if torch.cuda.is_available() else "cpu"
    if request.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device {request!r} asked for, but CUDA is not available here")
        if request != "cuda":
            return torch.device(request)
        if local_rank is None:
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise UserError(
                f"process {local_rank} of this machine has no GPU of its own (this machine has {count}): "
                f"use torchrun --nproc_per_node {count}, or --device cpu"
            )
        return torch.device(f"cuda:{local_rank}")
    try:
        return torch.device(request)
    except RuntimeError:
        raise UserError(f"unknown device {request!r}; use auto, cpu, cuda or cuda:N") from None


def amp_dtype(device: torch.device | str, request: str | bool = "auto") -> torch.dtype | None:
    """The autocast dtype for ``device`` under ``request`` (auto | bf16 | fp16 | off; YAML's bare
    true/false mean auto/off), or None for full float32.

    AMP pays only on CUDA: on CPUs without AVX512_BF16/AMX (this project's), bf16 autocast runs at
    0.6× fp32 speed (PERFORMANCE.md §7), so every request is None there. ``auto`` is bf16 on GPUs
    that support it, else fp16 (which also needs a GradScaler when training).
    """
    if isinstance(request, bool):
        request = "auto" if request else "off"
    if request not in AMP_REQUESTS:
        raise UserError(f"amp must be one of {', '.join(AMP_REQUESTS)}, got {request!r}")
    device = torch.device(device)
    if request == "off" or device.type != "cuda":
        return None
    if request == "bf16":
        return torch.bfloat16
    if request == "fp16":
        return torch.float16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(
    device: torch.device | str, dtype: torch.dtype | None | str = "auto"
) -> contextlib.AbstractContextManager:
    """``torch.autocast`` at ``dtype`` (a dtype, None = off, or a request for :func:`amp_dtype`),
    or a no-op where AMP does not pay."""
    if isinstance(dtype, str):
        dtype = amp_dtype(device, dtype)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


@contextlib.contextmanager
def inference(*models: nn.Module) -> Iterator[None]:
    """Run ``models`` in eval mode without gradients, then give each its own train/eval mode back.

    The caller's mode matters: a validation pass inside training must leave the model training.
    """
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in zip(models, modes, strict=True):
            m.train(mode)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex), read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 of a model's state dict (names, shapes, dtypes, bytes, in name order): the identity of
    its weights whatever file they came from. Keys the feature cache and the ONNX export cache."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()
