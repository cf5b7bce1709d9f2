"""Uploads: streamed to ``<root>/.uploads/<id>.part/<safe name>``, size-capped, checked by decoding.

The request body is the raw file (one file per request, its name in the query string), written
chunk by chunk, so memory stays flat and nothing lands outside the results root (no temporary
file elsewhere). The name is reduced to a plain file name of safe characters; the extension must
be a video or image one, and the file must then decode (one frame for a video, the whole image),
otherwise it is deleted and the message names it. A checked upload's folder is renamed to
``<id>`` (so a server killed mid-upload leaves only ``.part`` folders, removed at start-up) and
waits there for a job: :class:`PendingUploads` caps how many wait and how many bytes they hold,
and removes those left unused for ``ttl_s``.
"""

from __future__ import annotations

import errno
import re
import secrets
import shutil
import threading
import time
from pathlib import Path

from mtaffect.predict.media import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

__all__ = ["UploadError", "PendingUploads", "safe_name", "check_media", "UPLOAD_TTL_S"]

UPLOAD_TTL_S = 3600.0  # an upload not started as a job within an hour is removed


class UploadError(Exception):
    """A refused upload; ``status`` is the HTTP status, the message names the file."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def safe_name(name: str) -> str:
    """A plain file name: no folders, no leading dots, only ``[A-Za-z0-9._-]``, at most 100 chars."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, ext = base.rpartition(".")
    if not dot:
        stem, ext = base, ""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[:90] or "upload"
    ext = re.sub(r"[^A-Za-z0-9]+", "", ext)[:8].lower()
    return f"{stem}.{ext}" if ext else stem


def kind_of(name: str) -> str:
    ext = Path(name).suffix.lower()
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in IMAGE_EXTENSIONS:
        return "image"
    raise UploadError(415, f"{name}: not a video or image file (by extension)")


def check_media(path: Path, display: str) -> str:
    """Decode ``path`` (one frame of a video, the whole image); returns the kind or raises."""
    kind = kind_of(path.name)
    if kind == "image":
        from mtaffect.predict.media import read_image

        try:
            read_image(path)
        except Exception as err:  # noqa: BLE001 - any decoder failure is the file's fault
            raise UploadError(400, f"{display}: not a readable image ({_why(err, path)})") from err
        return kind
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UploadError(400, f"{display}: has no video stream")
            for _ in container.decode(video=0):
                return kind
    except UploadError:
        raise
    except Exception as err:  # noqa: BLE001
        raise UploadError(400, f"{display}: not a readable video ({_why(err, path)})") from err
    raise UploadError(400, f"{display}: not a readable video (no frame could be decoded)")


def _why(err: Exception, path: Path) -> str:
    # decoder messages repeat the temporary path; the user knows the file by its own name
    text = re.sub(r"\[Errno -?\d+\]\s*", "", str(err).replace(str(path), "").replace("''", ""))
    return text.strip(" :;") or type(err).__name__


