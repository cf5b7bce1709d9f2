"""Person tracks across video frames: stable ``track_id``s with a cheap update between detections.

The full detector runs every ``detect_every`` frames. In between, each live track is updated by
the detector's last stage alone on its previous box (MTCNN's O-Net: about a millisecond per face,
which also re-estimates the landmarks); a track whose face O-Net rejects ends. On detection frames,
detections are matched to live tracks greedily by intersection over union (highest first, at least
``iou_threshold``); unmatched detections start new tracks; unmatched tracks get the O-Net update
and end if it fails. A person who leaves and comes back gets a new ``track_id`` (no face
re-identification). With a detector without landmarks (Haar) boxes are held between detections.

``refresh_every`` (default 1) runs that O-Net update only on every k-th frame after a detection
frame and holds boxes and landmarks in between: at 24–30 fps a face moves little in 2–3 frames,
and the update is, after the model, the largest per-frame cost of a video (BENCHMARKS.md).

``smooth`` in [0, 1) blends each new box and landmark set with the previous one (exponential
moving average; 0 = off) to steady the crops of a shaky detector.

Every face says where its box comes from (``source``): ``"detected"`` (the full detector on this
frame), ``"refreshed"`` (O-Net re-checked it on this frame) or ``"held"`` (carried from the frame of
its last check, ``age`` frames ago). Two cheap tests, on a 64-pixel-wide grey thumbnail of each
frame (about 0.02 ms), keep a held box honest:

* a **scene cut** (mean absolute thumbnail difference from the previous frame above
  ``cut_threshold``, in [0, 1] of full scale) ends every track and runs the detector on that frame;
* a held box whose thumbnail patch changed by more than ``recheck_threshold`` since its last check
  (``change``) is re-checked by O-Net at once (and ends if O-Net rejects it); without O-Net (Haar)
  it ends.

The detector also runs at once when the last live track is lost, so a face that appears after a
cut or a loss is found on that frame, not at the next periodic detection; the period counts from
the last detection.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mtaffect.predict.detect import Detections, box_iou

__all__ = ["TrackedFace", "FaceTracker"]


@dataclass
class TrackedFace:
    track_id: int
    box: np.ndarray  # (4,) x0, y0, x1, y1
    score: float
    landmarks: np.ndarray | None  # (5, 2)
    source: str = "detected"  # "detected" | "refreshed" | "held" (see the module docstring)
    age: int = 0  # frames since the network last checked this box (0 unless held)
    change: float = 0.0  # held boxes: thumbnail change since that check, in [0, 1]

    @property
    def detected(self) -> bool:
        """True when this frame's box came from the full detector."""
        return self.source == "detected"


@dataclass
class _Track:
    track_id: int
    box: np.ndarray
    score: float
    landmarks: np.ndarray | None
    checked: int = 0  # tracker frame of the last network check (detector or O-Net)
    thumb: np.ndarray | None = None  # grey thumbnail of that frame


THUMB_WIDTH = 64


def thumbnail(image: np.ndarray) -> np.ndarray:
    """A grey float32 thumbnail ``THUMB_WIDTH`` pixels wide, values in [0, 1]: the cut test's view."""
    h, w = image.shape[:2]
    # bilinear: reads 4 pixels per thumbnail pixel (0.015 ms in all on 640×360; an area average
    # reads the whole frame: 0.11 ms). Its aliasing is noise the thresholds leave room for
    # (BENCHMARKS.md, bench_cuts.py).
    small = cv2.resize(
        image, (THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w))), interpolation=cv2.INTER_LINEAR
    )
    if small.ndim == 3:
        small = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    return small.astype(np.float32) / 255.0


def _patch(thumb: np.ndarray, box: np.ndarray, width: int) -> tuple[slice, slice]:
    """The thumbnail rows/columns under ``box`` (source pixels of an image ``width`` wide)."""
    s = thumb.shape[1] / width
    th, tw = thumb.shape
    x0 = int(np.clip(np.floor(box[0] * s), 0, tw - 1))
    y0 = int(np.clip(np.floor(box[1] * s), 0, th - 1))
    x1 = int(np.clip(np.ceil(box[2] * s), x0 + 1, tw))
    y1 = int(np.clip(np.ceil(box[3] * s), y0 + 1, th))
    return slice(y0, y1), slice(x0, x1)


