"""A client of the labelloop bus for the CLI and data producers: publish events, read state."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from labelloop.events import Event, ProjectConfigured, deterministic_id
from labelloop.payloads import wire_form
from labelloop.project import ProjectConfig, parse_project
from labelloop.provisioning import provision
from labelloop.runtime import nats_connect_options
from labelloop.settings import ServiceSettings
from labelloop.stores import Blobs, KeyValue, NatsBlobs, NatsKeyValue
from labelloop.streams import Namespace

__all__ = ["BusClient", "connect"]


@dataclass
class BusClient:
    nc: NatsClient
    js: JetStreamContext
    ns: Namespace

    async def publish(self, event: Event) -> bool:
        """Publish idempotently (``Nats-Msg-Id`` = event id); ``False`` if dropped as duplicate.

        An event too large for one message travels by reference (``labelloop.payloads``)."""
        cls = type(event)
        body, extra = await wire_form(event, await self.blobs())
        ack = await self.js.publish(
            self.ns.subject(event),
            body,
            stream=self.ns.stream_name(self.ns.stream_for(cls)),
            headers={
                "Nats-Msg-Id": event.event_id,
                "content-type": "application/json",
                **extra,
            },
        )
        return not ack.duplicate

    async def backlog(self, service: str, event: type[Event]) -> int:
        """Messages of ``event`` a service has not finished with (pending + unacknowledged)."""
        stream = self.ns.stream_name(self.ns.stream_for(event))
        try:
            info = await self.js.consumer_info(stream, self.ns.durable(service, event))
        except NotFoundError:
            return 0
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    async def kv(self, bucket: str) -> KeyValue:
        return NatsKeyValue(await self.js.key_value(self.ns.kv_bucket(bucket)))

    async def blobs(self, bucket: str = "artifacts") -> Blobs:
        return NatsBlobs(await self.js.object_store(self.ns.object_bucket(bucket)))

    async def project(self, name: str) -> ProjectConfig | None:
        entry = await (await self.kv("projects")).get(name)
        if entry is None:
            return None
        return parse_project(json.loads(entry.value), source=f"project {name!r}")

    async def apply_project(self, config: ProjectConfig) -> int:
        """Store a project's configuration and announce it. Returns the stored revision."""
        projects = await self.kv("projects")
        revision = await projects.put(config.name, config.model_dump_json().encode())
        await self.publish(
            ProjectConfigured(
                event_id=deterministic_id("project-configured", config.name, revision),
                project=config.name,
                revision=revision,
                config=config.model_dump(mode="json"),
            )
        )
        return revision


@asynccontextmanager
async def connect(settings: ServiceSettings | None = None) -> AsyncIterator[BusClient]:
    """Connect to NATS, make sure the streams and buckets exist, and yield a client."""
    settings = settings or ServiceSettings()
    nc = await nats.connect(**nats_connect_options(settings), connect_timeout=5)
    try:
        js = nc.jetstream()
        ns = Namespace(settings.namespace)
        await provision(js, ns, replicas=settings.stream_replicas)
        yield BusClient(nc, js, ns)
    finally:
        await nc.drain()
