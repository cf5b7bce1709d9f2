"""Prediction on people's own media: faces → per-frame emotions → tables, plots, overlay, ABAW files.

The entry point is :class:`Predictor` (``Predictor.from_checkpoint(path)``); the modules, in the
order data flows: ``media`` (inputs) → ``detect`` (MTCNN; ``detect_batch``: many frames at once)
→ ``track`` → ``align`` → ``runtime`` (torch / onnxruntime) → ``temporal`` (GRU windows) → ``video``
(one video's streaming session and its report; ``overlap``: its tracking thread) → ``tables`` →
``plots``, ``overlay``, ``submission``; ``runner`` and ``extract`` are the ``predict`` and
``extract-faces`` commands (``shard``: splitting inputs across torchrun ranks; ``threads``: the
CPU thread policy; ``calibration``: int8 calibration images).
"""

from __future__ import annotations

__all__ = ["Predictor", "FaceModel", "MTCNN"]


def __getattr__(name: str):  # lazy: importing mtaffect.predict does not import torch
    if name == "Predictor":
        from mtaffect.predict.predictor import Predictor

        return Predictor
    if name == "FaceModel":
        from mtaffect.predict.runtime import FaceModel

        return FaceModel
    if name == "MTCNN":
        from mtaffect.predict.detect import MTCNN

        return MTCNN
    raise AttributeError(f"module 'mtaffect.predict' has no attribute {name!r}")
