"""Errors the user can act on. They name the file (and line) at fault."""

from __future__ import annotations

import errno
from pathlib import Path

__all__ = [
    "UserError",
    "InputFormatError",
    "ExistingRunError",
    "OutputError",
    "ConfigError",
    "describe_os_error",
]


class UserError(Exception):
    """An error caused by the user's input (a file, a flag); the CLI prints it without a traceback."""


class InputFormatError(UserError, ValueError):
    """A malformed input file: the message names the file and, where it applies, the line."""

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class ExistingRunError(UserError, FileExistsError):
    """An output folder or file already holds results and overwriting was not asked for."""


class ConfigError(UserError, ValueError):
    """A setting that cannot work with the data (a batch larger than a task set...)."""


_HINTS = {
    errno.EROFS: "the folder is on a read-only file system",
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EACCES: "no permission to write there",
    errno.EPERM: "no permission to write there",
}


def describe_os_error(err: BaseException) -> str:
    """A one-line reason for an OS error (``strerror`` plus what it usually means)."""
    if isinstance(err, OSError):
        reason = err.strerror or str(err)
        hint = _HINTS.get(err.errno or 0)
        return f"{reason} ({hint})" if hint else reason
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    if "inline_container" in text or "PytorchStreamWriter" in text:  # torch.save's C++ writer
        return "the file could not be written (disk full or folder not writable?)"
    return text[:200]


class OutputError(UserError, OSError):
    """An output that could not be written (read-only folder, full disk): names the path."""

    def __init__(self, path: str | Path, err: BaseException | str) -> None:
        self.path = str(path)
        reason = err if isinstance(err, str) else describe_os_error(err)
        code = err.errno if isinstance(err, OSError) else None
        OSError.__init__(self, code, f"cannot write {self.path}: {reason}")

    def __str__(self) -> str:
        return str(self.strerror)
