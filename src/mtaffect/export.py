"""ONNX export of the CNN and the CNN+GRU, an onnxruntime inference path, int8 quantization, and the
one ONNX export cache.

``export_onnx`` writes a graph with a dynamic batch axis (and a dynamic time axis for the CNN+GRU)
and stores the checkpoint's kind, preprocessing, labels and VA decoding in the ONNX metadata, so
:class:`OnnxModel` decodes predictions from the ``.onnx`` file alone.

Graph outputs (names are the contract with ``mtaffect.predict``):
* CNN, input ``input`` (B, 3, S, S): ``expression`` (B, 7), ``valence`` (B, 20), ``arousal`` (B, 20),
  ``emb_expr`` (B, 128), ``emb_va`` (B, 128);
* CNN+GRU, input ``frames`` (B, T, 3, S, S): ``expression`` (B, T, 7), ``valence``/``arousal`` (B, T, 20).

Every ``torch.onnx.export`` of the package goes through :func:`torch_to_onnx`, and every graph
exported on the fly (prediction's CNN, the MTCNN nets) is cached once by :func:`cached_onnx` under
``cache_dir()/onnx``, keyed by the weights' content. :func:`check_parity` (onnxruntime against torch,
with the one tolerance) and :func:`int8_agreement` are the checks ``mtaffect export`` prints.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mtaffect.errors import UserError
from mtaffect.io import atomic_path
from mtaffect.labels import EXPRESSIONS
from mtaffect.models.cnn import MultitaskCNN
from mtaffect.models.gru import CNNGRU
from mtaffect.models.outputs import Outputs, va_values
from mtaffect.models.preprocessing import Preprocessing, default_preprocessing
from mtaffect.runtime import inference

CNN_OUTPUTS = ("expression", "valence", "arousal", "emb_expr", "emb_va")
CNN_GRU_OUTPUTS = ("expression", "valence", "arousal")
METADATA_KEY = "mtaffect"


def onnx_available() -> bool:
    """onnxruntime to run, onnx to write the exported graph's metadata (the ``onnx`` extra has both)."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def cache_dir() -> Path:
    """mtaffect's cache folder: ``$MTAFFECT_CACHE``, default ``~/.cache/mtaffect``."""
    return Path(os.environ.get("MTAFFECT_CACHE", Path.home() / ".cache" / "mtaffect"))


def cached_onnx(name: str, export: Callable[[Path], object]) -> Path:
    """The graph file ``cache_dir()/onnx/<name>``, written by ``export(path)`` the first time only.

    ``name`` must carry the weights' identity (:func:`mtaffect.runtime.file_sha256` of the weight file,
    or :func:`mtaffect.runtime.weights_sha256` of an in-memory model): a file of that name is taken as
    is. The file appears atomically, so a crash mid-export leaves none and two processes exporting at
    once each rename a complete file into place.
    """
    path = cache_dir() / "onnx" / name
    if not path.is_file():
        with atomic_path(path) as tmp:
            export(tmp)
    return path


