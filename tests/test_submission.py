"""ABAW submission writers and validator on hand-made prediction tables."""

from __future__ import annotations

import numpy as np
import pytest

from mtaffect.cli import main
from mtaffect.errors import UserError
from mtaffect.labels import EXPRESSIONS
from mtaffect.predict import submission as sub
from support import prediction_table


def test_fill_nearest_tie_goes_to_the_earlier_frame() -> None:
    frames = np.array([2, 6, 7])
    values = np.array([20, 60, 70])
    assert sub.fill_nearest(frames, values, 10).tolist() == [20, 20, 20, 20, 20, 60, 60, 70, 70, 70]
    with pytest.raises(ValueError):
        sub.fill_nearest(np.zeros(0, int), np.zeros(0), 3)


def test_abaw2_files(tmp_path) -> None:
    tables = {
        "video1": prediction_table("video1", [1, 2, 3, 7], n_video=10),  # raw-video table: N = 10 from it
        "video2_left": prediction_table("video2_left", [0, 1, 2]),  # cropped table: N from elsewhere
    }
    inputs = sub.SubmissionInputs(tables, frame_counts={"video2_left": 5})
    folder = sub.write_abaw2(["video1", "video2_left"], inputs, "EXPR", tmp_path)
    lines = (folder / "video1.txt").read_text().splitlines()
    assert folder.name == "EXPR_Set" and lines[0] == ",".join(EXPRESSIONS) and len(lines) == 11
    expr = tables["video1"].set_index("frame")["expression_index"]
    assert lines[1:] == [str(expr[f]) for f in (1, 1, 2, 3, 3, 3, 7, 7, 7, 7)]
    va = sub.write_abaw2(["video2_left"], inputs, "VA", tmp_path)
    va_lines = (va / "video2_left.txt").read_text().splitlines()
    assert va_lines[0] == "valence,arousal" and len(va_lines) == 6
    v, a = (float(x) for x in va_lines[-1].split(","))
    assert v == pytest.approx(float(tables["video2_left"]["valence"].iloc[-1]), abs=5e-5)
    assert sub.validate_submission(va, "VA", test_list=["video2_left"], frame_counts={"video2_left": 5}) == []


def test_frame_count_sources_and_errors(tmp_path) -> None:
    ann = tmp_path / "annotations" / "VA_Set" / "Validation_Set"
    ann.mkdir(parents=True)
    (ann / "clip.txt").write_text("valence,arousal\n" + "0.1,0.2\n" * 7)
    inputs = sub.SubmissionInputs(
        {"clip": prediction_table("clip", [0, 3, 9])}, annotations=tmp_path / "annotations"
    )
    killed = tmp_path / "out" / "VA_Set"  # an earlier run killed inside a write left its temporary file
    killed.mkdir(parents=True)
    (killed / ".clip.txt.k1ll3d.tmp").write_text("valence,arousal\n0.1")
    (tmp_path / "out" / ".VA.txt.k1ll3d.tmp").write_text("half")
    (tmp_path / "out" / ".mine.txt.k1ll3d.tmp").write_text("not ours")
    folder = sub.write_abaw2(["clip"], inputs, "VA", tmp_path / "out")
    assert [p.name for p in folder.iterdir()] == ["clip.txt"]  # the rerun leaves only whole files
    sub.write_abaw5(["clip"], inputs, "VA", tmp_path / "out" / "VA.txt")
    assert sorted(p.name for p in (tmp_path / "out").glob(".*")) == [".mine.txt.k1ll3d.tmp"]
    assert len((folder / "clip.txt").read_text().splitlines()) == 8
    assert "extra ones dropped" in inputs.warnings[0]  # frame 9 is beyond the 7 annotated frames
    with pytest.raises(UserError, match="unknown frame count"):
        one_frame = sub.SubmissionInputs({"clip": prediction_table("clip", [0])})
        sub.write_abaw2(["clip"], one_frame, "VA", tmp_path / "x")
    with pytest.raises(UserError, match="no prediction table"):
        sub.write_abaw2(["other"], inputs, "VA", tmp_path / "x")


