"""The multitask CNN: a ResNet trunk and two independent heads, EXPR (7 logits) and VA (2 × 20 bins).

Surface shared by every backbone (METHOD.md §1.1–1.2):

* ``forward_features(x (B, 3, H, W)) -> (B, F)`` pooled trunk features (F = 2048 for ResNet-50);
* ``forward_heads(features) -> Outputs`` logits and the two 128-d head embeddings;
* ``forward(x) -> Outputs``;
* ``predict(x) -> dict`` of decoded values: expression probabilities and class, valence, arousal.

Inputs are float tensors already normalised by the checkpoint's preprocessing
(:class:`mtaffect.models.preprocessing.Preprocessing`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from mtaffect.labels import EXPRESSIONS, VA_BINS
from mtaffect.models.heads import Head
from mtaffect.models.outputs import Outputs, va_decoding, va_values
from mtaffect.models.resnet import BACKBONE_SPECS, build_backbone
from mtaffect.runtime import inference


@dataclass
class CNNConfig:
    """Everything needed to rebuild a :class:`MultitaskCNN` (stored in checkpoints).

    backbone: a name from :data:`mtaffect.models.resnet.BACKBONE_SPECS` ("resnet50_caffe" takes the
        FER+ weights; "resnet50" takes torchvision/timm weights; "resnet_small"/"resnet_tiny" for CPU).
    hidden: width of each head's embedding (128 in the paper); dropout: before each head's last Linear.
    backbone_classes: keep the trunk's own classifier (8 for the FER+ network, 1000 for ImageNet); 0 = none.
    last_block_dropout: the caffe layout's two conv5_3 dropouts.
    va_decoding: "linspace" (the authors' expectation over linspace(-1, 1, 20)) or "centres" (bin centres).
    """

    backbone: str = "resnet50_caffe"
    hidden: int = 128
    dropout: float = 0.5
    expression_classes: int = len(EXPRESSIONS)
    va_bins: int = VA_BINS
    backbone_classes: int = 0
    last_block_dropout: float = 0.5
    va_decoding: str = "linspace"

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONE_SPECS:
            raise ValueError(f"unknown backbone {self.backbone!r}; known: {', '.join(BACKBONE_SPECS)}")
        self.va_decoding = va_decoding(self.va_decoding)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CNNConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown CNNConfig keys: {unknown}")
        return cls(**data)


def decoded(out: Outputs, decoding: str = "linspace") -> dict[str, torch.Tensor]:
    """Decode raw outputs (any leading shape) into user-facing values.

    Returns ``expression_probabilities`` (..., 7), ``expression`` (...,) argmax class,
    ``valence`` and ``arousal`` (...,) in [-1, 1] (softmax expectation over the bin values).
    """
    values = va_values(decoding, out.valence.shape[-1], device=out.valence.device, dtype=out.valence.dtype)
    probabilities = out.expression_probabilities()
    return {
        "expression_probabilities": probabilities,
        "expression": probabilities.argmax(dim=-1),
        "valence": out.valence_value(values),
        "arousal": out.arousal_value(values),
    }


class MultitaskCNN(nn.Module):
    """ResNet trunk + EXPR head (7) + VA head (2 × 20 bins), per frame."""

    kind = "cnn"

    def __init__(self, config: CNNConfig | None = None) -> None:
        super().__init__()
        self.config = config or CNNConfig()
        self.backbone = build_backbone(
            self.config.backbone,
            num_classes=self.config.backbone_classes,
            last_block_dropout=self.config.last_block_dropout,
        )
        feature_dim = self.backbone.feature_dim
        self.heads = nn.ModuleDict(
            {
                "EXPR": Head(
                    feature_dim,
                    self.config.expression_classes,
                    hidden=self.config.hidden,
                    dropout=self.config.dropout,
                ),
                "VA": Head(
                    feature_dim,
                    2 * self.config.va_bins,
                    hidden=self.config.hidden,
                    dropout=self.config.dropout,
                ),
            }
        )

    @property
    def feature_dim(self) -> int:
        return self.backbone.feature_dim

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised float → (B, F) pooled trunk features."""
        return self.backbone.forward_features(x)

    def forward_heads(self, features: torch.Tensor) -> Outputs:
        """(B, F) → Outputs: expression (B, 7), valence/arousal (B, 20) logits, embeddings (B, hidden)."""
        expression, embedding_expr = self.heads["EXPR"](features)
        va, embedding_va = self.heads["VA"](features)
        bins = self.config.va_bins
        return Outputs(
            expression, va[..., :bins], va[..., bins:], {"EXPR": embedding_expr, "VA": embedding_va}
        )

    def embed(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) → the two head embeddings {"EXPR": (B, hidden), "VA": (B, hidden)} (GRU input)."""
        features = self.forward_features(x)
        return {task: head.embed(features) for task, head in self.heads.items()}

    def forward(self, x: torch.Tensor) -> Outputs:
        return self.forward_heads(self.forward_features(x))

    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Decoded predictions for (B, 3, H, W) inputs; see :func:`decoded`. Runs in eval mode."""
        with inference(self):
            return decoded(self(x), self.config.va_decoding)

