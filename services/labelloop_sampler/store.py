"""The sampler's durable state: the ledger in KV, committed batches and progress.

* ``sampler.<project>.ledger`` (KV): the :class:`~labelloop_sampler.domain.ledger.Ledger`,
  changed only by compare-and-swap;
* ``sampler/<project>/batches/<kind>-<round>.<nonce>.json`` (object store): each batch as
  published, without the data of the items the catalog holds. Written before the ledger
  commit names it; a replica that lost the race leaves an unnamed artefact behind;
* ``sampler/<project>/ledger/segment-<first round>.json`` (object store): the archived entries of
  compacted rounds (:class:`~labelloop_sampler.domain.ledger.Segment`), with the items their
  batches took; written before the ledger that drops those rounds is committed;
* ``sampler.<project>.progress.<batch>`` (KV): annotations seen per open batch (backpressure).

What a process keeps in memory is bounded: the last :data:`BATCH_CACHE` batches it read, and per
project the items labeling batches took (:class:`Taken`, what the next batch must not pick again).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from labelloop.events import Annotation, BatchCreated
from labelloop.stores import Blobs, Entry, KeyValue, kv_update

from .domain.ledger import SEGMENT_ROUNDS, Ledger, Segment
from .domain.progress import SeenAnnotations

__all__ = ["BATCH_CACHE", "Conflict", "LedgerStore", "Taken"]

Kind = Literal["labeling", "review"]

BATCH_CACHE = 256
"""Committed batches a process keeps decoded (the open ones and the last few are what it reads)."""


def segment_first(number: int) -> int:
    """The first round of the segment that holds round ``number`` (segments are compacted
    :data:`SEGMENT_ROUNDS` at a time, from round 1)."""
    return (number - 1) // SEGMENT_ROUNDS * SEGMENT_ROUNDS + 1


@dataclass
class Taken:
    """Items the labeling batches 1 to ``through`` took (never to be picked again), and the
    items they sent back to an expert: grown batch by batch, never read twice."""

    through: int = 0
    items: set[str] = field(default_factory=set)
    rechecked: set[str] = field(default_factory=set)


class Conflict(Exception):
    """The ledger changed under us: read it again."""


class LedgerStore:
    def __init__(
        self,
        kv: Callable[[], KeyValue],
        blobs: Callable[[], Blobs],
        *,
        batch_cache: int = BATCH_CACHE,
    ) -> None:
        self._kv = kv
        self._blobs = blobs
        self._batch_cache = batch_cache
        self._batches: OrderedDict[str, BatchCreated] = OrderedDict()
        """Committed batches never change: the last ``batch_cache`` read, least recent out."""
        self._taken: dict[str, Taken] = {}
        self._ledgers: dict[str, tuple[bytes, Ledger]] = {}
        """Per project, the last ledger decoded and its bytes."""

    @staticmethod
    def _key(project: str) -> str:
        return f"sampler.{project}.ledger"

    def _decode(self, project: str, raw: bytes | None) -> Ledger:
        """The ledger in ``raw``; the last one decoded is kept, for a ledger is read again and
        again unchanged (a handler's read, then its compare-and-swap), and decoding it took a
        third of the sampler's time in a 10M-item soak. Ledgers are immutable: every change
        makes a new one."""
        if raw is None:
            return Ledger()
        kept = self._ledgers.get(project)
        if kept is not None and kept[0] == raw:
            return kept[1]
        ledger = Ledger.decode(raw)
        self._ledgers[project] = (raw, ledger)
        return ledger

    async def read(self, project: str) -> tuple[Ledger, int | None]:
        entry: Entry | None = await self._kv().get(self._key(project))
        return self._decode(project, entry.value if entry else None), (
            entry.revision if entry else None
        )

    async def commit(self, project: str, ledger: Ledger, revision: int | None) -> None:
        """Compare-and-swap; :class:`Conflict` when another writer got there first."""
        kv, raw = self._kv(), ledger.encode()
        if revision is None:
            rev = await kv.create(self._key(project), raw)
        else:
            rev = await kv.update(self._key(project), raw, revision)
        if rev is None:
            raise Conflict
        self._ledgers[project] = (raw, ledger)

    async def change(self, project: str, fn: Callable[[Ledger], Ledger]) -> Ledger:
        """Apply ``fn`` by compare-and-swap, retrying on conflict; the stored result."""
        made: dict[bytes, Ledger] = {}

        def apply(old: bytes | None) -> bytes:
            ledger = fn(self._decode(project, old))
            raw = ledger.encode()
            made.clear()
            made[raw] = ledger
            return raw

        stored = await kv_update(self._kv(), self._key(project), apply)
        if stored is not None and stored in made:
            self._ledgers[project] = (stored, made[stored])
        return self._decode(project, stored)

    # ------------------------------------------------------------------ batches

    @staticmethod
    def batch_name(project: str, kind: Kind, number: int, nonce: str) -> str:
        return f"sampler/{project}/batches/{kind}-{number:06d}.{nonce}.json"

    async def save_batch(
        self, batch: BatchCreated, nonce: str, *, uncatalogued: frozenset[str] = frozenset()
    ) -> None:
        """Keep a committed batch without its items' data (that is in the catalog, once):
        :meth:`batch` returns it so; the sampler fills the data in before publishing it again.
        Only the tasks of ``uncatalogued`` items keep theirs (a review request may name an
        item the catalog does not hold; its data came with the request)."""
        name = self.batch_name(batch.project, batch.kind, batch.round, nonce)
        slim = batch.model_copy(
            update={
                "tasks": [
                    t if t.item_id in uncatalogued else t.model_copy(update={"data": {}})
                    for t in batch.tasks
                ]
            }
        )
        await self._blobs().put(name, slim.model_dump_json().encode())
        self._remember(name, slim)

    async def batch(self, project: str, kind: Kind, number: int, nonce: str) -> BatchCreated:
        name = self.batch_name(project, kind, number, nonce)
        found = self._batches.get(name)
        if found is None:
            raw = await self._blobs().get(name)
            if raw is None:
                raise LookupError(f"committed batch {name} is missing from the object store")
            found = BatchCreated.model_validate_json(raw)
        self._remember(name, found)
        return found

    def _remember(self, name: str, batch: BatchCreated) -> None:
        self._batches[name] = batch
        self._batches.move_to_end(name)
        while len(self._batches) > self._batch_cache:
            self._batches.popitem(last=False)

    def cached_batches(self) -> int:
        return len(self._batches)

    # ------------------------------------------------------------------ compaction

    @staticmethod
    def segment_name(project: str, first: int) -> str:
        return f"sampler/{project}/ledger/segment-{first:06d}.json"

    async def compact(
        self,
        project: str,
        ledger: Ledger,
        revision: int,
        keep_from: int,
        *,
        needs_model: bool = True,
    ) -> bool:
        """Move the ledger's next closable segment out of it (:meth:`Ledger.compacted`): archive,
        then compare-and-swap. False when no segment is closable; :class:`Conflict` when the
        ledger changed."""
        found = ledger.compacted(keep_from, needs_model=needs_model)
        if found is None:
            return False
        kept, segment = found
        taken: set[str] = set()
        for number, r in sorted(segment.rounds.items()):
            batch = await self.batch(project, "labeling", number, r.nonce)
            taken.update(t.item_id for t in batch.tasks if not t.is_gold)
        segment = segment.model_copy(update={"taken": sorted(taken)})
        # the same rounds give the same segment: a replica that loses the commit below wrote
        # what the winner wrote
        await self._blobs().put(
            self.segment_name(project, segment.first), segment.model_dump_json().encode()
        )
        await self.commit(project, kept, revision)
        return True

    async def segment(self, project: str, first: int) -> Segment:
        raw = await self._blobs().get(self.segment_name(project, first))
        if raw is None:
            raise LookupError(f"{project}: the ledger segment from round {first} is missing")
        return Segment.model_validate_json(raw)

    async def taken(self, project: str, ledger: Ledger) -> Taken:
        """Items labeling batches up to the ledger's last took, and the items they rechecked:
        what this process knew, plus the rounds committed since (a compacted round from its
        segment, the others from their batches)."""
        known = self._taken.setdefault(project, Taken())
        last = ledger.next_round - 1
        while known.through < last:
            number = known.through + 1
            if ledger.is_compacted(number):
                segment = await self.segment(project, segment_first(number))
                known.items.update(segment.taken)
                known.rechecked.update(segment.rechecked)
                known.through = segment.last
                continue
            r = ledger.rounds[number]
            batch = await self.batch(project, "labeling", number, r.nonce)
            known.items.update(t.item_id for t in batch.tasks if not t.is_gold)
            known.rechecked.update(r.rechecks)
            known.through = number
        return known

    # ------------------------------------------------------------------ progress

    async def merge_seen(
        self, project: str, batch_id: str, annotations: list[Annotation]
    ) -> SeenAnnotations:
        """Add annotations to a batch's record (keyed by annotation id: replays change nothing)."""
        merged = SeenAnnotations()

        def merge(old: bytes | None) -> bytes:
            nonlocal merged
            seen = SeenAnnotations() if old is None else SeenAnnotations.model_validate_json(old)
            merged = seen.with_annotations(annotations)
            return merged.model_dump_json().encode()

        await kv_update(self._kv(), f"sampler.{project}.progress.{batch_id}", merge)
        return merged

    async def forget_progress(self, project: str, batch_id: str) -> None:
        await self._kv().delete(f"sampler.{project}.progress.{batch_id}")