def torch_to_onnx(
    module: nn.Module,
    example: torch.Tensor,
    path: str | Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]],
    opset: int = 17,
) -> None:
    """``torch.onnx.export`` of ``module`` traced on ``example``, with the package's settings: the
    TorchScript-based exporter (``dynamo=False``), constant folding, no autograd, and its deprecation and
    tracer notices silenced (not actionable for a user). Writes ``path`` in place; callers that need
    the file to appear atomically wrap this in :func:`mtaffect.io.atomic_path`."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


class _CNNGraph(nn.Module):
    """Tuple outputs for the exporter: (expression, valence, arousal, emb_expr, emb_va)."""

    def __init__(self, cnn: MultitaskCNN) -> None:
        super().__init__()
        self.cnn = cnn

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.cnn(x)
        return out.expression, out.valence, out.arousal, out.embeddings["EXPR"], out.embeddings["VA"]


class _CNNGRUGraph(nn.Module):
    def __init__(self, model: CNNGRU) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b, t = frames.shape[0], frames.shape[1]
        embeddings = self.model.cnn.embed(frames.flatten(0, 1))
        out = self.model.gru({task: e.reshape(b, t, -1) for task, e in embeddings.items()})
        return out.expression, out.valence, out.arousal


def _resolve(source: nn.Module | str | Path, cnn: str | Path | None) -> tuple[nn.Module, Preprocessing]:
    if isinstance(source, (str, Path)):
        from mtaffect.checkpoint import load_model

        model, meta = load_model(source, cnn=cnn)  # a GRU-only checkpoint comes joined with its CNN
        return model, meta["preprocessing"]
    cnn = source.cnn if isinstance(source, CNNGRU) else source
    if not isinstance(cnn, MultitaskCNN):
        raise TypeError(f"cannot export {type(source).__name__}: need a MultitaskCNN or a CNNGRU")
    return source, default_preprocessing(cnn.config.backbone)


def export_onnx(
    source: nn.Module | str | Path,
    path: str | Path,
    *,
    kind: str | None = None,
    seq_len: int = 32,
    opset: int = 17,
    preprocessing: Preprocessing | None = None,
    cnn: str | Path | None = None,
) -> Path:
    """Export a checkpoint (path) or model to ONNX at ``path`` (atomically); returns ``path``.

    ``kind``: "cnn" (per frame) or "cnn_gru" (sequences); default: the model's own kind. A CNN+GRU
    model exports either way (its CNN alone for "cnn"); a GRU-only checkpoint is joined with its CNN
    (:func:`mtaffect.checkpoint.load_model`; ``cnn`` overrides the one its training config names).
    ``seq_len`` is the example length traced for "cnn_gru" (the time axis stays dynamic).
    ``preprocessing`` overrides the stored one.
    """
    model, stored = _resolve(source, cnn)
    preprocessing = preprocessing or stored
    kind = kind or model.kind
    if kind == "cnn":
        cnn = model.cnn if isinstance(model, CNNGRU) else model
        graph: nn.Module = _CNNGraph(cnn)
        example = torch.zeros(2, 3, preprocessing.size, preprocessing.size)
        inputs, outputs = ["input"], list(CNN_OUTPUTS)
        dynamic = {name: {0: "batch"} for name in [*inputs, *outputs]}
        config = cnn.config
    elif kind == "cnn_gru":
        if not isinstance(model, CNNGRU):
            raise UserError(f"kind 'cnn_gru' needs a CNN+GRU checkpoint, got a {model.kind} model")
        graph = _CNNGRUGraph(model)
        example = torch.zeros(2, seq_len, 3, preprocessing.size, preprocessing.size)
        inputs, outputs = ["frames"], list(CNN_GRU_OUTPUTS)
        dynamic = {name: {0: "batch", 1: "time"} for name in [*inputs, *outputs]}
        config = model.gru.config
    else:
        raise UserError(f"unknown export kind {kind!r}; expected 'cnn' or 'cnn_gru'")
    graph = copy.deepcopy(graph).eval().cpu().float()  # export on CPU in fp32; the caller's model stays as is
    path = Path(path)
    with atomic_path(path) as tmp:
        torch_to_onnx(
            graph, example, tmp, input_names=inputs, output_names=outputs, dynamic_axes=dynamic, opset=opset
        )
        _write_metadata(tmp, kind, preprocessing, config.va_decoding, config.va_bins)
    return path


def _write_metadata(path: Path, kind: str, preprocessing: Preprocessing, decoding: str, bins: int) -> None:
    import onnx

    proto = onnx.load(str(path))
    meta = {
        "kind": kind,
        "preprocessing": preprocessing.to_dict(),
        "labels": list(EXPRESSIONS),
        "va_decoding": decoding,
        "va_bins": bins,
    }
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    onnx.save(proto, str(path))


def read_onnx_metadata(path: str | Path) -> dict:
    """The mtaffect metadata stored in an exported ``.onnx`` file."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    for entry in proto.metadata_props:
        if entry.key == METADATA_KEY:
            return json.loads(entry.value)
    raise UserError(f"{path}: ONNX file without mtaffect metadata (export it with `mtaffect export`)")