class PendingUploads:
    """The uploads waiting for a job under ``<root>/.uploads``: capped in number and bytes, expiring.

    ``begin`` reserves a place (refused with 429 when ``max_count`` uploads already wait, or when
    the announced size does not fit in ``max_bytes`` with the others), ``grow`` follows the bytes
    written (the cap holds for bodies without a Content-Length too), ``commit`` renames the
    checked upload's folder from ``<id>.part`` to ``<id>``; ``claim`` takes a committed upload's
    files for a job (out of the sweep's and other requests' reach), ``unclaim`` gives it back and
    ``discard`` / ``release`` forget it. ``sweep`` removes unclaimed committed uploads older than
    ``ttl_s``; the constructor also removes the ``.part`` folders a killed server left.
    Called from the event loop and from the periodic sweep's thread: one lock.
    """

    def __init__(self, root: Path, *, max_count: int, max_bytes: int, ttl_s: float = UPLOAD_TTL_S) -> None:
        self.dir = Path(root) / ".uploads"
        self.max_count, self.max_bytes, self.ttl_s = max_count, max_bytes, ttl_s
        self._bytes: dict[str, int] = {}  # id → bytes, being written or waiting
        self._since: dict[str, float] = {}  # committed id → when it was checked (wall clock)
        self._claimed: dict[str, float] = {}  # id being made into a job → its _since, out of sweep's reach
        self._lock = threading.Lock()
        if self.dir.is_dir():
            for d in self.dir.iterdir():
                if d.is_dir() and d.name.endswith(".part"):
                    shutil.rmtree(d, ignore_errors=True)  # half-written by a server that was killed
                elif d.is_dir():
                    self._bytes[d.name] = sum(f.stat().st_size for f in d.iterdir() if f.is_file())
                    self._since[d.name] = d.stat().st_mtime
        self.sweep()

    def begin(self, expected: int) -> tuple[str, Path]:
        """A new upload's id and the folder to write it in; ``expected``: its Content-Length or 0."""
        self.sweep()
        with self._lock:
            if len(self._bytes) >= self.max_count:
                raise UploadError(429, f"{len(self._bytes)} uploads already wait for Start (the cap is "
                                       f"{self.max_count}): start a job with them first")
            self._check_bytes(expected)
            uid = secrets.token_hex(6)
            self._bytes[uid] = expected
        folder = self.dir / f"{uid}.part"
        try:
            folder.mkdir(parents=True)
        except OSError as err:  # the place must not stay taken: else every later upload gets 429
            self.release(uid)
            status = 507 if err.errno == errno.ENOSPC else 500
            raise UploadError(status, f"the server could not make the upload folder {folder}: "
                                      f"{err.strerror}") from err
        return uid, folder

    def _check_bytes(self, extra: int, uid: str | None = None) -> None:
        others = sum(b for k, b in self._bytes.items() if k != uid)
        if others + extra > self.max_bytes:
            total, cap = (others + extra) / 2**20, self.max_bytes / 2**20
            raise UploadError(429, f"uploads waiting for Start would hold {total:.0f} MB, over the cap of "
                                   f"{cap:.0f} MB: start a job with them first")

    def grow(self, uid: str, written: int) -> None:
        """``written`` bytes of ``uid`` are on disk; raises 429 once all pending bytes pass the cap."""
        with self._lock:
            if written > self._bytes.get(uid, 0):
                self._check_bytes(written, uid)
                self._bytes[uid] = written

    def commit(self, uid: str, written: int) -> None:
        (self.dir / f"{uid}.part").rename(self.dir / uid)
        with self._lock:
            self._bytes[uid], self._since[uid] = written, time.time()

    def discard(self, uid: str) -> None:
        """A refused or interrupted upload: its folder and its place go."""
        for name in (f"{uid}.part", uid):
            shutil.rmtree(self.dir / name, ignore_errors=True)
        self.release(uid)

    def claim(self, uid: str) -> list[Path]:
        """Take a committed upload for a job and return its files.

        Under the lock it leaves the waiting set, so neither the sweep nor a second request with
        the same id (a double-clicked Start) can remove or move its files while the job is made;
        its bytes still count until :meth:`discard` (its files moved) or :meth:`unclaim` (the job
        was not made: it waits again, with its age). Raises :class:`UploadError` 409 when another
        request holds it, 404 when it is unknown, expired or still being written.
        """
        with self._lock:
            if uid in self._claimed:
                raise UploadError(409, f"upload {uid} is already being started as a job")
            folder = self.dir / uid
            if not uid.isalnum() or uid not in self._since or not folder.is_dir():
                raise UploadError(404, f"upload {uid} not found (already used, refused, or unused for "
                                       f"{self.ttl_s / 3600:g} h and removed): upload the file again")
            self._claimed[uid] = self._since.pop(uid)
        return [p for p in folder.iterdir() if p.is_file()]

    def unclaim(self, uid: str) -> None:
        """A claimed upload whose job was not made waits for Start again."""
        with self._lock:
            if uid in self._claimed:
                self._since[uid] = self._claimed.pop(uid)

    def release(self, uid: str) -> None:
        with self._lock:
            self._bytes.pop(uid, None)
            self._since.pop(uid, None)
            self._claimed.pop(uid, None)

    def sweep(self) -> list[str]:
        """Remove committed uploads left unused (unclaimed) for ``ttl_s``; returns their ids."""
        now = time.time()
        with self._lock:  # out of the waiting set first: a claim from now on finds them gone
            stale = [uid for uid, t in self._since.items() if now - t > self.ttl_s]
            for uid in stale:
                del self._since[uid]
        for uid in stale:
            shutil.rmtree(self.dir / uid, ignore_errors=True)
            self.release(uid)
        return stale

    @property
    def count(self) -> int:
        return len(self._bytes)

    @property
    def bytes(self) -> int:
        return sum(self._bytes.values())
