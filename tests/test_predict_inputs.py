"""Still images as displayed (EXIF orientation) and huge images refused from their header."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from mtaffect.cli import main
from mtaffect.errors import InputFormatError
from mtaffect.predict import media
from mtaffect.predict.detect import box_iou
from mtaffect.predict.media import exif_upright, read_image
from mtaffect.predict.predictor import Predictor
from mtaffect.testing import tiny_checkpoint

ORIENTATION = 0x0112
# EXIF orientation → how to store an upright picture so that a viewer shows it upright again
STORE = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


@pytest.fixture(scope="module")
def cnn_checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "cnn.safetensors", "cnn")


def _tagged(upright: Image.Image, orientation: int, path: Path) -> Path:
    stored = upright.transpose(STORE[orientation])
    exif = stored.getexif()
    exif[ORIENTATION] = orientation
    stored.save(path, quality=95, exif=exif.tobytes())
    return path


def test_every_exif_orientation_matches_pillow(tmp_path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    for orientation in range(1, 9):
        image = Image.fromarray(pixels)
        exif = image.getexif()
        exif[ORIENTATION] = orientation
        image.save(tmp_path / f"o{orientation}.png", exif=exif.tobytes())  # lossless: exact pixels
        expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / f"o{orientation}.png")))
        assert np.array_equal(read_image(tmp_path / f"o{orientation}.png"), expected), orientation
        assert np.array_equal(exif_upright(pixels, orientation), expected), orientation


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_rotated_photo_gives_upright_faces_in_displayed_coordinates(
    media_dir, tmp_path, cnn_checkpoint, orientation
) -> None:
    upright = Image.open(media_dir / "single_face.jpg").convert("RGB")
    upright.save(tmp_path / "upright.jpg", quality=95)
    path = _tagged(upright, orientation, tmp_path / f"rotated{orientation}.jpg")
    shown = read_image(path)
    reference = read_image(tmp_path / "upright.jpg")
    assert shown.shape == reference.shape  # (H, W) of the displayed picture, not the stored one
    assert np.abs(shown.astype(int) - reference.astype(int)).mean() < 4  # JPEG noise only
    predictor = Predictor.from_checkpoint(cnn_checkpoint, backend="torch")
    df = predictor.predict_images([tmp_path / "upright.jpg", path])
    ref, rot = df[df["input"].str.endswith("upright.jpg")], df[df["input"] == str(path)]
    assert len(ref) == len(rot) == 1 and rot["face_found"].all()
    box = ["box_x0", "box_y0", "box_x1", "box_y1"]
    assert box_iou(ref[box].to_numpy(float), rot[box].to_numpy(float))[0, 0] > 0.9
    values = ["valence", "arousal", "Neutral", "Happiness"]
    assert np.abs(ref[values].to_numpy(float) - rot[values].to_numpy(float)).max() < 0.1


def _huge_png(path: Path, side: int, rows: int = 500) -> Path:
    """A valid ``side``×``side`` grey PNG, all black, small on disk and quick to write.

    The deflate stream repeats one compressed block of ``rows`` zero rows: after a full flush the
    compressor starts afresh, so every block compresses to the same bytes (checked); then the
    empty final block and the Adler-32 of the whole image data.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = bytes((side + 1) * rows)  # filter byte + pixels, per row
    packer = zlib.compressobj(9)
    first = packer.compress(raw) + packer.flush(zlib.Z_FULL_FLUSH)
    block = packer.compress(raw) + packer.flush(zlib.Z_FULL_FLUSH)
    assert first[2:] == block and side % rows == 0  # first[:2]: the zlib header
    adler = 1
    for _ in range(side // rows):
        adler = zlib.adler32(raw, adler)
    body = first + block * (side // rows - 1) + b"\x03\x00" + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def test_huge_png_helper_writes_a_valid_image(tmp_path) -> None:
    small = read_image(_huge_png(tmp_path / "small.png", 1000))
    assert small.shape == (1000, 1000, 3) and small.max() == 0


def test_huge_image_is_refused_from_its_header(tmp_path, monkeypatch, cnn_checkpoint, media_dir) -> None:
    huge = _huge_png(tmp_path / "huge.png", 20000)
    assert huge.stat().st_size < 2_000_000  # 400 megapixels that decode to 400 MB

    def no_decode(*args, **kwargs):
        raise AssertionError("the image was decoded before its size was checked")

    with monkeypatch.context() as patch:
        patch.setattr(media.cv2, "imdecode", no_decode)
        with pytest.raises(InputFormatError, match=r"huge\.png: image too large"):
            read_image(huge)
    out = tmp_path / "out"
    args = [str(huge), str(media_dir / "single_face.jpg"), "--checkpoint", str(cnn_checkpoint)]
    assert main(["predict", *args, "--out", str(out), "--quiet", "--backend", "torch"]) == 1
    report = json.loads((out / "report.json").read_text())
    status = {Path(e["input"]).name: (e["status"], e.get("error")) for e in report["inputs"]}
    assert status["huge.png"][0] == "error" and "too large" in status["huge.png"][1]
    images = next(e for e in report["inputs"] if e["input"] == "images")
    assert images["images"] == 1 and images["errors"] == 1


def test_prediction_threads_policy(monkeypatch) -> None:
    """The library applies what `mtaffect predict` used to set by itself; importing it loads no torch
    (OpenMP reads its wait policy when torch loads it)."""
    import os
    import subprocess
    import sys

    from mtaffect.predict.threads import prediction_threads

    code = "import sys, mtaffect.predict.threads; print('torch' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "False"
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    torch.set_num_threads(2)
    try:
        prediction_threads()
        assert torch.get_num_threads() == 1
        assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
        monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # a user's choice is kept
        monkeypatch.setattr("os.cpu_count", lambda: 8)
        torch.set_num_threads(2)
        prediction_threads()
        assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE" and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
