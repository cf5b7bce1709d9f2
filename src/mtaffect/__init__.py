"""mtaffect: multitask, multi-database facial emotion recognition (7 expressions + valence/arousal).

The pipeline, in the order of the sub-packages:
``labels`` → ``data`` (readers, frame index, face cache, task sets) → ``models`` → ``losses`` →
``train`` (teacher → student, CNN → GRU) → ``metrics``/``evaluate`` → ``predict``.

Heavy names are imported on first use, so ``import mtaffect`` stays cheap.
"""

from __future__ import annotations

from typing import Any

from mtaffect.labels import EXPRESSIONS

__version__ = "0.1.0"
__all__ = ["EXPRESSIONS", "Predictor", "build_index", "load_checkpoint", "__version__"]

_LAZY = {
    "Predictor": ("mtaffect.predict.predictor", "Predictor"),
    "build_index": ("mtaffect.data.index", "build_index"),
    "load_checkpoint": ("mtaffect.checkpoint", "load_checkpoint"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'mtaffect' has no attribute {name!r}")
