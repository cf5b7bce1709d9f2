"""Frame index: build over every fixture database, summary, leakage policy, Parquet round trip, CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "datasets"))
import native_examples as fx  # noqa: E402

from mtaffect.cli import main  # noqa: E402
from mtaffect.data.index import build_index, format_summary, read_index, write_index  # noqa: E402
from mtaffect.data.records import COLUMNS  # noqa: E402
from mtaffect.errors import InputFormatError, UserError  # noqa: E402


@pytest.fixture
def roots(tmp_path):
    aw = fx.affwild2_video59(tmp_path / "aw")
    fx.affwild2_pitfalls(aw)
    return {
        "affwild2": aw,
        "affectnet": fx.affectnet_csv(tmp_path / "an"),
        "expw": fx.expw(tmp_path / "ew"),
        "afew-va": fx.afew_va(tmp_path / "av"),
    }


def test_build_index_all_databases(roots):
    index, meta = build_index(roots)
    assert list(index.columns) == list(COLUMNS)
    assert [str(index[c].dtype) for c in COLUMNS] == list(COLUMNS.values())
    assert list(pd.unique(index["database"])) == ["affwild2", "affectnet", "expw", "afew_va"]
    assert set(meta["roots"]) == {"affwild2", "affectnet", "expw", "afew_va"}
    assert all(Path(p).is_absolute() for p in meta["roots"].values())
    assert meta["version"] == 1
    frames = meta["summary"]["frames"]
    assert frames["affwild2"]["train"]["both_rows"] == 4 + 1  # video59_right 2,3,4,7 + video2_left frame 2
    assert frames["expw"]["train"]["rows"] == 4
    assert frames["afew_va"]["train"]["va_rows"] == 3
    assert frames["affectnet"]["train"]["expression"]["Happiness"] == 1
    cross = meta["summary"]["cross_split"]
    assert cross["expr_train_va_validation"] == ["10-60-1280x720"]
    assert cross["va_train_expr_validation"] == []
    assert cross["shared_tracks"] == {"train": 2, "validation": 0}
    assert meta["summary"]["skipped"]["affectnet"]["no_usable_label"] == 1
    # (database, split, track, frame, image) identifies a row
    assert not index.duplicated(["database", "split", "track", "frame", "image"]).any()
    text = format_summary(meta["summary"])
    assert "10-60-1280x720" in text and "expr_label_without_image" in text
    json.dumps(meta)


def test_cross_split_exclude_train(roots):
    index, meta = build_index(roots, cross_split="exclude-train")
    aw = index[index["database"] == "affwild2"]
    assert not ((aw["track"] == "10-60-1280x720") & (aw["split"] == "train")).any()
    assert ((aw["track"] == "10-60-1280x720") & (aw["split"] == "validation")).sum() == 1
    assert meta["summary"]["cross_split"]["removed_train_rows"] == 2
    with pytest.raises(UserError):
        build_index(roots, cross_split="drop")


def test_parquet_round_trip(roots, tmp_path):
    index, meta = build_index(roots)
    path = tmp_path / "index.parquet"
    write_index(index, meta, path)
    back, meta2 = read_index(path)
    assert meta2 == json.loads(json.dumps(meta))
    assert [str(back[c].dtype) for c in COLUMNS] == list(COLUMNS.values())
    pd.testing.assert_frame_equal(back.drop(columns="landmarks"), index.drop(columns="landmarks"))
    for a, b in zip(index["landmarks"], back["landmarks"]):
        assert (a is None and b is None) or np.array_equal(
            np.asarray(a, np.float32), np.asarray(b, np.float32)
        )
    with pytest.raises(InputFormatError):
        (tmp_path / "bad.parquet").write_bytes(b"not parquet")
        read_index(tmp_path / "bad.parquet")


def test_lenient_counts_and_strict_raises(roots):
    expw_file = roots["expw"] / "label/label.lst"
    expw_file.write_text(expw_file.read_text() + "broken line\n")
    with pytest.raises(InputFormatError) as err:
        build_index(roots)
    assert err.value.path == str(expw_file) and err.value.line == 5
    _, meta = build_index(roots, lenient=True)
    assert meta["summary"]["skipped"]["expw"]["malformed_line"] == 1
    assert meta["summary"]["skip_examples"]["expw"]["malformed_line"][0].startswith(str(expw_file) + ":5")


def test_unknown_or_missing_root(tmp_path):
    with pytest.raises(UserError, match="unknown database"):
        build_index({"fer2013": tmp_path})
    with pytest.raises(UserError, match="not a folder"):
        build_index({"expw": tmp_path / "nope"})
    with pytest.raises(UserError, match="no database"):
        build_index({})


def test_generic_in_index(roots, tmp_path):
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "a.jpg").write_bytes(b"x")
    (tmp_path / "g" / "faces.csv").write_text("image,expression\na.jpg,Surprise\n")
    index, meta = build_index({}, generic=[("mine", tmp_path / "g" / "faces.csv")])
    assert index["database"].tolist() == ["mine"] and index["expression"].tolist() == [6]
    assert meta["roots"]["mine"] == str((tmp_path / "g").resolve())
    with pytest.raises(UserError):
        build_index({}, generic=[("expw", tmp_path / "g" / "faces.csv")])


def test_cli_index(roots, tmp_path, capsys):
    out = tmp_path / "idx.parquet"
    args = ["index", "--affwild2", str(roots["affwild2"]), "--expw", str(roots["expw"]), "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "frames per database / split / label" in printed and "leakage report" in printed
    index, meta = read_index(out)
    assert set(index["database"]) == {"affwild2", "expw"}
    assert main(args) == 2  # refuses to overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert (
        main(
            [
                *args,
                "--overwrite",
                "--cross-split",
                "exclude-train",
                "--summary-json",
                str(tmp_path / "s.json"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "s.json").read_text())["cross_split"]["policy"] == "exclude-train"


def test_cross_task_test_overlap_reported(tmp_path):
    root = fx.affwild2_video59(tmp_path / "aw")
    fx.write(root / "test_set_VA_Challenge.txt", "video59_right\nnever_seen\n")
    index, meta = build_index({"affwild2": root})
    assert meta["summary"]["test_overlap"]["test_set_VA_Challenge.txt"] == ["video59_right"]
    test_rows = index[(index["split"] == "test") & (index["track"] == "video59_right")]
    assert len(test_rows) == 6 and test_rows["expression"].isna().all()
    assert meta["summary"]["skipped"]["affwild2"]["track_without_image_folder"] == 1
    assert "also have train/validation labels" in format_summary(meta["summary"])