def test_two_people_of_one_video_map_to_left_and_right(tmp_path) -> None:
    frames = np.repeat(np.arange(6), 2)
    table = prediction_table("v", frames, n_video=6, tracks=np.tile([0, 1], 6), x0=np.tile([400.0, 20.0], 6))
    inputs = sub.SubmissionInputs({"v": table})
    folder = sub.write_abaw2(["v_left", "v_right"], inputs, "VA", tmp_path)
    left = (folder / "v_left.txt").read_text().splitlines()[1:]
    person1 = table[table["track_id"] == 1]["valence"].to_numpy(float)
    assert [float(x.split(",")[0]) for x in left] == pytest.approx(person1, abs=5e-5)


def test_abaw5_follows_the_example_file(tmp_path) -> None:
    example = tmp_path / "example.txt"
    example.write_text("image_location,valence,arousal\nb/00002.jpg,0,0\nb/00001.jpg,0,0\na/00003.jpg,0,0\n")
    inputs = sub.SubmissionInputs({"a": prediction_table("a", [0, 1]), "b": prediction_table("b", [1])})
    out = sub.write_abaw5(["a", "b"], inputs, "VA", tmp_path / "sub.txt", example=example)
    rows = out.read_text().splitlines()
    assert rows[0] == "image_location,valence,arousal"
    assert [r.split(",")[0] for r in rows[1:]] == ["b/00002.jpg", "b/00001.jpg", "a/00003.jpg"]
    assert sub.validate_submission(out, "VA", test_list=["a", "b"], example=example) == []


def test_validator_reports_every_problem_with_file_and_line(tmp_path) -> None:
    folder = tmp_path / "EXPR_Set"
    folder.mkdir()
    (folder / "t1.txt").write_text("Neutral,Happiness\n0\n9\nx\n")
    (folder / "extra.txt").write_text(",".join(EXPRESSIONS) + "\n1\n")
    problems = sub.validate_submission(folder, "EXPR", test_list=["t1", "t2"], frame_counts={"t1": 2})
    text = "\n".join(problems)
    assert f"{folder / 't1.txt'}:1: header" in text
    assert f"{folder / 't1.txt'}:3: class 9" in text
    assert f"{folder / 't1.txt'}:4: expected one integer" in text
    assert "3 frame lines, expected 2" in text
    assert "missing t2.txt" in text and "extra.txt: track not in the test list" in text
    flat = tmp_path / "flat.txt"
    flat.write_text("image_location,valence,arousal\nt1/00001.jpg,0.5,1.5\nt1/1.png,0,0\n")
    problems = sub.validate_submission(flat, "VA", test_list=["t1"])
    assert any(":2: values outside" in p for p in problems) and any(
        ":3: image_location" in p for p in problems
    )


def test_cli_submit_and_validate(tmp_path, capsys) -> None:
    preds = tmp_path / "preds" / "vid"
    preds.mkdir(parents=True)
    prediction_table("vid", [0, 4], n_video=6).to_parquet(preds / "predictions.parquet")
    (tmp_path / "test.txt").write_text("\ufeffvid\n\n")
    out = tmp_path / "sub"
    args = [
        "submit",
        "--predictions",
        str(tmp_path / "preds"),
        "--task",
        "va",
        "--test-list",
        str(tmp_path / "test.txt"),
    ]
    assert main(args + ["--out", str(out)]) == 0
    assert len((out / "VA_Set" / "vid.txt").read_text().splitlines()) == 7
    assert (
        main(
            [
                "submit",
                "--validate",
                str(out / "VA_Set"),
                "--task",
                "VA",
                "--test-list",
                str(tmp_path / "test.txt"),
            ]
        )
        == 0
    )
    (out / "VA_Set" / "vid.txt").write_text("valence,arousal\n2,0\n")
    assert main(["submit", "--validate", str(out / "VA_Set"), "--task", "VA"]) == 1
    assert "vid.txt:2: values outside" in capsys.readouterr().out
    assert main(["submit", "--task", "VA"]) == 2  # nothing to write or validate: a clear error


@pytest.mark.parametrize("layout", ["abaw2", "abaw5"])
def test_cropped_tables_without_frame_counts_write_nothing_and_name_every_track(tmp_path, layout) -> None:
    tables = {
        "a_left": prediction_table("a_left", [0, 1, 2]),
        "b": prediction_table("b", [0, 4]),
        "c": prediction_table("c", [1, 2]),
    }
    inputs = sub.SubmissionInputs(tables, frame_counts={"c": 4})  # only c's frame count is known
    with pytest.raises(UserError) as err:
        if layout == "abaw2":
            sub.write_abaw2(["a_left", "b", "c"], inputs, "VA", tmp_path / "out")
        else:
            sub.write_abaw5(["a_left", "b", "c"], inputs, "VA", tmp_path / "out" / "VA.txt")
    message = str(err.value)
    assert "2 of 3 tracks" in message and "a_left" in message and "b:" in message
    assert "--frame-counts" in message and "--videos" in message
    assert not (tmp_path / "out").exists()  # no empty VA_Set folder, no partial file


