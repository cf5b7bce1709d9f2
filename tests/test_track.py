"""Face tracker: stable ids, matching by IoU, cheap updates between detections, new id after loss."""

from __future__ import annotations

import numpy as np

from mtaffect.predict.detect import Detections
from mtaffect.predict.extract import group_people, person_names
from mtaffect.predict.track import FaceTracker


class ScriptedDetector:
    """Returns the scripted boxes of frame ``t`` (set by the test); ``redetect`` keeps the boxes that
    overlap a scripted face, moved onto it."""

    def __init__(self, frames: list[list[list[float]]]) -> None:
        self.frames, self.t, self.calls = frames, 0, 0

    def _current(self) -> np.ndarray:
        return np.asarray(self.frames[min(self.t, len(self.frames) - 1)], float).reshape(-1, 4)

    def detect(self, image):
        self.calls += 1
        boxes = self._current()
        return Detections(
            boxes.astype(np.float32), np.ones(len(boxes), np.float32), np.zeros((len(boxes), 5, 2))
        )

    def redetect(self, image, boxes):
        truth = self._current()
        scores, out = [], []
        for b in boxes:
            ious = [_iou(b, t) for t in truth]
            k = int(np.argmax(ious)) if ious else -1
            ok = k >= 0 and ious[k] > 0.3
            scores.append(1.0 if ok else -1.0)
            out.append(truth[k] if ok else b)
        n = len(boxes)
        return Detections(
            np.asarray(out, np.float32).reshape(n, 4), np.asarray(scores, np.float32), np.zeros((n, 5, 2))
        )


def _step(det: ScriptedDetector, tracker: FaceTracker, t: int):
    det.t = t
    return tracker.update(None)


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_two_people_keep_their_ids_while_moving() -> None:
    script = [[[10 + 2 * t, 10, 60 + 2 * t, 60], [200 - 2 * t, 10, 250 - 2 * t, 60]] for t in range(20)]
    det = ScriptedDetector(script)
    tracker = FaceTracker(det, detect_every=4)
    history = [_step(det, tracker, t) for t in range(20)]
    assert det.calls == 5  # frames 0, 4, 8, 12, 16
    for faces in history:
        assert [f.track_id for f in faces] == [0, 1]
    assert history[-1][0].box[0] < history[-1][1].box[0]
    assert history[0][0].detected and not history[1][0].detected


def test_lost_face_ends_its_track_and_a_return_gets_a_new_id() -> None:
    face = [[10, 10, 60, 60]]
    script = [face] * 3 + [[]] * 3 + [face] * 3
    det = ScriptedDetector(script)
    tracker = FaceTracker(det, detect_every=3)
    ids = [[f.track_id for f in _step(det, tracker, t)] for t in range(9)]
    assert ids == [[0], [0], [0], [], [], [], [1], [1], [1]]


def test_max_faces_and_smoothing() -> None:
    script = [[[0, 0, 10, 10], [50, 50, 60, 60], [100, 100, 110, 110]]]
    tracker = FaceTracker(ScriptedDetector(script), detect_every=1, max_faces=2)
    assert len(tracker.update(None)) == 2
    det = ScriptedDetector([[[0, 0, 10, 10]], [[4, 0, 14, 10]]])
    smooth = FaceTracker(det, detect_every=1, smooth=0.5)
    _step(det, smooth, 0)
    assert _step(det, smooth, 1)[0].box[0] == 2.0


def test_people_join_tracks_that_follow_each_other() -> None:
    tracks = {
        0: {"first": 0, "last": 10, "first_box": [0, 0, 10, 10], "last_box": [0, 0, 10, 10]},
        1: {"first": 0, "last": 30, "first_box": [100, 0, 110, 10], "last_box": [100, 0, 110, 10]},
        2: {"first": 14, "last": 30, "first_box": [2, 0, 12, 10], "last_box": [2, 0, 12, 10]},
    }
    assert group_people(tracks) == [[0, 2], [1]]
    assert person_names("v", [50.0]) == ["v"]
    assert person_names("v", [300.0, 50.0]) == ["v_right", "v_left"]
    assert person_names("v", [1.0, 2.0, 3.0]) == ["v_p0", "v_p1", "v_p2"]


