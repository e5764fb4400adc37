"""Dataset version ids: ``v0001``, ``v0002``, ... monotonic, readable, and sortable as text; a
version written again because some of its rounds were revised is ``v0002-r1``, ``v0002-r2``."""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = [
    "format_revision",
    "format_version",
    "latest_version",
    "next_version",
    "parse_revision",
    "parse_version",
]

_PATTERN = re.compile(r"^v(\d{4,})$")
_REVISION = re.compile(r"^v(\d{4,})(?:-r(\d+))?$")


def format_version(number: int) -> str:
    if number < 1:
        raise ValueError("version numbers start at 1")
    return f"v{number:04d}"


def parse_version(name: str) -> int | None:
    """The number of a version id, or ``None`` for anything else (temp dirs, stray files)."""
    match = _PATTERN.match(name)
    return int(match.group(1)) if match else None


def latest_version(names: Iterable[str]) -> str | None:
    numbers = [n for n in (parse_version(x) for x in names) if n is not None]
    return format_version(max(numbers)) if numbers else None


def next_version(names: Iterable[str]) -> str:
    numbers = [n for n in (parse_version(x) for x in names) if n is not None]
    return format_version(max(numbers, default=0) + 1)


def format_revision(number: int, revision: int) -> str:
    """``v0006-r1``: version ``v0006`` (rounds 1 to 6) written again with revisions of its
    rounds that arrived after it (``revision`` counts these rewrites of ``v0006``)."""
    if revision < 1:
        raise ValueError("revisions of a version start at 1")
    return f"{format_version(number)}-r{revision}"


def parse_revision(name: str) -> tuple[int, int] | None:
    """``(round, rewrite)`` of a version id (``v0006`` -> (6, 0), ``v0006-r2`` -> (6, 2)), in
    the order versions were written; ``None`` for anything else."""
    match = _REVISION.match(name)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2) or 0)
