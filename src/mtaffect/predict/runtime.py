"""Running a checkpoint on face crops: eager torch, or onnxruntime as the fast CPU path.

:class:`FaceModel` hides the backend. ``frames(crops)`` runs the CNN on uint8 crops and returns
per-face arrays (expression logits, VA bin logits, the two head embeddings the GRU reads);
``windows(embeddings)`` runs the GRU of a CNN+GRU checkpoint on windows of embeddings;
``decode`` turns logits into probabilities and valence/arousal values.

With ``backend="onnx"`` (or ``"auto"`` when onnxruntime is installed) the CNN is exported once to
ONNX and cached under ``$MTAFFECT_CACHE/onnx`` (default ``~/.cache/mtaffect/onnx``), keyed by the
checkpoint's content, so later runs start at once. The GRU stays in torch: on 128-d embeddings it
costs a fraction of a millisecond per frame.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mtaffect.errors import UserError
from mtaffect.io import atomic_path
from mtaffect.models.outputs import va_bin_centres, va_bin_values
from mtaffect.models.preprocessing import Preprocessing

__all__ = ["FaceModel", "onnx_available", "cache_dir"]

BACKENDS = ("auto", "torch", "onnx")
_ONNX_OUTPUTS = ("expression", "valence", "arousal", "emb_expr", "emb_va")


def onnx_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def cache_dir() -> Path:
    return Path(os.environ.get("MTAFFECT_CACHE", Path.home() / ".cache" / "mtaffect"))


class _CNNExport(nn.Module):
    """The CNN with tuple outputs, as ONNX export needs."""

    def __init__(self, cnn: nn.Module) -> None:
        super().__init__()
        self.cnn = cnn

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.cnn(x)
        return out.expression, out.valence, out.arousal, out.embeddings["EXPR"], out.embeddings["VA"]


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:24]


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
        if kind == "gru":
            raise UserError("a GRU-only checkpoint needs its CNN: use the cnn_gru checkpoint of that stage")
        self.kind = kind
        self.meta = meta
        self.device = torch.device(device)
        pre = meta.get("preprocessing")
        self.preprocessing = pre if isinstance(pre, Preprocessing) else Preprocessing.from_dict(pre or {})
        self.cnn = model.cnn if kind == "cnn_gru" else model
        self.gru = model.gru if kind == "cnn_gru" else None
        self.cnn.eval()
        cfg = self.gru.config if self.gru is not None else self.cnn.config
        bins = cfg.va_bins
        values = va_bin_centres(bins) if cfg.va_decoding == "centres" else va_bin_values(bins)
        self.va_values = values.numpy().astype(np.float64)
        self.session = None
        if backend == "onnx" or (backend == "auto" and onnx_available() and self.device.type == "cpu"):
            if not onnx_available():
                raise UserError("backend onnx needs onnxruntime: pip install 'mtaffect[onnx]'")
            self.session = self._onnx_session(checkpoint, threads)
        self.backend = "onnx" if self.session is not None else "torch"

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kwargs) -> FaceModel:
        from mtaffect.checkpoint import load_checkpoint

        device = kwargs.get("device", "cpu")
        model, meta = load_checkpoint(path, device=device)
        return cls(model, meta, checkpoint=path, **kwargs)

    @property
    def size(self) -> int:
        return self.preprocessing.size

    # -- ONNX
    def _onnx_session(self, checkpoint: str | Path | None, threads: int | None):
        import onnxruntime as ort

        if checkpoint is not None:
            key = _file_digest(Path(checkpoint))
        else:  # an in-memory model: key on its weights
            h = hashlib.sha256()
            for name, t in self.cnn.state_dict().items():
                h.update(name.encode())
                h.update(t.detach().cpu().numpy().tobytes())
            key = h.hexdigest()[:24]
        path = cache_dir() / "onnx" / f"cnn-{key}-{self.size}.onnx"
        if not path.is_file():
            self._export(path)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no busy-waiting between calls: in a video the CPU is shared with decoding and detection
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def _export(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        dummy = torch.zeros(2, 3, self.size, self.size)
        wrapper = _CNNExport(self.cnn).eval().cpu()
        with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", DeprecationWarning
            )  # the TorchScript exporter is the robust one here
            torch.onnx.export(
                wrapper,
                (dummy,),
                str(tmp),
                input_names=["input"],
                output_names=list(_ONNX_OUTPUTS),
                dynamic_axes={"input": {0: "n"}, **{k: {0: "n"} for k in _ONNX_OUTPUTS}},
                opset_version=17,
                dynamo=False,
            )
        self.cnn.to(self.device)

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
            outs = self.session.run(list(_ONNX_OUTPUTS), {"input": x})
            return dict(zip(_ONNX_OUTPUTS, outs))
        x = self.preprocessing.apply(torch.from_numpy(crops), channels_last=True, device=self.device)
        out = self.cnn(x)
        arrays = (out.expression, out.valence, out.arousal, out.embeddings["EXPR"], out.embeddings["VA"])
        return {k: v.float().cpu().numpy() for k, v in zip(_ONNX_OUTPUTS, arrays)}

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
