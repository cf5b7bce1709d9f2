"""An Aff-Wild2-sized annotation tree for the index benchmark (never written inside the repo).

≈550 tracks (the three real name families, ``_left``/``_right`` pairs), EXPR and VA label files
of ≈2.8 M rows per task with the real quirks (runs of -1 / -5, ``-5.0`` and ``-5`` spellings,
rows ±1–2 against the images, CRLF in some files), ≈15 cross-split tracks, a test list, and
``cropped_aligned/<track>/NNNNN.jpg`` folders with gaps (missing faces, absent leading frames)
and a stray ``.DS_Store``. Images are hard links to one tiny JPEG per track, so millions of
files cost directory entries only (ext4 allows 65 000 links per inode; a track has fewer).

    python benchmarks/affwild2_tree.py /tmp/aw2_bench --tracks 550 --rows 2800000
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

EXPR_HEADER = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise"


def tiny_jpeg() -> bytes:
    """A valid 8×8 grey JPEG (a few hundred bytes)."""
    import cv2

    ok, buf = cv2.imencode(".jpg", np.full((8, 8, 3), 128, np.uint8))
    assert ok
    return buf.tobytes()


def track_names(n: int, rng: np.random.Generator) -> list[str]:
    names: list[str] = []
    i = 0
    while len(names) < n:
        i += 1
        family = i % 3
        if family == 0:
            fps = rng.choice([24, 25, 29, 30, 60])
            size = rng.choice(["1280x720", "1920x1080", "640x360", "1080x1920"])
            base = f"{i}-{fps}-{size}" + (f"-{rng.integers(1, 4)}" if rng.random() < 0.1 else "")
        elif family == 1:
            base = str(100 + i)
        else:
            base = f"video{i}" + (f"_{rng.integers(1, 4)}" if rng.random() < 0.2 else "")
        if rng.random() < 0.08:  # two people: _left and _right (sometimes an unsuffixed track too)
            names += [f"{base}_left", f"{base}_right"]
            if rng.random() < 0.3:
                names.append(base)
        else:
            names.append(base)
    return names[:n]


def _runs(n: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask with runs of True covering about ``rate`` of n positions."""
    mask = np.zeros(n, dtype=bool)
    covered = 0
    while covered < rate * n:
        start, length = int(rng.integers(0, n)), int(rng.integers(5, 120))
        mask[start : start + length] = True
        covered += length
    return mask


def write_tree(
    root: Path, *, tracks: int = 550, rows: int = 2_800_000, seed: int = 0, test_tracks: int | None = None
) -> dict:
    """Write the tree; returns counts (tracks, rows per task, images)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    test_tracks = max(1, round(tracks * 30 / 550)) if test_tracks is None else test_tracks
    names = track_names(tracks, rng)
    labelled, test = names[: tracks - test_tracks], names[tracks - test_tracks :]
    mean = rows / (0.97 * len(labelled))
    lengths = np.clip(rng.normal(mean, mean * 0.45, len(labelled)), 300, None).astype(int)
    split_of = np.where(rng.random(len(labelled)) < 0.8, "Train_Set", "Validation_Set")
    cross = set(rng.choice(len(labelled), min(15, len(labelled) // 4), replace=False).tolist())
    counts = {"tracks": len(names), "EXPR": 0, "VA": 0, "images": 0}
    ann = root / "annotations"
    for task in ("EXPR_Set", "VA_Set"):
        for split in ("Train_Set", "Validation_Set"):
            (ann / task / split).mkdir(parents=True, exist_ok=True)
    source = root / ".jpeg_sources"
    source.mkdir(parents=True, exist_ok=True)
    jpeg = tiny_jpeg()
    for t, name in enumerate(names):
        n = int(lengths[t]) if t < len(labelled) else int(rng.integers(1500, 4000))
        if t < len(labelled):
            has_expr, has_va = rng.random() < 0.97, rng.random() < 0.98
            split = str(split_of[t])
            va_split = ("Validation_Set" if split == "Train_Set" else "Train_Set") if t in cross else split
            if has_expr:
                codes = rng.integers(0, 7, n)
                codes[_runs(n, 0.05, rng)] = -1
                eol = "\r\n" if rng.random() < 0.1 else "\n"
                text = EXPR_HEADER + eol + eol.join(map(str, codes.tolist()))
                (ann / "EXPR_Set" / split / f"{name}.txt").write_text(
                    text + (eol if rng.random() < 0.9 else "")
                )
                counts["EXPR"] += n
            if has_va:
                m = n + int(rng.integers(-1, 3))
                va = np.clip(np.cumsum(rng.normal(0, 0.02, (m, 2)), axis=0), -1, 1)
                missing = _runs(m, 0.05, rng)
                sentinel = "-5" if rng.random() < 0.5 else "-5.0"
                lines = [f"{v:.4f},{a:.4f}" for v, a in va.tolist()]
                for r in np.flatnonzero(missing).tolist():
                    lines[r] = f"{sentinel},{sentinel}"
                (ann / "VA_Set" / va_split / f"{name}.txt").write_text(
                    "valence,arousal\n" + "\n".join(lines) + "\n"
                )
                counts["VA"] += m
        frames = np.arange(1, n + 2)  # one image beyond the last EXPR row in some tracks
        keep = ~_runs(len(frames), 0.03, rng)
        keep[: int(rng.integers(0, 30))] = False
        if rng.random() < 0.5:
            keep[-1] = False
        folder = root / "cropped_aligned" / name
        folder.mkdir(parents=True, exist_ok=True)
        src = source / f"{t}.jpg"
        src.write_bytes(jpeg)
        for f in frames[keep].tolist():
            os.link(src, folder / f"{f:05d}.jpg")
        counts["images"] += int(keep.sum())
        if rng.random() < 0.02:
            (folder / ".DS_Store").write_bytes(b"\0")
    (root / "test_set_Expr_Challenge.txt").write_text("\ufeff" + "\r\n".join(test) + "\r\n")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path)
    parser.add_argument("--tracks", type=int, default=550)
    parser.add_argument("--rows", type=int, default=2_800_000, help="about this many label rows per task")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"{args.out} is not empty")
    t0 = time.perf_counter()
    counts = write_tree(args.out, tracks=args.tracks, rows=args.rows, seed=args.seed)
    print(counts, f"written in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
