"""Deduplication across messages, replicas and restarts: one claim log per project in KV.

Each project has a log of claim segments in the state bucket, ``ingester.<project>.claims.<n>``
for n = 1, 2, 3, ... (``domain.claims``): a segment holds claims, each a submission (its owner)
and the item ids of its message that nobody had claimed. A replica appends segment n + 1 with KV
``create`` (put-if-absent) after reading segments 1 to n; ``create`` fails when another replica
appended n + 1 first, and the replica then reads what it missed and decides again. The first
claim of an id, in log order, owns it. The messages a replica handles while an append is under
way wait and go together into its next segment (group commit): a round trip per append, not per
message, and never per item (measured: 37 appends for 401 messages of 500 items).

Why this and not the alternatives:

* *one KV key per item* (the first version): one round trip per item, so the raw KV ``create``
  rate (about a third of a pipelined publish's) capped ingestion;
* *one KV value per hash-prefix bucket, replaced by compare-and-swap*: every update rewrites the
  whole bucket, so the bytes written grow with the square of the project's size, and a bucket
  outgrows the 1 MB message limit near a million items;
* *a stream with one subject per hash and ``DiscardNew`` per subject* (or ``Nats-Msg-Id``): one
  published message per item again (pipelined, but still a message each), and ``Nats-Msg-Id``
  deduplicates only inside the stream's duplicate window, not forever;
* *a dedup stream appended with ``Nats-Expected-Last-Subject-Sequence``*: the same log, in a
  stream of its own to provision and permit; KV ``create`` of numbered keys is that check, in the
  state bucket the ingester already writes (its keys are under its ``ingester.`` prefix).

A log appends only what is new: an append costs one round trip and its ids' bytes, and the log
can only grow at its end, so two replicas racing for the same items cannot both win: the loser's
``create`` fails, it reads the winner's segment and finds the ids taken.

Crashes: an append is one atomic ``create``. A claim made by a delivery that died before it
published is found again by the redelivered message (the same event id, so the same owner): its
items are its own, and it stores and announces them as the first delivery would have (the same
chunk names, the same event ids, which the stream deduplicates). A message dead-lettered after
its claim keeps its items until it is replayed: the same event id claims them back. A claim whose
reply was lost (the ``create`` landed, the answer did not) is read back on the next attempt.

A segment holds at most :data:`SEGMENT_IDS` ids (about 0.6 MB of JSON, under NATS's 1 MB
message limit): claims beyond that, from many messages waiting at once or one huge message, go
to the next segments. That is safe because a claim is per id: a submission that holds part of its
ids when an append is lost holds them on its next decision, and decides on the rest again.

Each process keeps the index of every project it ingests in memory (about 20 bytes per item;
loaded on first use by reading the log, plus any per-item keys the first version wrote: stop
ingesters of the first version before starting these, whose claims the log does not see) and
reads only the segments it has not seen. Claim keys are never deleted: removing one would let
its ids be claimed again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from labelloop.stores import ConflictError, KeyValue

from .domain.claims import Claim, ClaimIndex, decode_segment, encode_segment
from .metrics import IngesterMetrics

__all__ = ["SEGMENT_IDS", "ItemClaims"]

SEGMENT_IDS = 16_384
"""The most ids one segment holds: 16,384 x 32 hex characters and JSON quoting, about 0.6 MB."""


@dataclass
class _Ask:
    item_ids: Sequence[str]
    owner: str
    answer: asyncio.Future[list[bool]]


@dataclass
class _Log:
    index: ClaimIndex = field(default_factory=ClaimIndex)
    loaded: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiting: list[_Ask] = field(default_factory=list)


class ItemClaims:
    def __init__(
        self,
        kv: KeyValue,
        *,
        read_ahead: int = 64,
        attempts: int = 1_000,
        segment_ids: int = SEGMENT_IDS,
        metrics: IngesterMetrics | None = None,
    ) -> None:
        self._kv = kv
        self._segment_ids = segment_ids
        self._metrics = metrics
        self._read_ahead = max(1, read_ahead)
        self._attempts = attempts
        self._logs: dict[str, _Log] = {}

    @staticmethod
    def key(project: str, segment: int) -> str:
        return f"ingester.{project}.claims.{segment}"

    @staticmethod
    def legacy_prefix(project: str) -> str:
        """Where the first version kept one claim per item (``<prefix><item id>``)."""
        return f"ingester.{project}.item."

    async def claim(self, project: str, item_ids: Sequence[str], owner: str) -> list[bool]:
        """For each id: True if ``owner`` holds it (now, or from an earlier delivery).

        Messages that ask while an append is under way are answered together by the next
        one (group commit): one segment, one round trip, for all of them."""
        log = self._logs.setdefault(project, _Log())
        ask = _Ask(item_ids, owner, asyncio.get_running_loop().create_future())
        log.waiting.append(ask)
        async with log.lock:
            if not ask.answer.done():
                asks, log.waiting = log.waiting, []
                try:
                    answers = await self._append(project, log, asks)
                except asyncio.CancelledError:
                    log.waiting[:0] = [a for a in asks if a is not ask]  # for the next holder
                    raise
                except Exception as exc:
                    for other in asks:
                        if other is not ask:
                            other.answer.set_exception(exc)
                    raise
                for other, mine in zip(asks, answers, strict=True):
                    other.answer.set_result(mine)
        return await ask.answer

    async def _append(self, project: str, log: _Log, asks: list[_Ask]) -> list[list[bool]]:
        if not log.loaded:
            await self._load(project, log.index)
            log.loaded = True
        lost = 0
        while lost < self._attempts:
            answers, claims = log.index.decide([(a.item_ids, a.owner) for a in asks])
            if not claims:
                return answers
            segment, rest = _cut(claims, self._segment_ids)
            number = log.index.segments + 1
            if (
                await self._kv.create(self.key(project, number), encode_segment(segment))
                is not None
            ):
                log.index.add(segment, decided=True)
                if self._metrics is not None:
                    self._metrics.claim_appends.inc()
                if not rest:
                    return answers
                lost = 0
                continue  # the rest goes to the next segment, decided again
            lost += 1
            if self._metrics is not None:
                self._metrics.claim_conflicts.inc()
            # another replica appended first: most often one segment, so read a few first
            await self._catch_up(project, log.index, window=2)
        raise ConflictError(
            f"claims of project {project!r}: lost {self._attempts} races in a row to append"
        )

    async def _load(self, project: str, index: ClaimIndex) -> None:
        legacy = await self._kv.keys(self.legacy_prefix(project))
        for start in range(0, len(legacy), self._read_ahead):
            keys = legacy[start : start + self._read_ahead]
            for key, entry in zip(keys, await self._get_all(keys), strict=True):
                if entry is not None:
                    index.adopt(entry.decode(), [key.rsplit(".", 1)[1]])
        await self._catch_up(project, index, window=self._read_ahead)

    async def _catch_up(self, project: str, index: ClaimIndex, *, window: int) -> None:
        """Read the segments after ``index.segments``, up to the first that does not exist,
        ``window`` at a time (doubling up to ``read_ahead`` while they keep coming).

        Segments exist without gaps (n + 1 is appended only by whoever read n), so a window
        read at once is cut at its first missing segment."""
        while True:
            first = index.segments + 1
            keys = [self.key(project, n) for n in range(first, first + window)]
            for raw in await self._get_all(keys):
                if raw is None:
                    return
                index.add(decode_segment(raw))
            window = min(window * 2, self._read_ahead)

    async def _get_all(self, keys: Sequence[str]) -> list[bytes | None]:
        entries = await asyncio.gather(*(self._kv.get(k) for k in keys))
        return [e.value if e is not None else None for e in entries]


def _cut(claims: list[Claim], most: int) -> tuple[list[Claim], list[Claim]]:
    """The first ``most`` ids of ``claims`` (a claim split if need be), and the rest."""
    head: list[Claim] = []
    for n, claim in enumerate(claims):
        if len(claim.items) >= most:
            head.append(Claim(claim.owner, claim.items[:most]))
            rest = [Claim(claim.owner, claim.items[most:])] if claim.items[most:] else []
            return head, rest + claims[n + 1 :]
        head.append(claim)
        most -= len(claim.items)
    return head, []
