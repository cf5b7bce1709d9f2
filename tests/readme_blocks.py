"""README.md's shell blocks as commands, for the tests that run them as written."""

from __future__ import annotations

import shlex
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(section: str, language: str = "bash") -> str:
    """The first ```<language> block after the heading ``section``."""
    text = README.read_text(encoding="utf-8")
    assert section in text, f"README.md has no section {section!r}"
    after = text.split(section, 1)[1]
    return after.split(f"```{language}\n", 1)[1].split("```", 1)[0]


def readme_section(heading: str) -> str:
    """The text under the heading ``heading`` (a line of its own) up to the next heading of its level."""
    text = README.read_text(encoding="utf-8")
    level = heading.split(" ", 1)[0]
    lines = text.splitlines()
    assert heading in lines, f"README.md has no heading {heading!r}"
    start = lines.index(heading) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].split(" ", 1)[0] == level), len(lines))
    return "\n".join(lines[start:end])


def commands(block: str) -> list[list[str]]:
    """Shell commands of a block (continuations joined, comments dropped), split like a shell does."""
    out, current = [], ""
    for line in block.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += " " + line.strip().removesuffix("\\")
        if not line.rstrip().endswith("\\"):
            out.append(shlex.split(current))
            current = ""
    assert not current, "a command of the block ends with a backslash"
    return out
