"""One video through a predictor, frame by frame: what ``Predictor.iter_video`` returns.

:class:`VideoRun` is an iterator of row chunks in (frame, track_id) order together with the
:class:`RunReport` it fills, so that the report belongs to the run and not to the (shareable)
predictor. :class:`_VideoSession` holds the state kept between frames: the tracker, the faces
waiting for a model batch, the GRU window stream of each live track and the finished rows waiting
until every earlier frame is final. :func:`run_video` is the loop over it.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from mtaffect.predict.media import Frame, VideoReader
from mtaffect.predict.tables import frame_rows
from mtaffect.predict.temporal import StreamingWindows
from mtaffect.predict.track import FaceTracker

__all__ = ["RunReport", "VideoRun", "run_video"]


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
    try:
        while (fr := session.next_frame()) is not None:
            session.add_frame(fr)
            chunk = session.take_rows(session.watermark(fr.index + 1))
            if bar is not None:
                bar.update(1)
            if chunk is not None:
                yield chunk
    finally:
        session.stop_decoding()  # at once, also when the consumer stops early (close, cancel)
    session.flush()
    if bar is not None:
        bar.close()
    session.close_report()
    chunk = session.take_rows(session.last_frame + 1)
    if chunk is not None:
        yield chunk


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

    def __init__(self, predictor: Any, name: str, report: RunReport, debug_crops: str | Path | None) -> None:
        self.p = predictor
        self.name, self.report = name, report
        self.debug_crops = None if debug_crops is None else Path(debug_crops)
        self.reader = VideoReader(name)  # opened first: an unreadable file fails before the detector loads
        self.tracker = FaceTracker(
            predictor.detector,
            detect_every=predictor.detect_every,
            refresh_every=predictor.refresh_every,
            smooth=predictor.smooth,
            max_faces=predictor.max_faces,
        )
        self._frames: Generator[Frame, None, None] = iter(self.reader)
        self.last_frame = -1
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

    def stop_decoding(self) -> None:
        """End the decoding thread (a no-op once the video was read to its end)."""
        self._frames.close()

    def add_frame(self, fr: Frame) -> None:
        """Track the frame's faces, queue their crops (or a no-face row), run the batches now due."""
        t1 = time.perf_counter()
        faces = self.tracker.update(fr.image)
        t2 = time.perf_counter()
        self.report.add("detect", t2 - t1)
        ids = {f.track_id for f in faces}
        self.seen_tracks |= ids
        if faces:
            self._queue_faces(fr, faces)
        else:
            self.ready.append((fr.index, -1, fr.time))
        self.report.add("align", time.perf_counter() - t2)
        ended = self.prev_ids - ids
        if ended and self.p.temporal:
            self._run_batch()
            for tid in sorted(ended):
                self._finish_track(tid)
        self.prev_ids = ids
        if len(self.pending) >= self.p.batch_size:
            self._run_batch()

    def _queue_faces(self, fr: Frame, faces: list) -> None:
        """Aligned crops of the frame's tracked faces into the next model batch."""
        boxes = np.stack([f.box for f in faces])
        lms = None if faces[0].landmarks is None else np.stack([f.landmarks for f in faces])
        crops = self.p.crops(fr.image, boxes, lms)
        self.pending_crops.append(crops)
        self.pending.extend(
            _Face(fr.index, fr.time, f.track_id, f.box, f.score, f.source, fr.index - f.age, f.change)
            for f in faces
        )
        if self.debug_crops is not None:
            _write_debug(self.debug_crops, fr.index, [f.track_id for f in faces], crops)
        self.report.faces += len(faces)

    def _run_batch(self) -> None:
        """The model over the pending crops: per-frame values, or embeddings into each track's windows."""
        if not self.pending:
            return
        t0 = time.perf_counter()
        out = self.p.model.frames(np.concatenate(self.pending_crops))
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
        self.report.frames = self.reader.frames_read
        self.report.error = self.reader.error
        self.report.tracks = len(self.seen_tracks)
        self.report.detector_calls = self.tracker.detector_calls
        self.report.scene_cuts = self.tracker.cuts


def _write_debug(folder: Path, frame: int, track_ids: list[int], crops: np.ndarray) -> None:
    """``folder/<track>/<frame+1:05d>.jpg``: the exact model-input crops, to check alignment by eye."""
    for tid, crop in zip(track_ids, crops):
        sub = folder / f"track{tid}"
        sub.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(sub / f"{frame + 1:05d}.jpg"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