def test_reader_and_validator_share_the_per_track_format(tmp_path) -> None:
    """One parser: a bad row gets the same file:line message from the Aff-Wild2 reader (strict) and the
    submission validator; the validator adds the submission's own rules (no -1, no BOM)."""
    from mtaffect.data.records import Skips
    from mtaffect.data.sources.affwild2 import parse_expr_file, parse_va_file
    from mtaffect.errors import InputFormatError

    folder = tmp_path / "EXPR_Set"
    folder.mkdir()
    expr = folder / "t1.txt"
    expr.write_bytes((",".join(EXPRESSIONS) + "\r\n0\r\n-1\r\nx\r\n").encode())
    with pytest.raises(InputFormatError) as err:
        parse_expr_file(expr, Skips())
    problems = sub.validate_submission(folder, "EXPR")
    assert problems == [f"{expr}:3: class -1 outside 0..6", str(err.value)]  # line order
    assert str(err.value).startswith(f"{expr}:4: expected one integer")

    va_folder = tmp_path / "VA_Set"
    va_folder.mkdir()
    va = va_folder / "t1.txt"
    va.write_bytes(b"\xef\xbb\xbfvalence,arousal\n0.5,nan\n-5,-5\n0.1,0.2\n\n")
    with pytest.raises(InputFormatError) as err:
        parse_va_file(va, Skips())
    problems = sub.validate_submission(va_folder, "VA", frame_counts={"t1": 3})
    assert problems == [
        f"{va}:1: starts with a UTF-8 byte-order mark",
        str(err.value),
        f"{va}:3: values outside [-1, 1]: '-5,-5'",
    ]
    assert str(err.value).startswith(f"{va}:2: arousal 'nan'")


def test_submit_reads_test_lists_with_the_data_layers_reader(tmp_path, capsys) -> None:
    """Duplicates are dropped (a track is written once), a path is not a track name, an empty list is
    refused; each error names the file (and line)."""
    preds = tmp_path / "preds" / "vid"
    preds.mkdir(parents=True)
    prediction_table("vid", [0, 4], n_video=6).to_parquet(preds / "predictions.parquet")
    test_list = tmp_path / "test.txt"
    base = ["submit", "--predictions", str(tmp_path / "preds"), "--task", "EXPR", "--format", "abaw5"]
    test_list.write_text("vid\r\nvid\r\n")
    assert main(base + ["--test-list", str(test_list), "--out", str(tmp_path / "out")]) == 0
    assert len((tmp_path / "out" / "EXPR_predictions.txt").read_text().splitlines()) == 7  # not 13
    test_list.write_text("vid\n../vid\n")
    assert main(base + ["--test-list", str(test_list), "--out", str(tmp_path / "x")]) == 2
    assert f"{test_list}:2: '../vid' is not a track name" in capsys.readouterr().err
    test_list.write_text("\n \n")
    assert main(base + ["--test-list", str(test_list), "--out", str(tmp_path / "x")]) == 2
    assert f"{test_list}: test list is empty" in capsys.readouterr().err


def test_frame_count_from_videos_of_any_known_container(tmp_path, monkeypatch) -> None:
    """The video search uses predict.media's extension list (case-insensitive), exact stems only."""
    videos = tmp_path / "videos"
    (videos / "batch").mkdir(parents=True)
    (videos / "batch" / "clip.MKV").write_bytes(b"")
    (videos / "clip.part.mp4").write_bytes(b"")
    (videos / "clip.txt").write_bytes(b"")
    decoded = []
    monkeypatch.setattr("mtaffect.predict.media.count_frames", lambda path: decoded.append(path) or 4)
    inputs = sub.SubmissionInputs({"clip": prediction_table("clip", [0, 2])}, videos=videos)
    folder = sub.write_abaw2(["clip_left"], inputs, "VA", tmp_path / "out")
    assert len((folder / "clip_left.txt").read_text().splitlines()) == 5
    assert decoded == [videos / "batch" / "clip.MKV"]
