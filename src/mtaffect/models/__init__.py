"""Networks: our own ResNet-50 (torchvision and Caffe/FER+ layouts), the multitask heads, the GRU.

A small registry builds a model by kind from its config dict (what checkpoints store):

>>> model = create_model("cnn", {"backbone": "resnet_tiny"})   # doctest: +SKIP
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from torch import nn

from mtaffect.models.cnn import CNNConfig, MultitaskCNN
from mtaffect.models.gru import CNNGRU, GRUConfig, TemporalModel
from mtaffect.models.outputs import Outputs, Targets
from mtaffect.models.preprocessing import Preprocessing, default_preprocessing
from mtaffect.models.resnet import BACKBONE_SPECS, ResNet, build_backbone


def _cnn(config: dict) -> nn.Module:
    return MultitaskCNN(CNNConfig.from_dict(config.get("cnn", config)))


def _gru(config: dict) -> nn.Module:
    return TemporalModel(GRUConfig.from_dict(config.get("gru", config)))


def _cnn_gru(config: dict) -> nn.Module:
    return CNNGRU(
        MultitaskCNN(CNNConfig.from_dict(config["cnn"])),
        TemporalModel(GRUConfig.from_dict(config["gru"])),
        chunk_frames=int(config.get("chunk_frames", 0)),
    )


# kind -> builder from a config dict: {"cnn": {...}} / {"gru": {...}} / {"cnn": {...}, "gru": {...}}.
MODELS: dict[str, Callable[[dict], nn.Module]] = {"cnn": _cnn, "gru": _gru, "cnn_gru": _cnn_gru}


def create_model(kind: str, config: dict | None = None) -> nn.Module:
    """Build a model of ``kind`` ("cnn", "gru", "cnn_gru") from its config dict."""
    if kind not in MODELS:
        close = difflib.get_close_matches(kind, MODELS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown model kind {kind!r} (known: {', '.join(MODELS)}){hint}")
    return MODELS[kind](config or {})


def model_config(model: nn.Module) -> dict:
    """The config dict :func:`create_model` rebuilds ``model`` from (inverse of the registry)."""
    if isinstance(model, MultitaskCNN):
        return {"cnn": model.config.to_dict()}
    if isinstance(model, TemporalModel):
        return {"gru": model.config.to_dict()}
    if isinstance(model, CNNGRU):
        return {
            "cnn": model.cnn.config.to_dict(),
            "gru": model.gru.config.to_dict(),
            "chunk_frames": model.chunk_frames,
        }
    raise TypeError(f"not an mtaffect model: {type(model).__name__}")


def list_backbones() -> list[str]:
    return list(BACKBONE_SPECS)


__all__ = [
    "BACKBONE_SPECS",
    "CNNConfig",
    "CNNGRU",
    "GRUConfig",
    "MODELS",
    "MultitaskCNN",
    "Outputs",
    "Preprocessing",
    "ResNet",
    "Targets",
    "TemporalModel",
    "build_backbone",
    "create_model",
    "default_preprocessing",
    "list_backbones",
    "model_config",
]
