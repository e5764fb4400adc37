"""Claims on item ids: who ingested each item first, read from a log of claim segments.

A project's claims are a log: segment 1, 2, 3, ... each holding one or more claims, a claim
naming one submission (its owner) and item ids. The first claim of an id, in log order, makes
its owner the id's owner for good. :class:`ClaimIndex` is what one process has read of a log;
:meth:`ClaimIndex.decide` says, for the ids of one or more messages, which each submission
holds and which claims make the next segment. Writing and reading segments is the adapter's
(``store.ItemClaims``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["Claim", "ClaimIndex", "decode_segment", "encode_segment"]


@dataclass(frozen=True, slots=True)
class Claim:
    """``owner`` (a submission's event id) claims ``items``."""

    owner: str
    items: list[str]


def encode_segment(claims: Sequence[Claim]) -> bytes:
    return json.dumps({"claims": [{"owner": c.owner, "items": c.items} for c in claims]}).encode()


def decode_segment(raw: bytes) -> list[Claim]:
    body = json.loads(raw)
    return [Claim(str(c["owner"]), [str(i) for i in c["items"]]) for c in body["claims"]]


@dataclass
class ClaimIndex:
    """Each item id's owner, from segments 1 to :attr:`segments` of one project's log."""

    segments: int = 0
    """How many segments have been read: the next one to append is ``segments + 1``."""
    _owner_of: dict[str, int] = field(default_factory=dict)
    _owners: list[str] = field(default_factory=list)
    _codes: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._owner_of)

    def add(self, claims: Sequence[Claim]) -> None:
        """Read the next segment: its ids are their claim's owner's, but for ids claimed
        before (in an earlier segment, or earlier in this one)."""
        for claim in claims:
            self.adopt(claim.owner, claim.items)
        self.segments += 1

    def adopt(self, owner: str, items: Iterable[str]) -> None:
        """Claims of ``owner``; also those made outside the log (the first version kept one key
        per item): the first claim of an id stands, wherever it was read."""
        code = self._code(owner)
        claim = self._owner_of.setdefault
        for item in items:
            claim(item, code)

    def owners(self) -> list[str]:
        """Every owner of a claim read so far, in the order first read."""
        return list(self._owners)

    def owner(self, item_id: str) -> str | None:
        code = self._owner_of.get(item_id)
        return None if code is None else self._owners[code]

    def decide(
        self, asks: Sequence[tuple[Sequence[str], str]]
    ) -> tuple[list[list[bool]], list[Claim]]:
        """For each ask, ``(item ids, owner)`` in order: whether the owner holds each id, now
        or once the returned claims are appended (an id nobody holds goes to the first ask
        that names it); and those claims (none: nothing to append).

        Right however stale the index: a claim never changes once made, and a segment can be
        appended only at the end of the log (``segments + 1``), that is after every earlier
        segment was read: an id this index finds free, and that it claims, is free."""
        held = self._owner_of
        taken: dict[str, int] = {}  # ids claimed by earlier asks of this decision
        newcomers: dict[str, int] = {}  # owners with no claim yet: numbers of their own, < 0
        answers: list[list[bool]] = []
        claims: list[Claim] = []
        for item_ids, owner in asks:
            code = self._codes.get(owner)
            if code is None:
                code = newcomers.setdefault(owner, -2 - len(newcomers))
            mine = []
            fresh = []
            for item in item_ids:
                holder = held.get(item)
                if holder is None:
                    holder = taken.get(item)
                    if holder is None:
                        taken[item] = holder = code
                        fresh.append(item)
                mine.append(holder == code)
            answers.append(mine)
            if fresh:
                claims.append(Claim(owner, fresh))
        return answers, claims

    def _code(self, owner: str) -> int:
        code = self._codes.get(owner)
        if code is None:
            code = self._codes[owner] = len(self._owners)
            self._owners.append(owner)
        return code
