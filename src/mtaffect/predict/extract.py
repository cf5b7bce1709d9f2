"""``cropped_aligned``-style face folders from raw videos (``mtaffect extract-faces``).

For each video: ``<out>/<track>/NNNNN.jpg``, NNNNN the **1-based** frame number (decode index + 1,
as Aff-Wild2 numbers its crops), aligned crops of ``size`` pixels with the same detector, tracker
and template as ``mtaffect predict`` (no evaluation zoom: these are training-style crops). Frames
where a person has no face are simply absent, as in the organisers' folders.

People: tracker tracks that never overlap in time and start near where another ended are joined
into one person (a face lost for a moment stays the same person). Folder names:

* one person: ``<video>``;
* two people: ``<video>_left`` and ``<video>_right`` by the mean horizontal centre of their boxes
  (the Aff-Wild2 convention);
* more: ``<video>_p0``, ``<video>_p1``, … in order of first appearance.

People seen in fewer than ``min_frames`` frames are dropped (counted in the report). A video is
written to ``<out>/.partial/<video>/`` and moved into place when complete, then marked done in
``<out>/extract_report.json``; rerunning skips done videos (resumable).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

from mtaffect.errors import InputFormatError
from mtaffect.io import write_json
from mtaffect.predict.align import DEFAULT_TEMPLATE, align_faces
from mtaffect.predict.detect import make_detector
from mtaffect.predict.media import VideoReader, expand_inputs
from mtaffect.predict.track import FaceTracker

__all__ = ["extract_faces", "group_people", "person_names"]


def group_people(tracks: dict[int, dict]) -> list[list[int]]:
    """Join tracks into people: ``tracks[id] = {"first", "last" (frames), "first_box", "last_box"}``.

    A track joins the person whose last track ended before it starts and whose last box centre is
    closest to its first box centre, if within 1.5 box widths; otherwise it starts a new person.
    """
    people: list[list[int]] = []
    for tid in sorted(tracks, key=lambda t: tracks[t]["first"]):
        tr = tracks[tid]
        c = _centre(tr["first_box"])
        width = tr["first_box"][2] - tr["first_box"][0]
        best, best_d = None, 1.5 * width
        for k, person in enumerate(people):
            last = tracks[person[-1]]
            if last["last"] >= tr["first"]:
                continue
            d = float(np.hypot(*(c - _centre(last["last_box"]))))
            if d <= best_d:
                best, best_d = k, d
        if best is None:
            people.append([tid])
        else:
            people[best].append(tid)
    return people


def _centre(box) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def person_names(video: str, centres: list[float]) -> list[str]:
    """Folder names for people with these mean horizontal centres (in first-appearance order)."""
    if len(centres) == 1:
        return [video]
    if len(centres) == 2:
        left = int(np.argmin(centres))
        return [f"{video}_left" if k == left else f"{video}_right" for k in range(2)]
    return [f"{video}_p{k}" for k in range(len(centres))]


def extract_faces(
    videos: list[str | Path],
    out: str | Path,
    *,
    size: int = 112,
    template: str = DEFAULT_TEMPLATE,
    crop_scale: float = 1.0,
    detector: str = "mtcnn",
    detect_every: int = 5,
    min_face: float = 40.0,
    max_faces: int | None = None,
    min_frames: int = 5,
    quality: int = 95,
) -> dict:
    """Write crop folders for ``videos`` into ``out``; returns (and saves) the report."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report_path = out / "extract_report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {"videos": {}}
    det = make_detector(detector, min_face=min_face)
    skipped: list[tuple[str, str]] = []
    items = [it for it in expand_inputs([str(v) for v in videos], skipped=skipped) if it.kind == "video"]
    for path, why in skipped:
        print(f"mtaffect extract-faces: {path}: skipped: {why}", file=sys.stderr)
    for item in items:
        video = Path(item.path).stem
        if report["videos"].get(item.path, {}).get("status") == "done":
            continue
        entry = _extract_one(
            item.path,
            video,
            out,
            det,
            size,
            template,
            crop_scale,
            detect_every,
            max_faces,
            min_frames,
            quality,
        )
        report["videos"][item.path] = entry
        write_json(report_path, report)
        if entry.get("error"):
            print(f"mtaffect extract-faces: {item.path}: {entry['error']}", file=sys.stderr)
    return report


def _extract_one(
    path, video, out, det, size, template, crop_scale, detect_every, max_faces, min_frames, quality
):
    partial = out / ".partial" / video
    if partial.exists():
        shutil.rmtree(partial)
    try:
        reader = VideoReader(path)
    except InputFormatError as err:
        return {"status": "error", "error": str(err)}
    tracker = FaceTracker(det, detect_every=detect_every, max_faces=max_faces)
    tracks: dict[int, dict] = {}
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    for fr in reader:
        faces = tracker.update(fr.image)
        if not faces:
            continue
        boxes = np.stack([f.box for f in faces])
        lms = None if faces[0].landmarks is None else np.stack([f.landmarks for f in faces])
        crops = align_faces(fr.image, boxes, lms, size=size, template=template, scale=crop_scale)
        for f, crop in zip(faces, crops):
            info = tracks.setdefault(
                f.track_id, {"first": fr.index, "first_box": f.box.copy(), "frames": 0, "sum_cx": 0.0}
            )
            info.update(last=fr.index, last_box=f.box.copy())
            info["frames"] += 1
            info["sum_cx"] += float(f.box[0] + f.box[2]) / 2
            folder = partial / f"track{f.track_id}"
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(
                str(folder / f"{fr.index + 1:05d}.jpg"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), params
            )
    people = [p for p in group_people(tracks) if sum(tracks[t]["frames"] for t in p) >= min_frames]
    dropped = len(group_people(tracks)) - len(people)
    centres = [sum(tracks[t]["sum_cx"] for t in p) / sum(tracks[t]["frames"] for t in p) for p in people]
    names = person_names(video, centres)
    written = {}
    for name, person in zip(names, people):
        target = out / name
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for tid in person:
            for f in (partial / f"track{tid}").iterdir():
                f.replace(target / f.name)
        written[name] = sum(tracks[t]["frames"] for t in person)
    shutil.rmtree(partial, ignore_errors=True)
    status = "done" if reader.error is None else "partial"
    return {
        "status": status,
        "error": reader.error,
        "frames": reader.frames_read,
        "tracks": written,
        "dropped_people": dropped,
    }
