"""Numbered work applied in number order: a project's rounds, whatever order they arrive in.

Work that builds on the round before it (QA's annotator history, round *n*'s exported rows on
round *n - 1*'s, model *n* judged against the serving model) must see rounds in their order,
while the bus delivers them in the order they happened to finish. :class:`RoundSequencer` is the
reorder buffer in between, durable and shared by replicas:

* ``seq.<name>.<project>.next`` (KV) is the next round to apply;
* a round that arrives early is parked under ``seq.<name>.<project>.queued.<n>`` (its payload, or
  a reference to the object store for a large one) and its message is acknowledged;
* applying round *n* is followed by applying every parked round that is now next.

Nothing waits by retrying: an early round costs one KV write, and the replica that applies the
round before it picks it up. The hand-over is safe without locks because each side writes before
it reads: the newcomer parks its round, *then* reads ``next``; the applier moves ``next``, *then*
looks for parked rounds. Whichever acts second sees the other's write. :meth:`sweep` drains
anything parked as a periodic safety net (a replica killed between the two steps).

``apply`` must be idempotent and deterministic: two replicas may both apply the same round (a
redelivery racing the hand-over). Applying the same inputs twice must give the same state and the
same events, whose ids then make the second copy a duplicate the stream drops.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from labelloop.stores import Blobs, Entry, KeyValue

__all__ = ["Offered", "RoundSequencer"]

log = logging.getLogger("labelloop.sequencing")

Apply = Callable[[str, int, bytes], Awaitable[None]]
"""``apply(project, round, payload)``."""

Offered = Literal["applied", "queued", "done"]

_INLINE = 256 * 1024
_REF = b"@ref:"


@dataclass
class RoundSequencer:
    """A durable reorder buffer per project for one consumer of numbered rounds."""

    name: str
    kv: Callable[[], KeyValue]
    blobs: Callable[[], Blobs]
    apply: Apply
    first: int = 1
    area: str = field(kw_only=True)
    """The owner's artefact area, where a parked round too large for KV is stored."""

    def _key(self, project: str, *parts: str) -> str:
        return ".".join(("seq", self.name, project, *parts))

    async def next_round(self, project: str) -> int:
        return self._number(await self.kv().get(self._key(project, "next")))

    def _number(self, entry: Entry | None) -> int:
        return int(entry.value) if entry is not None else self.first

    async def queued(self, project: str) -> list[int]:
        """Rounds parked for a project, waiting for an earlier one."""
        prefix = self._key(project, "queued") + "."
        return sorted(int(k.rsplit(".", 1)[1]) for k in await self.kv().keys(prefix))

    async def offer(self, project: str, number: int, payload: bytes) -> Offered:
        """Apply round ``number`` now if it is next, else park it; then apply what follows."""
        seen = await self.kv().get(self._key(project, "next"))
        current = self._number(seen)
        if number < current:
            return "done"
        if number > current:
            await self._park(project, number, payload, waiting_for=current)
            # the round before may have been applied meanwhile, by a replica that did not see
            # this one parked yet: look again, now that it is
            if await self.next_round(project) != number:
                return "queued"
            await self.drain(project)
            return "queued"
        await self.apply(project, number, payload)
        await self._advance(project, number, seen)
        await self.drain(project, start=number + 1)
        return "applied"

    async def drain(self, project: str, *, start: int | None = None) -> int:
        """Apply parked rounds while the next one is parked; how many were applied.

        ``start``: the round the caller just made next (saves reading it back). Should a racing
        replica be further on, a round it applied may be applied again: ``apply`` is idempotent."""
        applied = 0
        while True:
            number = start if start is not None else await self.next_round(project)
            start = None
            payload = await self._parked(project, number)
            if payload is None:
                return applied
            await self.apply(project, number, payload)
            await self._advance(project, number)
            await self._unpark(project, number)
            applied += 1

    async def sweep(self) -> int:
        """Drain every project with parked rounds (periodic safety net); rounds applied."""
        prefix = f"seq.{self.name}."
        projects = {k.split(".")[2] for k in await self.kv().keys(prefix) if ".queued." in k}
        applied = 0
        for project in sorted(projects):
            applied += await self.drain(project)
            # parked rounds below ``next`` were applied by someone else: forget them
            current = await self.next_round(project)
            for number in await self.queued(project):
                if number < current:
                    await self._unpark(project, number)
        return applied

    # ------------------------------------------------------------------ storage

    async def _advance(self, project: str, number: int, seen: Entry | None = None) -> None:
        """Move ``next`` past ``number`` (never backwards: a racing replica may be ahead).

        ``seen``: the entry the caller read before applying; tried first (compare-and-swap:
        a stale one only costs a read)."""
        key = self._key(project, "next")
        kv = self.kv()
        for attempt in range(100):
            entry = seen if attempt == 0 and seen is not None else await kv.get(key)
            if entry is not None and int(entry.value) > number:
                return
            value = str(number + 1).encode()
            if entry is None:
                if await kv.create(key, value) is not None:
                    return
            elif await kv.update(key, value, entry.revision) is not None:
                return
        raise RuntimeError(f"{self.name}: could not advance {project} past round {number}")

    def _blob(self, project: str, number: int) -> str:
        return f"{self.area}/seq/{self.name}/{project}/{number:08d}.json"

    async def _park(self, project: str, number: int, payload: bytes, *, waiting_for: int) -> None:
        value = payload
        if len(payload) > _INLINE:
            name = self._blob(project, number)
            await self.blobs().put(name, payload)
            value = _REF + name.encode()
        await self.kv().put(self._key(project, "queued", str(number)), value)
        log.info(
            "%s: round %d of %s parked until round %d is applied",
            self.name,
            number,
            project,
            waiting_for,
        )

    async def _parked(self, project: str, number: int) -> bytes | None:
        entry = await self.kv().get(self._key(project, "queued", str(number)))
        if entry is None:
            return None
        if entry.value.startswith(_REF):
            return await self.blobs().get(entry.value[len(_REF) :].decode())
        return entry.value

    async def _unpark(self, project: str, number: int) -> None:
        entry = await self.kv().get(self._key(project, "queued", str(number)))
        if entry is None:
            return
        await self.kv().delete(self._key(project, "queued", str(number)))
        if entry.value.startswith(_REF):
            await self.blobs().delete(entry.value[len(_REF) :].decode())
