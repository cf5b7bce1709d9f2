"""Inputs: videos (PyAV, true timestamps), streams/webcams, images, folders and globs.

Videos are decoded in a background thread into a small bounded queue, so decoding overlaps face
detection and the model, and memory does not grow with the video's length. Every frame carries its
0-based decode index and its presentation time in seconds (``frame.time`` from the container's
PTS), so variable-frame-rate phone videos keep their true clock.

Still images are read as displayed: the EXIF ``Orientation`` tag (phone photos store pixels
sideways and say how to turn them) is applied, so the model sees upright faces and boxes are in
the displayed image's coordinates. Their size is checked from the file header, before decoding.
"""

from __future__ import annotations

import glob
import io
import queue
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import av
import cv2
import numpy as np

from mtaffect.data.faces.crops import image_header_size
from mtaffect.errors import InputFormatError, UserError

__all__ = [
    "VIDEO_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "MEDIA_EXTENSIONS",
    "MediaItem",
    "Frame",
    "VideoReader",
    "read_image",
    "exif_upright",
    "expand_inputs",
    "is_stream",
    "count_frames",
]

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts", ".mts"}
)
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS | IMAGE_EXTENSIONS
"""The one home of media file extensions (lower case): what ``expand_inputs`` takes from a folder, what
the web app lists as inputs, where ``submit --videos`` looks for a video, what ``export --int8`` reads."""
MAX_PIXELS = 200_000_000
"""Images larger than this (200 megapixels) are refused: decoding them could exhaust memory."""


@dataclass
class MediaItem:
    """One thing to predict on: ``kind`` is ``video``, ``stream`` or ``image``."""

    kind: str
    path: str


@dataclass
class Frame:
    index: int
    time: float
    image: np.ndarray  # RGB uint8 (H, W, 3)


def is_stream(spec: str) -> bool:
    """``webcam:N`` or an URL such as ``rtsp://…`` (anything FFmpeg opens by protocol)."""
    return spec.startswith("webcam:") or "://" in spec


def expand_inputs(
    inputs: Sequence[str | Path], *, skipped: list[tuple[str, str]] | None = None
) -> list[MediaItem]:
    """Videos, images, folders (their videos and images, sorted) and globs → media items.

    Files that are neither video nor image by extension are skipped and listed in ``skipped``
    (path, reason). Raises :class:`UserError` when nothing usable remains, naming the inputs.
    """
    items: list[MediaItem] = []
    skipped = [] if skipped is None else skipped

    def add_file(p: Path) -> None:
        ext = p.suffix.lower()
        if ext in VIDEO_EXTENSIONS:
            items.append(MediaItem("video", str(p)))
        elif ext in IMAGE_EXTENSIONS:
            items.append(MediaItem("image", str(p)))
        else:
            skipped.append((str(p), "not a video or image file (by extension)"))

    for raw in inputs:
        spec = str(raw)
        if is_stream(spec):
            items.append(MediaItem("stream", spec))
            continue
        path = Path(spec)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            if not files:
                skipped.append((spec, "empty folder"))
            for p in files:
                add_file(p)
        elif path.is_file():
            add_file(path)
        elif any(ch in spec for ch in "*?["):
            matches = sorted(glob.glob(spec, recursive=True))
            if not matches:
                skipped.append((spec, "pattern matched no file"))
            for m in matches:
                if Path(m).is_file():
                    add_file(Path(m))
        else:
            raise UserError(f"{spec}: no such file or folder")
    if not items:
        why = "; ".join(f"{p}: {r}" for p, r in skipped) or "no input given"
        raise UserError(f"no video or image to process ({why})")
    return items


