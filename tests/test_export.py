"""ONNX export: parity with torch (≤ 1e-4), dynamic axes, metadata, int8 quantization, the CLI."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
import onnx  # noqa: E402

from mtaffect import testing  # noqa: E402
from mtaffect.checkpoint import save_checkpoint  # noqa: E402
from mtaffect.cli import main  # noqa: E402
from mtaffect.export import OnnxModel, export_onnx, quantize_int8, read_onnx_metadata  # noqa: E402
from mtaffect.models import CNNGRU, CNNConfig, GRUConfig, MultitaskCNN, Preprocessing, TemporalModel  # noqa: E402
from mtaffect.testing import trained_like  # noqa: E402

SMALL = Preprocessing(size=64)


@pytest.fixture(scope="module")
def tiny_cnn() -> MultitaskCNN:
    return testing.tiny_cnn(0, trained=True, va_decoding="centres")


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


def test_cached_onnx_exports_once_atomically_under_mtaffect_cache(tmp_path, monkeypatch):
    from mtaffect.errors import UserError
    from mtaffect.export import cache_dir, cached_onnx

    monkeypatch.setenv("MTAFFECT_CACHE", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache"
    calls = []

    def export(path):
        calls.append(path)
        assert path.parent == tmp_path / "cache" / "onnx" and path.name != "g.onnx"  # a temporary name
        path.write_bytes(b"graph")

    assert cached_onnx("g.onnx", export) == tmp_path / "cache" / "onnx" / "g.onnx"
    assert cached_onnx("g.onnx", export).read_bytes() == b"graph" and len(calls) == 1

    def broken(path):
        path.write_bytes(b"half a gr")
        raise UserError("export failed")

    with pytest.raises(UserError):
        cached_onnx("h.onnx", broken)
    assert sorted(p.name for p in (tmp_path / "cache" / "onnx").iterdir()) == ["g.onnx"]  # no half file


def test_check_parity_tolerance_and_kinds(tmp_path, tiny_cnn):
    from mtaffect.export import PARITY_ATOL, Parity, check_parity

    assert Parity(PARITY_ATOL, 0.0).ok and Parity(2e-4, 1e3).ok and not Parity(2e-4, 10.0).ok
    cnn_path = export_onnx(tiny_cnn, tmp_path / "cnn.onnx", preprocessing=SMALL)
    parity = check_parity(tiny_cnn, cnn_path, SMALL)
    assert parity.ok and 0 <= parity.max_diff <= 1e-4 and parity.scale > 0
    torch.manual_seed(1)
    joined = CNNGRU(tiny_cnn, TemporalModel(GRUConfig()))
    joined.train()
    seq_path = export_onnx(joined, tmp_path / "seq.onnx", preprocessing=SMALL, seq_len=4)
    assert check_parity(joined, seq_path, SMALL, seq_len=4).ok
    assert joined.training  # the check ran in eval mode and gave the model its mode back
    assert check_parity(joined, cnn_path, SMALL, kind="cnn").ok  # a CNN+GRU against its CNN's graph


def test_calibration_crops_from_a_folder(tmp_path, tiny_cnn):
    import cv2

    from mtaffect.errors import InputFormatError
    from mtaffect.export import calibration_batches, int8_agreement
    from mtaffect.predict.calibration import load_calibration

    folder = tmp_path / "faces"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, side in [("a.jpg", 64), ("sub/b.png", 80), ("c.webp", 64), ("d.TIFF", 32)]:
        bgr = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        assert cv2.imwrite(str(folder / name), bgr), name
    (folder / "broken.jpg").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("not a face")
    crops, skipped = load_calibration(folder, 64, limit=10)
    assert crops.shape == (4, 64, 64, 3) and crops.dtype == np.uint8
    assert skipped == [folder / "broken.jpg"]
    first = cv2.cvtColor(cv2.imread(str(folder / "a.jpg")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(crops[0], first)  # sorted by path, RGB, not resized at its size
    assert load_calibration(folder, 64, limit=2)[0].shape[0] == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.jpg").write_bytes(b"")
    with pytest.raises(InputFormatError, match="no readable images"):
        load_calibration(empty, 64, limit=5)
    batches = calibration_batches(np.concatenate([crops] * 9), SMALL)
    assert [len(b) for b in batches] == [32, 4] and batches[0].dtype == np.float32
    fp32 = export_onnx(tiny_cnn, tmp_path / "cnn.onnx", preprocessing=SMALL)
    agreement = int8_agreement(fp32, fp32, batches[0])
    assert (agreement.expression, agreement.valence_drift, agreement.crops) == (1.0, 0.0, 32)
