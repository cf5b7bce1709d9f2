"""AffectNet, ExpW, AFEW-VA and generic-CSV readers on the DATASETS.md examples (§2.5, §3.4, §4.4)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "datasets"))
import native_examples as fx  # noqa: E402

from mtaffect.data.records import Skips  # noqa: E402
from mtaffect.data.sources import read_afew_va, read_affectnet, read_expw, read_generic  # noqa: E402
from mtaffect.errors import InputFormatError  # noqa: E402


def _na(x):
    return None if pd.isna(x) else x


def test_affectnet_csv_example(tmp_path):
    skips = Skips()
    df, info = read_affectnet(fx.affectnet_csv(tmp_path), skips)
    train = df[df["split"] == "train"].reset_index(drop=True)
    # row 1 Happy -> 4 with VA; row 2 Anger -> 1; row 3 Contempt: no expression (VA kept);
    # row 4 No-Face dropped
    assert [_na(e) for e in train["expression"]] == [4, 1, None]
    assert train["source_code"].tolist() == ["1", "6", "7"]
    assert train.loc[0, "valence"] == pytest.approx(0.785714) and train.loc[0, "arousal"] == pytest.approx(
        -0.055556
    )
    assert (
        train.loc[0, "image"]
        == "Manually_Annotated_Images/689/abd37534c7d9a2efb9465de931cd7055ffdb8879563ae98078d6d6d5.jpg"
    )
    assert (
        train.loc[0, "box_x0"],
        train.loc[0, "box_y0"],
        train.loc[0, "box_x1"],
        train.loc[0, "box_y1"],
    ) == (
        134,
        134,
        1033,
        1033,
    )
    lm = train.loc[0, "landmarks"]
    assert lm.dtype == np.float32 and lm.shape == (136,)
    assert lm[0] == pytest.approx(177.89) and lm[-1] == pytest.approx(856.54)
    # validation.csv has no header: both rows read; Disgust (5) -> ABAW 2
    val = df[df["split"] == "validation"]
    assert [_na(e) for e in val["expression"]] == [2, 0]
    counts = skips.as_dict()["affectnet"]
    assert counts["expression_excluded_contempt"] == 1 and counts["expression_excluded_no_face"] == 1
    assert counts["no_usable_label"] == 1 and counts["va_missing"] == 1
    assert info["release"] == "csv"


def test_affectnet_missing_image_and_null_rows(tmp_path):
    root = fx.affectnet_csv(tmp_path, missing=(fx.AFFECTNET_TRAIN[1][0],))
    path = root / "Manually_Annotated_file_lists/validation.csv"
    path.write_text(path.read_text() + "7/NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL\n")
    skips = Skips()
    df, _ = read_affectnet(root, skips)
    assert skips.as_dict()["affectnet"]["missing_image"] == 1
    assert skips.as_dict()["affectnet"]["null_or_empty_field"] == 1
    assert len(df) == 2 + 2


def test_affectnet_malformed_and_escaping_paths(tmp_path):
    root = fx.affectnet_csv(tmp_path)
    path = root / "Manually_Annotated_file_lists/validation.csv"
    text = path.read_text()
    path.write_text(text + "../../etc/passwd.jpg,1,1,5,5," + ";".join(["1"] * 136) + ",1,0.1,0.1\n")
    with pytest.raises(InputFormatError) as err:
        read_affectnet(root)
    assert err.value.line == 3 and "escapes" in str(err.value)
    path.write_text(text + "5/x.jpg,1,1,5,5,1;2,1,0.1\n")
    with pytest.raises(InputFormatError, match="expected 9"):
        read_affectnet(root)
    skips = Skips(lenient=True)
    df, _ = read_affectnet(root, skips)
    assert skips.as_dict()["affectnet"]["malformed_line"] == 1 and len(df) == 5


def test_affectnet_npy_release(tmp_path):
    ann = tmp_path / "train_set/annotations"
    ann.mkdir(parents=True)
    (tmp_path / "train_set/images").mkdir()
    for ident, code, v, a in (("0", 1, 0.5, 0.2), ("1", "3", "-0.1", "0.9"), ("2", 7, 0.0, 0.0)):
        np.save(ann / f"{ident}_exp.npy", np.array(code))
        np.save(ann / f"{ident}_val.npy", np.array(v))
        np.save(ann / f"{ident}_aro.npy", np.array(a))
        np.save(ann / f"{ident}_lnd.npy", np.arange(136, dtype=np.float64))
        (tmp_path / f"train_set/images/{ident}.jpg").write_bytes(fx.image_bytes(32, 32))
    df, info = read_affectnet(tmp_path)
    assert info["release"] == "npy"
    assert [_na(e) for e in df["expression"]] == [
        4,
        6,
        None,
    ]  # string-typed values are cast; contempt kept for VA
    assert df["valence"].tolist() == pytest.approx([0.5, -0.1, 0.0])
    assert df["image"].tolist()[0] == "train_set/images/0.jpg"


def test_expw_example(tmp_path):
    skips = Skips()
    df, _ = read_expw(
        fx.expw(tmp_path, extra_lines=(fx.EXPW_LINES[0], "missing_photo_1.jpg 0 1 2 30 40 1.0 3")), skips
    )
    assert df["track"].tolist() == [
        "angry_actor_104.jpg#0",
        "angry_actor_104.jpg#1",
        "happy_student_12.jpg#0",
        "sad_mother_7.jpg#0",
    ]
    assert df["expression"].tolist() == [1, 0, 4, 5]
    assert df["face_id"].tolist() == [0, 1, 0, 0]
    first = df.iloc[0]
    # box order top, left, right, bottom -> x0 = left, y0 = top, x1 = right, y1 = bottom
    assert (first["box_x0"], first["box_y0"], first["box_x1"], first["box_y1"]) == (113, 28, 226, 141)
    assert first["image"] == "image/origin/angry_actor_104.jpg"
    assert set(df["split"]) == {"train"} and df["frame"].isna().all()
    counts = skips.as_dict()["expw"]
    assert counts["duplicate_line"] == 1 and counts["missing_image"] == 1


def test_expw_malformed(tmp_path):
    root = fx.expw(tmp_path, extra_lines=("sad_mother_7.jpg 1 12 30 170",))
    with pytest.raises(InputFormatError) as err:
        read_expw(root)
    assert err.value.line == 5
    root = fx.expw(tmp_path, extra_lines=("sad_mother_7.jpg 1 12 30 170 152 5.3 9",))
    with pytest.raises(InputFormatError, match="outside 0..6"):
        read_expw(root)


@pytest.mark.parametrize("nested", [True, False])
def test_afew_va_example(tmp_path, nested):
    skips = Skips()
    df, info = read_afew_va(fx.afew_va(tmp_path, nested=nested), skips)
    assert info["layout"] == ("nested" if nested else "flat")
    clip1 = df[df["track"] == "001"]
    assert clip1["frame"].tolist() == [0, 1]
    assert clip1["valence"].tolist() == pytest.approx([0.3, 0.3])
    assert clip1["arousal"].tolist() == pytest.approx([-0.2, -0.1])
    assert clip1["image"].iloc[0] == ("01/001/00000.png" if nested else "001/00000.png")
    lm = clip1["landmarks"].iloc[0]
    assert lm.shape == (136,) and lm[0] == pytest.approx(307.728) and lm[1] == pytest.approx(255.797)
    clip2 = df[df["track"] == "002"]
    assert clip2["valence"].tolist() == [-1.0] and clip2["arousal"].tolist() == [1.0]
    assert skips.as_dict()["afew_va"]["missing_image"] == 1
    assert df["expression"].isna().all()


def test_generic_csv(tmp_path):
    (tmp_path / "faces").mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (tmp_path / "faces" / name).write_bytes(b"x")
    csv = tmp_path / "mine.csv"
    csv.write_text(
        "image,expression,valence,arousal,split\n"
        "faces/a.jpg,Happiness,0.5,0.1,train\n"
        "faces/b.jpg,3,,,validation\n"
        'faces/c.jpg,,"-0.2",0.3,train\n'
        "faces/missing.jpg,0,0,0,train\n"
    )
    skips = Skips()
    df, _ = read_generic(csv, "mine", skips)
    assert df["expression"].tolist()[:2] == [4, 3] and pd.isna(df["expression"].iloc[2])
    assert df["split"].tolist() == ["train", "validation", "train"]
    assert df["valence"].tolist()[2] == pytest.approx(-0.2)
    assert skips.as_dict()["mine"]["missing_image"] == 1
    csv.write_text("image,valence,arousal\n/etc/x.jpg,0.1,0.1\n")
    with pytest.raises(InputFormatError, match="escapes"):
        read_generic(csv, "mine")
    csv.write_text("image,valence,arousal\nfaces/a.jpg,5,0.1\n")
    with pytest.raises(InputFormatError) as err:
        read_generic(csv, "mine")
    assert err.value.line == 2 and "outside" in str(err.value)


def test_affectnet_landmark_count_checked_per_row(tmp_path):
    root = fx.affectnet_csv(tmp_path)
    path = root / "Manually_Annotated_file_lists/validation.csv"
    rows = [",".join(r) for r in fx.AFFECTNET_VALIDATION]
    short = rows[0].split(",")
    short[5] = ";".join(short[5].split(";")[:-1])  # 135 values
    long = rows[1].split(",")
    long[5] = long[5] + ";1.0"  # 137 values: the total is still 2 x 136
    path.write_text(",".join(short) + "\n" + ",".join(long) + "\n")
    with pytest.raises(InputFormatError) as err:
        read_affectnet(root)
    assert err.value.line == 1 and "landmarks" in str(err.value)
    skips = Skips(lenient=True)
    df, _ = read_affectnet(root, skips)
    assert skips.as_dict()["affectnet"]["bad_landmarks"] == 2
    assert (df["split"] == "validation").sum() == 0 and len(df) == 3  # malformed rows are skipped
