"""Issue 12, items 1-3 and 5: the exact inputs of the report, in strict and lenient mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtaffect.data.index import build_index, format_summary
from mtaffect.data.numbers import NumberError, json_number, parse_column, parse_number
from mtaffect.errors import InputFormatError

EXPR_HEADER = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise"


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


@pytest.mark.parametrize(
    ("text", "integer", "value"),
    [("0.25", False, 0.25), ("-.5", False, -0.5), ("+1e-1", False, 0.1), (" 3 ", True, 3), ("-1", True, -1)],
)
def test_parse_number_accepts_decimal_text(text, integer, value):
    assert parse_number(text, integer=integer) == value


@pytest.mark.parametrize(
    ("text", "integer"),
    [
        *[(text, False) for text in ("Infinity", "nan", "1e400", "1_0", "\u0663", "0\x00")],
        *[(text, True) for text in ("99999999999999999999", "1e19", "inf", "9223372036854775808", "3.0")],
    ],
)
def test_parse_number_refuses_what_float_and_int_would_take(text, integer):
    with pytest.raises(NumberError):
        parse_number(text, integer=integer)


def test_parse_column_and_json_number_follow_the_same_rules():
    values, errors = parse_column(["1", "1e19", "9223372036854775808", "7"], integer=True)
    assert values[0] == 1 and values[3] == 7 and sorted(errors) == [1, 2]
    for bad in (True, False, "0.3", None, float("nan"), float("inf"), [1], 10**400):
        with pytest.raises(NumberError):
            json_number(bad)
    assert json_number(3) == 3.0


def _affwild2(root: Path, va: bytes | None = None, expr: bytes | None = None, frames: int = 3) -> Path:
    for f in range(1, frames + 1):
        _write(root / "cropped_aligned" / "t1" / f"{f:05d}.jpg", b"")
    if va is not None:
        _write(root / "VA_Set" / "Train_Set" / "t1.txt", va)
    if expr is not None:
        _write(root / "EXPR_Set" / "Train_Set" / "t1.txt", expr)
    return root


@pytest.mark.parametrize("bad", ["Infinity,0.2756", "-0.25,nan", "0.1,-inf", "1e400,0.2"])
def test_a_non_finite_va_label_is_an_error_never_a_label(tmp_path, bad):
    root = _affwild2(tmp_path, va=f"valence,arousal\n0.5,0.25\n{bad}\n0.1,0.2\n".encode())
    with pytest.raises(InputFormatError) as err:
        build_index({"affwild2": root})
    assert err.value.line == 3 and err.value.path.endswith("t1.txt") and "\n" not in str(err.value)
    index, meta = build_index({"affwild2": root}, lenient=True)
    assert sorted(index["frame"].tolist()) == [1, 3]  # never half a label, never inf
    assert index["valence"].notna().all() and index["arousal"].notna().all()
    assert meta["summary"]["malformed"] == {"affwild2": 1}
    assert meta["summary"]["frames"]["affwild2"]["train"]["va_rows"] == 2


def test_an_overflowing_expr_code_is_a_one_line_error(tmp_path):
    root = _affwild2(tmp_path, expr=f"{EXPR_HEADER}\n0\n99999999999999999999\n4\n".encode())
    with pytest.raises(InputFormatError, match="t1.txt:3"):
        build_index({"affwild2": root})
    index, meta = build_index({"affwild2": root}, lenient=True)
    assert dict(zip(index["frame"], index["expression"])) == {1: 0, 3: 4}
    assert "malformed lines skipped (--lenient): affwild2 1" in format_summary(meta["summary"])


def test_a_lone_cr_ends_a_line_and_form_feeds_do_not(tmp_path):
    root = _affwild2(tmp_path / "aw", expr=f"{EXPR_HEADER}\r0\r1\rX\r".encode())
    with pytest.raises(InputFormatError) as err:
        build_index({"affwild2": root})
    assert err.value.line == 4
    csv = _write(tmp_path / "mine" / "mine.csv", "image,expression\na.jpg,1\x0c\nb.jpg,zz\n")
    _write(tmp_path / "mine" / "a.jpg", b"")
    with pytest.raises(InputFormatError) as err:
        build_index({}, generic=[csv])
    assert err.value.line == 3 and "zz" in str(err.value)


@pytest.mark.parametrize("face", ["1e19", "inf", "9223372036854775808", "1.0"])
def test_expw_face_ids_never_collapse(tmp_path, face):
    _write(tmp_path / "image" / "origin" / "p.jpg", b"")
    lines = [
        "p.jpg 0 10 20 90 80 33.5 3",
        f"p.jpg {face} 10 20 90 80 33.5 4",
        "p.jpg 9223372036854775 10 20 90 80 1 0",
    ]
    _write(tmp_path / "label" / "label.lst", "\n".join(lines) + "\n")
    with pytest.raises(InputFormatError, match="label.lst:2: face id"):
        build_index({"expw": tmp_path})
    index, meta = build_index({"expw": tmp_path}, lenient=True)
    assert sorted(index["track"]) == ["p.jpg#0", "p.jpg#9223372036854775"]
    assert "conflicting_duplicate_face" not in meta["summary"]["skipped"]["expw"]


def _afew(root: Path, frames_json: str) -> Path:
    _write(root / "001" / "001.json", '{"actor": "A", "frames": {' + frames_json + "}}")
    for key in ("00000", "00001", "00002"):
        _write(root / "001" / f"{key}.png", b"")
    return root


@pytest.mark.parametrize("value", ["true", '"3"', "null", "NaN", "1e400", "[1]"])
def test_afew_va_refuses_booleans_strings_and_non_finite_values(tmp_path, value):
    frames = f'"00000": {{"valence": {value}, "arousal": 2}}, "00001": {{"valence": 3, "arousal": 1}}'
    root = _afew(tmp_path, frames)
    with pytest.raises(InputFormatError, match="001.json"):
        build_index({"afew_va": root})
    index, meta = build_index({"afew_va": root}, lenient=True)
    assert index["frame"].tolist() == [1] and index["valence"].tolist() == [0.3]
    assert meta["summary"]["skipped"]["afew_va"]["bad_frame_entry"] == 1


def test_afew_va_frame_key_twice_is_a_conflict_or_a_counted_duplicate(tmp_path):
    entry = '{"valence": 3, "arousal": 1}'
    frames = f'"00000": {entry}, "00000": {{"valence": 5, "arousal": 1}}, "00001": {entry}, "00001": {entry}'
    root = _afew(tmp_path, frames)
    with pytest.raises(InputFormatError, match="'00000' is given twice with different values"):
        build_index({"afew_va": root})
    index, meta = build_index({"afew_va": root}, lenient=True)
    assert index["frame"].tolist() == [1]  # the conflicting frame is dropped, not last-wins (0.5)
    skipped = meta["summary"]["skipped"]["afew_va"]
    assert skipped["conflicting_duplicate_frame"] == 1 and skipped["duplicate_frame_key"] == 1


def test_a_nul_byte_in_an_affectnet_path_is_a_one_line_error(tmp_path):
    lnd = ";".join(["1.5"] * 136)
    lists = tmp_path / "Manually_Annotated_file_lists"
    rows = [f"1/a.jpg,1,2,50,50,{lnd},1,0.5,0.25", f"1/b\x00.jpg,1,2,50,50,{lnd},1,0.5,0.25"]
    _write(lists / "training.csv", "\n".join(rows) + "\n")
    _write(tmp_path / "Manually_Annotated_Images" / "1" / "a.jpg", b"")
    with pytest.raises(InputFormatError, match="training.csv:2: image path"):
        build_index({"affectnet": tmp_path})
    index, meta = build_index({"affectnet": tmp_path}, lenient=True)
    assert index["track"].tolist() == ["1/a.jpg"]
    assert meta["summary"]["skipped"]["affectnet"]["bad_path"] == 1


def test_mtl_repeats_are_counted_and_conflicts_never_kept(tmp_path):
    _affwild2(tmp_path)
    aus = ",0" * 12
    rows = [f"t1/00001.jpg,0.5,0.5,1{aus}", f"t1/00001.jpg,0.5,0.5,1{aus}", f"t1/00002.jpg,0.5,0.5,2{aus}",
            f"t1/00002.jpg,0.1,0.5,2{aus}", f"t1/00003.jpg,nan,0.5,2{aus}"]
    _write(tmp_path / "training_set_annotations.txt", "image,valence,arousal,expression\n" + "\n".join(rows))
    with pytest.raises(InputFormatError):
        build_index({"affwild2": tmp_path})
    index, meta = build_index({"affwild2": tmp_path}, lenient=True)
    assert index["frame"].tolist() == [1]
    skipped = meta["summary"]["skipped"]["affwild2"]
    assert skipped["duplicate_line"] == 1 and skipped["conflicting_duplicate"] == 1


def test_an_index_summary_json_round_trips(tmp_path):
    root = _affwild2(tmp_path, va=b"valence,arousal\n0.5,0.25\n")
    _, meta = build_index({"affwild2": root})
    assert json.loads(json.dumps(meta["summary"]))["malformed"] == {}


def test_affectnet_npy_values_follow_the_number_rules(tmp_path):
    import numpy as np

    ann = tmp_path / "train_set" / "annotations"
    ann.mkdir(parents=True)
    (tmp_path / "train_set" / "images").mkdir()
    for ident, (exp, val) in {"1": ("3", "0.5"), "2": ("inf", "0.5"), "3": (np.bool_(True), "0.1"),
                              "4": ("2", "nan")}.items():
        np.save(ann / f"{ident}_exp.npy", np.array(exp))
        np.save(ann / f"{ident}_val.npy", np.array(val))
        np.save(ann / f"{ident}_aro.npy", np.array("0.25"))
        (tmp_path / "train_set" / "images" / f"{ident}.jpg").write_bytes(b"")
    (ann / "1_lnd.npy").write_bytes(b"not a numpy file")
    with pytest.raises(InputFormatError, match="_\\*.npy"):
        build_index({"affectnet": tmp_path})
    index, meta = build_index({"affectnet": tmp_path}, lenient=True)
    assert index["track"].tolist() == ["1"] and index["landmarks"].tolist() == [None]
    skipped = meta["summary"]["skipped"]["affectnet"]
    assert skipped["bad_annotation_file"] == 3 and skipped["bad_landmarks"] == 1
