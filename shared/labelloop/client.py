"""A client of the labelloop bus for the CLI and data producers: publish events, read state."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from labelloop.artifacts import Artifacts, nats_artifacts
from labelloop.events import DeadLetter, Event, ProjectConfigured, deterministic_id
from labelloop.payloads import PayloadMissing, resolve, wire_form
from labelloop.project import ProjectConfig, parse_project
from labelloop.provisioning import provision
from labelloop.runtime import nats_connect_options
from labelloop.settings import ServiceSettings
from labelloop.stores import Blobs, KeyValue, NatsKeyValue
from labelloop.streams import Namespace

__all__ = [
    "COMMAND_WAIT_SECONDS",
    "OPERATOR_AREA",
    "PRODUCER_INBOX",
    "PRODUCER_USER",
    "BusClient",
    "Unreachable",
    "connect",
]

OPERATOR_AREA = "operator"
"""Where the bodies of operator commands too large to travel inline are stored. Data producers
may write no artefact: ``labelloop ingest`` keeps its messages small enough to travel inline."""

PRODUCER_USER = "producer"
"""The NATS user of data producers in production (``infra/nats/accounts.conf``)."""

PRODUCER_INBOX = "_INBOX_producer"
"""The inbox prefix of a connection as :data:`PRODUCER_USER`: the replies it gets (JetStream API
answers, publish acknowledgements) come here. The producer may subscribe to no other inbox:
under ``_INBOX.>`` it would receive every message the services pull, of every stream."""

log = logging.getLogger("labelloop.client")


@dataclass
class BusClient:
    nc: NatsClient
    js: JetStreamContext
    ns: Namespace
    _artifacts: Artifacts | None = field(default=None, init=False, repr=False)

    async def publish(self, event: Event) -> bool:
        """Publish idempotently (``Nats-Msg-Id`` = event id); ``False`` if dropped as duplicate.

        An event too large for one message travels by reference (``labelloop.payloads``)."""
        cls = type(event)
        body, extra = await wire_form(event, await self.blobs(), area=OPERATOR_AREA)
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

    async def command(
        self, command: Event, answers: tuple[type[Event], ...], *, timeout: float
    ) -> Event | None:
        """Publish an operator's command and wait for what became of it: the first of
        ``answers`` whose ``request_id`` is the command's id, or the ``DeadLetter`` the command
        became (a service refused it, with the reason); ``None`` when neither came in
        ``timeout`` seconds. Subscribed before publishing, so a fast answer is not missed."""
        from nats.js.api import ConsumerConfig, DeliverPolicy

        found: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        blobs = await self.blobs()

        def on(cls: type[Event]) -> Any:
            async def callback(msg: Any) -> None:
                try:
                    event = cls.model_validate_json(await resolve(msg.data, msg.headers, blobs))
                except (ValueError, PayloadMissing):
                    return
                if isinstance(event, DeadLetter):
                    try:
                        ours = json.loads(event.payload()).get("event_id") == command.event_id
                    except (ValueError, AttributeError):
                        ours = False
                else:
                    ours = getattr(event, "request_id", None) == command.event_id
                if ours and not found.done():
                    found.set_result(event)

            return callback

        subs = []
        watched: tuple[type[Event], ...] = (*answers, DeadLetter)
        try:
            for cls in watched:
                subs.append(
                    await self.js.subscribe(
                        self.ns.subject(cls, command.project),
                        stream=self.ns.stream_name(self.ns.stream_for(cls)),
                        ordered_consumer=True,
                        cb=on(cls),
                        config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW),
                    )
                )
            await self.publish(command)
            try:
                return await asyncio.wait_for(found, timeout)
            except TimeoutError:
                return None
        finally:
            for sub in subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

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

    async def blobs(self) -> Blobs:
        """Every artefact area, for reading; the operator's bodies of large commands go to its
        own area (its NATS user may write every area: repairs are an operator's job)."""
        if self._artifacts is None:
            self._artifacts = nats_artifacts(self.js, self.ns, home=None)
        return self._artifacts

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


COMMAND_WAIT_SECONDS = 5.0
"""How long an operator's command waits for a first connection before it says there is none."""


class Unreachable(ConnectionError):
    """No NATS server answered within the time a command gives it."""


@asynccontextmanager
async def connect(
    settings: ServiceSettings | None = None, *, give_up_after: float | None = None
) -> AsyncIterator[BusClient]:
    """Connect to NATS, make sure the streams and buckets exist, and yield a client.

    Once connected, the client reconnects as long as nats-py allows (a campaign rides out a
    server restart). ``give_up_after``: seconds to wait for the *first* connection before
    raising :class:`Unreachable` with the last error (an operator's command should say "no
    NATS at URL" and stop, not retry for two minutes). Connection errors are logged as one
    line at debug level, not as nats-py's traceback on stderr. A connection as the data
    producers' user takes their inbox prefix (:data:`PRODUCER_INBOX`)."""
    settings = settings or ServiceSettings()
    options = nats_connect_options(settings)
    if options.get("user") == PRODUCER_USER:
        options["inbox_prefix"] = PRODUCER_INBOX
    last_error: list[BaseException] = []  # the latest only: a long outage reports every 2 s
    refused = asyncio.Event()

    async def on_error(exc: BaseException) -> None:
        last_error[:] = [exc]
        log.debug("nats: %s: %s", type(exc).__name__, exc)
        if _is_refusal(exc):
            refused.set()  # wrong or missing credentials: retrying will not change that

    opening = asyncio.ensure_future(nats.connect(**options, connect_timeout=5, error_cb=on_error))
    refusal = asyncio.ensure_future(refused.wait())
    try:
        done, _ = await asyncio.wait(
            {opening, refusal}, timeout=give_up_after, return_when=asyncio.FIRST_COMPLETED
        )
        if opening not in done:
            opening.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await opening
            raise TimeoutError
        nc = opening.result()
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        cause = last_error[0] if last_error else exc
        if refused.is_set():
            raise Unreachable(
                f"the NATS server at {settings.nats_url} refused the credentials ({cause}):"
                " set LABELLOOP_NATS_TOKEN_FILE (`labelloop nats` writes .nats/env with it)"
                " or the user and password infra/nats/accounts.conf gives you"
            ) from None
        raise Unreachable(
            f"no NATS server answered at {settings.nats_url}"
            f" ({type(cause).__name__}: {cause or 'timed out'})"
        ) from None
    finally:
        refusal.cancel()
    try:
        js = nc.jetstream()
        ns = Namespace(settings.namespace)
        await provision(js, ns, replicas=settings.stream_replicas)
        yield BusClient(nc, js, ns)
    finally:
        await nc.drain()


def _is_refusal(exc: BaseException) -> bool:
    """The server's answer to a client it does not admit (nats-py raises it as a plain Error)."""
    text = str(exc).lower()
    return "authorization violation" in text or "authentication" in text
