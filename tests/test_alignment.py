"""Issue 19, item 2: positional files keep their alignment; the bulk and per-row number paths agree.

Aff-Wild2's per-track files and ABAW2 submissions are positional (data row r is frame r + 1), so
damage that adds or removes a row must never move a later frame's label: it is a malformed line at
its true number (strict), and in lenient mode the frame is dropped, or the rows from the damage on
when they may have moved, counted (docs/data.md, "Line ends and alignment").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtaffect.data.index import build_index
from mtaffect.data.numbers import bulk_numbers
from mtaffect.data.sources import abaw_text
from mtaffect.data.sources.affwild2 import list_frames
from mtaffect.errors import InputFormatError
from mtaffect.predict.submission import validate_submission

EXPR_HEADER = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise"


def _track(root: Path, task: str, data: bytes, frames: int) -> Path:
    path = root / f"{task}_Set" / "Train_Set" / "t1.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    images = root / "cropped_aligned" / "t1"
    images.mkdir(parents=True, exist_ok=True)
    for f in range(1, frames + 1):
        (images / f"{f:05d}.jpg").write_bytes(b"")
    return path


def _labels(index, column: str) -> dict[int, float]:  # noqa: ANN001 - the index DataFrame
    return {int(f): float(v) for f, v in zip(index["frame"], index[column]) if v == v}


@pytest.mark.parametrize("end", ["\n", "\r\n"])
def test_a_stray_cr_inside_a_line_costs_its_own_frame_only(tmp_path, end):
    rows = ["0.1,0.2", "0.3,\r0.4", "0.5,0.6", "0.7,0.8"]
    path = _track(tmp_path, "VA", ("valence,arousal" + end + end.join(rows) + end).encode(), 4)
    with pytest.raises(InputFormatError) as err:
        build_index({"affwild2": tmp_path})
    assert (err.value.path, err.value.line) == (str(path), 3)
    assert "carriage return inside the line" in str(err.value)
    index, meta = build_index({"affwild2": tmp_path}, lenient=True)
    assert _labels(index, "valence") == {1: 0.1, 3: 0.5, 4: 0.7}  # main: frame 4 got 0.5
    assert meta["summary"]["malformed"] == {"affwild2": 1}
    assert abaw_text.count_frame_rows(path) == 4


def test_a_lone_cr_file_is_read_and_a_stray_lf_in_it_is_damage(tmp_path):
    _track(tmp_path, "EXPR", f"{EXPR_HEADER}\r0\r1\r2\r3\r".encode(), 4)
    index, _ = build_index({"affwild2": tmp_path})
    assert _labels(index, "expression") == {1: 0, 2: 1, 3: 2, 4: 3}
    _track(tmp_path, "EXPR", f"{EXPR_HEADER}\r0\r-\n1\r2\r3\r".encode(), 4)
    with pytest.raises(InputFormatError, match=r"t1.txt:3: a line feed inside the line"):
        build_index({"affwild2": tmp_path})
    index, _ = build_index({"affwild2": tmp_path}, lenient=True)
    assert _labels(index, "expression") == {1: 0, 3: 2, 4: 3}


@pytest.mark.parametrize(
    ("body", "line", "kept", "unaligned"),
    [
        ("0\n1\n\n2\n3\n4\n", 4, {1: 0}, 4),  # an inserted blank line (main: frames 4, 5 moved)
        ("0\n1\n2\x00\x00\x003\n4\n", 4, {1: 0}, 2),  # a zeroed block over a line end
        ("0\n1\n0\n3\n4\n5\n", None, {1: 0, 2: 1, 3: 0, 4: 3, 5: 4, 6: 5}, 0),  # clean
        ("0\n1\n03\n4\n5\n6\n", 4, {1: 0}, 4),  # rows "0" and "3" joined (main: 03 read as 3)
        ("0\n1\n-\n1\n4\n5\n", 4, {1: 0}, 4),  # "-1" split in two (main: frames 4.. moved)
        ("0\n1\nhappy\n4\n5\n6\n", 4, {1: 0, 2: 1, 4: 4, 5: 5, 6: 6}, 0),  # a word stays in place
    ],
)
def test_damage_that_may_move_rows_drops_the_rest_never_shifts_it(tmp_path, body, line, kept, unaligned):
    """The first refused row that may be a piece of a split or joined row ends the trusted rows one
    row early (the row before may be the other piece); the dropped rows are counted."""
    path = _track(tmp_path, "EXPR", f"{EXPR_HEADER}\n{body}".encode(), 6)
    if line is not None:
        with pytest.raises(InputFormatError) as err:
            build_index({"affwild2": tmp_path})
        assert (err.value.path, err.value.line) == (str(path), line)
    index, meta = build_index({"affwild2": tmp_path}, lenient=True)
    assert _labels(index, "expression") == kept
    assert meta["summary"]["skipped"].get("affwild2", {}).get("unaligned_rows", 0) == unaligned


@pytest.mark.parametrize("header", ["valence,arousal", "Valence, Arousal"])
def test_a_repeated_header_mid_file_drops_the_rest_never_shifts_it(tmp_path, header):
    """Two VA files concatenated: the second header is an inserted row, so the rows after it may
    label the wrong frames (main: 0.3 labelled frame 4, uncounted)."""
    path = _track(tmp_path, "VA", f"valence,arousal\n0.1,0.1\n0.2,0.2\n{header}\n0.3,0.3\n0.4,0.4\n"
                  .encode(), 5)
    with pytest.raises(InputFormatError) as err:
        build_index({"affwild2": tmp_path})
    assert (err.value.path, err.value.line) == (str(path), 4)
    index, meta = build_index({"affwild2": tmp_path}, lenient=True)
    assert _labels(index, "valence") == {1: 0.1}  # frame 2 may be the first piece of a split row
    assert meta["summary"]["skipped"]["affwild2"]["unaligned_rows"] == 3


@pytest.mark.parametrize("lenient", [False, True])
def test_a_plus_sign_parses_as_the_number_in_bulk_and_per_row(tmp_path, lenient):
    _track(tmp_path, "EXPR", f"{EXPR_HEADER}\n0\n+3\n4\n".encode(), 3)
    index, _ = build_index({"affwild2": tmp_path}, lenient=lenient)  # main: pyarrow ArrowInvalid
    assert _labels(index, "expression") == {1: 0, 2: 3, 3: 4}
    _track(tmp_path, "EXPR", f"{EXPR_HEADER}\n0\n+3\n4\nx\n".encode(), 3)  # the per-row path
    index, _ = build_index({"affwild2": tmp_path}, lenient=True)
    assert _labels(index, "expression") == {1: 0, 2: 3, 3: 4}


TEXTS = ["3", "+3", "-3", " +3 ", "03", "+0", "-0", "0", "1e2", "3.", ".5", "+.5", "5e-1", "+1E+2", "1e400",
         "nan", "+-1", " ", "9" * 18, "9" * 19, "\u0663", "0x1"]


@pytest.mark.parametrize("integer", [True, False])
def test_the_bulk_and_the_per_row_paths_accept_the_same_text(integer):
    fmt = abaw_text.EXPR_ROWS if integer else abaw_text.RowFormat(1, False, ("value",))
    for text in TEXTS:
        try:
            want = fmt.parse(text)[0]
        except ValueError:
            want = None
        got = bulk_numbers(text.encode(), 1, integer, leading_zeros=not integer)
        assert (None if got is None else got[0, 0]) == want, text


@settings(max_examples=150, derandomize=True, deadline=None, database=None)
@given(st.text(alphabet="0123456789+-.eE ,\tx\ufeff\u00a0\u2028\u3000\x1f", min_size=1, max_size=9),
       st.integers(1, 2), st.booleans())
def test_bulk_and_per_row_agree_on_any_number_like_row(text, columns, integer):
    # non-ASCII whitespace (U+00A0, U+2028, U+3000) and U+FEFF, which pyarrow drops at the start of a
    # body as a byte-order mark although it is no whitespace to str.strip
    fmt = abaw_text.RowFormat(columns, integer, ("a", "b")[:columns])
    try:
        want = fmt.parse(text)
    except ValueError:
        want = None
    got = bulk_numbers(text.encode(), columns, integer, leading_zeros=not integer)
    assert (None if got is None else tuple(got[0].tolist())) == want


@pytest.mark.parametrize("lenient", [False, True])
def test_a_bom_after_the_header_is_refused_in_bulk_as_per_row(tmp_path, lenient):
    assert bulk_numbers(b"\xef\xbb\xbf3\n4", 1, True) is None  # main: [3, 4], parse_number refuses
    path = _track(tmp_path, "EXPR", f"\ufeff{EXPR_HEADER}\n\ufeff3\n4\n".encode(), 2)  # the file's BOM
    if not lenient:
        with pytest.raises(InputFormatError) as err:
            build_index({"affwild2": tmp_path})
        assert (err.value.path, err.value.line) == (str(path), 2)
    else:
        index, meta = build_index({"affwild2": tmp_path}, lenient=True)
        assert _labels(index, "expression") == {2: 4} and meta["summary"]["malformed"] == {"affwild2": 1}
    _track(tmp_path, "EXPR", f"\ufeff{EXPR_HEADER}\n3\n4\n".encode(), 2)  # the file's BOM alone: read
    assert _labels(build_index({"affwild2": tmp_path}, lenient=lenient)[0], "expression") == {1: 3, 2: 4}


def test_the_submission_validator_counts_lines_by_the_files_line_end(tmp_path):
    folder = tmp_path / "VA_Set"
    folder.mkdir()
    path = folder / "t1.txt"
    path.write_bytes(b"valence,arousal\r\n0.1,0.2\r\n0.3,\r0.4\r\n0.5,0.6\r\n")
    problems = validate_submission(folder, "VA", frame_counts={"t1": 3})
    assert problems == [f"{path}:3: a carriage return inside the line (the file's lines end with CRLF)"]
    flat = tmp_path / "flat.txt"  # the single-file layout: a form feed is no line end, a stray CR is damage
    flat.write_bytes(b"image_location,valence,arousal\nt1/00001.jpg,0.1,\x0c0.2\nt1/00002.jpg,0.3,\r0.4\nt1/x.jpg,0,0\n")
    problems = validate_submission(flat, "VA")
    assert [p.split(":")[1] for p in problems] == ["3", "4"]
    assert "carriage return" in problems[0] and "image_location" in problems[1]


def test_aligned_rows_names_where_trust_ends():
    track = abaw_text.TrackFile(EXPR_HEADER, b"0\n1\nzz\n2\n\n3")
    refused = np.array([False, False, True, False, True, False])
    assert abaw_text.aligned_rows(track, refused, abaw_text.EXPR_ROWS, lambda t: t.strip() in "0123") == 3


def test_an_image_number_beyond_int64_is_an_ignored_entry_not_a_pyarrow_error(tmp_path):
    for name in ("00001.jpg", "9" * 20 + ".jpg", "9" * 18 + ".jpg"):
        (tmp_path / name).write_bytes(b"")
    frames, names, ignored = list_frames(tmp_path)  # main: ArrowInvalid from pyarrow's cast
    assert frames.tolist() == [1, int("9" * 18)] and ignored == 1
