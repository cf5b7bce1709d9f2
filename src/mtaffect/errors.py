"""Errors the user can act on. They name the file (and line) at fault."""

from __future__ import annotations

from pathlib import Path

__all__ = ["UserError", "InputFormatError", "ExistingRunError"]


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
