"""Running a checkpoint on face crops: eager torch, or onnxruntime as the fast CPU path.

:class:`FaceModel` hides the backend. ``frames(crops)`` runs the CNN on uint8 crops and returns
per-face arrays (expression logits, VA bin logits, the two head embeddings the GRU reads);
``windows(embeddings)`` runs the GRU of a CNN+GRU checkpoint on windows of embeddings;
``decode`` turns logits into probabilities and valence/arousal values.

With ``backend="onnx"`` (or ``"auto"`` when onnxruntime is installed) the CNN is exported once to
ONNX and cached under ``$MTAFFECT_CACHE/onnx`` (default ``~/.cache/mtaffect/onnx``, by
:func:`mtaffect.export.cached_onnx`), keyed by the checkpoint's content, so later runs start at once.
The GRU stays in torch: on 128-d embeddings it costs a fraction of a millisecond per frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from mtaffect.checkpoint import stored_preprocessing
from mtaffect.errors import UserError
from mtaffect.export import CNN_OUTPUTS, OnnxModel, cached_onnx, export_onnx, onnx_available
from mtaffect.models.outputs import va_values
from mtaffect.runtime import file_sha256, resolve_device, weights_sha256

__all__ = ["FaceModel"]

BACKENDS = ("auto", "torch", "onnx")


class FaceModel:
    """A loaded checkpoint ready for inference on uint8 face crops ``(n, S, S, 3)`` RGB.

    kind: ``"cnn"`` (per-frame predictions) or ``"cnn_gru"`` (temporal: CNN embeddings → GRU).
    """

    def __init__(
        self,
        model: nn.Module,
        meta: dict,
        *,
        backend: str = "auto",
        device: str = "cpu",
        checkpoint: str | Path | None = None,
        threads: int | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise UserError(f"unknown backend {backend!r}: choose one of {BACKENDS}")
        kind = getattr(model, "kind", meta.get("kind"))
        if kind == "gru":  # an in-memory GRU: FaceModel.from_checkpoint finds a GRU file's CNN itself
            raise UserError(
                "a GRU-only model needs its CNN: load it with FaceModel.from_checkpoint(path, cnn=...) "
                "or pass CNNGRU(cnn, gru)"
            )
        self.kind = kind
        self.meta = meta
        self.device = resolve_device(device)
        # an old block without eval_resize reads as its consumers used it (checkpoint.stored_preprocessing)
        self.preprocessing = stored_preprocessing(meta)
        self.cnn = model.cnn if kind == "cnn_gru" else model
        self.gru = model.gru if kind == "cnn_gru" else None
        self.cnn.eval()
        cfg = self.gru.config if self.gru is not None else self.cnn.config
        bins = cfg.va_bins
        values = va_values(cfg.va_decoding, bins)
        self.va_values = values.numpy().astype(np.float64)
        self.session = None
        if backend == "onnx" or (backend == "auto" and onnx_available() and self.device.type == "cpu"):
            if not onnx_available():
                raise UserError("backend onnx needs onnxruntime: pip install 'mtaffect[onnx]'")
            self.session = self._onnx_session(checkpoint, threads)
        self.backend = "onnx" if self.session is not None else "torch"

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, cnn: str | Path | None = None, **kwargs) -> FaceModel:
        """A ``cnn`` or ``cnn_gru`` checkpoint, or a GRU-only one joined with its CNN (found as
        :func:`mtaffect.checkpoint.find_cnn_checkpoint` says; ``cnn`` overrides)."""
        from mtaffect.checkpoint import load_model

        model, meta = load_model(path, cnn=cnn, device=kwargs.get("device", "cpu"))
        # the ONNX cache holds the CNN alone: key it on the file the CNN came from
        source = (meta.get("joined") or {}).get("cnn", path)
        return cls(model, meta, checkpoint=source, **kwargs)

    @property
    def size(self) -> int:
        return self.preprocessing.size

    # -- ONNX
    def _onnx_session(self, checkpoint: str | Path | None, threads: int | None):
        """The CNN on onnxruntime, exported once per checkpoint into the cache (:func:`cached_onnx`)."""
        if checkpoint is not None:
            key = file_sha256(checkpoint)[:24]
        else:  # an in-memory model: key on its weights
            key = weights_sha256(self.cnn)[:24]
        path = cached_onnx(
            f"cnn-{key}-{self.size}.v2.onnx",
            lambda tmp: export_onnx(self.cnn, tmp, kind="cnn", preprocessing=self.preprocessing),
        )
        return OnnxModel(path, threads=threads, spinning=False)

    # -- inference
    @torch.inference_mode()
    def frames(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        """CNN outputs for uint8 crops ``(n, S, S, 3)``: ``expression (n, 7)``, ``valence``/``arousal``
        ``(n, bins)`` logits, ``emb_expr``/``emb_va`` ``(n, hidden)``; float32 arrays."""
        crops = np.ascontiguousarray(crops)
        if len(crops) == 0:
            hidden = self.cnn.config.hidden
            bins = len(self.va_values)
            z = np.zeros
            return {"expression": z((0, 7), np.float32), "valence": z((0, bins), np.float32),
                    "arousal": z((0, bins), np.float32), "emb_expr": z((0, hidden), np.float32),
                    "emb_va": z((0, hidden), np.float32)}  # fmt: skip
        if self.session is not None:
            x = self.preprocessing.apply(crops).numpy()
            return self.session.run(x)
        x = self.preprocessing.apply(torch.from_numpy(crops), channels_last=True, device=self.device)
        out = self.cnn(x)
        arrays = (out.expression, out.valence, out.arousal, out.embeddings["EXPR"], out.embeddings["VA"])
        return {k: v.float().cpu().numpy() for k, v in zip(CNN_OUTPUTS, arrays)}

    @torch.inference_mode()
    def windows(self, emb_expr: np.ndarray, emb_va: np.ndarray) -> dict[str, np.ndarray]:
        """GRU outputs for windows of embeddings ``(W, L, hidden)`` → logits ``(W, L, ·)``."""
        if self.gru is None:
            raise RuntimeError("not a temporal checkpoint")
        emb = {
            "EXPR": torch.from_numpy(np.ascontiguousarray(emb_expr, np.float32)).to(self.device),
            "VA": torch.from_numpy(np.ascontiguousarray(emb_va, np.float32)).to(self.device),
        }
        out = self.gru(emb)
        return {
            "expression": out.expression.float().cpu().numpy(),
            "valence": out.valence.float().cpu().numpy(),
            "arousal": out.arousal.float().cpu().numpy(),
        }

    def decode(self, logits: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Logits → ``probabilities (..., 7)``, ``valence``/``arousal`` (...,) (softmax expectations)."""
        return {
            "probabilities": _softmax(logits["expression"]),
            "valence": _softmax(logits["valence"]) @ self.va_values,
            "arousal": _softmax(logits["arousal"]) @ self.va_values,
        }


def _softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
