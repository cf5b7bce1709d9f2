"""Frames as they come: a camera, a call or a stream analysed live (issue 18's library seam).

:class:`LiveSession` takes one RGB frame at a time (``push(image, t)``) and returns the CNN lane's
values for that frame at once (:class:`LiveResult`: one :class:`LiveFace` per tracked person). It
runs prediction's own per-frame session (:class:`mtaffect.predict.video._VideoSession` with
``live=True``): the same tracker, detector schedule, scene cuts and held boxes as ``predict``. The
GRU-refined rows (temporal checkpoints) become final later: a frame's row is final once no
32-frame window can still cover it, i.e. about one window (``predictor.window`` frames) after it
was pushed, or when its track ends; :meth:`LiveSession.refined` returns them in predict's table
columns. Without a GRU the refined rows are the CNN's, final at once.

``start_recording(folder)`` starts a fresh session (frame 0, time 0, a new tracker) whose pushed
frames go, losslessly (``libx264rgb``, ``crf 0``: H.264 4:4:4 in RGB), into ``folder/video.mp4``
with millisecond time stamps, so ``mtaffect predict`` on that video sees exactly the frames and
times that were processed and gives the recorded table (within float tolerance: only the model's
batches differ). The refined rows stream to ``predictions.partial.csv`` about every second;
``stop_recording()`` finalises the folder like predict's: ``predictions.csv``/``.parquet``, the
plots, ``overlay.mp4``, ``done.json`` last. A folder without ``done.json`` is partial (a crash
keeps ``predictions.partial.csv`` and ``recording.json``).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pandas as pd

from mtaffect.errors import UserError
from mtaffect.io import prepare_output_dir, write_json
from mtaffect.labels import EXPRESSIONS
from mtaffect.predict.media import Frame
from mtaffect.predict.tables import TableWriter
from mtaffect.predict.video import RunReport, _VideoSession

__all__ = ["LiveFace", "LiveResult", "LiveSession", "Recorder", "FLUSH_SECONDS", "KEEP_REFINED", "VIDEO_NAME"]

FLUSH_SECONDS = 1.0
"""Refined rows are written to the recording's table at least this often (a crash loses at most that)."""
KEEP_REFINED = 900
"""Pushes' worth of refined rows kept for :meth:`LiveSession.refined` (30 s at 30 frames/s)."""
VIDEO_NAME = "video.mp4"
"""The recording's video of the processed frames."""


@dataclass
class LiveFace:
    """One tracked person in a frame, the CNN lane's values (box in pixels x0, y0, x1, y1)."""

    track_id: int
    box: np.ndarray
    probabilities: np.ndarray  # (7,) in labels.EXPRESSIONS order
    expression: str
    valence: float
    arousal: float
    source: str  # "detected", "tracked" or "held", as predict's face_source


@dataclass
class LiveResult:
    """What one pushed frame gave: its index and time in the current session, its faces."""

    frame: int
    time: float
    faces: list[LiveFace] = field(default_factory=list)


class Recorder:
    """A recording's folder: the lossless video of the processed frames and the streamed table."""

    def __init__(self, folder: str | Path, name: str, *, overwrite: bool = False) -> None:
        self.folder = prepare_output_dir(folder, overwrite=overwrite)
        self.name = name
        write_json(self.folder / "recording.json", {"input": name, "status": "recording",
                                                    "started": time.time()})
        self._container = av.open(str(self.folder / VIDEO_NAME), "w")
        self._stream = None
        self._last_pts = -1
        self.writer = TableWriter(self.folder / "predictions")
        self._rows: list[pd.DataFrame] = []
        self._flushed = time.monotonic()

    def frame(self, image: np.ndarray, t: float) -> None:
        """Add one processed frame (RGB uint8) shown at ``t`` seconds (ms steps, increasing)."""
        if self._stream is None:
            h, w = image.shape[:2]
            stream = self._container.add_stream("libx264rgb", rate=1000)
            stream.width, stream.height, stream.pix_fmt = w, h, "rgb24"
            # the encoder's and the stream's clock in milliseconds: the frames' times exactly
            stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
            stream.options = {"crf": "0", "preset": "ultrafast", "tune": "zerolatency"}
            self._stream = stream
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = int(round(t * 1000))
        frame.time_base = Fraction(1, 1000)  # the muxer changes the stream's own (mp4: 1/16000)
        self._container.mux(self._stream.encode(frame))

    def rows(self, chunk: pd.DataFrame | None, *, force: bool = False) -> None:
        """Queue refined rows; write them out when a second has passed (or ``force``)."""
        if chunk is not None and len(chunk):
            self._rows.append(chunk)
        if self._rows and (force or time.monotonic() - self._flushed >= FLUSH_SECONDS):
            self.writer.write(pd.concat(self._rows, ignore_index=True))
            self._rows.clear()
            self._flushed = time.monotonic()

    def finish(self, entry: dict[str, Any], *, plots: bool = True, overlay: bool = True) -> Path:
        """Close the video and the table, write the plots and overlay, ``done.json`` last."""
        self.rows(None, force=True)
        if self._stream is not None:
            self._container.mux(self._stream.encode(None))
        self._container.close()
        self.writer.close()
        df = pd.read_parquet(self.folder / "predictions.parquet")
        if plots:
            from mtaffect.predict.plots import plot_all

            plot_all(df, self.folder, self.name)
        if overlay and self._stream is not None:
            from mtaffect.predict.overlay import write_overlay

            write_overlay(self.folder / VIDEO_NAME, df, self.folder / "overlay.mp4")
        (self.folder / "recording.json").unlink(missing_ok=True)
        files = sorted(str(p.relative_to(self.folder)) for p in self.folder.rglob("*") if p.is_file())
        from mtaffect.predict.runner import MARKER

        write_json(self.folder / MARKER, {"input": entry["input"], "status": entry["status"], "files": files})
        return self.folder


