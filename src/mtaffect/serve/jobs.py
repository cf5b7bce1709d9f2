"""Background prediction jobs: a persistent queue run by a few worker threads.

A job is one ``mtaffect predict --out`` run: its uploaded files live in ``<root>/<run>/.media/``
and its results in ``<root>/<run>/`` (the documented layout, written by the same
:func:`mtaffect.predict.runner.predict_inputs` as the CLI). Its state is a JSON file
``<root>/.jobs/<id>.json`` rewritten atomically, so a page reload finds every job, and a server
restart finds the jobs it was running: they are marked ``interrupted`` and can be resumed, which
reruns ``predict_inputs(resume=True)`` (finished inputs are skipped, the others start over).

Progress comes from the rows the predictor yields: :class:`TrackedPredictor` is a
:class:`~mtaffect.predict.predictor.Predictor` whose ``iter_video`` reports the last finished frame
of each chunk and checks for a cancel request between chunks.
"""

from __future__ import annotations

import contextlib
import json
import queue
import secrets
import shutil
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mtaffect.io import write_json
from mtaffect.predict.predictor import Predictor
from mtaffect.predict.video import VideoRun

__all__ = ["Job", "JobManager", "JobCancelled", "TrackedPredictor"]

ACTIVE = ("queued", "running")
RESUMABLE = ("interrupted", "cancelled", "error")


class JobCancelled(Exception):
    """Raised inside a running job when its cancel button was pressed."""


class TrackedPredictor(Predictor):
    """The CLI's predictor, reporting progress per finished chunk and honouring cancel requests."""

    on_progress: Callable[[str, int], None] | None = None  # (input path, frames finished; -1 = done)
    cancel_event: threading.Event | None = None

    def _check(self) -> None:
        if self.cancel_event is not None and self.cancel_event.is_set():
            raise JobCancelled

    def iter_video(self, path, **kwargs) -> VideoRun:  # noqa: ANN001 - same signature as the parent
        self._check()
        inner = super().iter_video(path, **kwargs)
        return VideoRun(self._tracked(path, inner), inner.report)

    def _tracked(self, path: str | Path, inner: VideoRun) -> Iterator:
        """``inner``'s chunks, reporting the last finished frame of each and checking for a cancel."""
        try:
            for chunk in inner:
                self._check()
                if self.on_progress is not None and len(chunk):
                    self.on_progress(str(path), int(chunk["frame"].max()) + 1)
                yield chunk
        finally:
            inner.close()  # stops the decoding thread at once on cancel
        if self.on_progress is not None:
            self.on_progress(str(path), -1)

    def predict_images(self, paths, **kwargs):  # noqa: ANN001, ANN201
        self._check()
        df = super().predict_images(paths, **kwargs)
        if self.on_progress is not None:
            self.on_progress("images", len(paths))
        return df


@dataclass
class Job:
    id: str
    run: str  # folder under the root
    inputs: list[str]  # file names inside <run>/.media
    checkpoint: str  # the checkpoint's name as listed by the server
    status: str = "queued"  # queued, running, done, partial, error, cancelled, interrupted
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    frames_total: int = 0
    frames_done: int = 0
    progress: float = 0.0
    eta_s: float | None = None
    phase: str = ""
    message: str | None = None


def _frame_total(path: Path) -> int:
    """Frames a video announces (or duration × rate); 1 for an image."""
    from mtaffect.predict.media import IMAGE_EXTENSIONS

    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return 1
    import av

    try:
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            if s.frames:
                return int(s.frames)
            rate = float(s.average_rate or 30)
            return max(1, int((c.duration or 0) / 1e6 * rate))
    except Exception:  # noqa: BLE001 - the run itself reports unreadable files
        return 1


