"""Which submission owns each item id: the dedup record in KV, one key per item.

``create`` is put-if-absent, so of two replicas (or two submissions) racing for the same item
exactly one wins. The value is the winning submission's id, so a redelivered submission finds
its own claims again and republishes them instead of losing them as duplicates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from labelloop.stores import KeyValue

__all__ = ["ItemClaims"]


class ItemClaims:
    def __init__(self, kv: KeyValue, *, concurrency: int = 256) -> None:
        self._kv = kv
        self._limit = asyncio.Semaphore(concurrency)

    @staticmethod
    def key(project: str, item_id: str) -> str:
        return f"ingester.{project}.item.{item_id}"

    async def claim(self, project: str, item_ids: Sequence[str], owner: str) -> list[bool]:
        """For each id: True if ``owner`` holds it (now or from an earlier delivery)."""
        return list(await asyncio.gather(*(self._claim(project, i, owner) for i in item_ids)))

    async def _claim(self, project: str, item_id: str, owner: str) -> bool:
        key = self.key(project, item_id)
        async with self._limit:
            if await self._kv.create(key, owner.encode()) is not None:
                return True
            entry = await self._kv.get(key)
        return entry is not None and entry.value == owner.encode()