class LiveSession:
    """Push frames as they arrive; CNN values at once, GRU-refined rows later, optional recording.

    ``predictor``: a :class:`mtaffect.predict.predictor.Predictor`. ``name`` is the ``input`` column
    of the rows. Times pushed are any increasing clock in seconds; the session counts from its
    first frame (0.0) in milliseconds. ``keep_refined``: how many pushes' worth of refined rows
    wait for :meth:`refined` (older ones are dropped and counted in ``refined_lost``, so memory
    stays flat when nobody asks; 0 keeps none, as ``mtaffect live`` does: the recording has them).
    """

    def __init__(self, predictor: Any, name: str = "live", *, keep_refined: int = KEEP_REFINED) -> None:
        self.p = predictor
        self.name = name
        self.keep_refined = keep_refined
        self.refined_lost = 0  # refined rows dropped because refined() was not called in time
        self.recorder: Recorder | None = None
        self.frames_pushed = 0
        self.last_entry: dict[str, Any] | None = None
        self._refined: deque[pd.DataFrame] = deque()
        self._new_core()

    def _new_core(self) -> None:
        self.report = RunReport(self.name)
        self.core = _VideoSession(self.p, self.name, self.report, None, live=True)
        self.core.on_batch = self._on_batch
        self._batch: list[tuple[Any, np.ndarray, np.ndarray, float, float]] = []
        self._index = 0
        self._t0: float | None = None
        self._last_t = -1.0

    def _on_batch(self, faces: list[Any], out: dict[str, np.ndarray]) -> None:
        dec = self.p.model.decode(out)
        for k, face in enumerate(faces):
            self._batch.append(
                (face, face.box, dec["probabilities"][k], float(dec["valence"][k]), float(dec["arousal"][k]))
            )

    def push(self, image: np.ndarray, t: float) -> LiveResult:
        """Process one frame (RGB uint8 ``(H, W, 3)``) captured at ``t`` seconds; its CNN values."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"push expects an RGB uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
        if self._t0 is None:
            self._t0 = t
        # millisecond steps, strictly increasing: the recorded video's time stamps are the same
        ts = round((t - self._t0) * 1000) / 1000
        if self._index and ts <= self._last_t:
            ts = round(self._last_t * 1000 + 1) / 1000
        self._last_t = ts
        fr = Frame(self._index, ts, image)
        if self.recorder is not None:
            self.recorder.frame(image, ts)
        tracked, faces, crops = self.core._track(fr)
        self._batch.clear()
        self.core.add_tracked(tracked, faces, crops)
        self.core.run_batch()  # this frame's faces now, not when a batch is full
        mine = [b for b in self._batch if b[0].frame == fr.index]
        faces_out = [
            LiveFace(f.track_id, np.asarray(box, float), np.asarray(pr, float),
                     EXPRESSIONS[int(np.argmax(pr))], v, a, f.source)
            for f, box, pr, v, a in mine
        ]
        result = LiveResult(fr.index, ts, faces_out)
        self._collect(self.core.take_rows(self.core.watermark(fr.index + 1)))
        self._index += 1
        self.frames_pushed += 1
        return result

    def _collect(self, chunk: pd.DataFrame | None) -> None:
        if chunk is None:
            return
        if self.keep_refined > 0:
            if len(self._refined) >= self.keep_refined:
                self.refined_lost += len(self._refined.popleft())
            self._refined.append(chunk)
        else:
            self.refined_lost += len(chunk)
        if self.recorder is not None:
            self.recorder.rows(chunk)

    def refined(self) -> pd.DataFrame | None:
        """The rows that became final since the last call (predict's columns), None if none."""
        if not self._refined:
            return None
        out = pd.concat(self._refined, ignore_index=True)
        self._refined.clear()
        return out

    def _end_core(self) -> None:
        """Every row of the current session final (the last windows of every live track)."""
        self.core.flush()
        self.core.close_report()
        self._collect(self.core.take_rows(self._index))

    def start_recording(self, folder: str | Path, *, overwrite: bool = False) -> Path:
        """Record from the next frame on into ``folder`` (refused if it holds files, unless ``overwrite``)."""
        if self.recorder is not None:
            raise UserError(f"already recording into {self.recorder.folder}")
        recorder = Recorder(folder, self.name, overwrite=overwrite)
        self._end_core()  # the rows before the recording stay with refined(), not in the folder
        self._new_core()
        self.recorder = recorder
        return recorder.folder

    def stop_recording(
        self, *, error: str | None = None, plots: bool = True, overlay: bool = True
    ) -> Path | None:
        """Finish the recording (``status`` "partial" with ``error``, e.g. the stream broke); its folder."""
        if self.recorder is None:
            return None
        self._end_core()
        rep = self.report
        entry = {
            "input": self.name, "output": self.recorder.folder.name,
            "status": "partial" if error else "ok", "error": error,
            "frames": rep.frames, "faces": rep.faces, "tracks": rep.tracks,
            "detector_calls": rep.detector_calls, "scene_cuts": rep.scene_cuts,
            "seconds": {k: round(v, 3) for k, v in rep.seconds.items()},
        }
        recorder, self.recorder = self.recorder, None
        folder = recorder.finish(entry, plots=plots, overlay=overlay)
        self.last_entry = entry  # the report.json entry of the folder (the CLI writes report.json)
        self._new_core()
        return folder
