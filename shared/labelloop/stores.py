"""Durable state behind two small protocols: a key-value store and a blob store.

Services keep every piece of state in NATS (JetStream KV and object store) so that a killed
replica loses nothing and a new one rebuilds from the server. Handlers see only the protocols;
unit tests pass the in-memory fakes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from nats.errors import NoRespondersError
from nats.js.api import DeliverPolicy, RawStreamMsg
from nats.js.errors import (
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
    ObjectNotFoundError,
)
from nats.js.kv import KeyValue as _NatsKV
from nats.js.object_store import ObjectStore as _NatsObjectStore

__all__ = [
    "Blobs",
    "Entry",
    "KeyValue",
    "MemoryBlobs",
    "MemoryKeyValue",
    "MemoryStores",
    "NatsBlobs",
    "NatsKeyValue",
    "Stores",
    "kv_key",
    "kv_update",
]

_KEY_OK = re.compile(r"^[-/_=.a-zA-Z0-9]+$")


@dataclass(frozen=True, slots=True)
class Entry:
    value: bytes
    revision: int


class KeyValue(Protocol):
    async def get(self, key: str) -> Entry | None: ...
    async def put(self, key: str, value: bytes) -> int: ...
    async def create(self, key: str, value: bytes) -> int | None:
        """Put-if-absent: the new revision, or ``None`` when the key exists."""
        ...

    async def update(self, key: str, value: bytes, revision: int) -> int | None:
        """Compare-and-swap: the new revision, or ``None`` when ``revision`` is not the latest."""
        ...

    async def delete(self, key: str) -> None: ...
    async def keys(self, prefix: str = "") -> list[str]: ...
    async def last_change(self, prefix: str) -> int | None:
        """The revision of the latest put or delete of a key under ``prefix`` (which ends in
        ``.``), ``None`` if there was none: whether anything under it changed, in one request
        whatever the number of keys."""
        ...


class Blobs(Protocol):
    async def put(self, name: str, data: bytes) -> None: ...
    async def get(self, name: str) -> bytes | None: ...
    async def delete(self, name: str) -> None: ...
    async def list(self, prefix: str = "") -> list[str]: ...


def kv_key(*parts: str) -> str:
    """Join key parts with dots, refusing characters NATS KV does not allow."""
    key = ".".join(parts)
    if not _KEY_OK.match(key) or ".." in key or key.startswith(".") or key.endswith("."):
        raise ValueError(f"invalid KV key {key!r}: use [-/_=.a-zA-Z0-9] and no empty parts")
    return key


class ConflictError(RuntimeError):
    """A compare-and-swap loop lost too many races in a row."""


_LIST_CONCURRENCY = 64
"""Metadata reads a listing has in flight at once."""

MAX_BACKOFF_SECONDS = 0.1
"""Longest pause between two conflicting attempts of ``kv_update``."""


async def kv_update(
    kv: KeyValue,
    key: str,
    fn: Callable[[bytes | None], bytes | None] | Callable[[bytes | None], Awaitable[bytes | None]],
    *,
    attempts: int = 50,
) -> bytes | None:
    """Apply ``fn`` to the current value with optimistic concurrency, retrying on conflict.

    ``fn`` returns the new value, or ``None`` to leave the key as it is. Returns what was stored
    (or the unchanged current value). Safe across replicas: exactly one writer wins each revision.
    """
    for attempt in range(attempts):
        current = await kv.get(key)
        old = current.value if current is not None else None
        new = fn(old)
        if asyncio.iscoroutine(new):
            new = await new
        if new is None:
            return old
        assert isinstance(new, bytes)
        if current is None:
            if await kv.create(key, new) is not None:
                return new
        elif await kv.update(key, new, current.revision) is not None:
            return new
        await asyncio.sleep(min(0.001 * 2**attempt, MAX_BACKOFF_SECONDS))
    raise ConflictError(f"gave up updating {key!r} after {attempts} conflicting attempts")


# ----------------------------------------------------------------------------- NATS


class NatsKeyValue:
    """``KeyValue`` on a JetStream KV bucket."""

    def __init__(self, kv: _NatsKV) -> None:
        self._kv = kv

    async def get(self, key: str) -> Entry | None:
        try:
            entry = await self._kv.get(key)
        except (KeyNotFoundError, NotFoundError):
            return None
        if entry.value is None or entry.revision is None:
            return None
        return Entry(entry.value, entry.revision)

    async def put(self, key: str, value: bytes) -> int:
        return await self._kv.put(key, value)

    async def create(self, key: str, value: bytes) -> int | None:
        try:
            return await self._kv.create(key, value)
        except KeyWrongLastSequenceError:
            return None

    async def update(self, key: str, value: bytes, revision: int) -> int | None:
        try:
            return await self._kv.update(key, value, last=revision)
        except KeyWrongLastSequenceError:
            return None

    async def delete(self, key: str) -> None:
        await self._kv.delete(key)

    async def keys(self, prefix: str = "", *, timeout: float = 30.0) -> list[str]:
        """Keys starting with ``prefix``; a prefix ending in ``.`` is filtered by the server.

        Not nats-py's ``keys()``/``watch()``: its "no more keys" marker can come before keys
        that were already on their way (it compares the consumer's pending count with the
        messages its callback has *processed*), so under load it returned no keys at all for
        a project that had them (:func:`_latest_per_subject` reads instead)."""
        kv = self._kv
        subject = f"{kv._pre}{prefix}>" if prefix.endswith(".") else f"{kv._pre}>"
        found: set[str] = set()  # an ordered consumer that resets may deliver a key twice
        async for msg in _latest_per_subject(
            kv._js, kv._stream, subject, headers_only=True, timeout=timeout
        ):
            operation = (msg.headers or {}).get("KV-Operation")
            key = msg.subject[len(kv._pre) :]
            if operation not in ("DEL", "PURGE") and key.startswith(prefix):
                found.add(key)
        return sorted(found)

    async def last_change(self, prefix: str) -> int | None:
        if not prefix.endswith("."):
            raise ValueError(f"a prefix ends in '.': {prefix!r}")
        kv = self._kv
        try:
            msg = await kv._js.get_last_msg(kv._stream, f"{kv._pre}{prefix}>")
        except NotFoundError:
            return None
        return msg.seq


class NatsBlobs:
    """``Blobs`` on a JetStream object store.

    Reads do not use nats-py's ``ObjectStore.get``: it waits forever when the object is replaced
    while it reads (``put`` of an existing name writes new chunks, then purges the old ones the
    reader subscribed to), and it concatenates chunks one ``bytes`` at a time (quadratic). Here a
    read whose chunks are gone looks at the object again and starts over on its new chunks.
    """

    def __init__(self, store: _NatsObjectStore) -> None:
        self._store = store

    async def put(self, name: str, data: bytes) -> None:
        await self._store.put(name, data)

    async def get(self, name: str) -> bytes | None:
        for _ in range(5):
            try:
                info = await self._store.get_info(name)
            except (ObjectNotFoundError, NotFoundError):
                return None
            if not info.size:
                return b""
            data = await (self._one_chunk(info) if info.chunks == 1 else self._chunks(info))
            if data is not None:
                return data
        raise TimeoutError(f"object {name!r} kept changing while it was read")

    async def _one_chunk(self, info: Any) -> bytes | None:
        """A one-chunk object (most state: up to the chunk size, 128 KiB) in one request."""
        store = self._store
        try:
            msg = await self._get_msg(subject=f"$O.{store._name}.C.{info.nuid}")
        except NotFoundError:
            return None  # replaced and purged since its info was read: read it again
        data = msg.data or b""
        return data if self._intact(info, hashlib.sha256(data)) else None

    async def _get_msg(self, *, subject: str, seq: int | None = None) -> RawStreamMsg:
        """The last message on ``subject``, or with ``seq`` the first at or after it: a direct
        get (any server that holds the stream answers, with the message's bytes as they are:
        no base64 in a JSON reply to decode), and from the stream's leader if that server has
        not got it yet (a replica may lag behind the put that named the chunk) or the stream
        allows no direct gets (a bucket made elsewhere)."""
        store = self._store

        async def get(direct: bool) -> RawStreamMsg:
            return await store._js.get_msg(
                store._stream, seq=seq, subject=subject, next=seq is not None, direct=direct
            )

        try:
            return await get(direct=True)
        except (NotFoundError, NoRespondersError):  # (a stream that allows no direct gets)
            return await get(direct=False)

    @staticmethod
    def _intact(info: Any, digest: Any) -> bool:
        expected = (info.digest or "").split("=", 1)[-1]
        return (
            not expected
            or base64.urlsafe_b64decode(expected + "=" * (-len(expected) % 4)) == digest.digest()
        )

    async def _chunks(self, info: Any) -> bytes | None:
        """The object's chunks, each one request (the first stored on the object's subject at
        or after the sequence that follows the last chunk read), or ``None`` if they are gone:
        the object was replaced while it was read.

        Not a consumer: each read by an ordered consumer left one on the server until its
        inactivity threshold, and a process reading a few hundred catalog chunks a second hit
        the stream's consumer limit (``maximum consumers limit reached``)."""
        store = self._store
        subject = f"$O.{store._name}.C.{info.nuid}"
        parts: list[bytes] = []
        digest = hashlib.sha256()
        seq = 1
        while len(parts) < info.chunks:
            try:
                msg = await self._get_msg(subject=subject, seq=seq)
            except NotFoundError:
                return None
            data = msg.data or b""
            parts.append(data)
            digest.update(data)
            seq = (msg.seq or seq) + 1
        if not self._intact(info, digest):
            return None  # a mix of two versions' chunks cannot be: read it again
        return b"".join(parts)

    async def delete(self, name: str) -> None:
        try:
            await self._store.delete(name)
        except (ObjectNotFoundError, NotFoundError):
            return

    async def list(self, prefix: str = "", *, timeout: float = 30.0) -> list[str]:
        """Names of the objects starting with ``prefix``.

        Reads the metadata of the matching objects only: the server lists the bucket's metadata
        subjects (each an object's name, base64-encoded: a subject filter cannot select a name
        prefix), the names are decoded here, and only those starting with ``prefix`` have their
        latest metadata read, to leave out deleted objects. Not nats-py's ``list()``: its
        watcher has the early end-marker race described in :meth:`NatsKeyValue.keys`."""
        store = self._store
        meta = f"$O.{store._name}.M."
        wanted: list[tuple[str, str]] = []
        for subject in await _stream_subjects(store, f"{meta}>"):
            token = subject[len(meta) :]
            try:
                name = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            except (ValueError, UnicodeDecodeError):
                continue
            if name.startswith(prefix):
                wanted.append((subject, name))
        names: list[str] = []
        for start in range(0, len(wanted), _LIST_CONCURRENCY):
            part = wanted[start : start + _LIST_CONCURRENCY]
            found = await asyncio.gather(*(self._live(subject, timeout) for subject, _ in part))
            names += [name for (_, name), live in zip(part, found, strict=True) if live]
        return sorted(names)

    async def _live(self, subject: str, timeout: float) -> bool:
        """Whether the object whose latest metadata is on ``subject`` exists (not deleted)."""
        store = self._store
        try:
            msg = await asyncio.wait_for(store._js.get_last_msg(store._stream, subject), timeout)
        except NotFoundError:
            return False
        meta = json.loads(msg.data or b"{}")
        return bool(meta.get("name")) and not meta.get("deleted")


