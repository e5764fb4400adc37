"""Test support: run a service in memory or for real, and collect the events it publishes."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import nats
from faststream.nats import TestNatsBroker
from nats.aio.client import Client as NatsClient
from nats.js.api import ConsumerConfig, DeliverPolicy

from labelloop.artifacts import Artifacts, nats_artifacts
from labelloop.events import Event
from labelloop.payloads import resolve
from labelloop.project import ProjectConfig
from labelloop.provisioning import provision
from labelloop.runtime import Service
from labelloop.stores import Blobs, KeyValue
from labelloop.streams import Namespace
from labelloop.transport import MemoryTransport

__all__ = [
    "EventCollector",
    "InMemoryBus",
    "apply_project",
    "example_module",
    "in_memory",
    "kv_value_sizes",
    "started",
    "wait_until",
    "writing_as",
]

E = TypeVar("E", bound=Event)


async def apply_project(projects: KeyValue, config: ProjectConfig) -> None:
    """Store a project configuration where ``Service.project`` reads it."""
    await projects.put(config.name, config.model_dump_json().encode())


class InMemoryBus:
    """A service on FastStream's in-memory broker: publish in, see what it published."""

    def __init__(self, service: Service, transport: MemoryTransport) -> None:
        self.service = service
        self.transport = transport
        self.stores = transport.stores

    async def publish(self, event: Event) -> None:
        """Deliver an event to the service's handlers (inline, like a real delivery)."""
        await self.service.broker.publish(
            event.model_dump_json().encode(),
            self.service.ns.subject(event),
            headers={"Nats-Msg-Id": event.event_id},
        )
        self._forget_calls()

    def _forget_calls(self) -> None:
        """FastStream's test broker records every body a handler was called with; a real one
        keeps none. Forgotten after each delivery, so a test sees what the service keeps."""
        for subscriber in self.service.broker.subscribers:
            for call in subscriber.calls:
                call.handler.refresh(with_mock=True)

    async def publish_raw(self, payload: bytes, event: type[Event], project: str = "p1") -> None:
        """Deliver arbitrary bytes on an event's subject of ``project`` (bad-input tests)."""
        await self.service.broker.publish(payload, self.service.ns.subject(event, project))

    def published(self, event: type[E]) -> list[E]:
        """Events of a type the service published (duplicates by event id dropped, as NATS does)."""
        return [e for e in self.transport.sent if isinstance(e, event)]

    async def apply_project(self, config: ProjectConfig) -> None:
        await apply_project(self.stores.projects, config)


@asynccontextmanager
async def in_memory(service: Service) -> AsyncIterator[InMemoryBus]:
    """Run ``service`` on FastStream's ``TestNatsBroker`` with in-memory stores. No sockets."""
    transport = service.transport
    if not isinstance(transport, MemoryTransport):
        transport = MemoryTransport()
        service.transport = transport
    await service.open()
    async with TestNatsBroker(service.broker):
        await service.begin()
        try:
            yield InMemoryBus(service, transport)
        finally:
            await service.end()
    await service.close()


def writing_as(service: Service, area: str) -> Blobs:
    """A started service's artefacts, writing another service's area: a test that plays that
    service (the ingester's catalog, seeded for an exporter under test). In-memory stores have
    no areas and come back as they are."""
    blobs = service.artifacts
    return blobs.writing(area) if isinstance(blobs, Artifacts) else blobs


@asynccontextmanager
async def started(service: Service) -> AsyncIterator[Service]:
    """Run ``service`` for real against its NATS server (no HTTP)."""
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


class EventCollector:
    """Collects every event of one type published in a namespace (from the stream's start)."""

    def __init__(self, nats_url: str, namespace: str, event: type[E]) -> None:
        self._url = nats_url
        self._ns = Namespace(namespace)
        self._event = event
        self.events: list[Any] = []
        self._nc: NatsClient | None = None
        self._sub: Any = None
        self._arrived = asyncio.Event()

    async def __aenter__(self) -> EventCollector:
        self._nc = await nats.connect(self._url)
        js = self._nc.jetstream()
        stream = self._ns.stream_name(self._ns.stream_for(self._event))
        await provision(js, self._ns)  # idempotent: whoever comes first creates the streams

        blobs = nats_artifacts(js, self._ns, home=None)

        async def on_msg(msg: Any) -> None:
            body = await resolve(msg.data, msg.headers, blobs)
            self.events.append(self._event.model_validate_json(body))
            self._arrived.set()

        self._sub = await js.subscribe(
            self._ns.subject(self._event),
            stream=stream,
            ordered_consumer=True,
            cb=on_msg,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._nc is not None:
            await self._nc.close()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Any]:
        """Wait until at least ``count`` events arrived; fail with what did arrive otherwise."""
        deadline = time.monotonic() + timeout
        while len(self.events) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"expected {count} {self._event.__name__} events, got {len(self.events)}"
                )
            self._arrived.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout=min(remaining, 0.5))
        return list(self.events)


async def wait_until(
    condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05
) -> Any:
    """Poll ``condition`` (sync or async) until it returns something truthy, or time out."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def decode(payload: bytes) -> Any:
    return json.loads(payload)


async def configure_project(
    nats_url: str, namespace: str, config: ProjectConfig | dict[str, Any]
) -> None:
    """Apply a project on a real server as ``labelloop project apply`` does (KV + event)."""
    from labelloop.client import connect
    from labelloop.project import parse_project
    from labelloop.settings import ServiceSettings

    project = config if isinstance(config, ProjectConfig) else parse_project(config)
    async with connect(ServiceSettings(nats_url=nats_url, namespace=namespace)) as bus:
        await bus.apply_project(project)


async def publish_events(nats_url: str, namespace: str, *events: Event) -> None:
    """Publish events as a producer would (``Nats-Msg-Id`` = event id), provisioning first."""
    from labelloop.client import connect
    from labelloop.settings import ServiceSettings

    async with connect(ServiceSettings(nats_url=nats_url, namespace=namespace)) as bus:
        for event in events:
            await bus.publish(event)


async def kv_value_sizes(nats_url: str, namespace: str, bucket: str = "state") -> dict[str, int]:
    """The size in bytes of every key's current value in one of a namespace's KV buckets (what
    a soak checks stays bounded). Reads headers only: the server tells each value's size."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        name = Namespace(namespace).kv_bucket(bucket)
        prefix = f"$KV.{name}."
        sub = await js.subscribe(
            f"{prefix}>",
            stream=f"KV_{name}",
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            headers_only=True,
        )
        sizes: dict[str, int] = {}
        try:
            info = await sub.consumer_info()
            if not info.num_pending and not (info.delivered and info.delivered.consumer_seq):
                return sizes
            while True:
                msg = await sub.next_msg(timeout=30)
                headers = msg.headers or {}
                key = msg.subject[len(prefix) :]
                if headers.get("KV-Operation") in ("DEL", "PURGE"):
                    sizes.pop(key, None)
                else:
                    sizes[key] = int(headers.get("Nats-Msg-Size", "0"))
                if msg.metadata.num_pending == 0:
                    return sizes
        finally:
            with suppress(Exception):
                await sub.unsubscribe()
    finally:
        await nc.close()


def example_module(path: Path, name: str) -> ModuleType:
    """A module of an example folder (a folder of scripts, not a package), imported from its
    file at ``path`` as ``name``; once: a second call returns the module imported first."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"no module at {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module
