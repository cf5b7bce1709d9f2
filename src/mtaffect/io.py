"""Safe file output: atomic writes and run folders that are never overwritten unless asked.

Every output of mtaffect (indexes, caches, checkpoints, tables, plots) is written to a temporary
file in the destination folder and renamed into place, so an interrupted job never leaves a
half-written file under a final name.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from mtaffect.errors import ExistingRunError, OutputError


def _read_umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


# mkstemp creates files with mode 0600; finished outputs get the usual mode (0666 minus the umask).
_FILE_MODE = 0o666 & ~_read_umask()


_WRITE_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO}


def _is_write_failure(err: BaseException, tmp: Path) -> bool:
    """An error of writing ``tmp``: a full or read-only disk, or torch.save's C++ writer failing."""
    if isinstance(err, OutputError):
        return False
    if isinstance(err, OSError):
        return err.errno in _WRITE_ERRNOS or (err.filename is not None and Path(err.filename) == tmp)
    text = str(err)
    return isinstance(err, RuntimeError) and ("inline_container" in text or "PytorchStreamWriter" in text)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    A failure to write (read-only folder, full disk, torch's ``enforce fail at
    inline_container.cc``) becomes :class:`~mtaffect.errors.OutputError` naming ``path``.

    >>> with atomic_path("out.parquet") as tmp:   # doctest: +SKIP
    ...     df.to_parquet(tmp)
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as err:
        raise OutputError(path, err) from err
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        if _is_write_failure(err, tmp):
            raise OutputError(path, err) from err
        raise
    finally:
        with contextlib.suppress(OSError):
            if tmp.exists():
                tmp.unlink()


def check_writable(path: str | Path) -> None:
    """Fail now, before any work, if ``path`` (a file to write) cannot be created in its folder.

    Creates the folder if needed and a temporary file in it (removed at once); raises
    :class:`~mtaffect.errors.OutputError` naming ``path`` otherwise.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        raise OutputError(path, err) from err


def remove_leftovers(folder: str | Path, name: str | None = None) -> list[Path]:
    """Delete the temporary files (``.<name>.<random>.tmp``, :func:`atomic_path`'s) that a killed writer
    left in ``folder``: all of them, or only those of the file ``name`` (a folder the user shares)."""
    removed = []
    pattern = f".{glob.escape(name)}.*.tmp" if name is not None else ".*.tmp"
    for leftover in Path(folder).glob(pattern):
        with contextlib.suppress(OSError):
            leftover.unlink()
            removed.append(leftover)
    return removed


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """``open()`` for writing, made atomic: the file appears under its name only when complete."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def write_text(path: str | Path, text: str) -> None:
    """Atomically write a text file."""
    with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_parquet(df: Any, path: str | Path, **kwargs: Any) -> None:
    """Atomically write a pandas DataFrame to Parquet."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, **kwargs)


def write_csv(df: Any, path: str | Path, **kwargs: Any) -> None:
    """Atomically write a pandas DataFrame to CSV (no index column unless asked)."""
    kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, **kwargs)


def prepare_output_dir(path: str | Path, *, overwrite: bool = False, resume: bool = False) -> Path:
    """Create an output folder, refusing to touch one that already holds files.

    * empty or missing folder: created and returned;
    * non-empty and ``resume``: returned as is (the caller continues what is there);
    * non-empty and ``overwrite``: emptied first;
    * otherwise: :class:`ExistingRunError` naming the folder and the two ways out.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ExistingRunError(f"{path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()):
        if resume:
            return path
        if not overwrite:
            raise ExistingRunError(
                f"{path} already holds results; pass --resume to continue it or --overwrite to replace it"
            )
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path
