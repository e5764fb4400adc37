"""Artefacts: one object bucket per writer, found by the first segment of an object's name.

Every artefact name starts with its *area* (``catalog/digits/0001.npz``,
``trainer/digits/models/m0001.skops``; the areas are :data:`labelloop.streams.OBJECT_BUCKETS`),
and every area is its own object bucket with one writer: the ingester writes ``catalog``, the
trainer ``trainer``, and so on. A service reads every area and writes only its own.

Why buckets and not names: a JetStream object store cannot be confined by name. Object names
travel base64-encoded in the subject, and replacing an object purges its old chunks
(``$JS.API.STREAM.PURGE`` of the bucket's stream), so on one shared bucket every service could
replace or purge every artefact. With a bucket per writer, production permissions
(``infra/nats/accounts.conf``) give each service ``$O.<its bucket>.>`` and the purge of its own
stream only; :class:`Artifacts` refuses the same writes in the process, so a bug that would be
denied in production fails the same way in tests and in the embedded default.

Names that reference an artefact travel in events (``DatasetExported.dataset_ref``,
``ModelTrained.model_ref``); a name in an unknown area is simply not found.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from labelloop.streams import OBJECT_BUCKETS, Namespace

if TYPE_CHECKING:
    from nats.js import JetStreamContext

    from labelloop.stores import Blobs

__all__ = ["AREAS", "Artifacts", "ForeignArea", "area_of", "nats_artifacts"]

AREAS: frozenset[str] = frozenset(bucket.name for bucket in OBJECT_BUCKETS)


class ForeignArea(PermissionError):
    """A write (put or delete) outside the writer's own area."""


def area_of(name: str) -> str:
    """The area an artefact name belongs to: its first path segment."""
    return name.split("/", 1)[0]


class Artifacts:
    """``Blobs`` over the areas' buckets, writing only to ``home``.

    ``home=None``: no area of its own, may write every area (the operator's provisioning and
    repair tools). Buckets are opened on first use and kept."""

    def __init__(self, open_area: Callable[[str], Awaitable[Blobs]], *, home: str | None) -> None:
        if home is not None and home not in AREAS:
            raise ValueError(f"unknown artefact area {home!r}; the areas: {sorted(AREAS)}")
        self.home = home
        self._open = open_area
        self._buckets: dict[str, Blobs] = {}
        self._lock = asyncio.Lock()

    def writing(self, area: str | None) -> Artifacts:
        """The same buckets, writing ``area`` instead (a test playing another service)."""
        return Artifacts(self._open, home=area)

    async def _bucket(self, area: str) -> Blobs:
        bucket = self._buckets.get(area)
        if bucket is None:
            async with self._lock:
                bucket = self._buckets.get(area)
                if bucket is None:
                    bucket = self._buckets[area] = await self._open(area)
        return bucket

    def _writable(self, name: str) -> str:
        area = area_of(name)
        if area not in AREAS:
            raise ForeignArea(
                f"artefact {name!r} names no area: names start with one of {sorted(AREAS)}"
            )
        if self.home is not None and area != self.home:
            raise ForeignArea(
                f"artefact {name!r} is in the {area!r} area, and this client writes only"
                f" {self.home!r}"
            )
        return area

    async def put(self, name: str, data: bytes) -> None:
        await (await self._bucket(self._writable(name))).put(name, data)

    async def get(self, name: str) -> bytes | None:
        area = area_of(name)
        if area not in AREAS:
            return None
        return await (await self._bucket(area)).get(name)

    async def delete(self, name: str) -> None:
        await (await self._bucket(self._writable(name))).delete(name)

    async def list(self, prefix: str = "") -> list[str]:
        """Names starting with ``prefix``: one area's listing when the prefix names an area."""
        areas = sorted(a for a in AREAS if a.startswith(prefix) or prefix.startswith(a + "/"))

        async def listing(area: str) -> list[str]:
            return await (await self._bucket(area)).list(prefix)

        listings = await asyncio.gather(*(listing(a) for a in areas))
        return sorted(name for names in listings for name in names)


def nats_artifacts(js: JetStreamContext, ns: Namespace, *, home: str | None) -> Artifacts:
    """:class:`Artifacts` on a namespace's object buckets (provisioned beforehand)."""
    from labelloop.stores import NatsBlobs

    async def open_area(area: str) -> Blobs:
        return NatsBlobs(await js.object_store(ns.object_bucket(area)))

    return Artifacts(open_area, home=home)
