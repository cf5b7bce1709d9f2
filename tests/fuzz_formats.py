"""Mutated native annotation files and, for each, what a correct reader must do (issue 12).

Each ``gen_<format>(draw)`` builds one small database in its native layout (DATASETS.md) the way
users' files go wrong — non-finite or overflowing numbers, booleans and strings, duplicates, NUL
bytes, CR/CRLF/BOM, truncated lines, extra columns, empty files — and returns a :class:`Case`
whose expectation is computed HERE, from the generator's own knowledge of what it wrote (which
rows are good and their labels, which are malformed), never by calling a reader:

* ``expected``: the labels the index must hold, ``{key: (expression, valence, arousal)}``;
* ``malformed``: the lines (or AFEW-VA frame keys) that break the format: strict mode must stop
  with a one-line error naming the file and one of these lines; lenient mode must count exactly
  this many malformed skips and keep every good row.

The oracles encode the rules of docs/data.md and DATASETS.md: numbers in ASCII decimal, finite,
integers (codes, face ids) written without point or exponent and within 18 digits; in the
positional Aff-Wild2 files, the rows from just before a refused row that may be a piece of a split
or joined row on lose their labels (tests/fuzz_lines.py, which also damages whole lines).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from fuzz_lines import expr_ok, first_unaligned, va_ok

# -- numbers as users write them ---------------------------------------------------------------

BAD_NUMBERS = [
    "nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1e999", "abc", "0x10", "1_0", "\u0663",
    "0\x00", '"0.5"', "--1", "1e", ".", "true", "1,5",
]
"""Text that is never a number: non-finite, overflow to inf, words, NUL, quotes, extra fields."""
BAD_INTEGERS = BAD_NUMBERS + [
    "99999999999999999999", "1e19", "9223372036854775808", "-9223372036854775809", "3.0", "1e2", "2.5",
]
"""Where an integer is meant (codes, face ids), also: overflow, exponents and points."""


def float_text(draw: Any, value: float) -> str:
    """``value`` written in one of the ways annotation files write numbers."""
    style = draw(st.sampled_from(["plain", "fixed", "exp", "plus", "short"]))
    if style == "fixed":
        return f"{value:.4f}"
    if style == "exp":
        return f"{value:e}"
    if style == "plus":
        return f"+{value}" if value >= 0 else repr(value)
    if style == "short" and 0 < abs(value) < 1:
        return ("-" if value < 0 else "") + f"{abs(value):.3f}".lstrip("0")
    return repr(value)


VA = st.integers(-20, 20).map(lambda k: k / 20)  # exact in binary up to the text round-trip
OUT_OF_RANGE = st.sampled_from([1.5, -1.25, 3.0, -7.0])


@dataclass
class Case:
    """One mutated database and what the reader must make of it."""

    fmt: str
    files: dict[str, bytes]
    expected: dict[str, tuple[Any, Any, Any]]
    malformed: set[Any] = field(default_factory=set)
    error_file: str = ""
    """the annotation file an error must name (relative to the root)"""
    always_error: bool = False
    """an error in both modes (an empty generic CSV)"""
    key: str = "image"
    """index column that identifies a row: image (or track for ExpW)"""


def _lines_to_bytes(draw: Any, lines: list[str]) -> bytes:
    """Join with LF, CRLF or lone CR (one choice per file), maybe a BOM and a final line end."""
    end = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = end.join(lines) + (end if draw(st.booleans()) else "")
    bom = b"\xef\xbb\xbf" if draw(st.booleans()) else b""
    return bom + text.encode("utf-8")


def _trailing_blank(lines: list[str], first_data: int) -> int:
    """How many data lines (from the end) are blank: readers drop trailing blank lines."""
    n = 0
    for line in reversed(lines[first_data:]):
        if line.strip():
            break
        n += 1
    return n


# -- Aff-Wild2 per-track EXPR / VA files ------------------------------------------------------

EXPR_HEADER = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise"


def _affwild2_images(draw: Any, rows: int) -> tuple[dict[str, bytes], int]:
    n_images = draw(st.integers(max(0, rows - 2), rows + 2))
    files = {f"cropped_aligned/t1/{f:05d}.jpg": b"" for f in range(1, n_images + 1)}
    return files, n_images


def gen_affwild2_expr(draw: Any) -> Case:
    rows: list[tuple[str, Any]] = []  # (kind, payload)
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["good"] * 6 + ["bad", "range", "extra", "blank"]))
        if kind == "good":
            rows.append(("good", draw(st.integers(-1, 6))))
        elif kind == "bad":
            rows.append(("bad", draw(st.sampled_from(BAD_INTEGERS))))
        elif kind == "range":
            rows.append(("bad", str(draw(st.sampled_from([7, 8, -2, 100])))))
        elif kind == "extra":
            rows.append(("bad", f"{draw(st.integers(0, 6))},0"))
        else:
            rows.append(("bad", ""))
    wrong_header = draw(st.sampled_from(["", "valence,arousal", "0"]))
    header = EXPR_HEADER if draw(st.integers(0, 9)) != 5 else wrong_header  # 1 in 10: no EXPR header
    texts = [str(p) if k == "good" else p for k, p in rows]
    lines = [header, *texts]
    path = "EXPR_Set/Train_Set/t1.txt"
    files, n_images = _affwild2_images(draw, len(rows))
    files[path] = _lines_to_bytes(draw, lines)
    case = Case("affwild2_expr", files, {}, error_file=path)
    if header != EXPR_HEADER:
        case.malformed = {1}
        return case
    kept = len(rows) - _trailing_blank(lines, 1)
    refused = [kind != "good" for kind, _ in rows[:kept]]
    aligned = first_unaligned(texts[:kept], refused, 1, True, expr_ok)  # later rows may have moved
    for r, (kind, payload) in enumerate(rows[:kept]):
        if kind != "good":
            case.malformed.add(r + 2)
        elif payload >= 0 and r + 1 <= n_images and r < aligned:
            case.expected[f"cropped_aligned/t1/{r + 1:05d}.jpg"] = (payload, None, None)
    return case


def gen_affwild2_va(draw: Any) -> Case:
    rows: list[tuple[str, Any]] = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["good"] * 5 + ["sentinel", "half_sentinel", "range", "bad", "fields"]))
        if kind == "good":
            v, a = draw(VA), draw(VA)
            rows.append(("good", (v, a), f"{float_text(draw, v)},{float_text(draw, a)}"))
        elif kind == "sentinel":
            rows.append(("none", None, "-5,-5"))
        elif kind == "half_sentinel":
            rows.append(("none", None, f"-5,{float_text(draw, draw(VA))}"))
        elif kind == "range":
            rows.append(("none", None, f"{draw(OUT_OF_RANGE)},{float_text(draw, draw(VA))}"))
        elif kind == "bad":  # half a label (-0.25,nan) and every other non-number
            good = float_text(draw, draw(VA))
            bad = draw(st.sampled_from(BAD_NUMBERS))
            rows.append(("bad", None, f"{good},{bad}" if draw(st.booleans()) else f"{bad},{good}"))
        else:
            rows.append(("bad", None, draw(st.sampled_from(["0.1", "0.1,0.2,0.3", "", "0.1;0.2"]))))
    path = "VA_Set/Train_Set/t1.txt"
    lines = ["valence,arousal", *[t for _, _, t in rows]]
    files, n_images = _affwild2_images(draw, len(rows))
    files[path] = _lines_to_bytes(draw, lines)
    case = Case("affwild2_va", files, {}, error_file=path)
    kept = len(rows) - _trailing_blank(lines, 1)
    refused = [kind == "bad" for kind, _, _ in rows[:kept]]
    aligned = first_unaligned(lines[1 : kept + 1], refused, 2, False, va_ok)  # later rows may have moved
    for r, (kind, va, _) in enumerate(rows[:kept]):
        if kind == "bad":
            case.malformed.add(r + 2)
        elif kind == "good" and r + 1 <= n_images and r < aligned:
            case.expected[f"cropped_aligned/t1/{r + 1:05d}.jpg"] = (None, *va)
    return case


def gen_affwild2_mtl(draw: Any) -> Case:
    """s-Aff-Wild2 single file: ``t1/NNNNN.jpg,valence,arousal,expression,AU1..AU12``."""
    n_images = draw(st.integers(0, 8))
    files = {f"cropped_aligned/t1/{f:05d}.jpg": b"" for f in range(1, n_images + 1)}
    rows: list[tuple[str, int, Any, str]] = []  # kind, line, labels, text
    aus = ",0" * 12
    for _ in range(draw(st.integers(0, 10))):
        frame = draw(st.integers(1, 9))
        kind = draw(st.sampled_from(["good"] * 5 + ["none", "bad", "badframe", "repeat"]))
        image = f"t1/{frame:05d}.jpg"
        kind = "good" if kind == "repeat" and not rows else kind
        if kind == "repeat":  # an earlier line again, maybe with other labels
            rows.append(("repeat", 0, None, draw(st.sampled_from([r[3] for r in rows]))))
            continue
        e = draw(st.integers(-1, 7))
        v, a = draw(VA), draw(VA)
        if kind in ("good", "repeat"):
            rows.append(("good", frame, (None if e < 0 else e, v, a), f"{image},{v},{a},{e}{aus}"))
        elif kind == "none":
            rows.append(("good", frame, (None if e < 0 else e, None, None), f"{image},-5,-5,{e}{aus}"))
        elif kind == "bad":  # no "1,5" here: the extra field would shift the columns into place
            bad = draw(st.sampled_from([b for b in BAD_INTEGERS if b != "1,5"]))
            where = draw(st.integers(0, 2))
            fields = [str(v), str(a), str(e)]
            fields[where] = bad
            if where == 2 or bad in BAD_NUMBERS:
                rows.append(("bad", frame, None, f"{image},{','.join(fields)}{aus}"))
            else:  # 3.0, 1e19...: refused as integers, but finite (out-of-range) floats as VA
                labels = (None if e < 0 else e, None, None)
                rows.append(("good", frame, labels, f"{image},{','.join(fields)}{aus}"))
        else:
            rows.append(("bad", frame, None, f"t1/{'9' * 20}.jpg,{v},{a},{e}{aus}"))
    lines = ["image,valence,arousal,expression,AU1", *[r[3] for r in rows]]
    files["training_set_annotations.txt"] = _lines_to_bytes(draw, lines)
    case = Case("affwild2_mtl", files, {}, error_file="training_set_annotations.txt")
    by_frame: dict[int, list] = {}
    for i, (kind, frame, labels, text) in enumerate(rows):
        line = i + 2
        if kind == "repeat":  # resolve to the line it repeats
            j = next(k for k, r in enumerate(rows) if r[3] == text and r[0] != "repeat")
            kind, frame, labels = rows[j][0], rows[j][1], rows[j][2]
        if kind == "bad":
            case.malformed.add(line)
        elif labels not in by_frame.setdefault(frame, []):  # identical repeats: counted, not malformed
            by_frame[frame].append(labels)
            if len(by_frame[frame]) > 1:  # the same image labelled again differently: a conflict
                case.malformed.add(line)
    for frame, labelled in by_frame.items():
        if len(labelled) != 1 or frame > n_images or (labelled[0][0] is None and labelled[0][1] is None):
            continue
        case.expected[f"cropped_aligned/t1/{frame:05d}.jpg"] = labelled[0]
    return case


# -- AffectNet CSV, ExpW label list, generic CSV -------------------------------------------------

AFFECTNET_TO_ABAW = {0: 0, 1: 4, 2: 5, 3: 6, 4: 3, 5: 2, 6: 1}  # DATASETS.md §2.3
EXPW_TO_ABAW = {0: 1, 1: 2, 2: 3, 3: 4, 4: 5, 5: 6, 6: 0}  # DATASETS.md §3.3
LANDMARKS = ";".join(f"{10 + i % 50}.5" for i in range(136))
HEADER = (
    "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
)


def gen_affectnet(draw: Any) -> Case:
    files: dict[str, bytes] = {}
    rows: list[tuple[str, str, Any, str]] = []  # kind, image, labels, line
    for i in range(draw(st.integers(0, 10))):
        kind = draw(st.sampled_from(["good"] * 6 + ["bad", "null", "fields", "nul", "repeat"]))
        kind = "good" if kind == "repeat" and not rows else kind
        if kind == "repeat":
            rows.append(draw(st.sampled_from(rows)))
            continue
        image = f"1/img{i}.jpg"
        if draw(st.integers(0, 7)) != 3:  # 1 in 8 images absent
            files[f"Manually_Annotated_Images/{image}"] = b""
        code = draw(st.integers(0, 10))
        va = (draw(VA), draw(VA)) if draw(st.integers(0, 3)) != 2 else (-2.0, -2.0)
        va_text = [float_text(draw, va[0]), float_text(draw, va[1])]
        fields = [image, "10", "12", "100", "110", LANDMARKS, str(code), *va_text]
        if kind == "bad":
            k = draw(st.sampled_from([1, 2, 3, 4, 6, 6, 7, 8]))
            fields[k] = draw(st.sampled_from(BAD_INTEGERS if k == 6 else BAD_NUMBERS))
            if k == 6 and draw(st.booleans()):
                fields[k] = str(draw(st.sampled_from([11, 12, -1])))
        elif kind == "null":
            fields[draw(st.sampled_from([1, 7]))] = draw(st.sampled_from(["NULL", ""]))
        elif kind == "fields":
            fields = fields[:-1] if draw(st.booleans()) else [*fields, "0"]
        elif kind == "nul":
            fields[0] = f"1/im\x00g{i}.jpg"
        expr = AFFECTNET_TO_ABAW.get(code)
        ok_va = all(-1 <= x <= 1 for x in va)
        labels = (expr, *(va if ok_va else (None, None)))
        exists = f"Manually_Annotated_Images/{image}" in files
        rows.append((kind if kind in ("bad", "fields", "nul", "null") else ("good" if exists else "missing"),
                     image, labels, ",".join(fields)))
    path = "Manually_Annotated_file_lists/training.csv"
    lines = [HEADER, *[r[3] for r in rows]]
    files[path] = _lines_to_bytes(draw, lines)
    case = Case("affectnet", files, {}, error_file=path)
    for i, (kind, image, labels, _) in enumerate(rows):
        if kind in ("bad", "fields", "nul"):
            case.malformed.add(i + 2)
        elif kind == "good" and (labels[0] is not None or labels[1] is not None):
            case.expected.setdefault(f"Manually_Annotated_Images/{image}", labels)  # a repeat: the first
    return case


def gen_expw(draw: Any) -> Case:
    photos = [f"p{k}.jpg" for k in range(3)]
    files = {f"image/origin/{p}": b"" for p in photos[:2]}  # p2 is listed but absent
    rows: list[tuple[str, Any, str]] = []
    for _ in range(draw(st.integers(0, 10))):
        kind = draw(st.sampled_from(["good"] * 6 + ["bad", "fields", "empty_box", "repeat", "nul"]))
        kind = "good" if kind == "repeat" and not rows else kind
        if kind == "repeat":
            rows.append(draw(st.sampled_from(rows)))
            continue
        photo = draw(st.sampled_from(photos))
        face = draw(st.integers(0, 3))
        code = draw(st.integers(0, 6))
        fields = [photo, str(face), "10", "20", "90", "80", "33.5", str(code)]
        if kind == "bad":
            k = draw(st.sampled_from([1, 1, 2, 4, 6, 7, 7]))
            fields[k] = draw(st.sampled_from(BAD_INTEGERS if k in (1, 7) else BAD_NUMBERS))
            if k == 7 and draw(st.booleans()):
                fields[k] = str(draw(st.sampled_from([7, -1, 9])))
            fields[k] = fields[k].replace(" ", "_")
        elif kind == "fields":
            fields = fields[:-1] if draw(st.booleans()) else [*fields, "1"]
        elif kind == "empty_box":
            fields[4] = "10"  # right == left
        elif kind == "nul":
            fields[0] = "p\x000.jpg"
        rows.append((kind, (photo, face, code), " ".join(fields)))
    path = "label/label.lst"
    files[path] = _lines_to_bytes(draw, [r[2] for r in rows])
    case = Case("expw", files, {}, error_file=path, key="track")
    seen: set[tuple[str, int]] = set()
    for i, (kind, (photo, face, code), _) in enumerate(rows):
        if kind in ("bad", "fields", "nul"):
            case.malformed.add(i + 1)
        elif kind in ("good", "empty_box") and (photo, face) not in seen:  # the first line wins
            seen.add((photo, face))
            if kind == "good" and f"image/origin/{photo}" in files:
                case.expected[f"{photo}#{face}"] = (EXPW_TO_ABAW[code], None, None)
    return case


NAMES = ["Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other"]


def gen_generic(draw: Any) -> Case:
    files: dict[str, bytes] = {}
    rows: list[tuple[str, str, Any, str]] = []
    bad_text = [b for b in BAD_NUMBERS if '"' not in b]  # CSV quoting makes "0.5" a number here
    for i in range(draw(st.integers(0, 10))):
        kind = draw(st.sampled_from(["good"] * 6 + ["bad", "half", "fields", "path", "repeat"]))
        kind = "good" if kind == "repeat" and not rows else kind
        if kind == "repeat":
            rows.append(draw(st.sampled_from(rows)))
            continue
        image = f"img/{i}.jpg"
        if draw(st.integers(0, 7)) != 3:
            files[image] = b""
        e = draw(st.one_of(st.none(), st.integers(0, 7)))
        va = draw(st.one_of(st.none(), st.tuples(VA, VA)))
        e_text = "" if e is None else (NAMES[e] if draw(st.booleans()) else str(e))
        v_text, a_text = ("", "") if va is None else (float_text(draw, va[0]), float_text(draw, va[1]))
        fields = [image, e_text, v_text, a_text]
        if kind == "bad":
            k = draw(st.integers(1, 3))
            fields[k] = draw(st.sampled_from((BAD_INTEGERS if k == 1 else bad_text) + ["1.5", "-2", "9"]))
            if k == 1 and fields[k] in ("1.5", "-2"):
                fields[k] = "8"
        elif kind == "half":
            fields[draw(st.integers(2, 3))] = ""
            if va is None:
                fields[2] = "0.5"
        elif kind == "fields":
            fields = fields[:-1] if draw(st.booleans()) else [*fields, "x"]
        elif kind == "path":
            fields[0] = draw(st.sampled_from(["../up.jpg", "/abs.jpg", "img/a\x00b.jpg"]))
        labels = (e, *(va if va is not None else (None, None)))
        if kind == "path" and e is None and va is None:
            kind = "nolabel"  # an unlabelled row is counted before its path is looked at
        elif kind == "good" and image not in files:
            kind = "missing"
        elif kind == "good" and e is None and va is None:
            kind = "nolabel"
        rows.append((kind, image, labels, ",".join(fields)))
    empty_file = draw(st.integers(0, 15)) == 9
    lines = [] if empty_file else ["image,expression,valence,arousal", *[r[3] for r in rows]]
    empty = draw(st.sampled_from([b"", b"\n", b"\xef\xbb\xbf"]))
    files["mine.csv"] = _lines_to_bytes(draw, lines) if lines else empty
    case = Case("generic", files, {}, error_file="mine.csv")
    if not lines:
        case.always_error = True
        return case
    by_image: dict[str, list[tuple[int, Any]]] = {}
    for i, (kind, image, labels, _) in enumerate(rows):
        if kind in ("bad", "half", "fields", "path"):
            case.malformed.add(i + 2)
        elif kind == "good":
            by_image.setdefault(image, []).append((i + 2, labels))
    for image, seen in by_image.items():
        distinct = list(dict.fromkeys(lab for _, lab in seen))
        if len(distinct) == 1:
            case.expected[image] = distinct[0]
        else:  # other labels for the same image: malformed, and no copy is trusted
            case.malformed.update(_later_conflicts(seen))
    return case


def _later_conflicts(seen: list[tuple[int, Any]]) -> set[int]:
    """Lines repeating an image whose labels differ from some earlier line's (after identical
    repeats are dropped): the ones a reader must name as conflicts."""
    out, kept = set(), []
    for line, labels in seen:
        if labels in kept:
            continue  # an identical repeat: counted, not malformed
        if kept:
            out.add(line)
        kept.append(labels)
    return out


# -- AFEW-VA clip JSON ------------------------------------------------------------------------

BAD_JSON = ["true", "false", '"3"', "null", "NaN", "Infinity", "-Infinity", "1e400", "[1]", '{"v": 1}']


def gen_afew_va(draw: Any) -> Case:
    entries: list[tuple[str, str, str, Any]] = []  # kind, key, json text of the entry, labels
    landmarks = json.dumps([[30.5 + i, 40.25 + i] for i in range(68)])
    files: dict[str, bytes] = {}
    for i in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["good"] * 5 + ["bad", "missing_key", "range", "repeat", "badkey"]))
        kind = "good" if kind == "repeat" and not entries else kind
        if kind == "repeat":
            k, key, text, labels = draw(st.sampled_from(entries))
            same = draw(st.booleans())
            if not same:
                text = text[:-1] + ', "note": 1}'
            entries.append(("repeat", key, text, labels))
            continue
        key = f"{i:05d}"
        if draw(st.integers(0, 7)) != 3:
            files[f"001/{key}.png"] = b""
        v, a = draw(st.integers(-10, 10)), draw(st.integers(-10, 10))
        v_text, a_text = str(v), str(a)
        if kind == "bad":
            if draw(st.booleans()):
                v_text = draw(st.sampled_from(BAD_JSON))
            else:
                a_text = draw(st.sampled_from(BAD_JSON))
        elif kind == "range":
            v_text = str(draw(st.sampled_from([11, -15, 40])))
        if kind == "badkey":
            key = draw(st.sampled_from(["abc", "1e3", "-1", "\u0663"]))
        body = f'"valence": {v_text}, "arousal": {a_text}, "landmarks": {landmarks}'
        if kind == "missing_key":
            body = f'"arousal": {a_text}, "landmarks": {landmarks}'
        text = "{" + body + "}"
        entries.append((kind, key, text, (None, v / 10, a / 10)))
    frames = ", ".join(f"{json.dumps(key)}: {text}" for _, key, text, _ in entries)
    doc = '{"actor": "A", "video_id": "001", "frames": {' + frames + "}}"
    truncated = draw(st.integers(0, 11)) == 5
    if truncated:
        doc = doc[: draw(st.integers(0, max(0, len(doc) - 1)))]
    files["001/001.json"] = (b"\xef\xbb\xbf" if draw(st.booleans()) else b"") + doc.encode()
    case = Case("afew_va", files, {}, error_file="001/001.json")
    if truncated:
        case.malformed = {"json"}
        return case
    texts: dict[str, list[str]] = {}
    kinds: dict[str, str] = {}
    for kind, key, text, _ in entries:
        texts.setdefault(key, []).append(text)
        kinds.setdefault(key, kind)
    for kind, key, _, labels in entries:
        if kind == "repeat" or key in case.expected or key in case.malformed:
            continue
        first_kind = kinds[key]
        if len(set(texts[key])) > 1:
            case.malformed.add(key)  # written twice with different values
        elif first_kind in ("bad", "missing_key", "badkey"):
            case.malformed.add(key)
        elif first_kind == "good" and f"001/{key}.png" in files:
            case.expected[f"001/{key}.png"] = labels
    return case


GENERATORS = {
    "affwild2_expr": gen_affwild2_expr,
    "affwild2_va": gen_affwild2_va,
    "affwild2_mtl": gen_affwild2_mtl,
    "affectnet": gen_affectnet,
    "expw": gen_expw,
    "afew_va": gen_afew_va,
    "generic": gen_generic,
}
