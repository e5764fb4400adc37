"""Where a service's messages come from and go to: NATS JetStream, or memory for unit tests.

``Service`` speaks to one ``Transport`` and never asks which one it has. The NATS transport
connects, provisions the namespace, declares the durable consumers, opens KV and the object store,
acknowledges after the handler (double ack), naks with a delay, terminates dead letters, sends
``in_progress`` heartbeats and moves messages whose deliveries ran out to the dead letters. The
memory transport keeps its stores in memory, records what was published (dropping duplicate
event ids as the server's duplicate window would) and cannot redeliver: a failure is final.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import nats
from faststream.message import AckStatus, StreamMessage
from faststream.nats import ConsumerConfig
from nats.js import JetStreamContext
from nats.js.errors import BadRequestError, NotFoundError

from labelloop.artifacts import nats_artifacts
from labelloop.delivery import Verdict, build_dead_letter
from labelloop.events import Event
from labelloop.provisioning import advisory_stream, provision
from labelloop.stores import MemoryStores, NatsKeyValue, NatsStores, Stores

if TYPE_CHECKING:
    from labelloop.runtime import Service

__all__ = ["Delivery", "MemoryTransport", "NatsTransport", "Transport"]

log = logging.getLogger("labelloop.transport")


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the transport knows of a message being handled."""

    consumer: str | None
    """The durable consumer it came through (``None``: not one of ours, or unknown in memory)."""
    deliveries: int
    stream: str | None
    sequence: int | None


class Transport(Protocol):
    redelivers: bool
    """False when a failed message cannot come back (the memory transport)."""

    async def open(self, service: Service) -> Stores: ...
    async def publish(
        self, event: Event, subject: str, stream: str, body: bytes, headers: dict[str, str]
    ) -> bool:
        """Publish; False when the server dropped it as a duplicate."""
        ...

    def delivery(self, msg: StreamMessage[Any]) -> Delivery: ...
    async def settle(self, msg: StreamMessage[Any], verdict: Verdict) -> None: ...
    def heartbeat(self, msg: StreamMessage[Any], ack_wait: float) -> asyncio.Task[None] | None: ...
    def background(self, service: Service) -> list[Coroutine[Any, Any, None]]: ...
    async def close(self) -> None: ...


# ----------------------------------------------------------------------------- NATS


