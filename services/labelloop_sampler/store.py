"""The sampler's durable state: the ledger in KV, committed batches and progress.

* ``sampler.<project>.ledger`` (KV): the :class:`~labelloop_sampler.domain.ledger.Ledger`,
  changed only by compare-and-swap;
* ``sampler/<project>/batches/<kind>-<round>.<nonce>.json`` (object store): each batch as
  published, without the data of the items the catalog holds. Written before the ledger
  commit names it; a replica that lost the race leaves an unnamed artefact behind;
* ``sampler.<project>.progress.<batch>`` (KV): annotations seen per open batch (backpressure).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from labelloop.events import Annotation, BatchCreated
from labelloop.stores import Blobs, Entry, KeyValue, kv_update

from .domain.ledger import Ledger
from .domain.progress import SeenAnnotations

__all__ = ["Conflict", "LedgerStore"]

Kind = Literal["labeling", "review"]


class Conflict(Exception):
    """The ledger changed under us: read it again."""


class LedgerStore:
    def __init__(self, kv: Callable[[], KeyValue], blobs: Callable[[], Blobs]) -> None:
        self._kv = kv
        self._blobs = blobs
        self._batches: dict[str, BatchCreated] = {}
        """Committed batches never change: each is read once per process."""

    @staticmethod
    def _key(project: str) -> str:
        return f"sampler.{project}.ledger"

    async def read(self, project: str) -> tuple[Ledger, int | None]:
        entry: Entry | None = await self._kv().get(self._key(project))
        return Ledger.decode(entry.value if entry else None), entry.revision if entry else None

    async def commit(self, project: str, ledger: Ledger, revision: int | None) -> None:
        """Compare-and-swap; :class:`Conflict` when another writer got there first."""
        kv = self._kv()
        if revision is None:
            rev = await kv.create(self._key(project), ledger.encode())
        else:
            rev = await kv.update(self._key(project), ledger.encode(), revision)
        if rev is None:
            raise Conflict

    async def change(self, project: str, fn: Callable[[Ledger], Ledger]) -> Ledger:
        """Apply ``fn`` by compare-and-swap, retrying on conflict; the stored result."""
        raw = await kv_update(
            self._kv(), self._key(project), lambda old: fn(Ledger.decode(old)).encode()
        )
        return Ledger.decode(raw)

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
        self._batches[name] = slim

    async def batch(self, project: str, kind: Kind, number: int, nonce: str) -> BatchCreated:
        name = self.batch_name(project, kind, number, nonce)
        if name not in self._batches:
            raw = await self._blobs().get(name)
            if raw is None:
                raise LookupError(f"committed batch {name} is missing from the object store")
            self._batches[name] = BatchCreated.model_validate_json(raw)
        return self._batches[name]

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
