"""Dataset version ids: ``v0001``, ``v0002``, ... monotonic, readable, and sortable as text."""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["format_version", "latest_version", "next_version", "parse_version"]

_PATTERN = re.compile(r"^v(\d{4,})$")


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
