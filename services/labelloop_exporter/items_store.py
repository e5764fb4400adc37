"""The data of ingested items, kept so that a dataset row carries the item's fields.

Each ItemsIngested chunk becomes ``exporter/<project>/items/<id>.json`` in the object store (an
idempotent put: a redelivery rewrites the same object); loading lists the project's chunks and reads
each one once per process, since chunks never change.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from labelloop.events import ItemsIngested, deterministic_id
from labelloop.stores import Blobs
from labelloop_exporter.domain.table import ItemData

__all__ = ["ItemCatalog"]


class ItemCatalog:
    def __init__(self, artifacts: Callable[[], Blobs]) -> None:
        self._artifacts = artifacts
        self._cache: dict[str, dict[str, ItemData]] = {}

    @staticmethod
    def prefix(project: str) -> str:
        return f"exporter/{project}/items/"

    async def record(self, event: ItemsIngested) -> None:
        if not event.items:
            return
        name = f"{self.prefix(event.project)}{deterministic_id('items', event.event_id)}.json"
        body = {i.item_id: {"data": i.data, "metadata": i.metadata} for i in event.items}
        await self._artifacts().put(name, json.dumps(body, sort_keys=True).encode())

    async def load(self, project: str) -> dict[str, ItemData]:
        blobs = self._artifacts()
        out: dict[str, ItemData] = {}
        for name in sorted(await blobs.list(self.prefix(project))):
            chunk = self._cache.get(name)
            if chunk is None:
                raw = await blobs.get(name)
                if raw is None:
                    continue
                chunk = {
                    item_id: ItemData(data=v["data"], metadata=v.get("metadata", {}))
                    for item_id, v in json.loads(raw).items()
                }
                self._cache[name] = chunk
            out.update(chunk)
        return out
