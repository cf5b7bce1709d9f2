"""Challenge test-set lists: one track name per line, no header (DATASETS.md §1.9, §6).

Copies differ in encoding details: a UTF-8 BOM, ``\\r\\n`` line ends, trailing spaces, blank
lines. All are tolerated; a name that could not be a track (a path separator, ``..``) is a
malformed line.
"""

from __future__ import annotations

import re
from pathlib import Path

from mtaffect.data.records import Skips, read_text_lines
from mtaffect.errors import InputFormatError

__all__ = ["read_test_list", "is_test_list_name", "test_list_task"]

_TEST_LIST = re.compile(r"(?i)^(test_set_.+_challenge|.+_test_set(_release)?)\.txt$")
_EXPR = re.compile(r"(?i)(^|_)(expr|expression)")
_VA = re.compile(r"(?i)(^|_)(va|valence)")


def is_test_list_name(name: str) -> bool:
    """True for the test-list file names of every ABAW edition (ABAW2, 2020, ABAW3+)."""
    return bool(_TEST_LIST.match(name))


def test_list_task(name: str) -> str | None:
    """``"EXPR"``, ``"VA"`` or None (AU / MTL / unknown lists) for a test-list file name."""
    if _EXPR.search(name):
        return "EXPR"
    if _VA.search(name):
        return "VA"
    return None


def read_test_list(
    path: str | Path, skips: Skips | None = None, database: str = "affwild2", *, allow_empty: bool = True
) -> list[str]:
    """Track names listed in a test-set file, in file order, without duplicates.

    A line that is not a track name is malformed (``skips`` decides: raise or count). A file naming
    no track is an :class:`InputFormatError` when ``allow_empty`` is False (a submission needs
    tracks; the Aff-Wild2 reader tolerates an empty list).

    >>> read_test_list("test_set_Expr_Challenge.txt")  # doctest: +SKIP
    ['2-30-640x360', '6-30-1920x1080_left', ...]
    """
    skips = skips or Skips()
    names: list[str] = []
    seen: set[str] = set()
    for number, line in enumerate(read_text_lines(path), start=1):
        name = line.strip()
        if not name:
            continue
        if "/" in name or "\\" in name or name in (".", ".."):
            skips.malformed(
                database, path, number, f"{name!r} is not a track name", reason="bad_test_list_line"
            )
            continue
        if name not in seen:
            seen.add(name)
            names.append(name)
    if not names and not allow_empty:
        raise InputFormatError(path, "test list is empty")
    return names
