"""The temporal stage: one bidirectional GRU per task over the CNN's 128-d head embeddings.

``TemporalModel`` trains on cached embeddings (B, T, 128) per task; ``CNNGRU`` puts a frozen
:class:`~mtaffect.models.cnn.MultitaskCNN` in front of it for inference, export and the authors'
CNN+GRU checkpoints (METHOD.md §1.3: the CNN runs in eval mode under no_grad, its logits unused).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from mtaffect.labels import EXPRESSIONS, VA_BINS
from mtaffect.models.cnn import MultitaskCNN, decoded
from mtaffect.models.heads import GRUHead
from mtaffect.models.outputs import Outputs, va_decoding
from mtaffect.runtime import inference


@dataclass
class GRUConfig:
    """Everything needed to rebuild a :class:`TemporalModel` (stored in checkpoints).

    input_size: width of the CNN head embeddings (the CNN's ``hidden``, 128 in the paper);
    hidden: GRU units per direction (64 in the paper: "GRU 128, 64").
    """

    input_size: int = 128
    hidden: int = 64
    expression_classes: int = len(EXPRESSIONS)
    va_bins: int = VA_BINS
    va_decoding: str = "linspace"

    def __post_init__(self) -> None:
        self.va_decoding = va_decoding(self.va_decoding)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GRUConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown GRUConfig keys: {unknown}")
        return cls(**data)


class TemporalModel(nn.Module):
    """Per task, biGRU(input_size → hidden × 2) → ReLU → Linear; one output per frame."""

    kind = "gru"

    def __init__(self, config: GRUConfig | None = None) -> None:
        super().__init__()
        self.config = config or GRUConfig()
        c = self.config
        self.heads = nn.ModuleDict(
            {
                "EXPR": GRUHead(c.input_size, c.expression_classes, hidden=c.hidden),
                "VA": GRUHead(c.input_size, 2 * c.va_bins, hidden=c.hidden),
            }
        )

    def forward(self, embeddings: dict[str, torch.Tensor]) -> Outputs:
        """``{"EXPR": (B, T, 128), "VA": (B, T, 128)}`` → Outputs with (B, T, ·) fields.

        ``Outputs.embeddings`` holds each GRU's per-frame features after ReLU, (B, T, 2·hidden).
        """
        missing = {"EXPR", "VA"} - set(embeddings)
        if missing:
            raise KeyError(f"TemporalModel needs embeddings for both tasks; missing {sorted(missing)}")
        expression, features_expr = self.heads["EXPR"](embeddings["EXPR"])
        va, features_va = self.heads["VA"](embeddings["VA"])
        bins = self.config.va_bins
        return Outputs(expression, va[..., :bins], va[..., bins:], {"EXPR": features_expr, "VA": features_va})

    def predict(self, embeddings: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Decoded per-frame predictions (B, T, ·); see :func:`mtaffect.models.cnn.decoded`."""
        with inference(self):
            return decoded(self(embeddings), self.config.va_decoding)


class CNNGRU(nn.Module):
    """A frozen multitask CNN feeding a :class:`TemporalModel`: frames (B, T, 3, H, W) → Outputs (B, T, ·).

    The CNN always runs in eval mode without gradients (``train()`` leaves it in eval), as in the
    authors' code. ``chunk_frames`` bounds how many frames go through the CNN per call (a memory knob,
    the authors' ``rnn_split_size`` counted in frames); 0 = all at once.
    """

    kind = "cnn_gru"

    def __init__(self, cnn: MultitaskCNN, gru: TemporalModel, *, chunk_frames: int = 0) -> None:
        super().__init__()
        if cnn.config.hidden != gru.config.input_size:
            raise ValueError(
                f"CNN head embeddings are {cnn.config.hidden}-d but the GRU expects {gru.config.input_size}-d"
            )
        self.cnn = cnn
        self.gru = gru
        self.chunk_frames = chunk_frames
        for parameter in self.cnn.parameters():
            parameter.requires_grad_(False)
        self.cnn.eval()

    @property
    def config(self):  # noqa: ANN201 - the GRU's config decides decoding
        return self.gru.config

    def train(self, mode: bool = True) -> CNNGRU:
        super().train(mode)
        self.cnn.eval()
        return self

    def embed(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, T, 3, H, W) → {"EXPR": (B, T, hidden), "VA": (B, T, hidden)} from the frozen CNN."""
        b, t = frames.shape[:2]
        flat = frames.reshape(b * t, *frames.shape[2:])
        with torch.no_grad():
            if self.chunk_frames <= 0 or flat.shape[0] <= self.chunk_frames:
                merged = self.cnn.embed(flat)
            else:
                parts = [self.cnn.embed(piece) for piece in torch.split(flat, self.chunk_frames)]
                merged = {task: torch.cat([p[task] for p in parts]) for task in ("EXPR", "VA")}
        return {task: merged[task].reshape(b, t, -1) for task in ("EXPR", "VA")}

    def forward(self, frames: torch.Tensor) -> Outputs:
        return self.gru(self.embed(frames))

    def predict(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """Decoded per-frame predictions for (B, T, 3, H, W) frames."""
        with inference(self):
            return decoded(self(frames), self.gru.config.va_decoding)