class OnnxModel:
    """onnxruntime inference with the models' surface: ``__call__(x) -> Outputs``, ``predict(x) -> dict``.

    ``x``: float32 preprocessed input, (B, 3, S, S) for a CNN graph or (B, T, 3, S, S) for a CNN+GRU
    graph (numpy or torch). ``threads``: intra-op threads (None: onnxruntime's default, all cores).
    ``spinning``: let idle onnxruntime threads busy-wait between calls (fastest when nothing else runs).
    """

    def __init__(self, path: str | Path, *, threads: int | None = None, spinning: bool = True) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.meta = read_onnx_metadata(self.path)
        self.kind = self.meta["kind"]
        self.preprocessing = Preprocessing.from_dict(self.meta["preprocessing"])
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        if not spinning:
            # no busy-waiting between calls: when the CPU is shared with video decoding and face
            # detection, spinning threads slow the others down (benchmarks/RESULTS_predict.md)
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, x: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
        """Raw graph outputs by name."""
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        x = np.ascontiguousarray(x, dtype=np.float32)
        values = self.session.run(self.output_names, {self.input_name: x})
        return dict(zip(self.output_names, values))

    def __call__(self, x: np.ndarray | torch.Tensor) -> Outputs:
        raw = {k: torch.from_numpy(v) for k, v in self.run(x).items()}
        embeddings = {"EXPR": raw["emb_expr"], "VA": raw["emb_va"]} if "emb_expr" in raw else None
        return Outputs(raw["expression"], raw["valence"], raw["arousal"], embeddings)

    def predict(self, x: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        """Decoded values, as :meth:`MultitaskCNN.predict`: probabilities, class, valence, arousal."""
        out = self(x)
        values = va_values(self.meta["va_decoding"], out.valence.shape[-1])
        probabilities = out.expression_probabilities()
        return {
            "expression_probabilities": probabilities,
            "expression": probabilities.argmax(-1),
            "valence": out.valence_value(values),
            "arousal": out.arousal_value(values),
        }

    def predict_images(self, images: np.ndarray) -> dict[str, torch.Tensor]:
        """uint8 RGB crops (N, H, W, 3) (or (B, T, H, W, 3) for a CNN+GRU graph) → decoded values."""
        return self.predict(self.preprocessing.apply_numpy(images))


class _CalibrationReader:
    """Feeds preprocessed calibration batches to onnxruntime's static quantizer."""

    def __init__(self, input_name: str, batches: Iterable[np.ndarray]) -> None:
        self._items = iter([{input_name: np.ascontiguousarray(b, dtype=np.float32)} for b in batches])

    def get_next(self) -> dict | None:
        return next(self._items, None)


def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration: np.ndarray | Iterable[np.ndarray],
    *,
    per_channel: bool = True,
    op_types: Sequence[str] = ("Conv",),
) -> Path:
    """Static int8 QDQ quantization of an exported CNN graph (s8 weights, u8 activations: VNNI kernels).

    ``calibration``: preprocessed float32 inputs, one array (N, 3, S, S) or an iterable of batches;
    use real face crops (a few hundred), as the activation ranges come from them. ``op_types``: the
    operators quantized (the convolutions carry > 99 % of the FLOPs; the small heads stay fp32).
    The mtaffect metadata is carried over.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    meta = read_onnx_metadata(fp32_path)
    if meta["kind"] != "cnn":
        raise UserError(
            "int8 quantization is offered for the CNN graph only (the GRU is a tiny share of the cost)"
        )
    batches = [calibration] if isinstance(calibration, np.ndarray) else list(calibration)
    out_path = Path(out_path)
    root_logger = logging.getLogger()
    level = root_logger.level
    with tempfile.TemporaryDirectory(dir=out_path.parent) as scratch, atomic_path(out_path) as tmp:
        pre = Path(scratch) / "pre.onnx"
        root_logger.setLevel(logging.ERROR)  # per-channel notices about BatchNorm1d weights, not problems
        try:
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
            quantize_static(
                str(pre),
                str(tmp),
                _CalibrationReader("input", batches),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=per_channel,
                calibrate_method=CalibrationMethod.MinMax,
                op_types_to_quantize=list(op_types),
            )
        finally:
            root_logger.setLevel(level)
        _write_metadata(
            tmp, "cnn", Preprocessing.from_dict(meta["preprocessing"]), meta["va_decoding"], meta["va_bins"]
        )
    return out_path


PARITY_ATOL = 1e-4
PARITY_RTOL = 1e-6
"""onnxruntime and torch agree when the largest logit difference is at most ``PARITY_ATOL``, or at most
``PARITY_RTOL`` times the largest logit (float32 rounding grows with the logits' size)."""


@dataclass(frozen=True)
class Parity:
    """Largest |onnxruntime - torch| over the expression and VA logits, and the largest |logit|."""

    max_diff: float
    scale: float

    @property
    def ok(self) -> bool:
        return self.max_diff <= PARITY_ATOL or self.max_diff <= PARITY_RTOL * self.scale


def check_parity(
    model: nn.Module,
    onnx_path: str | Path,
    preprocessing: Preprocessing,
    *,
    kind: str | None = None,
    seq_len: int = 8,
    seed: int = 0,
) -> Parity:
    """Run the exported graph and ``model`` on the same random crops and compare their logits.

    The crops are uint8 noise preprocessed as real crops are: 2 frames for a ``cnn`` graph, one
    sequence of ``min(seq_len, 8)`` frames for a ``cnn_gru`` one. ``kind`` defaults to the model's;
    a CNN+GRU model checked against a ``cnn`` graph is compared through its CNN.
    """
    kind = kind or model.kind
    size = preprocessing.size
    shape = (2, size, size, 3) if kind == "cnn" else (1, min(seq_len, 8), size, size, 3)
    images = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    x = preprocessing.apply(images)
    reference = model.cnn if kind == "cnn" and isinstance(model, CNNGRU) else model
    with inference(reference):
        ours = reference(x)
    got = OnnxModel(onnx_path)(x)
    fields = ("expression", "valence", "arousal")
    diff = max((getattr(got, f) - getattr(ours, f)).abs().max().item() for f in fields)
    scale = max(getattr(ours, f).abs().max().item() for f in fields)
    return Parity(diff, scale)


def calibration_batches(
    crops: np.ndarray, preprocessing: Preprocessing, batch_size: int = 32
) -> list[np.ndarray]:
    """uint8 crops ``(N, S, S, 3)`` → preprocessed float32 batches ``(<= batch_size, 3, S, S)`` for
    :func:`quantize_int8`."""
    return [preprocessing.apply_numpy(crops[i : i + batch_size]) for i in range(0, len(crops), batch_size)]


@dataclass(frozen=True)
class Int8Agreement:
    """How far an int8 graph's predictions move from its fp32 source on ``crops`` inputs."""

    expression: float
    """share of inputs given the same expression class"""
    valence_drift: float
    """largest |valence difference|"""
    crops: int


def int8_agreement(fp32_path: str | Path, int8_path: str | Path, probe: np.ndarray) -> Int8Agreement:
    """Compare the fp32 and int8 graphs on ``probe`` (preprocessed float32 inputs ``(N, 3, S, S)``)."""
    a, b = OnnxModel(fp32_path).predict(probe), OnnxModel(int8_path).predict(probe)
    agree = float((a["expression"] == b["expression"]).float().mean())
    drift = float(np.abs((a["valence"] - b["valence"]).numpy()).max())
    return Int8Agreement(agree, drift, len(probe))
