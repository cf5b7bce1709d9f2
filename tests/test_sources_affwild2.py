"""Aff-Wild2 reader: DATASETS.md §1.11 example and the §7 pitfall checklist."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "datasets"))
import native_examples as fx  # noqa: E402

from mtaffect.data.records import COLUMNS, Skips  # noqa: E402
from mtaffect.data.sources.affwild2 import list_frames, read_affwild2  # noqa: E402
from mtaffect.data.sources.testlists import read_test_list  # noqa: E402
from mtaffect.errors import InputFormatError  # noqa: E402


def _rows(df: pd.DataFrame, track: str, split: str) -> list[tuple]:
    sub = df[(df["track"] == track) & (df["split"] == split)]
    out = []
    for r in sub.itertuples():
        e = None if pd.isna(r.expression) else int(r.expression)
        v = None if pd.isna(r.valence) else float(r.valence)
        a = None if pd.isna(r.arousal) else float(r.arousal)
        out.append((int(r.frame), e, v, a))
    return out


def test_video59_right_shared_frame_table(tmp_path):
    skips = Skips()
    df, info = read_affwild2(fx.affwild2_video59(tmp_path), skips)
    assert list(df.columns) == list(COLUMNS)
    # DATASETS.md §1.11 table: frames 1, 5, 6 absent; 8 has VA only
    assert _rows(df, "video59_right", "train") == [
        (2, 0, 0.2047, 0.0915),
        (3, 0, 0.211, 0.1),
        (4, 4, -0.05, 0.3),
        (7, 6, 0.4, 0.62),
        (8, None, 0.38, 0.6),
    ]
    # video59 is a different track (no suffix stripping), in validation, VA only
    assert _rows(df, "video59", "validation") == [(1, None, 0.1, 0.05), (2, None, 0.12, 0.07)]
    row = df[(df["track"] == "video59_right") & (df["frame"] == 7)].iloc[0]
    assert row["image"] == "cropped_aligned/video59_right/00007.jpg"
    assert row["source_code"] == "6"
    assert info["tracks"] == {
        "EXPR/train": ["video59_right"],
        "VA/train": ["video59_right"],
        "VA/validation": ["video59"],
    }
    counts = skips.as_dict()["affwild2"]
    assert counts["expr_label_without_image"] == 1  # row 5 (Happiness) has no image
    assert counts["va_label_without_image"] == 1
    assert counts["expr_image_beyond_last_row"] == 1  # image 8 vs 7 EXPR rows
    assert counts["expr_unannotated_rows"] == 2 and counts["va_unannotated_rows"] == 2


def test_test_list_rows_and_bom_crlf(tmp_path):
    root = fx.affwild2_video59(tmp_path)
    assert read_test_list(root / "test_set_Expr_Challenge.txt") == [
        "2-30-640x360",
        "6-30-1920x1080_left",
        "6-30-1920x1080_right",
        "video10_1_left",
    ]
    df, info = read_affwild2(root)
    test = df[df["split"] == "test"]
    assert sorted(set(test["track"])) == [
        "2-30-640x360",
        "6-30-1920x1080_left",
        "6-30-1920x1080_right",
        "video10_1_left",
    ]
    assert len(test) == 4 + 2 + 1 + 1
    assert test["expression"].isna().all() and test["valence"].isna().all()
    assert info["test_lists"]["test_set_Expr_Challenge.txt"][0] == "2-30-640x360"


def test_pitfalls_abaw2(tmp_path):
    skips = Skips()
    df, info = read_affwild2(fx.affwild2_pitfalls(tmp_path), skips)
    # video2 and video2_left are separate tracks; image 4 of video2 is beyond the 3 rows
    assert _rows(df, "video2", "train") == [(1, 1, None, None), (2, 2, None, None), (3, 3, None, None)]
    # video2_left: VA row 1 out of range -> missing; EXPR row 3 unannotated; VA row 4 has no image
    assert _rows(df, "video2_left", "train") == [(1, 5, None, None), (2, 6, 0.2, 0.3), (3, None, 0.4, 0.4)]
    # cross-split track: one row per split; image folder found under cropped_aligned_new_50_vids
    assert _rows(df, "10-60-1280x720", "train") == [(1, 0, None, None), (2, 0, None, None)]
    assert _rows(df, "10-60-1280x720", "validation") == [(1, None, 0.5, -0.25)]
    assert (
        df[df["track"] == "10-60-1280x720"]["image"].iloc[0]
        == "cropped_aligned_new_50_vids/10-60-1280x720/00001.jpg"
    )
    counts = skips.as_dict()["affwild2"]
    assert counts["va_out_of_range"] == 1
    assert counts["ignored_image_folder_entries"] == 1  # .DS_Store
    assert counts["expr_image_beyond_last_row"] == 1
    assert info["classes"] == 7


def test_abaw3_names_training_set_and_other(tmp_path):
    df, info = read_affwild2(fx.affwild2_pitfalls(tmp_path, abaw3=True))
    assert info["classes"] == 8
    assert _rows(df, "video2_left", "train")[1] == (2, 7, 0.2, 0.3)  # Other kept in the index as 7
    assert set(df["split"]) == {"train", "validation"}


def test_list_frames_parses_stems_not_positions(tmp_path):
    for name in ("00010.jpg", "00002.jpg", "100000.jpg", ".DS_Store", "00003.png", "thumb.jpg"):
        (tmp_path / name).write_bytes(b"x")
    frames, names, ignored = list_frames(tmp_path)
    assert frames.tolist() == [2, 10, 100000]
    assert names.tolist() == ["00002.jpg", "00010.jpg", "100000.jpg"]
    assert ignored == 3


def test_malformed_line_strict_and_lenient(tmp_path):
    root = fx.affwild2_video59(tmp_path)
    bad = root / "annotations/EXPR_Set/Train_Set/video59_right.txt"
    bad.write_text(fx.EXPR_HEADER + "\n-1\n0\nhappy\n4\n4\n-1\n9\n")
    with pytest.raises(InputFormatError) as err:
        read_affwild2(root)
    assert err.value.line == 4 and err.value.path == str(bad)
    skips = Skips(lenient=True)
    df, _ = read_affwild2(root, skips)
    counts = skips.as_dict()["affwild2"]
    assert counts["malformed_line"] == 1 and counts["bad_expression_code"] == 1
    # the bad row keeps its place: frame 4 still gets row 4's label
    assert _rows(df, "video59_right", "train")[:3] == [
        (2, 0, 0.2047, 0.0915),
        (3, None, 0.211, 0.1),
        (4, 4, -0.05, 0.3),
    ]


def test_bad_header_is_an_error(tmp_path):
    root = fx.affwild2_video59(tmp_path)
    path = root / "annotations/VA_Set/Validation_Set/video59.txt"
    path.write_text("0.1,0.05\n0.12,0.07\n")
    with pytest.raises(InputFormatError, match="valence,arousal"):
        read_affwild2(root)


def test_frame_column_is_int_and_sorted(tmp_path):
    df, _ = read_affwild2(fx.affwild2_video59(tmp_path))
    assert str(df["frame"].dtype) == "Int64"
    for _, group in df.groupby(["split", "track"]):
        assert np.all(np.diff(group["frame"].to_numpy(np.int64)) > 0)


def test_nested_image_root_and_2020_test_list(tmp_path):
    root = fx.affwild2_video59(tmp_path)
    (root / "cropped_aligned").rename(tmp_path / "tmp_images")
    (root / "cropped_aligned").mkdir()
    (tmp_path / "tmp_images").rename(root / "cropped_aligned" / "cropped_aligned")
    (root / "test_set_Expr_Challenge.txt").rename(root / "annotations" / "expression_test_set.txt")
    df, info = read_affwild2(root)
    assert _rows(df, "video59_right", "train")[0] == (2, 0, 0.2047, 0.0915)
    assert df["image"].iloc[0] == "cropped_aligned/cropped_aligned/video59_right/00002.jpg"
    assert list(info["test_lists"]) == ["annotations/expression_test_set.txt"]
    assert (df["split"] == "test").sum() == 8


def test_mtl_single_file_format(tmp_path):
    mtl = tmp_path / "3rd ABAW Annotations" / "MTL_Challenge"
    aus = ",".join(["0"] * 12)
    fx.write(
        mtl / "training_set_annotations.txt",
        "image,valence,arousal,expression,AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26\n"
        f"video2/00001.jpg,0.25,-0.5,7,{aus}\nvideo2/00002.jpg,-5,-5,3,{aus}\n"
        f"video2/00003.jpg,-5,-5,-1,{aus}\nvideo2/00009.jpg,0.1,0.1,1,{aus}\n",
    )
    fx.write(mtl / "validation_set_annotations.txt", f"header\nvideo3_left/00002.jpg,0.5,0.5,-1,{aus}\n")
    fx.images(tmp_path / "cropped_aligned/video2", [1, 2, 3])
    fx.images(tmp_path / "cropped_aligned/video3_left", [2])
    skips = Skips()
    df, info = read_affwild2(tmp_path, skips)
    assert _rows(df, "video2", "train") == [(1, 7, 0.25, -0.5), (2, 3, None, None)]
    assert _rows(df, "video3_left", "validation") == [(2, None, 0.5, 0.5)]
    assert info["classes"] == 8
    counts = skips.as_dict()["affwild2"]
    assert counts["mtl_label_without_image"] == 1 and counts["mtl_unlabelled_rows"] == 1
