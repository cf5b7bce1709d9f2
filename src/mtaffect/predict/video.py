"""One video through a predictor, frame by frame: what ``Predictor.iter_video`` returns.

:class:`VideoRun` is an iterator of row chunks in (frame, track_id) order together with the
:class:`RunReport` it fills, so that the report belongs to the run and not to the (shareable)
predictor. :class:`_VideoSession` holds the state kept between frames: the tracker, the faces
waiting for a model batch, the GRU window stream of each live track and the finished rows waiting
until every earlier frame is final. :func:`run_video` is the loop over it. The same session with
``live=True`` has no reader: :class:`mtaffect.predict.live.LiveSession` pushes frames into it one
at a time (``_track``, ``add_tracked``, ``run_batch``, ``take_rows``) and reads each model batch
through ``on_batch``.

The per-frame work splits in two: *tracking* (decode, the detector and tracker, the alignment
warp), which depends only on the frames, and the *model* (batches of crops, GRU windows, rows).
With ``predictor.overlap`` (the default) tracking runs in its own thread
(:func:`mtaffect.predict.overlap.background`; a bounded queue of at least ``TRACK_QUEUE`` frames'
faces and crops, no pixels) while this thread runs the model, so detection and the model overlap;
the rows are the same as without it (the same frames reach the model in the same batches, tested),
and an error in the tracking thread is raised here after the rows of the frames tracked before
it. With ``predictor.detect_batch`` > 1 the tracker's full detections come from
:class:`mtaffect.predict.detect_batch.Lookahead`, computed ahead for ``detect_batch`` scheduled
detections at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from mtaffect.predict.detect import MTCNN
from mtaffect.predict.detect_batch import Lookahead
from mtaffect.predict.media import Frame, VideoReader
from mtaffect.predict.overlap import background
from mtaffect.predict.tables import frame_rows
from mtaffect.predict.temporal import StreamingWindows
from mtaffect.predict.track import FaceTracker, TrackedFace

__all__ = ["RunReport", "VideoRun", "run_video", "TRACK_QUEUE"]

TRACK_QUEUE = 32
"""Frames the tracking thread may run ahead of the model (at least two model batches): a frame in the
queue holds its faces' crops and boxes, not its image, so this is a few megabytes at most."""


@dataclass
class RunReport:
    """What happened on one input: counts, the error that cut it short (if any), time per stage (s)."""

    input: str
    frames: int = 0
    faces: int = 0
    tracks: int = 0
    detector_calls: int = 0
    scene_cuts: int = 0
    error: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, dt: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + dt


class VideoRun:
    """The rows of one video as they become final (an iterator of DataFrames) and its ``report``.

    ``report`` (:class:`RunReport`) fills in while the video is read and is complete once the
    iteration has ended; after a decoding failure (truncated file) the iteration ends early, having
    yielded every row of the frames decoded before it, and ``report.error`` says what happened.
    ``close()`` stops a run early (the decoding thread ends at once).
    """

    def __init__(self, chunks: Iterator[pd.DataFrame], report: RunReport) -> None:
        self._chunks = chunks
        self.report = report

    def __iter__(self) -> VideoRun:
        return self

    def __next__(self) -> pd.DataFrame:
        return next(self._chunks)

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


def run_video(
    predictor: Any, path: str | Path, *, debug_crops: str | Path | None = None, progress: bool = False
) -> VideoRun:
    """``predictor.iter_video``: nothing is opened or decoded until the first chunk is asked for."""
    report = RunReport(str(path))
    return VideoRun(_chunks(predictor, str(path), report, debug_crops, progress), report)


def _chunks(
    predictor: Any, name: str, report: RunReport, debug_crops: str | Path | None, progress: bool
) -> Iterator[pd.DataFrame]:
    session = _VideoSession(predictor, name, report, debug_crops)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=session.reader.frame_count, unit="frame", desc=Path(name).name, leave=False)
    steps = session.tracked()
    try:
        while True:
            try:
                step = next(steps, None)
            except Exception:
                # tracking failed on a frame: the frames tracked before it are finished first
                session.flush()
                chunk = session.take_rows(session.last_added + 1)
                if chunk is not None:
                    yield chunk
                raise
            if step is None:
                break
            fr, faces, crops = step
            session.add_tracked(fr, faces, crops)
            chunk = session.take_rows(session.watermark(fr.index + 1))
            if bar is not None:
                bar.update(1)
            if chunk is not None:
                yield chunk
    finally:
        steps.close()  # decoding and tracking stop at once, also when the consumer stops early
    session.flush()
    if bar is not None:
        bar.close()
    session.close_report()
    chunk = session.take_rows(session.last_frame + 1)
    if chunk is not None:
        yield chunk


_NO_IMAGE = np.zeros((0, 0, 3), np.uint8)


