"""Helpers for tests and benchmarks that need a model without training one."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mtaffect.models import CNNConfig, MultitaskCNN

__all__ = [
    "FLOAT32_ATOL",
    "FLOAT32_RTOL",
    "approx32",
    "assert_close32",
    "tiny_checkpoint",
    "tiny_cnn",
    "trained_like",
]

# How far two float32 computations of the same quantity may drift when only the order of the
# arithmetic changes: another batch size (GEMM blocking), another thread count (reduction split),
# another CPU (AVX2 vs AVX-512 kernels, fused multiply-add or not). One rounding is ~6e-8 relative;
# a ResNet forward, a softmax expectation and a CCC over a few hundred frames compound that to
# ~1e-6 relative (1.04e-6 was observed between batch sizes 5 and 7). 1e-4 leaves a 100x margin
# and still catches any real difference (a wrong frame, a missing normalisation: >= 1e-2).
# Results computed the same way twice on one machine are compared exactly instead.
FLOAT32_RTOL = 1e-4
FLOAT32_ATOL = 1e-5


def approx32(expected: Any) -> Any:
    """``pytest.approx`` with the float32 reordering tolerance (scalars, sequences, dicts)."""
    import pytest  # a test-time dependency only

    return pytest.approx(expected, rel=FLOAT32_RTOL, abs=FLOAT32_ATOL)


def assert_close32(actual: Any, expected: Any, msg: str = "") -> None:
    """Arrays or tensors equal up to float32 reordering (see ``FLOAT32_RTOL``)."""
    a = actual.detach().cpu().numpy() if torch.is_tensor(actual) else np.asarray(actual)
    b = expected.detach().cpu().numpy() if torch.is_tensor(expected) else np.asarray(expected)
    np.testing.assert_allclose(a, b, rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL, err_msg=msg)


def trained_like(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give random weights the statistics training leaves (in place; returns the model in eval mode).

    BatchNorm running mean/var, affine scales and batch counts get non-default values (so a
    checkpoint round trip really checks buffers) and convolutions are scaled by 1/sqrt(fan-in) so
    activations stay O(1): logits in the tens at most, where float32 rounding stays far below the
    1e-4 export parity bound. The first convolution is divided by 64 more because inputs are raw
    0–255 pixels minus the mean. Deterministic by ``seed``; speed does not depend on it.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.25)
                m.num_batches_tracked.fill_(7)
            elif isinstance(m, torch.nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.weight[0].numel() ** 0.5)
                if name.endswith("backbone.conv1"):
                    m.weight.div_(64)
    return model.eval()


def tiny_cnn(seed: int = 0, *, trained: bool = False, **config: Any) -> MultitaskCNN:
    """A ``resnet_tiny`` :class:`MultitaskCNN` built right after ``torch.manual_seed(seed)``.

    ``config`` sets other :class:`CNNConfig` fields (``hidden=16``, ``va_decoding="centres"``). As
    built the model is in train mode with PyTorch's initialisation; ``trained=True`` passes it
    through :func:`trained_like` with the same seed (eval mode), for checks of exported or
    checkpointed numbers. The same seed and config give the same weights on every call.
    """
    torch.manual_seed(seed)
    model = MultitaskCNN(CNNConfig(backbone="resnet_tiny", **config))
    return trained_like(model, seed) if trained else model


def tiny_checkpoint(path: Any, kind: str = "cnn_gru", seed: int = 0, **meta: Any) -> Any:
    """Write a trained-like tiny checkpoint (``resnet_tiny`` CNN, default GRU) to ``path``; returns it.

    ``meta`` goes to :func:`mtaffect.checkpoint.save_checkpoint` (``preprocessing``, ``stage``).
    """
    from mtaffect.checkpoint import save_checkpoint
    from mtaffect.models import create_model

    torch.manual_seed(seed)
    model = create_model(kind, {"cnn": {"backbone": "resnet_tiny"}, "gru": {}})
    save_checkpoint(path, trained_like(model, seed), **meta)
    return path