def _header(path: Path, data: np.ndarray, max_pixels: int) -> int:
    """Check the pixel count from the header of ``data`` (the file's bytes; nothing decoded) and
    return its EXIF orientation (1 when it has none).

    The size comes from the face cache's header reader (one home for "refused before decoding");
    formats no header reader parses are left to OpenCV (checked after decoding).
    """
    from PIL import Image, UnidentifiedImageError

    size = image_header_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        raise InputFormatError(
            path, f"image too large (over {max_pixels} pixels by its header: {size[0]}×{size[1]}); "
            "downscale it first"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(memoryview(data))) as im:  # 37 µs; from the path: 105 µs
                has_exif = "exif" in im.info or im.format == "TIFF"  # parsing EXIF costs 60 µs
                orientation = im.getexif().get(0x0112, 1) if has_exif else 1
    except (Image.DecompressionBombError, UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return 1
    return orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else 1


def exif_upright(image: np.ndarray, orientation: int) -> np.ndarray:
    """Stored pixels → the displayed image, for EXIF ``Orientation`` 1–8 (TIFF/EXIF 2.3 §4.6.4)."""
    if orientation in (5, 6, 7, 8):
        # 6: the top row is shown as the right column (turn 90° clockwise); 8: counter-clockwise;
        # 5 and 7 are their mirror images (transpose and transverse)
        image = {5: image.swapaxes(0, 1), 6: np.rot90(image, -1), 7: np.rot90(image, 2).swapaxes(0, 1),
                 8: np.rot90(image, 1)}[orientation]  # fmt: skip
    elif orientation == 2:
        image = image[:, ::-1]
    elif orientation == 3:
        image = image[::-1, ::-1]
    elif orientation == 4:
        image = image[::-1]
    return np.ascontiguousarray(image)


def read_image(path: str | Path, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An image file as displayed, RGB uint8 ``(H, W, 3)``; gray and alpha images are converted.

    The EXIF orientation is applied. Raises :class:`InputFormatError` naming the file when it cannot
    be decoded or is larger than ``max_pixels`` (checked from the header, before decoding).
    """
    path = Path(path)
    data = np.fromfile(path, np.uint8)
    if data.size == 0:
        raise InputFormatError(path, "empty file")
    orientation = _header(path, data, max_pixels)
    head = cv2.imdecode(data, cv2.IMREAD_REDUCED_GRAYSCALE_8) if data.size > 50_000_000 else None
    if head is not None and head.size * 64 > max_pixels:
        raise InputFormatError(path, f"image too large (> {max_pixels} pixels); downscale it first")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise InputFormatError(path, "not a readable image (corrupt or unsupported format)")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise InputFormatError(path, f"image too large ({image.shape[1]}×{image.shape[0]} pixels)")
    if image.dtype != np.uint8:  # 16-bit PNG/TIFF
        image = (image / (256 if image.dtype == np.uint16 else max(image.max(), 1) / 255)).astype(np.uint8)
    image = exif_upright(image, orientation)  # IMREAD_UNCHANGED leaves the stored orientation
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


_END = object()


@dataclass
class VideoReader:
    """Iterate the frames of a video file or stream, decoded in a background thread.

    After iteration, ``error`` holds the message of a decoding failure (a truncated or corrupt
    file) that ended the video early, and ``frames_read`` the number of frames delivered; the
    frames before the failure have been delivered normally. Opening failures raise
    :class:`InputFormatError` at once.
    """

    path: str
    queue_size: int = 8
    threaded: bool = True
    error: str | None = field(default=None, init=False)
    frames_read: int = field(default=0, init=False)
    fps: float | None = field(default=None, init=False)
    width: int = field(default=0, init=False)
    height: int = field(default=0, init=False)
    frame_count: int | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._container = self._open()
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        self._stream = stream
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else None
        self.width, self.height = stream.codec_context.width, stream.codec_context.height
        self.frame_count = stream.frames or None

    def _open(self):
        try:
            if self.path.startswith("webcam:"):
                container = av.open(f"/dev/video{int(self.path.split(':', 1)[1])}", format="v4l2")
            else:
                container = av.open(self.path)
        except (av.error.FFmpegError, OSError, ValueError) as err:
            raise InputFormatError(self.path, f"cannot open as video: {err}") from err
        if not container.streams.video:
            container.close()
            raise InputFormatError(self.path, "has no video stream")
        return container

    def _frames(self) -> Iterator[Frame]:
        index = 0
        try:
            for frame in self._container.decode(self._stream):
                t = frame.time
                if t is None:  # no PTS (some raw streams): fall back to the nominal rate
                    t = index / self.fps if self.fps else float(index)
                yield Frame(index, float(t), frame.to_ndarray(format="rgb24"))
                index += 1
        except (av.error.FFmpegError, OSError, ValueError) as err:
            self.error = f"decoding stopped after {index} frames: {err}"
        finally:
            self._container.close()
        if (
            self.error is None
            and self.frame_count
            and index + max(3, 0.05 * self.frame_count) < self.frame_count
        ):
            self.error = (
                f"only {index} of the {self.frame_count} frames the file announces could be decoded "
                "(truncated or damaged file?)"
            )

    def __iter__(self) -> Iterator[Frame]:
        source = self._frames()
        if not self.threaded:
            for fr in source:
                self.frames_read += 1
                yield fr
            return
        q: queue.Queue = queue.Queue(maxsize=self.queue_size)
        stop = threading.Event()

        def produce() -> None:
            try:
                for fr in source:
                    while not stop.is_set():
                        try:
                            q.put(fr, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        break
            except Exception as err:  # noqa: BLE001 - reported through .error, never lost
                self.error = f"decoding failed: {err!r}"
            finally:
                source.close()
                q.put(_END)

        worker = threading.Thread(target=produce, name=f"decode:{Path(self.path).name}", daemon=True)
        worker.start()
        try:
            while True:
                item = q.get()
                if item is _END:
                    break
                self.frames_read += 1
                yield item
        finally:
            stop.set()
            while worker.is_alive():
                try:
                    q.get_nowait()
                except queue.Empty:
                    worker.join(0.05)


def count_frames(path: str | Path) -> int:
    """Number of frames of a video by a full decode (the reliable count; container headers lie).

    A decoding error ends the count (the frames before it are counted).
    """
    reader = VideoReader(str(path), threaded=False)
    n = 0
    try:
        for _ in reader._container.decode(reader._stream):  # no RGB conversion: counting only
            n += 1
    except (av.error.FFmpegError, OSError, ValueError):
        pass
    finally:
        reader._container.close()
    return n