async def _stream_subjects(store: _NatsObjectStore, pattern: str) -> list[str]:
    """Subjects of an object store's stream matching ``pattern`` that hold a message, page by
    page (the server answers at most a page of subjects per request)."""
    js: Any = store._js
    subjects: list[str] = []
    while True:
        request = {"subjects_filter": pattern, "offset": len(subjects)}
        response = await js._api_request(
            f"{js._prefix}.STREAM.INFO.{store._stream}",
            json.dumps(request).encode(),
            timeout=js._timeout,
        )
        page = list((response.get("state") or {}).get("subjects") or {})
        subjects += page
        total = int(response.get("total") or 0)
        if not page or len(subjects) >= total:
            return subjects


async def _latest_per_subject(
    js: Any, stream: str, subject: str, *, headers_only: bool, timeout: float
) -> AsyncIterator[Any]:
    """The last message of every subject under ``subject``, then stop: the end is the message
    the server says is the last (``num_pending == 0``), or a consumer it delivered nothing to.

    What :meth:`NatsKeyValue.keys` and :meth:`NatsBlobs.list` read instead of nats-py's watchers,
    whose "no more history" marker can come before messages already on their way."""
    sub = await js.subscribe(
        subject,
        stream=stream,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
        headers_only=headers_only,
    )
    try:
        info = await sub.consumer_info()
        delivered = info.delivered.consumer_seq if info.delivered else 0
        if not info.num_pending and not delivered:
            return
        while True:
            msg = await sub.next_msg(timeout=timeout)
            yield msg
            if msg.metadata.num_pending == 0:
                return
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