@dataclass
class _Face:
    """A tracked face waiting for (or inside) a model batch; ``frame_rows`` reads its fields."""

    frame: int
    time: float
    track_id: int
    box: np.ndarray
    score: float
    source: str = "detected"
    check_frame: int = 0
    change: float = 0.0


class _VideoSession:
    """The state of one video between frames; each method does one step of the per-frame loop.

    ``ready`` holds finished records ``(frame, track_id or -1, payload)`` (see ``tables.frame_rows``)
    until every earlier frame is final; ``pending``/``pending_crops`` the faces of the next model
    batch; ``streams`` the GRU windows of each live track (temporal checkpoints only).
    """

    def __init__(
        self,
        predictor: Any,
        name: str,
        report: RunReport,
        debug_crops: str | Path | None,
        *,
        live: bool = False,
    ) -> None:
        self.p = predictor
        self.name, self.report = name, report
        self.debug_crops = None if debug_crops is None else Path(debug_crops)
        # opened first: an unreadable file fails before the detector loads; a live session's frames
        # are pushed instead (and cannot be detected ahead: no Lookahead)
        self.reader = None if live else VideoReader(name)
        detector = predictor.detector
        batch = getattr(predictor, "detect_batch", 1)
        ahead = not live and batch > 1 and isinstance(detector, MTCNN)
        self.lookahead = Lookahead(detector) if ahead else None
        # called with each model batch's faces and the model's raw outputs (the live CNN lane)
        self.on_batch: Callable[[list[_Face], dict[str, np.ndarray]], None] | None = None
        self.tracker = FaceTracker(
            self.lookahead or detector,
            detect_every=predictor.detect_every,
            refresh_every=predictor.refresh_every,
            smooth=predictor.smooth,
            max_faces=predictor.max_faces,
        )
        self._frames: Iterator[Frame] = iter(self.reader) if self.reader is not None else iter(())
        self.last_frame = -1  # the last frame decoded
        self.last_added = -1  # the last frame whose faces reached the model's queue
        self.pending: list[_Face] = []
        self.pending_crops: list[np.ndarray] = []
        self.streams: dict[int, StreamingWindows] = {}
        self.ready: list[tuple[int, int, object]] = []
        self.seen_tracks: set[int] = set()
        self.prev_ids: set[int] = set()

    def next_frame(self) -> Frame | None:
        """The next decoded frame (None at the end), its decoding time counted."""
        t0 = time.perf_counter()
        fr = next(self._frames, None)
        if fr is not None:
            self.report.add("decode", time.perf_counter() - t0)
            self.last_frame = fr.index
        return fr

    def tracked(self) -> Generator[tuple[Frame, list[TrackedFace], np.ndarray | None], None, None]:
        """Each frame with its tracked faces and their crops, in order: in a thread with overlap."""
        steps = self._track_frames()
        if not getattr(self.p, "overlap", False):
            return steps
        # the tracking thread keeps working while the model runs a batch: room for two batches
        size = max(TRACK_QUEUE, 2 * self.p.batch_size)
        return background(steps, maxsize=size, name=f"track:{Path(self.name).name}")

    def _track_frames(self) -> Generator[tuple[Frame, list[TrackedFace], np.ndarray | None], None, None]:
        try:
            if self.lookahead is None:
                while (fr := self.next_frame()) is not None:
                    yield self._track(fr)
                return
            # windows holding detect_batch scheduled detections, detected together ahead
            window = self.p.detect_batch * self.tracker.detect_every
            while True:
                frames = []
                while len(frames) < window and (fr := self.next_frame()) is not None:
                    frames.append(fr)
                if not frames:
                    return
                t0 = time.perf_counter()
                first = self.tracker.frames_seen
                self.lookahead.prefetch(
                    first, [f.image for f in frames], self.tracker.last_detection, self.tracker.detect_every
                )
                self.report.add("detect", time.perf_counter() - t0)
                for k, fr in enumerate(frames):
                    self.lookahead.frame = first + k
                    yield self._track(fr)
        finally:
            self._frames.close()  # ends the decoding thread (a no-op once the video was read)

    def _track(self, fr: Frame) -> tuple[Frame, list[TrackedFace], np.ndarray | None]:
        """The frame's tracked faces and their model-input crops (None without a face)."""
        t1 = time.perf_counter()
        faces = self.tracker.update(fr.image)
        t2 = time.perf_counter()
        self.report.add("detect", t2 - t1)
        crops = None
        if faces:
            boxes = np.stack([f.box for f in faces])
            lms = None if faces[0].landmarks is None else np.stack([f.landmarks for f in faces])
            crops = self.p.crops(fr.image, boxes, lms)
        self.report.add("align", time.perf_counter() - t2)
        return Frame(fr.index, fr.time, _NO_IMAGE), faces, crops  # the model's side needs no pixels

    def add_tracked(self, fr: Frame, faces: list[TrackedFace], crops: np.ndarray | None) -> None:
        """Queue a tracked frame's crops (or its no-face row), run the model batches now due."""
        ids = {f.track_id for f in faces}
        self.seen_tracks |= ids
        if faces:
            self._queue_faces(fr, faces, crops)
        else:
            self.ready.append((fr.index, -1, fr.time))
        self.last_added = fr.index
        ended = self.prev_ids - ids
        if ended and self.p.temporal:
            self._run_batch()
            for tid in sorted(ended):
                self._finish_track(tid)
        self.prev_ids = ids
        if len(self.pending) >= self.p.batch_size:
            self._run_batch()

    def _queue_faces(self, fr: Frame, faces: list[TrackedFace], crops: np.ndarray) -> None:
        """Aligned crops of the frame's tracked faces into the next model batch."""
        self.pending_crops.append(crops)
        self.pending.extend(
            _Face(fr.index, fr.time, f.track_id, f.box, f.score, f.source, fr.index - f.age, f.change)
            for f in faces
        )
        if self.debug_crops is not None:
            _write_debug(self.debug_crops, fr.index, [f.track_id for f in faces], crops)
        self.report.faces += len(faces)

    def run_batch(self) -> None:
        """The model over the faces queued so far, whatever their number (a live frame's faces)."""
        self._run_batch()

    def _run_batch(self) -> None:
        """The model over the pending crops: per-frame values, or embeddings into each track's windows."""
        if not self.pending:
            return
        t0 = time.perf_counter()
        out = self.p.model.frames(np.concatenate(self.pending_crops))
        if self.on_batch is not None:
            self.on_batch(list(self.pending), out)
        if not self.p.temporal:
            dec = self.p.model.decode(out)
            for k, face in enumerate(self.pending):
                vals = np.concatenate([dec["probabilities"][k], [dec["valence"][k], dec["arousal"][k]]])
                self.ready.append((face.frame, face.track_id, (face, vals)))
        else:
            by_track: dict[int, list[int]] = {}
            for k, face in enumerate(self.pending):
                by_track.setdefault(face.track_id, []).append(k)
            for tid, ks in by_track.items():
                stream = self.streams.setdefault(
                    tid, StreamingWindows(self.p.model, length=self.p.window, stride=self.p.stride)
                )
                done = stream.push([self.pending[k] for k in ks], out["emb_expr"][ks], out["emb_va"][ks])
                self.ready.extend((f.frame, f.track_id, (f, v)) for f, v in done)
        self.pending.clear()
        self.pending_crops.clear()
        self.report.add("model", time.perf_counter() - t0)

    def _finish_track(self, tid: int) -> None:
        """The last GRU windows of a track that ended."""
        stream = self.streams.pop(tid, None)
        if stream is not None:
            t0 = time.perf_counter()
            self.ready.extend((f.frame, f.track_id, (f, v)) for f, v in stream.finish())
            self.report.add("model", time.perf_counter() - t0)

    def watermark(self, next_frame: int) -> int:
        """The first frame whose rows may still change: rows of earlier frames are final."""
        marks = [next_frame] + ([self.pending[0].frame] if self.pending else [])
        marks += [s.pending_item.frame for s in self.streams.values() if s.pending_item is not None]
        return min(marks)

    def take_rows(self, watermark: int) -> pd.DataFrame | None:
        """The finished rows of frames before ``watermark``, in (frame, track_id) order; None if none."""
        take = [r for r in self.ready if r[0] < watermark]
        if not take:
            return None
        self.ready[:] = [r for r in self.ready if r[0] >= watermark]
        return frame_rows(self.name, sorted(take, key=lambda r: (r[0], r[1])))

    def flush(self) -> None:
        """At the end of the video: the last batch and the last windows of every live track."""
        self._run_batch()
        for tid in sorted(self.streams):
            self._finish_track(tid)

    def close_report(self) -> None:
        """The report's counts, once the video has been read to its end (or to its failure)."""
        if self.reader is not None:
            self.report.frames = self.reader.frames_read
            self.report.error = self.reader.error
        else:
            self.report.frames = self.last_added + 1
        self.report.tracks = len(self.seen_tracks)
        self.report.detector_calls = self.tracker.detector_calls
        self.report.scene_cuts = self.tracker.cuts


def _write_debug(folder: Path, frame: int, track_ids: list[int], crops: np.ndarray) -> None:
    """``folder/<track>/<frame+1:05d>.jpg``: the exact model-input crops, to check alignment by eye."""
    for tid, crop in zip(track_ids, crops):
        sub = folder / f"track{tid}"
        sub.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(sub / f"{frame + 1:05d}.jpg"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
