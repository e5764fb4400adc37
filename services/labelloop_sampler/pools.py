"""The pool's durable form in the object store, cached in memory per project.

Each ``ItemsIngested`` chunk is kept as ``sampler/<project>/items/<event_id>.json`` (features:
the ingester's ``.npz``); each committed batch as ``sampler/<project>/batches/<id>.<nonce>.json``.
A fresh replica lists these and rebuilds the same pool; the cache only loads what is new.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from labelloop.events import BatchCreated, IngestedItem, ItemsIngested
from labelloop.stores import Blobs

from .domain.ledger import Ledger
from .domain.pool import Pool

__all__ = ["PoolStore", "ProjectPool"]


@dataclass
class ProjectPool:
    pool: Pool = field(default_factory=Pool)
    records: dict[str, IngestedItem] = field(default_factory=dict)
    applied: set[str] = field(default_factory=set)
    """Committed batches (``id.nonce``) whose items are marked taken."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class PoolStore:
    def __init__(self, artifacts: Callable[[], Blobs]) -> None:
        self._artifacts = artifacts
        self._projects: dict[str, ProjectPool] = {}
        self._batches: dict[str, BatchCreated] = {}
        self._scores: dict[str, tuple[dict[str, int], NDArray[np.float64]]] = {}

    @staticmethod
    def chunk_name(project: str, event_id: str) -> str:
        return f"sampler/{project}/items/{event_id}.json"

    @staticmethod
    def batch_name(project: str, batch_id: str, nonce: str) -> str:
        return f"sampler/{project}/batches/{batch_id}.{nonce}.json"

    def project(self, name: str) -> ProjectPool:
        return self._projects.setdefault(name, ProjectPool())

    async def record(self, event: ItemsIngested) -> None:
        """Keep an ingested chunk (idempotent: same event, same object)."""
        if event.items:
            name = self.chunk_name(event.project, event.event_id)
            await self._artifacts().put(name, event.model_dump_json().encode())

    async def sync(self, project: str, ledger: Ledger) -> ProjectPool:
        """Load chunks and committed batches not seen yet. Call with ``project(...).lock`` held."""
        state = self.project(project)
        blobs = self._artifacts()
        prefix = f"sampler/{project}/items/"
        for name in sorted(await blobs.list(prefix)):
            if state.pool.has_chunk(name):
                continue
            raw = await blobs.get(name)
            if raw is None:
                continue
            chunk = ItemsIngested.model_validate_json(raw)
            features = await self._features(chunk.features_ref)
            state.pool.add_chunk(
                name,
                [i.item_id for i in chunk.items],
                is_gold=[i.known_label is not None for i in chunk.items],
                metadata=[i.metadata for i in chunk.items],
                features=features,
            )
            for item in chunk.items:
                state.records.setdefault(item.item_id, item)
        committed = [(b, o.nonce) for b, o in ledger.open.items()] + list(ledger.closed.items())
        for batch_id, nonce in committed:
            key = f"{batch_id}.{nonce}"
            if key in state.applied:
                continue
            batch = await self.batch(project, batch_id, nonce)
            if batch.kind == "labeling":
                state.pool.mark_taken(t.item_id for t in batch.tasks if not t.is_gold)
            state.applied.add(key)
        return state

    async def save_batch(self, batch: BatchCreated, nonce: str) -> None:
        name = self.batch_name(batch.project, batch.batch_id, nonce)
        await self._artifacts().put(name, batch.model_dump_json().encode())
        self._batches[name] = batch

    async def batch(self, project: str, batch_id: str, nonce: str) -> BatchCreated:
        name = self.batch_name(project, batch_id, nonce)
        if name not in self._batches:
            raw = await self._artifacts().get(name)
            if raw is None:
                raise LookupError(f"committed batch {name} is missing from the object store")
            self._batches[name] = BatchCreated.model_validate_json(raw)
        return self._batches[name]

    async def scores(self, ref: str) -> tuple[dict[str, int], NDArray[np.float64]] | None:
        """The model's pool scores: item id -> row, and the probability matrix."""
        if ref not in self._scores:
            raw = await self._artifacts().get(ref)
            if raw is None:
                return None
            with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
                ids = [str(i) for i in npz["item_ids"]]
                proba = np.asarray(npz["proba"], dtype=np.float64)
            if len(self._scores) >= 4:  # one latest model per project is all that is used
                self._scores.pop(next(iter(self._scores)))
            self._scores[ref] = ({i: r for r, i in enumerate(ids)}, proba)
        return self._scores[ref]

    async def _features(self, ref: str | None) -> tuple[list[str], NDArray[np.float32]] | None:
        if ref is None:
            return None
        raw = await self._artifacts().get(ref)
        if raw is None:
            return None
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            return [str(i) for i in npz["item_ids"]], np.asarray(npz["X"], dtype=np.float32)
