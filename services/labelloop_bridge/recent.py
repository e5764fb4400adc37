"""A bounded memory of keys seen recently: what was already said in a log, for a process that
runs for months (a set of every ignored annotation would grow without end)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

__all__ = ["RecentKeys"]


class RecentKeys:
    """The last ``limit`` keys seen, oldest forgotten first: what was already said in a log,
    bounded (a long-lived process must not remember every ignored annotation)."""

    def __init__(self, limit: int = 10_000) -> None:
        self._limit = limit
        self._keys: OrderedDict[Hashable, None] = OrderedDict()

    def first(self, key: Hashable) -> bool:
        """True the first time ``key`` is seen (or again once it was forgotten)."""
        if key in self._keys:
            self._keys.move_to_end(key)
            return False
        self._keys[key] = None
        if len(self._keys) > self._limit:
            self._keys.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._keys)
