"""ONNX export: parity with torch (≤ 1e-4), dynamic axes, metadata, int8 quantization, the CLI."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
import onnx  # noqa: E402

from mtaffect.checkpoint import save_checkpoint  # noqa: E402
from mtaffect.cli import main  # noqa: E402
from mtaffect.export import OnnxModel, export_onnx, quantize_int8, read_onnx_metadata  # noqa: E402
from mtaffect.models import CNNGRU, CNNConfig, GRUConfig, MultitaskCNN, Preprocessing, TemporalModel  # noqa: E402
from mtaffect.testing import trained_like  # noqa: E402

SMALL = Preprocessing(size=64)


@pytest.fixture(scope="module")
def tiny_cnn() -> MultitaskCNN:
    torch.manual_seed(0)
    return trained_like(MultitaskCNN(CNNConfig(backbone="resnet_tiny", va_decoding="centres")))


def _max_diff(a, b) -> float:
    return max(
        (getattr(a, f) - getattr(b, f)).abs().max().item() for f in ("expression", "valence", "arousal")
    )


def test_cnn_parity_and_dynamic_batch(tmp_path, tiny_cnn):
    tiny_cnn.double()
    path = export_onnx(tiny_cnn, tmp_path / "cnn.onnx", preprocessing=SMALL)
    assert next(tiny_cnn.parameters()).dtype == torch.float64  # export leaves the caller's model alone
    tiny_cnn.float()
    model = OnnxModel(path, threads=1)
    for batch in (1, 5):
        x = torch.randn(batch, 3, 64, 64) * 60
        with torch.no_grad():
            ref = tiny_cnn(x)
        got = model(x)
        assert got.expression.shape == (batch, 7)
        assert _max_diff(got, ref) <= 1e-4
        assert (got.embeddings["EXPR"] - ref.embeddings["EXPR"]).abs().max() <= 1e-4
    pred, ref_pred = model.predict(x), tiny_cnn.predict(x)
    torch.testing.assert_close(pred["valence"], ref_pred["valence"], atol=1e-4, rtol=0)
    assert torch.equal(pred["expression"], ref_pred["expression"])
    meta = read_onnx_metadata(path)
    assert meta["kind"] == "cnn" and meta["va_decoding"] == "centres" and meta["preprocessing"]["size"] == 64
    assert [o.name for o in onnx.load(str(path)).graph.output] == [
        "expression",
        "valence",
        "arousal",
        "emb_expr",
        "emb_va",
    ]
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = tiny_cnn.predict(SMALL.apply(images))
    torch.testing.assert_close(
        model.predict_images(images)["arousal"], expected["arousal"], atol=1e-4, rtol=0
    )


def test_cnn_gru_parity_with_other_lengths(tmp_path, tiny_cnn):
    torch.manual_seed(1)
    model = CNNGRU(tiny_cnn, TemporalModel(GRUConfig())).eval()
    path = export_onnx(model, tmp_path / "cnn_gru.onnx", seq_len=8, preprocessing=SMALL)
    session = OnnxModel(path, threads=1)
    assert session.kind == "cnn_gru"
    for b, t in ((2, 8), (1, 5), (3, 11)):
        frames = torch.randn(b, t, 3, 64, 64) * 60
        with torch.no_grad():
            ref = model(frames)
        got = session(frames)
        assert got.valence.shape == (b, t, 20)
        assert _max_diff(got, ref) <= 1e-4
    # The CNN+GRU checkpoint also exports its CNN alone.
    cnn_only = OnnxModel(export_onnx(model, tmp_path / "cnn.onnx", kind="cnn", preprocessing=SMALL))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert _max_diff(cnn_only(x), tiny_cnn(x)) <= 1e-4


def test_resnet50_caffe_parity(tmp_path):
    torch.manual_seed(0)
    model = trained_like(MultitaskCNN(CNNConfig(backbone="resnet50_caffe")))
    start = time.perf_counter()
    session = OnnxModel(export_onnx(model, tmp_path / "r50.onnx"), threads=1)
    x = torch.randn(2, 3, 112, 112) * 60
    with torch.no_grad():
        ref = model(x)
    assert _max_diff(session(x), ref) <= 1e-4
    assert time.perf_counter() - start < 60  # export + one forward, kept cheap enough for the suite


def test_int8_quantization_runs_and_tracks_fp32(tmp_path, tiny_cnn):
    fp32 = export_onnx(tiny_cnn, tmp_path / "cnn.onnx", preprocessing=SMALL)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 64, 64, 3), dtype=np.uint8)
    calibration = [SMALL.apply_numpy(images[i : i + 32]) for i in (0, 32)]
    int8 = quantize_int8(fp32, tmp_path / "cnn_int8.onnx", calibration)
    graph = onnx.load(str(int8)).graph
    assert any(node.op_type == "QuantizeLinear" for node in graph.node)
    assert read_onnx_metadata(int8)["kind"] == "cnn"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn.onnx", "cnn_int8.onnx"]
    a, b = OnnxModel(fp32)(calibration[0]), OnnxModel(int8)(calibration[0])
    corr = np.corrcoef(a.valence.numpy().ravel(), b.valence.numpy().ravel())[0, 1]
    assert corr > 0.9


def test_cli_export_with_check_and_int8(tmp_path, tiny_cnn, capsys):
    ckpt = tmp_path / "cnn.safetensors"
    save_checkpoint(ckpt, tiny_cnn, preprocessing=SMALL)
    crops = np.random.default_rng(1).integers(0, 256, (40, 64, 64, 3), dtype=np.uint8)
    np.save(tmp_path / "crops.npy", crops)
    out, out8 = tmp_path / "cnn.onnx", tmp_path / "cnn8.onnx"
    args = [
        "export",
        str(ckpt),
        "--out",
        str(out),
        "--check",
        "--int8",
        str(out8),
        "--calibration",
        str(tmp_path / "crops.npy"),
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "parity: max |onnxruntime - torch|" in text and "(ok)" in text
    assert "calibrated on 40 crops" in text
    assert main(args) == 2  # outputs exist: refuse
    assert "--overwrite" in capsys.readouterr().err
    assert (
        main(["export", str(ckpt), "--out", str(tmp_path / "x.onnx"), "--int8", str(tmp_path / "y.onnx")])
        == 2
    )
    assert "--calibration" in capsys.readouterr().err
    assert main(["export", str(ckpt), "--out", str(tmp_path / "x.onnx"), "--kind", "cnn_gru"]) == 2
    assert "needs a CNN+GRU checkpoint" in capsys.readouterr().err
