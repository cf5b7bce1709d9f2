"""Uploads: streamed to ``<root>/.uploads/<id>/<safe name>``, size-capped, checked by decoding.

The request body is the raw file (one file per request, its name in the query string), written
chunk by chunk, so memory stays flat and nothing lands outside the results root (no temporary
file elsewhere). The name is reduced to a plain file name of safe characters; the extension must
be a video or image one, and the file must then decode (one frame for a video, the whole image),
otherwise it is deleted and the message names it.
"""

from __future__ import annotations

import re
import secrets
import shutil
from pathlib import Path

from mtaffect.predict.media import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

__all__ = ["UploadError", "safe_name", "check_media", "upload_dir"]


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


def upload_dir(root: Path) -> tuple[str, Path]:
    uid = secrets.token_hex(6)
    folder = root / ".uploads" / uid
    folder.mkdir(parents=True)
    return uid, folder


def discard(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
