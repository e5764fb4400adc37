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
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

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


def _keys(item_ids: Sequence[str]) -> npt.NDArray[np.uint64] | None:
    """The ids as the 128-bit numbers their hex spells, one row of two 64-bit halves each, if
    they are all 32 lowercase hex characters (every id
    :func:`~labelloop_ingester.domain.identity.item_id` makes); None if one is not."""
    if not item_ids:
        return np.empty((0, 2), dtype=np.uint64)
    if set(map(len, item_ids)) != {32}:
        return None
    joined = "".join(item_ids)
    if joined != joined.lower():
        return None  # "AB..." and "ab..." are different ids with the same number
    try:
        raw = bytes.fromhex(joined)
    except ValueError:
        return None
    if len(raw) != 16 * len(item_ids):  # fromhex skips spaces: "00 1..." is not an id
        return None
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(-1, 2)


class _Sorted:
    """128-bit ids in arrays sorted by (upper half, lower half), each with an owner number."""

    def __init__(self) -> None:
        self.high: npt.NDArray[np.uint64] = np.empty(0, dtype=np.uint64)
        self.low: npt.NDArray[np.uint64] = np.empty(0, dtype=np.uint64)
        self.owner: npt.NDArray[np.int32] = np.empty(0, dtype=np.int32)

    def __len__(self) -> int:
        return len(self.high)

    @property
    def nbytes(self) -> int:
        return int(self.high.nbytes + self.low.nbytes + self.owner.nbytes)

    def find(self, keys: npt.NDArray[np.uint64]) -> npt.NDArray[np.int32]:
        """Each key's owner number, -1 for a key not here."""
        found = np.full(len(keys), -1, dtype=np.int32)
        if not len(self.high) or not len(keys):
            return found
        at = self._where(keys)
        inside = at < len(self.high)
        at[~inside] = 0
        hit = inside & (self.high[at] == keys[:, 0]) & (self.low[at] == keys[:, 1])
        found[hit] = self.owner[at[hit]]
        return found

    def insert(self, keys: npt.NDArray[np.uint64], owners: npt.NDArray[np.int32]) -> None:
        """Add keys that are not here (nor repeated among themselves)."""
        order = np.lexsort((keys[:, 1], keys[:, 0]))
        keys, owners = keys[order], owners[order]
        at = self._where(keys, presorted=True)
        self.high = np.insert(self.high, at, keys[:, 0])
        self.low = np.insert(self.low, at, keys[:, 1])
        self.owner = np.insert(self.owner, at, owners)

    def _where(
        self, keys: npt.NDArray[np.uint64], *, presorted: bool = False
    ) -> npt.NDArray[np.intp]:
        """Where each key is or would go. Searched by the upper half (sorted needles: each
        search starts where the last ended); keys whose upper half is here already (never
        seen among hashes, but possible) are placed by the lower half, one by one."""
        high = keys[:, 0]
        if presorted:
            at = np.searchsorted(self.high, high)
        else:
            order = np.argsort(high)
            at = np.empty(len(high), dtype=np.intp)
            at[order] = np.searchsorted(self.high, high[order])
        if len(self.high):
            shared = self.high[np.minimum(at, len(self.high) - 1)] == high
            for n in np.flatnonzero(shared).tolist():
                left = int(at[n])
                right = int(np.searchsorted(self.high, high[n], side="right"))
                at[n] = left + int(np.searchsorted(self.low[left:right], keys[n, 1]))
        return at


