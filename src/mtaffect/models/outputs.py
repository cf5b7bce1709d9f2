"""What every model returns and what every loss consumes.

Shapes are written for a batch of frames ``(B, ...)``; the temporal model returns the same fields
with a time axis ``(B, T, ...)``. Nothing here knows which network produced the outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mtaffect.labels import VA_BINS, VA_MAX, VA_MIN


def va_bin_values(bins: int = VA_BINS, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Values the VA head's bins stand for when decoding by expectation: ``linspace(-1, 1, bins)``.

    This is the authors' decoding (METHOD.md §1.2): the 20 points are the *ends* of a grid, not the
    centres of the 20 cross-entropy bins of width 0.1 (``-0.95 + 0.1 k``); see
    :func:`va_bin_centres` for the consistent alternative.
    """
    return torch.linspace(VA_MIN, VA_MAX, bins, device=device, dtype=dtype)


def va_bin_centres(bins: int = VA_BINS, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Centres of the ``bins`` equal-width bins over [-1, 1]: ``-1 + (2k + 1) / bins``."""
    width = (VA_MAX - VA_MIN) / bins
    return torch.arange(bins, device=device, dtype=dtype) * width + (VA_MIN + width / 2)


VA_DECODINGS = ("linspace", "centres")
"""The two ways to turn VA bin probabilities into a value: the authors' ``linspace`` grid
(:func:`va_bin_values`) or the cross-entropy bins' ``centres`` (:func:`va_bin_centres`). These names are
the ones stored in checkpoints and configs; :data:`VA_DECODING_ALIASES` are translated at the border."""

VA_DECODING_ALIASES = {"authors": "linspace", "bin_centres": "centres"}
"""Older names of the same two decodings (the losses' ``va_decode`` used them), accepted on input."""


def va_decoding(name: str, key: str = "va_decoding") -> str:
    """``name`` in the one vocabulary of :data:`VA_DECODINGS` (aliases translated); ValueError naming
    ``key`` otherwise."""
    name = VA_DECODING_ALIASES.get(name, name)
    if name not in VA_DECODINGS:
        raise ValueError(
            f"{key} must be one of {VA_DECODINGS} "
            f"(or the older names {tuple(VA_DECODING_ALIASES)}), got {name!r}"
        )
    return name


def va_values(decoding: str, bins: int = VA_BINS, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """The values the VA bins stand for under ``decoding`` (see :data:`VA_DECODINGS`)."""
    if va_decoding(decoding) == "centres":
        return va_bin_centres(bins, device=device, dtype=dtype)
    return va_bin_values(bins, device=device, dtype=dtype)


def decode_va(logits: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
    """Expected value of the softmax over the last axis of bin logits ``(..., bins)`` → ``(...)``."""
    if values is None:
        values = va_bin_values(logits.shape[-1], device=logits.device, dtype=logits.dtype)
    return (torch.softmax(logits, dim=-1) * values).sum(dim=-1)


@dataclass
class Outputs:
    """Raw outputs of a multitask model.

    expression: (..., 7) logits in :data:`mtaffect.labels.EXPRESSIONS` order.
    valence, arousal: (..., 20) bin logits each (the VA head's 40 outputs split in two).
    embeddings: per head, the 128-d head embedding after ReLU and BatchNorm (what the GRU reads):
        ``{"EXPR": (..., 128), "VA": (..., 128)}``; None where a model does not expose them.
    """

    expression: torch.Tensor
    valence: torch.Tensor
    arousal: torch.Tensor
    embeddings: dict[str, torch.Tensor] | None = None

    def expression_probabilities(self, temperature: float = 1.0) -> torch.Tensor:
        return torch.softmax(self.expression / temperature, dim=-1)

    def valence_value(self, values: torch.Tensor | None = None) -> torch.Tensor:
        return decode_va(self.valence, values)

    def arousal_value(self, values: torch.Tensor | None = None) -> torch.Tensor:
        return decode_va(self.arousal, values)

    def detach(self) -> Outputs:
        emb = None if self.embeddings is None else {k: v.detach() for k, v in self.embeddings.items()}
        return Outputs(self.expression.detach(), self.valence.detach(), self.arousal.detach(), emb)


@dataclass
class Targets:
    """Labels of a batch with explicit masks (never a sentinel value).

    expression: (...,) int64 class index; meaningless where ``has_expression`` is False.
    valence, arousal: (...,) float in [-1, 1]; meaningless where ``has_va`` is False.
    """

    expression: torch.Tensor
    has_expression: torch.Tensor
    valence: torch.Tensor
    arousal: torch.Tensor
    has_va: torch.Tensor
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def to(self, device, non_blocking: bool = False) -> Targets:
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=non_blocking)

        return Targets(
            move(self.expression),
            move(self.has_expression),
            move(self.valence),
            move(self.arousal),
            move(self.has_va),
            {k: move(v) for k, v in self.extra.items()},
        )

    def flatten(self) -> Targets:
        """Merge the leading axes (B, T) → (B·T,), as the GRU losses are per frame."""
        return Targets(
            self.expression.reshape(-1),
            self.has_expression.reshape(-1),
            self.valence.reshape(-1),
            self.arousal.reshape(-1),
            self.has_va.reshape(-1),
            {k: v.reshape(-1, *v.shape[self.expression.dim():]) for k, v in self.extra.items()},
        )


def flatten_outputs(out: Outputs) -> Outputs:
    """(B, T, C) → (B·T, C) for every field."""
    emb = None
    if out.embeddings is not None:
        emb = {k: v.reshape(-1, v.shape[-1]) for k, v in out.embeddings.items()}
    return Outputs(
        out.expression.reshape(-1, out.expression.shape[-1]),
        out.valence.reshape(-1, out.valence.shape[-1]),
        out.arousal.reshape(-1, out.arousal.shape[-1]),
        emb,
    )