# ----------------------------------------------------------------------------- memory


class MemoryKeyValue:
    """In-memory ``KeyValue`` with the same revision semantics, for unit tests."""

    def __init__(self) -> None:
        self._data: dict[str, Entry] = {}
        self._changed: dict[str, int] = {}
        self._revision = 0

    def _next(self) -> int:
        self._revision += 1
        return self._revision

    async def get(self, key: str) -> Entry | None:
        return self._data.get(key)

    async def put(self, key: str, value: bytes) -> int:
        kv_key(key)
        rev = self._next()
        self._data[key] = Entry(value, rev)
        self._changed[key] = rev
        return rev

    async def create(self, key: str, value: bytes) -> int | None:
        if key in self._data:
            return None
        return await self.put(key, value)

    async def update(self, key: str, value: bytes, revision: int) -> int | None:
        current = self._data.get(key)
        if current is None or current.revision != revision:
            return None
        return await self.put(key, value)

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)
        self._changed[key] = self._next()

    async def keys(self, prefix: str = "") -> list[str]:
        return sorted(k for k in self._data if k.startswith(prefix))

    async def last_change(self, prefix: str) -> int | None:
        if not prefix.endswith("."):
            raise ValueError(f"a prefix ends in '.': {prefix!r}")
        return max((r for k, r in self._changed.items() if k.startswith(prefix)), default=None)


class MemoryBlobs:
    """In-memory ``Blobs`` for unit tests."""

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}

    async def put(self, name: str, data: bytes) -> None:
        self._data[name] = bytes(data)

    async def get(self, name: str) -> bytes | None:
        return self._data.get(name)

    async def delete(self, name: str) -> None:
        self._data.pop(name, None)

    async def list(self, prefix: str = "") -> list[str]:
        return sorted(n for n in self._data if n.startswith(prefix))


class Stores(Protocol):
    @property
    def state(self) -> KeyValue: ...
    @property
    def projects(self) -> KeyValue: ...
    @property
    def artifacts(self) -> Blobs: ...


@dataclass
class MemoryStores:
    """All of a service's stores in memory (unit tests, ``labelloop.testing.in_memory``)."""

    state: MemoryKeyValue = field(default_factory=MemoryKeyValue)
    projects: MemoryKeyValue = field(default_factory=MemoryKeyValue)
    artifacts: MemoryBlobs = field(default_factory=MemoryBlobs)


@dataclass
class NatsStores:
    state: NatsKeyValue
    projects: NatsKeyValue
    artifacts: Blobs
    """The artefact areas (:class:`labelloop.artifacts.Artifacts`): writes confined to the
    service's own."""
