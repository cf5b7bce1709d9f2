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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtaffect.predict.detect import Detections, box_iou

__all__ = ["TrackedFace", "FaceTracker"]


@dataclass
class TrackedFace:
    track_id: int
    box: np.ndarray  # (4,) x0, y0, x1, y1
    score: float
    landmarks: np.ndarray | None  # (5, 2)
    detected: bool  # True when this frame's box came from the full detector


@dataclass
class _Track:
    track_id: int
    box: np.ndarray
    score: float
    landmarks: np.ndarray | None


class FaceTracker:
    """Turn per-frame images into tracked faces: ``update(image) -> list[TrackedFace]``.

    max_faces: keep at most this many new tracks per detection (best detector scores first; None = all).
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
        self.frames_seen = 0
        self.detector_calls = 0
        self._can_update = hasattr(detector, "redetect")

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

    def update(self, image: np.ndarray) -> list[TrackedFace]:
        """Faces of the next frame, sorted by ``track_id``."""
        detect_now = self.frames_seen % self.detect_every == 0
        self.frames_seen += 1
        detected_ids: set[int] = set()
        if detect_now:
            self.detector_calls += 1
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
                    tr.landmarks = self._blend(
                        tr.landmarks, None if det.landmarks is None else det.landmarks[di]
                    )
                    tr.score = float(det.scores[di])
                    detected_ids.add(tr.track_id)
            others = [t for i, t in enumerate(self.tracks) if i not in matched_tracks]
            lost = {id(t) for t in others} - {id(t) for t in self._refresh(image, others)}
            self.tracks = [t for t in self.tracks if id(t) not in lost]
            new = [d for d in range(len(det)) if d not in matched_dets]
            if self.max_faces is not None:
                new = new[: max(0, self.max_faces - len(self.tracks))]
            for d in new:
                lm = None if det.landmarks is None else det.landmarks[d].copy()
                self.tracks.append(_Track(self.next_id, det.boxes[d].copy(), float(det.scores[d]), lm))
                detected_ids.add(self.next_id)
                self.next_id += 1
        elif ((self.frames_seen - 1) % self.detect_every) % self.refresh_every == 0:
            self.tracks = self._refresh(image, self.tracks)
        self._dedupe()
        return [
            TrackedFace(
                t.track_id,
                np.asarray(t.box, np.float32),
                t.score,
                None if t.landmarks is None else np.asarray(t.landmarks, np.float32),
                t.track_id in detected_ids,
            )
            for t in sorted(self.tracks, key=lambda t: t.track_id)
        ]
