"""Synthetic Aff-Wild2 in the ABAW2 layout (DATASETS.md §1), with its real quirks.

Written: ``annotations/{EXPR_Set,VA_Set}/{Train_Set,Validation_Set}/<track>.txt`` (one header line,
one line per video frame, -1 / -5 sentinels), ``cropped_aligned/<track>/NNNNN.jpg`` (112×112,
1-based numbering with gaps), ``test_set_{Expr,VA}_Challenge.txt`` (one with a BOM and CRLF).

Quirks: missing leading/trailing/inner images, sentinel runs, an EXPR and a VA file of one track
with different row counts, an image numbered beyond the last row, CRLF files and a file without a
final newline, a ``.DS_Store`` in an image folder, ``_left``/``_right`` tracks, ``video59`` next to
``video59_right``, a track whose EXPR labels are in Train_Set and VA labels in Validation_Set, test
tracks that appear only in the test lists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import simplejpeg

from mtaffect.data.synthetic._table import TableBuilder
from mtaffect.data.synthetic.affect import TrackLook, affect_sequence, render_crop

EXPR_HEADER = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise"
VA_HEADER = "valence,arousal"
SPLIT_FOLDERS = {"train": "Train_Set", "validation": "Validation_Set"}
JPEG_QUALITY = 90


@dataclass(frozen=True)
class TrackPlan:
    """One track: its name, video length (annotation rows) and where its labels go."""

    name: str
    n_frames: int
    expr: str | None = None  # split of the EXPR file, None = no EXPR file
    va: str | None = None  # split of the VA file
    test: tuple[str, ...] = ()  # test lists naming it: "EXPR", "VA"


# The named quirk tracks of every preset (DATASETS.md §1.2, §1.11, §7).
QUIRK_TRACKS = (
    ("video59_right", "train", "train", ()),
    ("video59", None, "validation", ()),
    ("10-60-1280x720", "train", "train", ()),
    ("122-60-1920x1080-3", "train", "validation", ()),
    ("video10_1_left", "train", None, ()),
    ("video10_1_right", None, "train", ()),
    ("105", None, "train", ()),
    ("282", "validation", "validation", ()),
    ("135-24-1920x1080_left", "validation", "validation", ()),
    ("video2", "validation", None, ()),
    ("2-30-640x360", None, None, ("EXPR", "VA")),
    ("video74_left", None, None, ("VA",)),
    ("video74_right", None, None, ("EXPR",)),
)


def plan_tracks(rng: np.random.Generator, n_generated: int, frames: tuple[int, int]) -> list[TrackPlan]:
    """The quirk tracks plus ``n_generated`` tracks named after the three real name families."""
    lo, hi = frames
    plans = [TrackPlan(n, int(rng.integers(lo, hi + 1)), e, v, t) for n, e, v, t in QUIRK_TRACKS]
    used = {p.name for p in plans}
    resolutions = ("1280x720", "1920x1080", "640x360", "1080x1920", "480x360")
    i = 0
    while len(plans) < len(QUIRK_TRACKS) + n_generated:
        i += 1
        family = i % 3
        if family == 0:
            name = f"{200 + i}-{rng.choice((24, 25, 30, 60))}-{rng.choice(resolutions)}"
            if rng.random() < 0.2:
                name += f"-{int(rng.integers(1, 4))}"
        elif family == 1:
            name = str(300 + i)
        else:
            name = f"video{100 + i}" + (f"_{int(rng.integers(1, 4))}" if rng.random() < 0.3 else "")
        names = [name + "_left", name + "_right"] if rng.random() < 0.15 else [name]
        for nm in names:
            if nm in used:
                continue
            used.add(nm)
            r = rng.random()
            split = "validation" if rng.random() < 0.22 else "train"
            other = "train" if split == "validation" else "validation"
            if r < 0.08:
                test = (("EXPR", "VA"), ("EXPR",), ("VA",))[int(rng.choice(3, p=(0.5, 0.25, 0.25)))]
                plans.append(TrackPlan(nm, int(rng.integers(lo, hi + 1)), None, None, test))
                continue
            expr, va = split, split
            if r < 0.20:
                expr = None
            elif r < 0.30:
                va = None
            elif r < 0.35:
                va = other  # cross-split track
            plans.append(TrackPlan(nm, int(rng.integers(lo, hi + 1)), expr, va))
    return plans


def _present_frames(rng: np.random.Generator, n: int) -> np.ndarray:
    """Frame numbers (1-based) that get an image: gaps at the start, end and inside."""
    keep = np.ones(n + 1, dtype=bool)
    keep[0] = False
    if rng.random() < 0.5:
        keep[1 : 1 + int(rng.integers(1, 4))] = False
    if rng.random() < 0.5:
        keep[n - int(rng.integers(0, 3)) :] = False
    keep[1:][rng.random(n) < 0.02] = False
    if n > 20 and rng.random() < 0.6:
        start = int(rng.integers(2, n - 8))
        keep[start : start + int(rng.integers(2, 6))] = False
    return np.flatnonzero(keep)


def _sentinel_mask(rng: np.random.Generator, n: int) -> np.ndarray:
    """Rows written as "unannotated": a few runs."""
    mask = np.zeros(n, dtype=bool)
    for _ in range(int(rng.integers(0, 3)) + (1 if n > 10 else 0)):
        start = int(rng.integers(0, n))
        mask[start : start + int(rng.integers(1, 5))] = True
    return mask


def _va_text(x: float, rng: np.random.Generator) -> str:
    """A VA value as the files write it: up to 4 decimals, sometimes integer-looking."""
    text = f"{x:.4f}".rstrip("0").rstrip(".") if rng.random() < 0.7 else f"{x:.3f}"
    return "0" if text in ("-0", "") else text


def _write_lines(path: Path, header: str, lines: list[str], style: int) -> None:
    """style 0: LF + final newline; 1: CRLF; 2: no final newline; 3: trailing spaces."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if style == 3:
        lines = [line + " " for line in lines]
    eol = "\r\n" if style == 1 else "\n"
    text = eol.join([header, *lines]) + ("" if style == 2 else eol)
    path.write_bytes(text.encode("utf-8"))