class ClaimIndex:
    """Each item id's owner, from segments 1 to :attr:`segments` of one project's log.

    Compact, because it holds every id of the project in every ingester process: ids are kept
    as the 128-bit numbers their hex spells, in sorted arrays, each with its owner's number
    (20 bytes an id; a ``dict`` of ``str`` took about 120), looked up a message at a time. New
    ids go to a small sorted level first, merged into the large one when it reaches
    :attr:`merge_at` ids or a 64th of the large one, so a merge copies the large arrays once
    per 1.6% growth at most. An id that is not 32 lowercase hex characters (none the ingester
    makes) is kept in a ``dict``."""

    def __init__(self, *, merge_at: int = 1 << 16) -> None:
        self.segments = 0
        """How many segments have been read: the next one to append is ``segments + 1``."""
        self.merge_at = merge_at
        self._large = _Sorted()
        self._small = _Sorted()
        self._odd: dict[str, int] = {}
        self._owners: list[str] = []
        self._codes: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._large) + len(self._small) + len(self._odd)

    @property
    def nbytes(self) -> int:
        """Bytes held by the sorted arrays (what grows with the project)."""
        return self._large.nbytes + self._small.nbytes

    def add(self, claims: Sequence[Claim], *, decided: bool = False) -> None:
        """Read the next segment: its ids are their claim's owner's, but for ids claimed
        before (in an earlier segment, or earlier in this one). ``decided``: the claims are
        what :meth:`decide` just returned, the index unchanged since (their ids are free and
        each named once: not looked up again)."""
        for claim in claims:
            self.adopt(claim.owner, claim.items, free=decided)
        self.segments += 1

    def adopt(self, owner: str, items: Sequence[str], *, free: bool = False) -> None:
        """Claims of ``owner``; also those made outside the log (the first version kept one key
        per item): the first claim of an id stands, wherever it was read. ``free``: nobody
        holds these ids, and none is repeated."""
        code = self._code(owner)
        keys = _keys(items)
        if keys is None:  # an odd id among them: one at a time
            for item in items:
                if _keys([item]) is None:
                    self._odd.setdefault(item, code)
                else:
                    self.adopt(owner, [item])
            return
        if not free:
            keys = keys[self._find(keys) < 0]
            # the first of ids repeated in one claim
            _, first = np.unique(np.ascontiguousarray(keys).view("V16"), return_index=True)
            keys = keys[first]
        self._small.insert(keys, np.full(len(keys), code, dtype=np.int32))
        if len(self._small) >= max(self.merge_at, len(self._large) >> 6):
            self._large.insert(
                np.stack([self._small.high, self._small.low], axis=1), self._small.owner
            )
            self._small = _Sorted()

    def owners(self) -> list[str]:
        """Every owner of a claim read so far, in the order first read."""
        return list(self._owners)

    def owner(self, item_id: str) -> str | None:
        code = self._holders([item_id])[0]
        return None if code < 0 else self._owners[code]

    def decide(
        self, asks: Sequence[tuple[Sequence[str], str]]
    ) -> tuple[list[list[bool]], list[Claim]]:
        """For each ask, ``(item ids, owner)`` in order: whether the owner holds each id, now
        or once the returned claims are appended (an id nobody holds goes to the first ask
        that names it); and those claims (none: nothing to append).

        Right however stale the index: a claim never changes once made, and a segment can be
        appended only at the end of the log (``segments + 1``), that is after every earlier
        segment was read: an id this index finds free, and that it claims, is free."""
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
            for item, holder in zip(item_ids, self._holders(item_ids), strict=True):
                if holder < 0:
                    holder = taken.get(item, -1)
                    if holder == -1:
                        taken[item] = holder = code
                        fresh.append(item)
                mine.append(holder == code)
            answers.append(mine)
            if fresh:
                claims.append(Claim(owner, fresh))
        return answers, claims

    def _holders(self, item_ids: Sequence[str]) -> list[int]:
        """Each id's owner number, -1 for an id nobody holds."""
        keys = _keys(item_ids)
        if keys is None:
            return [
                self._odd.get(i, -1) if _keys([i]) is None else self._holders([i])[0]
                for i in item_ids
            ]
        return self._find(keys).tolist()  # type: ignore[no-any-return]

    def _find(self, keys: npt.NDArray[np.uint64]) -> npt.NDArray[np.int32]:
        found = self._large.find(keys)
        if len(self._small):
            missing = found < 0
            found[missing] = self._small.find(keys[missing])
        return found

    def _code(self, owner: str) -> int:
        code = self._codes.get(owner)
        if code is None:
            code = self._codes[owner] = len(self._owners)
            self._owners.append(owner)
        return code