class FaceTracker:
    """Turn per-frame images into tracked faces: ``update(image) -> list[TrackedFace]``.

    max_faces: keep at most this many new tracks per detection (best detector scores first; None = all).
    cut_threshold, recheck_threshold: the scene-cut and held-box tests (None disables one).
    ``cuts`` counts the scene cuts found, ``rechecks`` the held boxes re-checked early.
    """

    def __init__(
        self,
        detector,
        *,
        detect_every: int = 5,
        refresh_every: int = 1,
        iou_threshold: float = 0.3,
        smooth: float = 0.0,
        max_faces: int | None = None,
        cut_threshold: float | None = 0.12,
        recheck_threshold: float | None = 0.08,
    ) -> None:
        if detect_every < 1:
            raise ValueError("detect_every must be >= 1")
        if refresh_every < 1:
            raise ValueError("refresh_every must be >= 1")
        if not 0.0 <= smooth < 1.0:
            raise ValueError("smooth must be in [0, 1)")
        self.detector = detector
        self.detect_every, self.iou_threshold, self.smooth = detect_every, iou_threshold, smooth
        self.refresh_every = refresh_every
        self.max_faces = max_faces
        self.tracks: list[_Track] = []
        self.next_id = 0
        self.cut_threshold, self.recheck_threshold = cut_threshold, recheck_threshold
        self.frames_seen = 0
        self.detector_calls = 0
        self.cuts = 0
        self.rechecks = 0
        self._last_detection: int | None = None
        self._thumb: np.ndarray | None = None
        self._width = 1
        self._can_update = hasattr(detector, "redetect")

    @property
    def last_detection(self) -> int | None:
        """The tracker frame number (0-based) of the last full detection; None before the first."""
        return self._last_detection

    def _blend(self, old: np.ndarray | None, new: np.ndarray | None) -> np.ndarray | None:
        if old is None or new is None or self.smooth == 0.0:
            return new
        return self.smooth * old + (1.0 - self.smooth) * new

    def _refresh(self, image: np.ndarray, tracks: list[_Track]) -> list[_Track]:
        """O-Net update of ``tracks`` on ``image``; returns the tracks that survive."""
        if not tracks:
            return []
        if not self._can_update:
            return tracks
        det: Detections = self.detector.redetect(image, np.stack([t.box for t in tracks]))
        alive = []
        for k, tr in enumerate(tracks):
            if det.scores[k] < 0:
                continue
            tr.box = self._blend(tr.box, det.boxes[k])
            tr.landmarks = self._blend(tr.landmarks, None if det.landmarks is None else det.landmarks[k])
            tr.score = float(det.scores[k])
            tr.checked, tr.thumb = self.frames_seen - 1, self._thumb
            alive.append(tr)
        return alive

    def _dedupe(self) -> None:
        """Two tracks that slid onto the same face: keep the older one."""
        keep: list[_Track] = []
        for tr in sorted(self.tracks, key=lambda t: t.track_id):
            if keep and box_iou(tr.box[None], np.stack([k.box for k in keep])).max() > 0.6:
                continue
            keep.append(tr)
        self.tracks = keep

    def _scene_cut(self, image: np.ndarray | None) -> bool:
        """Take this frame's thumbnail; True when it differs from the previous one like a cut."""
        if image is None or (self.cut_threshold is None and self.recheck_threshold is None):
            self._thumb = None
            return False
        prev, self._thumb, self._width = self._thumb, thumbnail(image), image.shape[1]
        if self.cut_threshold is None or prev is None:
            return False
        if prev.shape != self._thumb.shape:
            return True
        return float(np.abs(self._thumb - prev).mean()) > self.cut_threshold

    def _change(self, tr: _Track) -> float:
        """Mean grey change of a held box's thumbnail patch since its last check, in [0, 1]."""
        if self._thumb is None or tr.thumb is None or tr.thumb.shape != self._thumb.shape:
            return 0.0
        rows, cols = _patch(self._thumb, tr.box, self._width)
        return float(np.abs(self._thumb[rows, cols] - tr.thumb[rows, cols]).mean())

    def _hold(self, image: np.ndarray, refreshed: set[int]) -> dict[int, float]:
        """Held frame: re-check (or end) the boxes whose patch changed; returns held ids' change."""
        changes = {t.track_id: self._change(t) for t in self.tracks}
        limit = self.recheck_threshold
        suspect = [t for t in self.tracks if limit is not None and changes[t.track_id] > limit]
        if suspect:
            self.rechecks += len(suspect)
            kept = {id(t) for t in self._refresh(image, suspect)} if self._can_update else set()
            refreshed |= {t.track_id for t in suspect if id(t) in kept}
            dropped = {id(t) for t in suspect} - kept
            self.tracks = [t for t in self.tracks if id(t) not in dropped]
        return changes

    def _detect(self, image: np.ndarray, detected_ids: set[int]) -> None:
        """Full detection: match to tracks by IoU, O-Net the unmatched tracks, start new tracks."""
        self.detector_calls += 1
        self._last_detection = self.frames_seen - 1
        det = self.detector.detect(image)
        matched_tracks: set[int] = set()
        matched_dets: set[int] = set()
        if self.tracks and len(det):
            iou = box_iou(np.stack([t.box for t in self.tracks]), det.boxes)
            for flat in np.argsort(-iou, axis=None):
                ti, di = np.unravel_index(flat, iou.shape)
                if iou[ti, di] < self.iou_threshold:
                    break
                if ti in matched_tracks or di in matched_dets:
                    continue
                matched_tracks.add(int(ti))
                matched_dets.add(int(di))
                tr = self.tracks[ti]
                tr.box = self._blend(tr.box, det.boxes[di])
                tr.landmarks = self._blend(tr.landmarks, None if det.landmarks is None else det.landmarks[di])
                tr.score = float(det.scores[di])
                tr.checked, tr.thumb = self.frames_seen - 1, self._thumb
                detected_ids.add(tr.track_id)
        others = [t for i, t in enumerate(self.tracks) if i not in matched_tracks]
        lost = {id(t) for t in others} - {id(t) for t in self._refresh(image, others)}
        self.tracks = [t for t in self.tracks if id(t) not in lost]
        new = [d for d in range(len(det)) if d not in matched_dets]
        if self.max_faces is not None:
            new = new[: max(0, self.max_faces - len(self.tracks))]
        for d in new:
            lm = None if det.landmarks is None else det.landmarks[d].copy()
            self.tracks.append(
                _Track(
                    self.next_id,
                    det.boxes[d].copy(),
                    float(det.scores[d]),
                    lm,
                    self.frames_seen - 1,
                    self._thumb,
                )
            )
            detected_ids.add(self.next_id)
            self.next_id += 1

    def update(self, image: np.ndarray) -> list[TrackedFace]:
        """Faces of the next frame, sorted by ``track_id``."""
        frame = self.frames_seen
        self.frames_seen += 1
        cut = self._scene_cut(image)
        if cut:
            self.cuts += 1
            self.tracks = []  # another shot: nothing carries over
        since = None if self._last_detection is None else frame - self._last_detection
        detect_now = cut or since is None or since >= self.detect_every
        detected_ids: set[int] = set()
        refreshed: set[int] = set()
        changes: dict[int, float] = {}
        if not detect_now and self.tracks:
            had = len(self.tracks)
            if self._can_update and since % self.refresh_every == 0:
                self.tracks = self._refresh(image, self.tracks)
                refreshed = {t.track_id for t in self.tracks}
            else:
                changes = self._hold(image, refreshed)
            detect_now = had > 0 and not self.tracks  # the last face is gone: look for others now
        if detect_now:
            self._detect(image, detected_ids)
        self._dedupe()
        out = []
        for t in sorted(self.tracks, key=lambda t: t.track_id):
            if t.track_id in detected_ids:
                source = "detected"
            elif t.track_id in refreshed:
                source = "refreshed"
            else:
                source = "held"
            out.append(
                TrackedFace(
                    t.track_id,
                    np.asarray(t.box, np.float32),
                    t.score,
                    None if t.landmarks is None else np.asarray(t.landmarks, np.float32),
                    source,
                    frame - t.checked,
                    changes.get(t.track_id, 0.0) if source == "held" else 0.0,
                )
            )
        return out