class CountingDetector(ScriptedDetector):
    def __init__(self, frames):
        super().__init__(frames)
        self.refreshed_at: list[int] = []

    def redetect(self, image, boxes):
        self.refreshed_at.append(self.t)
        return super().redetect(image, boxes)


def test_refresh_every_holds_boxes_between_updates() -> None:
    script = [[[10 + t, 10, 60 + t, 60]] for t in range(20)]
    det = CountingDetector(script)
    tracker = FaceTracker(det, detect_every=10, refresh_every=3)
    history = [_step(det, tracker, t) for t in range(20)]
    # detections at 0 and 10; O-Net refreshes on every 3rd frame after each detection frame
    assert det.calls == 2
    assert det.refreshed_at == [3, 6, 9, 13, 16, 19]
    assert all(len(faces) == 1 and faces[0].track_id == 0 for faces in history)
    assert history[4][0].box[0] == history[3][0].box[0] == 13  # held between refreshes
    assert history[6][0].box[0] == 16
    default = CountingDetector(script)
    tracker = FaceTracker(default, detect_every=10)
    for t in range(20):
        _step(default, tracker, t)
    assert len(default.refreshed_at) == 18  # every frame that is not a detection frame


# ------------------------------------------------------------------ honesty of held boxes


def _scene(level: int, box=None) -> np.ndarray:
    """A 640×360 frame of one grey level, with a bright square where ``box`` is."""
    image = np.full((360, 640, 3), level, np.uint8)
    if box is not None:
        x0, y0, x1, y1 = (int(v) for v in box)
        image[y0:y1, x0:x1] = 230
    return image


def test_scene_cut_ends_held_tracks_and_detects_on_that_frame() -> None:
    face = [100, 100, 220, 220]
    script = [[face]] * 5 + [[]] * 3 + [[face]] * 4  # frames 5-7: another shot without the face
    det = CountingDetector(script)
    tracker = FaceTracker(det, detect_every=10, refresh_every=3)
    sources, found = [], []
    for t in range(12):
        det.t = t
        faces = tracker.update(_scene(0 if 5 <= t <= 7 else 120, face if t < 5 or t > 7 else None))
        sources.append([f.source for f in faces])
        found.append(len(faces))
    # the cut at frame 5 ends the track at once (frame 5 is a held frame: no O-Net would look)
    assert found == [1] * 5 + [0] * 3 + [1] * 4
    assert tracker.cuts == 2 and det.calls == 3  # frames 0, 5 (cut) and 8 (cut back: face found)
    assert sources[0] == ["detected"] and sources[8] == ["detected"]
    assert sources[3] == ["refreshed"] and sources[1] == ["held"] and sources[9] == ["held"]


def test_held_box_that_changed_is_rechecked_and_ends_when_rejected() -> None:
    face = [100, 100, 220, 220]
    script = [[face]] * 2 + [[]] * 4  # the face leaves at frame 2, the rest of the scene stays
    det = CountingDetector(script)
    tracker = FaceTracker(det, detect_every=10, refresh_every=3)
    out = []
    for t in range(6):
        det.t = t
        out.append(tracker.update(_scene(120, face if t < 2 else None)))
    assert tracker.cuts == 0  # a small part of the frame changed: no cut
    assert out[1][0].source == "held" and out[1][0].age == 1 and out[1][0].change == 0.0
    assert det.refreshed_at == [2] and tracker.rechecks == 1  # frame 2 would be held: re-checked
    assert out[2] == [] and det.calls == 2  # rejected; the last face gone → detection at once


def test_box_only_detector_drops_a_held_box_that_changed() -> None:
    class BoxesOnly:
        def __init__(self) -> None:
            self.calls = 0

        def detect(self, image):
            self.calls += 1
            return Detections(np.array([[100, 100, 220, 220]], np.float32), np.ones(1, np.float32), None)

    det = BoxesOnly()
    tracker = FaceTracker(det, detect_every=10)
    face = [100, 100, 220, 220]
    first = tracker.update(_scene(120, face))
    held = tracker.update(_scene(120, face))
    gone = tracker.update(_scene(120))  # the square vanished: the held box is no longer trusted
    assert first[0].source == "detected" and held[0].source == "held"
    assert det.calls == 2 and len(gone) == 1 and gone[0].source == "detected"  # re-detected at once
