"""Checkpoints: one ``.safetensors`` file that rebuilds its model alone.

Weights are safetensors tensors (never pickle); metadata key ``mtaffect`` holds JSON
``{"format": 1, "kind": "cnn"|"gru"|"cnn_gru", "model": {config}, "preprocessing": {...},
"labels": [...], "stage": ..., "train": {...}, "metrics": {...}, ...}`` (docs/design.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from mtaffect.errors import InputFormatError
from mtaffect.io import atomic_path
from mtaffect.labels import EXPRESSIONS
from mtaffect.models import create_model, model_config
from mtaffect.models.preprocessing import Preprocessing, default_preprocessing

FORMAT_VERSION = 1
METADATA_KEY = "mtaffect"


def _default_preprocessing(model: nn.Module) -> Preprocessing:
    cnn = getattr(model, "cnn", model)
    backbone = getattr(getattr(cnn, "config", None), "backbone", "resnet50_caffe")
    return default_preprocessing(backbone)


def save_checkpoint(path: str | Path, model: nn.Module, **meta: Any) -> dict:
    """Write ``model``'s weights and everything needed to rebuild it to ``path`` (atomically).

    ``meta`` goes into the JSON metadata: typically ``preprocessing`` (a :class:`Preprocessing` or
    dict; default: what the backbone's weights expect), ``stage``, ``train`` (the resolved training
    config), ``metrics``; anything JSON-serialisable. Returns the metadata written.
    """
    preprocessing = meta.pop("preprocessing", None) or _default_preprocessing(model)
    if isinstance(preprocessing, Preprocessing):
        preprocessing = preprocessing.to_dict()
    header = {
        "format": FORMAT_VERSION,
        "kind": model.kind,
        "model": model_config(model),
        "preprocessing": preprocessing,
        "labels": list(meta.pop("labels", EXPRESSIONS)),
        **meta,
    }
    text = json.dumps(header, default=str)
    tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: text})
    return json.loads(text)


def read_metadata(path: str | Path) -> dict:
    """The JSON metadata of a checkpoint, without loading its weights."""
    path = Path(path)
    if not path.is_file():
        raise InputFormatError(path, "checkpoint file not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(METADATA_KEY)
    except (SafetensorError, OSError, ValueError) as err:
        raise InputFormatError(
            path, f"not a safetensors checkpoint ({err}); convert foreign .pth files with `mtaffect convert`"
        ) from err
    if raw is None:
        raise InputFormatError(
            path, f"safetensors file without '{METADATA_KEY}' metadata: not an mtaffect checkpoint"
        )
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as err:
        raise InputFormatError(path, f"unreadable checkpoint metadata: {err}") from err
    if meta.get("format") != FORMAT_VERSION:
        raise InputFormatError(path, f"checkpoint format {meta.get('format')!r} is not {FORMAT_VERSION}")
    return meta


def state_dict_differences(
    expected: dict[str, torch.Size | tuple], found: dict[str, torch.Size | tuple], *, limit: int = 12
) -> list[str]:
    """Human-readable lines listing missing keys, unexpected keys and shape mismatches (empty if none)."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    mismatched = [
        f"{k}: expected {list(expected[k])}, file has {list(found[k])}"
        for k in expected
        if k in found and tuple(expected[k]) != tuple(found[k])
    ]
    lines = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if items:
            shown = "; ".join(items[:limit]) + (
                f"; … (+{len(items) - limit} more)" if len(items) > limit else ""
            )
            lines.append(f"{len(items)} {label}: {shown}")
    return lines


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Load ``state`` into ``model`` only if keys and shapes match exactly; else list the differences."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    problems = state_dict_differences(expected, found)
    if problems:
        raise InputFormatError(path, "weights do not match the model:\n  " + "\n  ".join(problems))
    model.load_state_dict(state, strict=True)


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model stored in ``path`` (a cnn, a gru, or a cnn_gru) in eval mode on ``device``.

    Returns ``(model, meta)``; ``meta["preprocessing"]`` is a :class:`Preprocessing`.
    """
    meta = read_metadata(path)
    try:
        model = create_model(meta["kind"], meta["model"])
    except (KeyError, ValueError, TypeError) as err:
        raise InputFormatError(path, f"cannot rebuild the model from the checkpoint metadata: {err}") from err
    load_state_strict(model, load_file(str(path)), path)
    model.to(device).eval()
    meta = dict(meta)
    meta["preprocessing"] = Preprocessing.from_dict(meta.get("preprocessing") or {})
    return model, meta