class _Pool:
    """Rendered crops shared by hard links (the "pool" render mode for Aff-Wild2-scale benchmarks).

    A file system caps the links to one file (65,000 on ext4): each crop gets a fresh copy every
    :data:`LINKS_PER_FILE` links.
    """

    LINKS_PER_FILE = 50_000

    def __init__(self, root: Path, seed: int, size: int) -> None:
        self.dir = root / ".synthetic_pool"
        self.seed, self.size = seed, size
        self.data: dict[tuple[int, int, int], bytes] = {}
        self.uses: dict[tuple[int, int, int], int] = {}

    def path(self, e: int, v: float, a: float) -> Path:
        key = (e, int(round((v + 1) * 2)), int(round((a + 1) * 2)))
        if key not in self.data:
            rng = np.random.default_rng([self.seed, 77, *key])
            img, _ = render_crop(TrackLook(rng, self.size), 0, e, key[1] / 2 - 1, key[2] / 2 - 1, rng)
            self.data[key] = simplejpeg.encode_jpeg(img, JPEG_QUALITY, "RGB", "420")
        uses = self.uses.get(key, 0)
        self.uses[key] = uses + 1
        path = self.dir / f"{key[0]}_{key[1]}_{key[2]}_{uses // self.LINKS_PER_FILE}.jpg"
        if uses % self.LINKS_PER_FILE == 0:
            self.dir.mkdir(parents=True, exist_ok=True)
            path.write_bytes(self.data[key])
        return path