class JobManager:
    """Runs jobs ``workers`` at a time; every state change is written to ``<root>/.jobs``."""

    def __init__(
        self,
        root: str | Path,
        checkpoints: dict[str, Path],
        *,
        workers: int = 1,
        predictor_options: dict | None = None,
        plots: bool = True,
        overlay: bool = True,
    ) -> None:
        self.root = Path(root).resolve()
        self.dir = self.root / ".jobs"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.checkpoints = checkpoints
        self.options = dict(predictor_options or {})
        self.plots, self.overlay = plots, overlay
        self.jobs: dict[str, Job] = {}
        self._cancel: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[str | None] = queue.Queue()
        for path in sorted(self.dir.glob("*.json")):
            try:
                job = Job(**json.loads(path.read_text()))
            except (ValueError, TypeError):
                continue
            if job.status in ACTIVE:  # the server stopped while it ran or waited
                job.status, job.eta_s, job.phase = "interrupted", None, ""
                job.message = "the server stopped before this job finished; resume it"
                self._save(job)
            self.jobs[job.id] = job
        self._threads = [
            threading.Thread(target=self._work, name=f"mtaffect-job-{k}", daemon=True) for k in range(workers)
        ]
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------------ state

    def _save(self, job: Job) -> None:
        write_json(self.dir / f"{job.id}.json", asdict(job))

    def list(self) -> list[dict]:
        with self._lock:
            return [asdict(j) for j in sorted(self.jobs.values(), key=lambda j: j.created, reverse=True)]

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise KeyError(job_id)
        return job

    def submit(self, files: list[Path], checkpoint: str) -> Job:
        """A new job over ``files`` (already checked uploads): moved into the job's folder, queued."""
        if checkpoint not in self.checkpoints:
            raise ValueError(f"unknown checkpoint {checkpoint!r}")
        if not files:
            raise ValueError("no file to process")
        job_id = secrets.token_hex(4)
        stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in files[0].stem)[:40] or "job"
        run = f"{stem}-{job_id}"
        media = self.root / run / ".media"
        media.mkdir(parents=True)
        moved: list[tuple[Path, Path]] = []  # (upload, in the job's folder)
        try:
            for f in files:
                target = media / f.name
                k = 2
                while target.exists():
                    target, k = media / f"{f.stem}_{k}{f.suffix}", k + 1
                shutil.move(str(f), target)
                moved.append((f, target))
            job = Job(id=job_id, run=run, inputs=[t.name for _, t in moved], checkpoint=checkpoint)
            job.frames_total = sum(_frame_total(t) for _, t in moved)
            with self._lock:
                self.jobs[job_id] = job
                self._save(job)
        except BaseException:
            # no half-made job: the files go back to their uploads (which the caller keeps waiting)
            for f, target in moved:
                with contextlib.suppress(OSError):
                    shutil.move(str(target), f)
            with self._lock:
                self.jobs.pop(job_id, None)
            (self.dir / f"{job_id}.json").unlink(missing_ok=True)
            shutil.rmtree(self.root / run, ignore_errors=True)
            raise
        self._queue.put(job_id)
        return job

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        with self._lock:
            if job.status == "queued":
                job.status, job.finished = "cancelled", time.time()
                job.message = "cancelled before it started"
                self._save(job)
            elif job.status == "running":
                self._cancel.setdefault(job_id, threading.Event()).set()
        return job

    def resume(self, job_id: str) -> Job:
        job = self.get(job_id)
        with self._lock:
            if job.status not in RESUMABLE:
                raise ValueError(f"job {job_id} is {job.status}; only {', '.join(RESUMABLE)} jobs resume")
            job.status, job.message, job.finished = "queued", None, None
            self._save(job)
        self._queue.put(job_id)
        return job

    def forget_run(self, run: str) -> None:
        """Drop the jobs of a deleted run folder (refused while one of them is active)."""
        with self._lock:
            mine = [j for j in self.jobs.values() if j.run == run]
            if any(j.status in ACTIVE for j in mine):
                raise ValueError(f"{run}: a job is still queued or running there; cancel it first")
            for j in mine:
                self.jobs.pop(j.id, None)
                (self.dir / f"{j.id}.json").unlink(missing_ok=True)

    def stop(self) -> None:
        for _ in self._threads:
            self._queue.put(None)

    # ------------------------------------------------------------------ work

    def _work(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None:
                return
            job = self.jobs.get(job_id)
            if job is None or job.status != "queued":
                continue  # cancelled while waiting, or deleted
            try:
                self._run(job)
            except Exception as err:  # noqa: BLE001 - a job's failure must not stop the worker
                traceback.print_exc()
                self._finish(job, "error", f"{type(err).__name__}: {err}")

    def _finish(self, job: Job, status: str, message: str | None) -> None:
        with self._lock:
            job.status, job.message, job.finished = status, message, time.time()
            job.eta_s, job.phase = None, ""
            if status == "done":
                job.progress = 1.0
            self._save(job)
            self._cancel.pop(job.id, None)

    def _run(self, job: Job) -> None:
        from mtaffect.predict.runner import predict_inputs

        event = threading.Event()
        with self._lock:
            self._cancel[job.id] = event
            job.status, job.started, job.frames_done, job.progress = "running", time.time(), 0, 0.0
            job.phase = "loading the checkpoint"
            self._save(job)
        out = self.root / job.run
        media = out / ".media"
        predictor = TrackedPredictor.from_checkpoint(self.checkpoints[job.checkpoint], **self.options)
        done: dict[str, int] = {}
        t_start = time.perf_counter()
        last_save = [0.0]

        def on_progress(name: str, frames: int) -> None:
            with self._lock:
                if frames < 0:
                    job.phase = f"plots and overlay of {Path(name).name}"
                else:
                    done[name] = frames
                    job.phase = f"predicting {Path(name).name}"
                job.frames_done = sum(done.values())
                job.progress = min(0.99, job.frames_done / max(1, job.frames_total))
                elapsed = time.perf_counter() - t_start
                job.eta_s = elapsed * (1 - job.progress) / job.progress if job.progress > 0.02 else None
                if time.monotonic() - last_save[0] > 1.0:  # the file is for restarts: once a second
                    last_save[0] = time.monotonic()
                    self._save(job)

        predictor.on_progress, predictor.cancel_event = on_progress, event
        try:
            report = predict_inputs(
                predictor,
                [str(media / n) for n in job.inputs],
                out,
                plots=self.plots,
                overlay=self.overlay,
                resume=True,
                progress=False,
            )
        except JobCancelled:
            self._finish(job, "cancelled", "cancelled; finished inputs are kept, resume continues")
            return
        bad = [e for e in report["inputs"] if e["status"] != "ok"]
        if not bad:
            self._finish(job, "done", None)
        else:
            text = "; ".join(f"{Path(e['input']).name}: {e['status']}: {e.get('error')}" for e in bad)
            ok = any(e["status"] in ("ok", "partial") for e in report["inputs"])
            self._finish(job, "partial" if ok else "error", text)
