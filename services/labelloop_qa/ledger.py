"""The qa-scorer's durable state: batch tasks and annotations, annotator history, open reviews.

Everything lives in the ``state`` KV bucket under ``qa.<project>.``, with ids hashed into keys:

* ``batch.<b>.meta`` / ``batch.<b>.tasks.<n>``: the batch's tasks (gold flags and answers),
  chunked to stay under the KV value limit; ``meta`` is written last and marks them complete.
* ``batch.<b>.ann.<s>``: the batch's annotations in 16 shards by annotation id, each a map
  ``annotation_id -> record``. A record is superseded only by a strictly newer ``updated_at``;
  deletions are kept as tombstones (so a late, older update cannot resurrect them) and win ties.
  Capacity is about 16 MB, some 40k annotations, per batch.
* ``items.<xx>``: item index in 256 shards: item -> batch, and the label released for it.
* ``annotator.<a>``: cumulative ``Tally`` of one annotator, with the batches already applied,
  so that applying a batch twice counts it once.
* ``review.<i>``: an item waiting for an expert answer, and the batch it belongs to.

A scored batch's published events are kept in the ``artifacts`` object store
(``qa/<project>/batches/<b>.json``) so that a redelivered ``BatchCompleted`` republishes the very
same events instead of recomputing with history that already includes the batch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from labelloop.events import Annotation, LabelValue
from labelloop.stores import Blobs, KeyValue, kv_update
from labelloop_qa.domain.annotators import Tally
from labelloop_qa.domain.scoring import Rating, TaskInfo

__all__ = ["Ledger", "StoreCounts", "StoredAnnotation"]

ANNOTATION_SHARDS = 16
ITEM_SHARDS = 256
_CHUNK_BYTES = 512 * 1024
_MAX_VALUE_BYTES = 1000 * 1024


def _h(value: str, size: int = 10) -> str:
    return hashlib.blake2b(value.encode(), digest_size=size).hexdigest()


def _dump(value: Any) -> bytes:
    data = json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
    if len(data) > _MAX_VALUE_BYTES:
        raise ValueError(f"state value of {len(data)} bytes exceeds the KV value limit")
    return data


def _load(data: bytes | None) -> Any:
    return json.loads(data) if data else None


@dataclass(frozen=True)
class StoredAnnotation:
    annotation_id: str
    item_id: str
    annotator_id: str
    value: LabelValue | None
    updated_at: str
    lead_time_seconds: float | None
    is_expert: bool
    cancelled: bool
    deleted: bool

    @classmethod
    def of(cls, a: Annotation) -> StoredAnnotation:
        return cls(
            a.annotation_id,
            a.item_id,
            a.annotator_id,
            a.value,
            a.updated_at.isoformat(),
            a.lead_time_seconds,
            a.is_expert,
            a.cancelled,
            a.deleted,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "i": self.item_id,
            "w": self.annotator_id,
            "v": self.value,
            "u": self.updated_at,
            "t": self.lead_time_seconds,
            "x": self.is_expert,
            "c": self.cancelled,
            "d": self.deleted,
        }

    @classmethod
    def from_json(cls, annotation_id: str, raw: dict[str, Any]) -> StoredAnnotation:
        return cls(
            annotation_id,
            raw["i"],
            raw["w"],
            raw["v"],
            raw["u"],
            raw["t"],
            raw["x"],
            raw["c"],
            raw["d"],
        )

    @property
    def live(self) -> bool:
        return not (self.deleted or self.cancelled) and self.value is not None

    def supersedes(self, other: StoredAnnotation) -> bool:
        # ISO-8601 strings of timezone-aware UTC datetimes sort chronologically
        if self.updated_at != other.updated_at:
            return self.updated_at > other.updated_at
        return self.deleted and not other.deleted


@dataclass
class StoreCounts:
    new: int = 0
    updated: int = 0
    stale: int = 0


def live_ratings(records: Iterable[StoredAnnotation]) -> list[Rating]:
    """Ratings to score: live annotations, the latest one per (item, annotator, expert role)."""
    latest: dict[tuple[str, str, bool], StoredAnnotation] = {}
    for rec in records:
        if not rec.live:
            continue
        key = (rec.item_id, rec.annotator_id, rec.is_expert)
        cur = latest.get(key)
        if cur is None or (rec.updated_at, rec.annotation_id) > (cur.updated_at, cur.annotation_id):
            latest[key] = rec
    ordered = sorted(latest.values(), key=lambda r: (r.item_id, r.annotator_id, r.is_expert))
    return [
        Rating(r.item_id, r.annotator_id, r.value, r.lead_time_seconds, r.is_expert)  # type: ignore[arg-type]
        for r in ordered
    ]


class Ledger:
    """Reads and writes the qa-scorer's state; every write is a compare-and-swap or idempotent."""

    def __init__(
        self, kv: KeyValue | Callable[[], KeyValue], blobs: Blobs | Callable[[], Blobs]
    ) -> None:
        # providers, because the service's stores exist only once it has started
        self._kv = kv
        self._blobs = blobs

    @property
    def kv(self) -> KeyValue:
        kv = self._kv
        return kv() if callable(kv) else kv

    @property
    def blobs(self) -> Blobs:
        blobs = self._blobs
        return blobs() if callable(blobs) else blobs

    # ------------------------------------------------------------------ tasks

    async def save_tasks(
        self, project: str, batch_id: str, kind: str, tasks: list[TaskInfo]
    ) -> None:
        base = f"qa.{project}.batch.{_h(batch_id)}"
        chunks: list[list[dict[str, Any]]] = [[]]
        size = 0
        for t in tasks:
            data = t.data if len(json.dumps(t.data)) <= 2048 else {}
            row = {"i": t.item_id, "g": t.is_gold, "l": t.gold_label, "d": data}
            n = len(json.dumps(row))
            if size + n > _CHUNK_BYTES and chunks[-1]:
                chunks.append([])
                size = 0
            chunks[-1].append(row)
            size += n
        for n, chunk in enumerate(chunks):
            await self.kv.put(f"{base}.tasks.{n}", _dump(chunk))
        await self.kv.put(
            f"{base}.meta", _dump({"batch_id": batch_id, "kind": kind, "chunks": len(chunks)})
        )
        await self._index_items(project, {t.item_id: batch_id for t in tasks})

    async def load_tasks(self, project: str, batch_id: str) -> list[TaskInfo] | None:
        base = f"qa.{project}.batch.{_h(batch_id)}"
        meta = await self.kv.get(f"{base}.meta")
        if meta is None:
            return None
        tasks = []
        for n in range(int(_load(meta.value)["chunks"])):
            entry = await self.kv.get(f"{base}.tasks.{n}")
            for row in _load(entry.value if entry else None) or []:
                tasks.append(TaskInfo(row["i"], row["g"], row["l"], row["d"]))
        return tasks

    # ------------------------------------------------------------------ item index

    async def _index_items(
        self, project: str, batches: dict[str, str], labels: dict[str, Any] | None = None
    ) -> None:
        shards: dict[str, list[str]] = {}
        for item in batches:
            shards.setdefault(_h(item)[:2], []).append(item)
        for shard, items in sorted(shards.items()):

            def merge(old: bytes | None, items: list[str] = items) -> bytes:
                index: dict[str, Any] = _load(old) or {}
                for item in items:
                    entry = index.get(item) or {}
                    entry["b"] = batches[item]
                    if labels is not None and item in labels:
                        entry.update(labels[item])
                    index[item] = entry
                return _dump(index)

            await kv_update(self.kv, f"qa.{project}.items.{shard}", merge)

    async def batch_of(self, project: str, item_id: str) -> str | None:
        entry = await self.kv.get(f"qa.{project}.items.{_h(item_id)[:2]}")
        index = _load(entry.value if entry else None) or {}
        found = index.get(item_id)
        return None if found is None else str(found["b"])

    async def record_labels(self, project: str, batch_id: str, labels: dict[str, Any]) -> None:
        """Remember the label released for each item: ``item -> {"l": label, "r": reviewed}``."""
        await self._index_items(project, dict.fromkeys(labels, batch_id), labels)

    async def released_labels(self, project: str, item_ids: Iterable[str]) -> dict[str, Any]:
        """Item -> ``{"b": batch_id, "l": label}`` for items with a released label."""
        wanted: dict[str, list[str]] = {}
        for item in item_ids:
            wanted.setdefault(_h(item)[:2], []).append(item)
        found: dict[str, Any] = {}
        for shard, items in sorted(wanted.items()):
            entry = await self.kv.get(f"qa.{project}.items.{shard}")
            index = _load(entry.value if entry else None) or {}
            for item in items:
                if item in index and index[item].get("l") is not None:
                    found[item] = index[item]
        return found

    # ------------------------------------------------------------------ annotations

    async def add_annotations(
        self, project: str, batch_id: str, annotations: Iterable[Annotation]
    ) -> StoreCounts:
        counts = StoreCounts()
        shards: dict[int, list[StoredAnnotation]] = {}
        for a in annotations:
            shard = int(_h(a.annotation_id, 4), 16) % ANNOTATION_SHARDS
            shards.setdefault(shard, []).append(StoredAnnotation.of(a))
        base = f"qa.{project}.batch.{_h(batch_id)}.ann"
        for shard, records in sorted(shards.items()):
            tally = StoreCounts()

            def merge(
                old: bytes | None,
                records: list[StoredAnnotation] = records,
                tally: StoreCounts = tally,
            ) -> bytes:
                tally.new = tally.updated = tally.stale = 0  # CAS retries start over
                stored: dict[str, Any] = _load(old) or {}
                for rec in records:
                    raw = stored.get(rec.annotation_id)
                    if raw is None:
                        tally.new += 1
                    elif rec.supersedes(StoredAnnotation.from_json(rec.annotation_id, raw)):
                        tally.updated += 1
                    else:
                        tally.stale += 1
                        continue
                    stored[rec.annotation_id] = rec.to_json()
                return _dump(stored)

            await kv_update(self.kv, f"{base}.{shard}", merge)
            counts.new += tally.new
            counts.updated += tally.updated
            counts.stale += tally.stale
        return counts

    async def load_annotations(self, project: str, batch_id: str) -> list[StoredAnnotation]:
        base = f"qa.{project}.batch.{_h(batch_id)}.ann"
        records = []
        for shard in range(ANNOTATION_SHARDS):
            entry = await self.kv.get(f"{base}.{shard}")
            for annotation_id, raw in sorted((_load(entry.value if entry else None) or {}).items()):
                records.append(StoredAnnotation.from_json(annotation_id, raw))
        return records

    # ------------------------------------------------------------------ annotator history

    async def history(self, project: str, annotator_ids: Iterable[str]) -> dict[str, Tally]:
        out = {}
        for annotator in sorted(set(annotator_ids)):
            entry = await self.kv.get(f"qa.{project}.annotator.{_h(annotator)}")
            raw = _load(entry.value if entry else None)
            if raw:
                out[annotator] = Tally.from_json(raw["tally"])
        return out

    async def apply_tallies(self, project: str, batch_id: str, tallies: dict[str, Tally]) -> None:
        """Add a batch's tallies to each annotator's history, once per batch."""
        for annotator, tally in sorted(tallies.items()):

            def merge(old: bytes | None, annotator: str = annotator, tally: Tally = tally) -> bytes:
                raw = _load(old) or {"id": annotator, "tally": Tally().to_json(), "batches": []}
                if batch_id in raw["batches"]:
                    return _dump(raw)
                raw["tally"] = Tally.from_json(raw["tally"]).merged(tally).to_json()
                raw["batches"].append(batch_id)
                return _dump(raw)

            await kv_update(self.kv, f"qa.{project}.annotator.{_h(annotator)}", merge)

    # ------------------------------------------------------------------ reviews

    async def open_reviews(self, project: str, batch_id: str | None, items: dict[str, str]) -> None:
        for item, reason in sorted(items.items()):
            value = {"item": item, "batch": batch_id, "reason": reason}
            await self.kv.put(f"qa.{project}.review.{_h(item)}", _dump(value))

    async def review_of(self, project: str, item_id: str) -> dict[str, Any] | None:
        entry = await self.kv.get(f"qa.{project}.review.{_h(item_id)}")
        found: dict[str, Any] | None = _load(entry.value if entry else None)
        return found

    async def close_review(self, project: str, item_id: str) -> None:
        await self.kv.delete(f"qa.{project}.review.{_h(item_id)}")

    # ------------------------------------------------------------------ outcomes

    @staticmethod
    def _outcome_name(project: str, batch_id: str) -> str:
        return f"qa/{project}/batches/{_h(batch_id)}.json"

    async def save_outcome(self, project: str, batch_id: str, outcome: dict[str, Any]) -> None:
        data = json.dumps(outcome, sort_keys=True).encode()
        await self.blobs.put(self._outcome_name(project, batch_id), data)

    async def load_outcome(self, project: str, batch_id: str) -> dict[str, Any] | None:
        data = await self.blobs.get(self._outcome_name(project, batch_id))
        found: dict[str, Any] | None = json.loads(data) if data else None
        return found