def write_affwild2(root: Path, plans: list[TrackPlan], seed: int, table: TableBuilder, *,
                   size: int = 112, render: str = "full") -> None:
    """Write every planned track under ``root`` and add its truth rows to ``table``."""
    pool = _Pool(root, seed, size) if render == "pool" else None
    test_lists: dict[str, list[str]] = {"EXPR": [], "VA": []}
    for k, plan in enumerate(plans):
        rng = np.random.default_rng([seed, 1, k])
        n = plan.n_frames
        expr, val, aro = affect_sequence(rng, n)
        present = _present_frames(rng, n)
        if plan.name == "video59_right":  # DATASETS.md §1.11: first image 00002, frame 5 missing
            present = present[(present != 1) & (present != 5)]
        beyond = plan.name == "105" or rng.random() < 0.05  # an image numbered past the last row
        images = np.append(present, n + 1) if beyond else present
        folder = root / "cropped_aligned" / plan.name
        folder.mkdir(parents=True, exist_ok=True)
        look = TrackLook(rng, size)
        for f in images:
            t = min(int(f), n) - 1
            dest = folder / f"{int(f):05d}.jpg"
            if pool is not None:
                os.link(pool.path(int(expr[t]), float(val[t]), float(aro[t])), dest)
            else:
                img, _ = render_crop(look, t, int(expr[t]), float(val[t]), float(aro[t]), rng)
                dest.write_bytes(simplejpeg.encode_jpeg(img, JPEG_QUALITY, "RGB", "420"))
        if k % 7 == 3:
            (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
        style = k % 4
        labels: dict[str, dict[str, object]] = {}
        if plan.expr is not None:
            rows = n - 1 if plan.va == plan.expr and k % 2 == 0 else n  # EXPR one row short of VA
            missing = _sentinel_mask(rng, rows)
            codes = [("-1" if missing[r] else str(int(expr[r]))) for r in range(rows)]
            _write_lines(root / "annotations" / "EXPR_Set" / SPLIT_FOLDERS[plan.expr] / f"{plan.name}.txt",
                         EXPR_HEADER, codes, style)
            labels.setdefault(plan.expr, {})["expr"] = codes
        if plan.va is not None:
            missing = _sentinel_mask(rng, n)
            texts = []
            for r in range(n):
                if missing[r]:
                    texts.append("-5,-5" if rng.random() < 0.5 else "-5.0,-5.0")
                else:
                    texts.append(f"{_va_text(val[r], rng)},{_va_text(aro[r], rng)}")
            _write_lines(root / "annotations" / "VA_Set" / SPLIT_FOLDERS[plan.va] / f"{plan.name}.txt",
                         VA_HEADER, texts, (style + 1) % 4)
            labels.setdefault(plan.va, {})["va"] = texts
        for task in plan.test:
            test_lists[task].append(plan.name)
        _truth_rows(table, plan, images, labels)
    _write_test_lists(root, test_lists)


def _truth_rows(table: TableBuilder, plan: TrackPlan, images: np.ndarray,
                labels: dict[str, dict[str, object]]) -> None:
    """What a correct reader yields: per split, the imaged frames with at least one valid label."""
    for split, got in labels.items():
        codes = got.get("expr")
        texts = got.get("va")
        frames, exprs, sources, vals, aros = [], [], [], [], []
        for f in images.tolist():
            e = s = v = a = None
            if codes is not None and f <= len(codes):  # type: ignore[arg-type]
                code = codes[f - 1]  # type: ignore[index]
                if code != "-1":
                    e, s = int(code), code
            if texts is not None and f <= len(texts):  # type: ignore[arg-type]
                fv, fa = (float(x) for x in texts[f - 1].split(","))  # type: ignore[index]
                if -1.0 <= fv <= 1.0 and -1.0 <= fa <= 1.0:
                    v, a = fv, fa
            if e is None and v is None:
                continue
            frames.append(f)
            exprs.append(e)
            sources.append(s)
            vals.append(v)
            aros.append(a)
        table.add(len(frames), database="affwild2", split=split, track=plan.name, frame=frames,
                  image=[f"cropped_aligned/{plan.name}/{f:05d}.jpg" for f in frames], expression=exprs,
                  valence=vals, arousal=aros, source_code=sources)
    if plan.test:
        frames = images.tolist()
        table.add(len(frames), database="affwild2", split="test", track=plan.name, frame=frames,
                  image=[f"cropped_aligned/{plan.name}/{f:05d}.jpg" for f in frames])


def _write_test_lists(root: Path, lists: dict[str, list[str]]) -> None:
    # the EXPR list carries a UTF-8 BOM, CRLF line ends and a blank last line; the VA list is plain
    expr = "\r\n".join(lists["EXPR"]) + "\r\n\r\n"
    (root / "test_set_Expr_Challenge.txt").write_bytes(b"\xef\xbb\xbf" + expr.encode("utf-8"))
    (root / "test_set_VA_Challenge.txt").write_bytes(("\n".join(lists["VA"]) + "\n").encode("utf-8"))
