"""Where live frames come from: a stream, a device or a file, read in a thread that keeps the newest.

:func:`open_frames` decodes a source with PyAV (``av.open(url, timeout=(open_s, read_s))``: a
stream that stalls raises :class:`StreamError` after ``read_s`` instead of hanging), optionally at
the file's own frame rate (``realtime``). :class:`LatestFrame` runs such an iterator in a thread
and holds only the newest frame: when the consumer is slower, older frames are overwritten and
counted in ``dropped`` (no queue that grows, latency stays bounded). :func:`run_stream` is the
processing loop of ``mtaffect live``: newest frame → :class:`mtaffect.predict.live.LiveSession`,
with ``--reconnect``'s backoff, a duration, and a status callback.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np

from mtaffect.errors import UserError

__all__ = [
    "StreamError", "open_frames", "LatestFrame", "LiveStats", "run_stream", "BACKOFF", "fixed_mmap_threshold"
]

BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0)
"""Seconds waited before each reconnection attempt (the last one repeats)."""


def fixed_mmap_threshold(size: int = 128 * 1024) -> bool:
    """Fix glibc's mmap threshold (``mallopt(M_MMAP_THRESHOLD, size)``) for a long live process.

    glibc raises the threshold each time an mmapped block is freed, after which frame-sized
    buffers (a decoded frame, its copy for the encoder: ~0.7 MB at 640×360) come from the heap, and
    the small objects allocated between them (table rows) pin it: RSS grew ~0.7 MB per processed
    frame in a recording session (measured, docs/predict.md "Live"). A fixed threshold keeps such
    buffers mmapped, returned to the system when freed. False where it cannot be set (not glibc).
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, int(size)))  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


class StreamError(UserError):
    """A live source could not be opened or stopped delivering frames (names the source)."""


def open_frames(
    source: str, *, realtime: bool = False, open_timeout: float = 10.0, read_timeout: float = 5.0
) -> Iterator[tuple[np.ndarray, float]]:
    """``(RGB uint8 image, arrival time.monotonic())`` of each decoded frame of ``source``.

    ``source``: a URL FFmpeg reads (``tcp://``, ``udp://``, ``rtsp://``, ``http://`` MJPEG), a
    capture device (``/dev/video0``, opened with ``format="v4l2"``) or a file. ``realtime`` waits
    for each frame's presentation time (a file played as a camera would deliver it).
    """
    options = {"format": "v4l2"} if source.startswith("/dev/video") else {}
    try:
        container = av.open(source, timeout=(open_timeout, read_timeout), **options)
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise StreamError(f"{source}: cannot open ({err}; open timeout {open_timeout:g} s)") from err
    try:
        if not container.streams.video:
            raise StreamError(f"{source}: has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        start, first = time.monotonic(), None
        try:
            for frame in container.decode(stream):
                if realtime and frame.time is not None:
                    first = frame.time if first is None else first
                    wait = start + (frame.time - first) - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                yield frame.to_ndarray(format="rgb24"), time.monotonic()
        except (av.error.FFmpegError, OSError, ValueError) as err:
            raise StreamError(
                f"{source}: stopped delivering frames ({err}; read timeout {read_timeout:g} s)"
            ) from err
    finally:
        container.close()


class LatestFrame:
    """The newest frame of an iterator read in a thread; older unread frames are dropped (counted).

    ``get(timeout)`` waits for a frame not returned before and returns it, ``None`` once the
    iterator has ended (raising its exception, if it failed), or raises ``TimeoutError``.
    """

    def __init__(self, frames: Iterator[Any], name: str = "live-reader") -> None:
        self._frames = frames
        self._cond = threading.Condition()
        self._item: Any = None
        self._fresh = False
        self._done = False
        self._error: BaseException | None = None
        self._stop = False
        self.received = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._read, name=name, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for item in self._frames:
                with self._cond:
                    if self._stop:
                        break
                    if self._fresh:
                        self.dropped += 1  # never processed: the newest frame wins
                    self._item, self._fresh = item, True
                    self.received += 1
                    self._cond.notify_all()
        except BaseException as err:  # noqa: BLE001 - handed to the consumer by get()
            with self._cond:
                self._error = err
        finally:
            close = getattr(self._frames, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001 - a generator closed from its own thread
                    pass
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Any:
        with self._cond:
            if not self._cond.wait_for(lambda: self._fresh or self._done, timeout):
                raise TimeoutError("no new frame")
            if self._fresh:
                self._fresh = False
                return self._item
            if self._error is not None:
                raise self._error
            return None

    def close(self) -> None:
        """Stop reading (the thread ends after the frame it is decoding)."""
        with self._cond:
            self._stop = True


@dataclass
class LiveStats:
    """What a live run did: frames processed and dropped, latencies (s), why it ended."""

    processed: int = 0
    dropped: int = 0
    received: int = 0
    reconnects: int = 0
    seconds: float = 0.0
    error: str | None = None
    ended: str = ""  # "duration", "interrupted", "end of stream", "error"
    latencies: deque = field(default_factory=lambda: deque(maxlen=10_000))

    def latency(self, q: float) -> float | None:
        return float(np.quantile(np.asarray(self.latencies), q)) if self.latencies else None


def run_stream(
    session: Any,
    open_source: Callable[[], Iterator[tuple[np.ndarray, float]]],
    *,
    duration: float | None = None,
    reconnect: bool = False,
    on_result: Callable[[Any, LiveStats], None] | None = None,
    stop: threading.Event | None = None,
) -> LiveStats:
    """Feed the newest frame of ``open_source()`` to ``session.push`` until the duration, the end of
    the stream (or, with ``reconnect``, only the duration), ``stop`` or Ctrl-C; the stats.

    A ``KeyboardInterrupt`` ends the loop cleanly (``ended == "interrupted"``); the caller then
    finalises the recording.
    """
    stats = LiveStats()
    start = time.monotonic()
    attempt = 0
    base_dropped = base_received = 0  # counts of the readers of earlier connections

    def left() -> float | None:
        return None if duration is None else duration - (time.monotonic() - start)

    try:
        while True:
            reader = LatestFrame(open_source())
            try:
                while True:
                    remaining = left()
                    if (remaining is not None and remaining <= 0) or (stop is not None and stop.is_set()):
                        stats.ended = "duration" if stop is None or not stop.is_set() else "stopped"
                        return stats
                    try:
                        item = reader.get(timeout=0.2 if remaining is None else min(0.2, remaining))
                    except TimeoutError:
                        continue
                    if item is None:
                        stats.error, stats.ended = None, "end of stream"
                        break
                    image, arrived = item
                    result = session.push(image, arrived)
                    stats.latencies.append(time.monotonic() - arrived)
                    stats.processed += 1
                    attempt = 0
                    stats.dropped = base_dropped + reader.dropped
                    stats.received = base_received + reader.received
                    if on_result is not None:
                        on_result(result, stats)
            except StreamError as err:
                stats.error, stats.ended = str(err), "error"
            finally:
                reader.close()
                base_dropped += reader.dropped
                base_received += reader.received
                stats.dropped, stats.received = base_dropped, base_received
            remaining = left()
            if not reconnect or (remaining is not None and remaining <= 0):
                return stats
            time.sleep(BACKOFF[min(attempt, len(BACKOFF) - 1)])
            attempt += 1
            stats.reconnects += 1
    except KeyboardInterrupt:
        stats.ended = "interrupted"
        return stats
    finally:
        stats.seconds = time.monotonic() - start