class NatsTransport:
    redelivers = True

    def __init__(self, *, max_handler_seconds: float) -> None:
        self._max_handler_seconds = max_handler_seconds
        self._service: Service | None = None
        self._advisory_sub: Any = None

    async def open(self, service: Service) -> Stores:
        self._service = service
        broker = service.broker
        await broker.connect()
        js = broker.connection.jetstream()
        await provision(js, service.ns, replicas=service.settings.stream_replicas)
        await self._declare_consumers(service, js)
        state = await broker.key_value(service.ns.kv_bucket("state"), declare=False)
        projects = await broker.key_value(service.ns.kv_bucket("projects"), declare=False)
        artifacts = nats_artifacts(js, service.ns, home=service.area)
        return NatsStores(NatsKeyValue(state), NatsKeyValue(projects), artifacts)

    @staticmethod
    async def _declare_consumers(service: Service, js: JetStreamContext) -> None:
        # FastStream does not change an existing durable's config; this does (STACK_NOTES).
        for sub in service.subscriptions():
            config = ConsumerConfig(
                durable_name=sub.durable,
                filter_subject=sub.subject,
                max_deliver=sub.max_deliver,
                ack_wait=sub.ack_wait,
                ack_policy=nats.js.api.AckPolicy.EXPLICIT,
            )
            try:
                await js.add_consumer(sub.stream, config=config)
            except BadRequestError as exc:
                log.warning("consumer %s not updated: %s", sub.durable, exc.description)

    async def publish(
        self, event: Event, subject: str, stream: str, body: bytes, headers: dict[str, str]
    ) -> bool:
        assert self._service is not None
        ack = await self._service.broker.publish(body, subject, headers=headers, stream=stream)
        return not bool(getattr(ack, "duplicate", False))

    def delivery(self, msg: StreamMessage[Any]) -> Delivery:
        meta = getattr(msg.raw_message, "metadata", None)
        sequence = getattr(meta, "sequence", None)
        return Delivery(
            consumer=getattr(meta, "consumer", None),
            deliveries=int(getattr(meta, "num_delivered", 1) or 1),
            stream=getattr(meta, "stream", None),
            sequence=getattr(sequence, "stream", None),
        )

    async def settle(self, msg: StreamMessage[Any], verdict: Verdict) -> None:
        raw = msg.raw_message
        if verdict.action == "ack":
            await raw.ack_sync()  # double ack: the server confirms, a lost ack cannot redeliver
            msg.committed = AckStatus.ACKED
        elif verdict.action == "retry":
            await raw.nak(delay=verdict.delay)
            msg.committed = AckStatus.NACKED
        else:
            await msg.reject()  # TERM: the server stops redelivering it

    def heartbeat(self, msg: StreamMessage[Any], ack_wait: float) -> asyncio.Task[None] | None:
        return asyncio.create_task(_heartbeat(msg, ack_wait, self._max_handler_seconds))

    def background(self, service: Service) -> list[Coroutine[Any, Any, None]]:
        return [self._move_exhausted(service)]

    async def close(self) -> None:
        if self._advisory_sub is not None:
            # a pull subscription left to the connection's drain would wait for its queue forever
            with contextlib.suppress(Exception):
                await self._advisory_sub.unsubscribe()
            self._advisory_sub = None

    async def _move_exhausted(self, service: Service) -> None:
        """Move messages whose deliveries ran out without a verdict (crash, timeout) to the DLQ."""
        js = service.broker.connection.jetstream()
        durable = f"{service.ns.prefix}_deadletter_mover".replace("-", "_")
        try:
            psub = await js.pull_subscribe("", durable=durable, stream=advisory_stream(service.ns))
            self._advisory_sub = psub
        except Exception:
            service.log.exception("cannot watch max-delivery advisories")
            return
        while not service.stopping:
            try:
                msgs = await psub.fetch(10, timeout=1.0)
            except TimeoutError:  # nothing to move (nats-py raises asyncio's, an alias)
                continue
            except asyncio.CancelledError:
                raise
            except Exception:
                service.log.exception("reading max-delivery advisories failed")
                await asyncio.sleep(1.0)
                continue
            for adv in msgs:
                try:
                    await self._move_one(service, js, adv)
                except Exception:  # one bad advisory must not stop the mover; it comes back
                    service.log.exception("moving an exhausted message to the dead letters failed")

    @staticmethod
    async def _move_one(service: Service, js: JetStreamContext, adv: Any) -> None:
        data = json.loads(adv.data)
        stream, seq, consumer = data.get("stream"), data.get("stream_seq"), data.get("consumer")
        try:
            original = await js.get_msg(stream, seq)
        except NotFoundError:
            await adv.ack()  # already gone (expired or purged): nothing left to keep
            return
        subject = original.subject or ""
        letter = build_dead_letter(
            original.data or b"",
            subject=subject,
            stream=stream,
            sequence=seq,
            consumer=consumer or "?",
            kind="max_deliveries",
            reason=(
                f"delivered {data.get('deliveries')} times without an acknowledgement "
                "(the handler crashed or exceeded its ack wait)"
            ),
            deliveries=int(data.get("deliveries") or 0),
            headers={k: v for k, v in (original.headers or {}).items() if isinstance(v, str)},
        )
        await service.publish(letter)
        event_cls, _ = service.ns.parse(subject)
        event_name = event_cls.__name__ if event_cls is not None else "unknown"
        # the class name, as every other dead letter of the event is counted
        service.metrics.dead_letters.labels(event=event_name, kind="max_deliveries").inc()
        await adv.ack()


async def _heartbeat(msg: StreamMessage[Any], ack_wait: float, max_seconds: float) -> None:
    """Tell the server the handler is alive, up to ``max_seconds``: then let it redeliver."""
    deadline = time.monotonic() + max_seconds
    with contextlib.suppress(asyncio.CancelledError, Exception):
        while time.monotonic() < deadline:
            await asyncio.sleep(max(ack_wait / 3, 0.5))
            await msg.raw_message.in_progress()
        log.warning("a handler exceeded max_handler_seconds: its message will be redelivered")


# ----------------------------------------------------------------------------- memory


@dataclass
class MemoryTransport:
    """FastStream's in-memory broker underneath (``labelloop.testing.in_memory``), stores in
    memory, and a record of every event published."""

    stores: MemoryStores = field(default_factory=MemoryStores)
    sent: list[Event] = field(default_factory=list)
    """Every event published, duplicates by event id dropped as NATS does."""
    redelivers: bool = False
    _ids: set[str] = field(default_factory=set)
    _deliver: Callable[[bytes, str, dict[str, str]], Awaitable[object]] | None = None

    async def open(self, service: Service) -> Stores:
        self._deliver = lambda body, subject, headers: service.broker.publish(
            body, subject, headers=headers
        )
        return self.stores

    async def publish(
        self, event: Event, subject: str, stream: str, body: bytes, headers: dict[str, str]
    ) -> bool:
        if event.event_id in self._ids:
            return False
        self._ids.add(event.event_id)
        self.sent.append(event)
        if self._deliver is not None:
            await self._deliver(body, subject, headers)
        return True

    def delivery(self, msg: StreamMessage[Any]) -> Delivery:
        return Delivery(consumer=None, deliveries=1, stream=None, sequence=None)

    async def settle(self, msg: StreamMessage[Any], verdict: Verdict) -> None:
        return None  # nothing to acknowledge in memory

    def heartbeat(self, msg: StreamMessage[Any], ack_wait: float) -> asyncio.Task[None] | None:
        return None

    def background(self, service: Service) -> list[Coroutine[Any, Any, None]]:
        return []

    async def close(self) -> None:
        return None
