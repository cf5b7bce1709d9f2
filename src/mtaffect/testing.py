"""Helpers for tests and benchmarks that need a model without training one."""

from __future__ import annotations

import torch

__all__ = ["trained_like"]


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
