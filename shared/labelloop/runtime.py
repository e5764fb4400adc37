"""One service runtime for all six services: broker, streams, delivery policy, dead letters, HTTP.

A service is a ``Service`` with typed handlers registered on it. The runtime owns everything a
handler should not think about:

* JetStream streams and buckets are provisioned at start (idempotently, by every replica);
* each handler is a **durable pull consumer** named after the service and the event, so replicas
  share the work and a restarted replica continues where the last one stopped;
* acknowledgement is explicit and follows one pure policy (``labelloop.delivery.decide``):
  success → ack; invalid payload or ``PoisonMessage`` → dead letter at once; any other exception
  → nak with exponential backoff, dead letter after ``max_deliver`` deliveries. A message whose
  deliveries ran out while no handler could report (a crash, a timeout) is moved by the
  max-deliveries advisory, so nothing is lost either way;
* long handlers send ``in_progress`` heartbeats so the server does not redeliver them meanwhile;
* publishing is idempotent: ``Nats-Msg-Id`` is the event id, so a replayed handler's output is
  dropped by the server inside the stream's duplicate window; an event too large for one message
  travels by reference (``labelloop.payloads``);
* ``/metrics`` (FastStream's series and labelloop's), ``/healthz``, ``/readyz``, ``/asyncapi``;
* JSON logs with one line per handled message; graceful shutdown on SIGTERM.

Where messages come from is a ``labelloop.transport.Transport``: NATS, or memory in unit tests.
"""

# runtime-api: v2

import asyncio
import contextlib
import json
import logging
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, get_args
from urllib.parse import unquote, urlsplit, urlunsplit

import nats
import nats.errors
import nats.js.errors
from faststream import AckPolicy, BaseMiddleware
from faststream.asgi import AsgiFastStream, AsgiResponse, get, make_ping_asgi
from faststream.message import StreamMessage
from faststream.nats import ConsumerConfig, JStream, NatsBroker, PullSub
from faststream.nats.annotations import NatsMessage
from faststream.nats.prometheus import NatsPrometheusMiddleware
from faststream.nats.security import NatsSecurity, NatsUserPassword
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_asgi_app

from labelloop.delivery import DeadLetterKind, PoisonMessage, Verdict, build_dead_letter, decide
from labelloop.events import DeadLetter, Event
from labelloop.logs import configure_logging
from labelloop.payloads import PAYLOAD_HEADER, resolve, wire_form
from labelloop.project import ProjectConfig, parse_project
from labelloop.settings import ServiceSettings
from labelloop.stores import Blobs, KeyValue, Stores
from labelloop.streams import Namespace, subject_matches
from labelloop.transport import MemoryTransport, NatsTransport, Transport

__all__ = ["PoisonMessage", "Service", "ServiceSettings", "Subscription", "nats_connect_options"]

E = TypeVar("E", bound=Event)
Handler = Callable[[E], Awaitable[None]]
Hook = Callable[[], Awaitable[object]]

log = logging.getLogger("labelloop.runtime")


class _SpuriousFetchTimeout(logging.Filter):
    """Drops FastStream's "raised an exception, retrying" for an empty pull fetch.

    FastStream 0.7.8 suppresses ``nats.errors.TimeoutError`` around ``fetch``, but nats-py 2.16
    raises a bare ``asyncio.TimeoutError`` when a fetch finds nothing; the supervisor restarts
    the loop and logs a traceback at ERROR. Nothing failed, so the record is dropped.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (
            isinstance(exc, TimeoutError)
            and not isinstance(exc, nats.errors.TimeoutError)
            and "raised an exception, retrying" in record.getMessage()
        )


_BUS_TROUBLE: tuple[type[BaseException], ...] = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.errors.FlushTimeoutError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.ServiceUnavailableError,
)
"""Failures of the bus, not of the message: retried in place (``bus_retry_seconds``)."""


class _HandlerFailed(Exception):
    """Wraps an exception from handler code, so the runtime can tell it from a payload error."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(repr(original))
        self.original = original


@dataclass(frozen=True, slots=True)
class Subscription:
    event: type[Event]
    handler: Callable[[Any], Awaitable[None]]
    durable: str
    stream: str
    subject: str
    max_deliver: int
    ack_wait: float
    batch_size: int


class RuntimeMetrics:
    """Series every service exposes, whatever it does."""

    def __init__(self, registry: CollectorRegistry, service: str) -> None:
        self.messages = Counter(
            "labelloop_runtime_messages_total",
            "Messages handled, by event and outcome (ok, retried, dead_lettered)",
            ["event", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "labelloop_runtime_handler_duration_seconds",
            "Time spent in a handler, by event",
            ["event"],
            registry=registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.dead_letters = Counter(
            "labelloop_runtime_dead_letters_total",
            "Messages moved to the dead-letter stream, by event and kind "
            "(invalid, failed, max_deliveries)",
            ["event", "kind"],
            registry=registry,
        )
        self.redeliveries = Counter(
            "labelloop_runtime_redeliveries_total",
            "Messages received again after an earlier delivery (at-least-once in action)",
            ["event"],
            registry=registry,
        )
        self.bus_retries = Counter(
            "labelloop_runtime_bus_retries_total",
            "Handler runs repeated in place after a failure of the bus itself (a NATS timeout,"
            " a connection being re-established), which spends none of the message's deliveries",
            ["event"],
            registry=registry,
        )
        self.published = Counter(
            "labelloop_runtime_published_total",
            "Events published, by event and whether the server dropped them as duplicates",
            ["event", "duplicate"],
            registry=registry,
        )
        self.ready = Gauge(
            "labelloop_runtime_ready",
            "1 when the service is connected, provisioned and consuming",
            registry=registry,
        )
        self.info = Gauge(
            "labelloop_runtime_info", "Service identity", ["service"], registry=registry
        )
        self.info.labels(service=service).set(1)
        self.published.labels(event=DeadLetter.__name__, duplicate="false")

    def declare(self, event: type[Event]) -> None:
        """Series of a consumed event at 0 from the start: Prometheus's ``increase()`` sees the
        first dead letter or retry only against an earlier sample of the same series."""
        name = event.__name__
        for outcome in ("ok", "retried", "dead_lettered"):
            self.messages.labels(event=name, outcome=outcome)
        for kind in get_args(DeadLetterKind):
            self.dead_letters.labels(event=name, kind=kind)
        self.redeliveries.labels(event=name)
        self.bus_retries.labels(event=name)

    def declare_published(self, events: Iterable[type[Event]]) -> None:
        """Series of the events a service publishes at 0 (duplicates and fresh ones)."""
        for event in events:
            for duplicate in ("false", "true"):
                self.published.labels(event=event.__name__, duplicate=duplicate)


def nats_connect_options(settings: ServiceSettings) -> dict[str, Any]:
    """Connection options (auth, TLS) for nats-py / FastStream from settings."""
    servers, url_user, url_password = _split_userinfo(settings.nats_url)
    options: dict[str, Any] = {"servers": servers}
    user = settings.nats_user or url_user
    password = settings.nats_password_value() if settings.nats_user else url_password
    if user:
        options["user"] = user
        if password is not None:
            options["password"] = password
    token = settings.nats_token_value()
    if token is not None:
        options["token"] = token
    if settings.nats_creds_file is not None:
        options["user_credentials"] = str(settings.nats_creds_file)
    if settings.nats_nkey_seed_file is not None:
        options["nkeys_seed"] = str(settings.nats_nkey_seed_file)
    if settings.nats_tls_ca_file is not None or settings.nats_tls_cert_file is not None:
        context = ssl.create_default_context(
            cafile=str(settings.nats_tls_ca_file) if settings.nats_tls_ca_file else None
        )
        if settings.nats_tls_cert_file and settings.nats_tls_key_file:
            context.load_cert_chain(
                str(settings.nats_tls_cert_file), str(settings.nats_tls_key_file)
            )
        options["tls"] = context
    return options


def broker_options(settings: ServiceSettings) -> dict[str, Any]:
    """The same connection options in FastStream's terms: user, password and TLS as ``security``."""
    options = nats_connect_options(settings)
    user, password = options.pop("user", None), options.pop("password", None)
    tls = options.pop("tls", None)
    if user is not None:
        options["security"] = NatsUserPassword(user, password or "", ssl_context=tls)
    elif tls is not None:
        options["security"] = NatsSecurity(ssl_context=tls)
    return options


def quiet_fetch_timeouts(subscription: Any) -> None:
    """Make a pull subscription's ``fetch`` that times out with nothing return no messages.

    FastStream's consume loop treats nats-py's ``nats.errors.TimeoutError`` as "no messages
    yet", but nats-py 2.16's ``fetch`` also raises a bare ``asyncio.TimeoutError`` (when the
    deadline runs out between its no-wait probe and its lingering request: often, on a busy
    machine). That one ends the loop; FastStream's supervisor starts another and keeps the
    ended task in its list for good, with its traceback and frames: an idle subscription
    leaked a task every few seconds, and a service's memory grew all campaign long."""
    fetch = getattr(subscription, "fetch", None)
    if fetch is None or getattr(fetch, "quiet_timeouts", False):
        return

    async def quiet(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fetch(*args, **kwargs)
        except TimeoutError:  # nats.errors.TimeoutError included: no messages this time
            return []

    quiet.quiet_timeouts = True  # type: ignore[attr-defined]
    subscription.fetch = quiet


class Service:
    """A labelloop service: typed handlers on a NATS JetStream bus, plus its HTTP surface."""

    def __init__(
        self,
        name: str,
        settings: ServiceSettings,
        *,
        area: str | None = None,
        transport: Transport | None = None,
        registry: CollectorRegistry | None = None,
        stores: Any = None,
    ) -> None:
        self.name = name
        self.area = area
        """The artefact area this service writes (``ServiceSpec.artifacts``)."""
        self.settings = settings
        self.ns = Namespace(settings.namespace)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = RuntimeMetrics(self.registry, name)
        self.log = logging.getLogger(f"labelloop.{name}")
        broker_log = logging.getLogger(f"labelloop.{name}.faststream")
        broker_log.addFilter(_SpuriousFetchTimeout())
        if transport is None and stores is not None:
            transport = MemoryTransport(stores=stores)
        self.transport: Transport = transport or NatsTransport(
            max_handler_seconds=settings.max_handler_seconds
        )
        self._stores: Stores | None = None
        self._configs: dict[str, tuple[bytes, ProjectConfig]] = {}
        self._subscriptions: dict[str, Subscription] = {}
        self._startup_hooks: list[Hook] = []
        self._shutdown_hooks: list[Hook] = []
        self._periodic: list[tuple[float, Hook]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._routes: list[tuple[str, Any]] = []
        self._ready = False
        self.stopping = False
        self.broker = NatsBroker(
            **broker_options(settings),
            middlewares=[
                NatsPrometheusMiddleware(registry=self.registry, app_name=f"labelloop-{name}"),
                self._middleware_factory,
            ],
            graceful_timeout=settings.graceful_timeout_seconds,
            logger=broker_log,
            log_level=logging.DEBUG,
            description=f"labelloop {name}",
        )

    # ------------------------------------------------------------------ registration

    def handler(
        self,
        event: type[E],
        *,
        batch_size: int = 16,
        max_deliver: int | None = None,
        ack_wait: float | None = None,
    ) -> Callable[[Handler[E]], Handler[E]]:
        """Register ``fn(event)`` as this service's durable consumer of ``event``."""

        def register(fn: Handler[E]) -> Handler[E]:
            spec = self.ns.stream_for(event)
            sub = Subscription(
                event=event,
                handler=fn,
                durable=self.ns.durable(self.name, event),
                stream=self.ns.stream_name(spec),
                subject=self.ns.subject(event),
                max_deliver=max_deliver or self.settings.max_deliver,
                ack_wait=ack_wait or self.settings.ack_wait_seconds,
                batch_size=batch_size,
            )
            if sub.durable in self._subscriptions:
                raise ValueError(f"{self.name} already handles {event.__name__}")
            self._subscriptions[sub.durable] = sub
            self.metrics.declare(event)
            subscriber = self.broker.subscriber(
                sub.subject,
                stream=JStream(name=sub.stream, declare=False),
                durable=sub.durable,
                pull_sub=PullSub(batch_size=batch_size, timeout=1.0),
                ack_policy=AckPolicy.MANUAL,
                config=ConsumerConfig(max_deliver=sub.max_deliver, ack_wait=sub.ack_wait),
                title=f"{self.name}:{event.__name__}",
                description=(fn.__doc__ or "").strip() or None,
                decoder=_decoder_for(event),
            )
            subscriber(_consumer_for(event, fn))
            return fn

        return register

    def subscriptions(self) -> list[Subscription]:
        return list(self._subscriptions.values())

    def on_startup(self, hook: Hook) -> Hook:
        """Run ``hook()`` once connected and provisioned, before the first message is handled."""
        self._startup_hooks.append(hook)
        return hook

    def on_shutdown(self, hook: Hook) -> Hook:
        """Run ``hook()`` when stopping, after consuming stopped (close clients here)."""
        self._shutdown_hooks.append(hook)
        return hook

    def every(self, seconds: float, hook: Hook) -> Hook:
        """Run ``hook()`` every ``seconds`` while running; a failure is logged, not fatal."""
        self._periodic.append((seconds, hook))
        return hook

    async def run_periodic(self) -> None:
        """Run every periodic hook once, now (tests; what ``every`` would do next)."""
        for _, hook in self._periodic:
            await hook()

    def mount(self, path: str, app: Any) -> None:
        """Serve an extra ASGI app (e.g. a webhook receiver) next to /metrics and /healthz."""
        self._routes.append((path, app))

    # ------------------------------------------------------------------ using

    @property
    def stores(self) -> Stores:
        if self._stores is None:
            raise RuntimeError(f"{self.name} is not started: stores are not available yet")
        return self._stores

    @property
    def state(self) -> KeyValue:
        return self.stores.state

    @property
    def artifacts(self) -> Blobs:
        return self.stores.artifacts

    @property
    def ready(self) -> bool:
        return self._ready

    async def project(self, name: str) -> ProjectConfig | None:
        """The current configuration of a project, or ``None`` if it was never applied."""
        entry = await self.stores.projects.get(name)
        if entry is None:
            return None
        cached = self._configs.get(name)
        if cached is not None and cached[0] == entry.value:
            return cached[1]  # frozen: the same stored bytes give the same configuration
        config = parse_project(json.loads(entry.value), source=f"project {name!r}")
        self._configs[name] = (entry.value, config)
        return config

    async def require_project(self, name: str) -> ProjectConfig:
        """The project's configuration; a message about an unknown project is a dead letter.

        The one policy of every service: an event naming a project that was never applied can
        never be handled (no configuration to read), so it goes to the dead letters with the
        reason, and nothing is created for it."""
        config = await self.project(name)
        if config is None:
            raise PoisonMessage(f"unknown project {name!r}: apply its configuration first")
        return config

    async def publish(self, event: Event) -> bool:
        """Publish an event idempotently. Returns ``False`` when the server dropped a duplicate.

        An event too large for one message travels by reference (``labelloop.payloads``)."""
        cls = type(event)
        body, extra = await wire_form(
            event,
            self._stores.artifacts if self._stores is not None else None,
            area=self.area,
            limit=self.settings.max_inline_payload_bytes,
        )
        headers = {"Nats-Msg-Id": event.event_id, "content-type": "application/json", **extra}
        stream = self.ns.stream_name(self.ns.stream_for(cls))
        fresh = await self.transport.publish(event, self.ns.subject(event), stream, body, headers)
        self.metrics.published.labels(event=cls.__name__, duplicate=str(not fresh).lower()).inc()
        return fresh

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect, provision, start consuming and run startup hooks (no HTTP)."""
        await self.open()
        await self.broker.start()
        for subscriber in self.broker.subscribers:
            quiet_fetch_timeouts(getattr(subscriber, "subscription", None))
        await self.begin()

    async def stop(self) -> None:
        """Stop consuming; in-flight handlers finish (up to the graceful timeout)."""
        await self.end()
        limit = self.settings.graceful_timeout_seconds + 10
        try:
            await asyncio.wait_for(self.broker.stop(), timeout=limit)
        except TimeoutError:
            self.log.warning("the broker did not stop within %.0f s: closing the connection", limit)
            with contextlib.suppress(Exception):
                await self.broker.connection.close()
        await self.close()

    async def open(self) -> None:
        """Before consuming: connect and provision (per transport), open stores, run hooks."""
        self.stopping = False
        self._stores = await self.transport.open(self)
        for hook in self._startup_hooks:
            await hook()

    async def begin(self) -> None:
        """Consuming has started: background tasks run, the service is ready."""
        for seconds, hook in self._periodic:
            self._tasks.append(asyncio.create_task(self._every(seconds, hook)))
        for job in self.transport.background(self):
            self._tasks.append(asyncio.create_task(job))
        self._ready = True
        self.metrics.ready.set(1)
        self.log.info("ready", extra={"handlers": sorted(self._subscriptions)})

    async def end(self) -> None:
        """Stop background work before consuming stops."""
        self._ready = False
        self.stopping = True
        self.metrics.ready.set(0)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # bounded: a task that ignores its cancellation must not keep the service alive
            _, stuck = await asyncio.wait(self._tasks, timeout=5.0)
            for task in stuck:
                self.log.warning("background task %s did not stop", task.get_name())
        self._tasks.clear()
        await self.transport.close()
        self.log.info("stopping")

    async def close(self) -> None:
        """After consuming stopped: shutdown hooks (close clients here)."""
        for hook in self._shutdown_hooks:
            try:
                await asyncio.wait_for(hook(), timeout=self.settings.graceful_timeout_seconds)
            except Exception:
                self.log.exception("shutdown hook %s failed", getattr(hook, "__name__", hook))

    def asgi(self) -> AsgiFastStream:
        """The ASGI application: the broker plus /metrics, /healthz, /readyz and /asyncapi."""
        return AsgiFastStream(
            self.broker,
            asgi_routes=[
                ("/metrics", make_asgi_app(self.registry)),
                ("/healthz", make_ping_asgi(self.broker, timeout=5.0)),
                ("/readyz", self._readyz()),
                *self._routes,
            ],
            on_startup=[self.open],
            after_startup=[self.begin],
            on_shutdown=[self.end],
            after_shutdown=[self.close],
            asyncapi_path="/asyncapi",
        )

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT (``labelloop-service SERVICE``, as the containers run)."""
        import uvicorn

        configure_logging(self.name, self.settings.log_level, self.settings.log_format)
        self.log.info(
            "starting",
            extra={"nats": _redact(self.settings.nats_url), "namespace": self.ns.prefix},
        )
        config = uvicorn.Config(
            self.asgi(),
            host=self.settings.http_host,
            port=self.settings.http_port,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=int(self.settings.graceful_timeout_seconds) + 1,
        )
        uvicorn.Server(config).run()

    def _readyz(self) -> Any:
        @get(include_in_schema=False)
        async def readyz(scope: Any) -> AsgiResponse:
            if self._ready and await self.broker.ping(1.0):
                return AsgiResponse(
                    b'{"status":"ready"}', 200, {"content-type": "application/json"}
                )
            return AsgiResponse(
                b'{"status":"not ready"}', 503, {"content-type": "application/json"}
            )

        return readyz

    async def _every(self, seconds: float, hook: Hook) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await hook()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("periodic task %s failed", getattr(hook, "__name__", hook))

    # ------------------------------------------------------------------ delivery

    def _middleware_factory(self, msg: Any, /, *, context: Any) -> BaseMiddleware:
        return _DeliveryMiddleware(msg, context=context, service=self)

    def _subscription(self, msg: StreamMessage[Any], consumer: str | None) -> Subscription | None:
        if consumer is not None:
            return self._subscriptions.get(consumer)
        relative = self.ns.relative(getattr(msg.raw_message, "subject", "") or "")
        return next(
            (
                s
                for s in self._subscriptions.values()
                if subject_matches(self.ns.relative(s.subject), relative)
            ),
            None,
        )

    async def handle_outcome(
        self, msg: StreamMessage[Any], call_next: Callable[[Any], Awaitable[Any]]
    ) -> Any:
        delivery = self.transport.delivery(msg)
        sub = self._subscription(msg, delivery.consumer)
        if sub is None:  # not one of ours (e.g. a plain request): no policy to apply
            return await call_next(msg)
        event_name = sub.event.__name__
        if delivery.deliveries > 1:
            self.metrics.redeliveries.labels(event=event_name).inc()
        heartbeat = self.transport.heartbeat(msg, sub.ack_wait)
        started = time.perf_counter()
        try:
            error = await self._run(msg, call_next, event_name)
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
            msg.clear_cache()  # the validated event: nothing needs it once handled
        verdict = decide(
            error,
            deliveries=delivery.deliveries,
            max_deliver=sub.max_deliver,
            backoff_seconds=self.settings.retry_backoff_seconds,
            redelivers=self.transport.redelivers,
        )
        outcome = {"ack": "ok", "retry": "retried", "dead_letter": "dead_lettered"}[verdict.action]
        if verdict.action == "dead_letter":
            if (
                error is not None
                and verdict.kind == "failed"
                and not isinstance(error, PoisonMessage)
            ):
                self.log.error(
                    "handler failed on its last delivery",
                    exc_info=error,
                    extra={"event": event_name, "deliveries": delivery.deliveries},
                )
            try:
                await self._dead_letter(msg, sub, verdict, delivery.deliveries, delivery)
            except Exception as exc:  # the bus is in trouble: keep the message, try later
                verdict = Verdict(
                    "retry",
                    f"could not publish its dead letter: {exc!r}",
                    delay=self.settings.retry_backoff_seconds,
                )
                outcome = "retried"
                self.log.warning(
                    "dead letter not published, the message comes back: %r",
                    exc,
                    extra={"event": event_name, "deliveries": delivery.deliveries},
                )
        elif verdict.action == "retry":
            self.log.warning(
                "handler failed, will retry: %s",
                verdict.reason,
                extra={"event": event_name, "deliveries": delivery.deliveries},
            )
        await self.transport.settle(msg, verdict)
        elapsed = time.perf_counter() - started
        self.metrics.duration.labels(event=event_name).observe(elapsed)
        self.metrics.messages.labels(event=event_name, outcome=outcome).inc()
        self.log.info(
            "handled",
            extra={
                "event": event_name,
                "event_id": _event_id(msg.body),
                "subject": getattr(msg.raw_message, "subject", sub.subject),
                "outcome": outcome,
                "deliveries": delivery.deliveries,
                "duration_ms": round(elapsed * 1000, 2),
            },
        )
        return None

    async def _run(
        self,
        msg: StreamMessage[Any],
        call_next: Callable[[Any], Awaitable[Any]],
        event_name: str,
    ) -> BaseException | None:
        """Run the handler; returns what it failed with, if anything.

        A failure of the bus itself (``_BUS_TROUBLE``) says nothing about the message: it is
        retried here, the message held by the heartbeat, for up to ``bus_retry_seconds``, so a
        lost node or a leader election under load does not spend the deliveries that lead to
        the dead letters. Handlers are idempotent (at-least-once), so running one again is safe.
        """
        deadline = time.monotonic() + self.settings.bus_retry_seconds
        pause = self.settings.retry_backoff_seconds
        resolved = False
        while True:
            try:
                if not resolved:
                    await self._resolve_payload(msg)
                    resolved = True
                await call_next(msg)
                return None
            except _HandlerFailed as failed:
                error = failed.original
            except Exception as exc:  # validation of the payload, a body by reference gone
                error = exc
            if not isinstance(error, _BUS_TROUBLE) or time.monotonic() + pause > deadline:
                return error
            self.metrics.bus_retries.labels(event=event_name).inc()
            self.log.warning(
                "bus trouble, the handler runs again in %.1f s: %r",
                pause,
                error,
                extra={"event": event_name},
            )
            await asyncio.sleep(pause)
            pause = min(max(pause * 2, 0.1), 5.0)

    async def _resolve_payload(self, msg: StreamMessage[Any]) -> None:
        """Swap an envelope for the event body it names (before the body is validated)."""
        headers = msg.headers or {}
        if PAYLOAD_HEADER not in headers:
            return
        blobs = self._stores.artifacts if self._stores is not None else None
        msg.body = await resolve(msg.body, headers, blobs)
        msg.clear_cache()

    async def _dead_letter(
        self,
        msg: StreamMessage[Any],
        sub: Subscription,
        verdict: Verdict,
        deliveries: int,
        delivery: Any,
    ) -> None:
        assert verdict.kind is not None
        letter = build_dead_letter(
            msg.body,
            subject=getattr(msg.raw_message, "subject", None) or sub.subject,
            stream=delivery.stream if delivery.sequence is not None else None,
            sequence=delivery.sequence,
            consumer=sub.durable,
            kind=verdict.kind,
            reason=verdict.reason,
            deliveries=deliveries,
            headers=dict(msg.headers or {}),
        )
        await self.publish(letter)
        self.metrics.dead_letters.labels(event=sub.event.__name__, kind=verdict.kind).inc()
        self.log.warning(
            "dead-lettered",
            extra={
                "event": sub.event.__name__,
                "kind": verdict.kind,
                "reason": verdict.reason[:500],
            },
        )


class _DeliveryMiddleware(BaseMiddleware):
    def __init__(self, msg: Any, /, *, context: Any, service: Service) -> None:
        super().__init__(msg, context=context)
        self._service = service

    async def consume_scope(
        self, call_next: Callable[[Any], Awaitable[Any]], msg: StreamMessage[Any]
    ) -> Any:
        return await self._service.handle_outcome(msg, call_next)


def _decoder_for(event: type[E]) -> Callable[[StreamMessage[Any]], Awaitable[E]]:
    """The body validated from its bytes in one pass (pydantic's JSON parser), not parsed into
    Python objects first and validated then (FastStream's default): a fifth less CPU for a
    500-item ``ItemsSubmitted``. The handler's annotation still checks it (an instance of the
    event passes as it is) and documents it in AsyncAPI."""

    async def decode(msg: StreamMessage[Any]) -> E:
        return event.model_validate_json(msg.body)

    return decode


def _consumer_for(event: type[E], fn: Handler[E]) -> Callable[..., Awaitable[None]]:
    """The function FastStream calls: typed body (for validation and AsyncAPI), errors wrapped."""

    async def consume(body: Any, msg: NatsMessage) -> None:
        try:
            await fn(body)
        except Exception as exc:
            raise _HandlerFailed(exc) from exc

    # FastStream validates the body against this annotation and documents it in AsyncAPI.
    consume.__annotations__ = {"body": event, "msg": NatsMessage, "return": None}
    consume.__name__ = fn.__name__
    consume.__doc__ = fn.__doc__
    return consume


_EVENT_ID = re.compile(rb'^\{"event_id":"([^"\\]{1,256})"')


def _event_id(body: bytes) -> str | None:
    """The ``event_id`` of a body for the log line: read from its first bytes, where every
    event labelloop publishes has it (the first field), else from the parsed body."""
    if (match := _EVENT_ID.match(body)) is not None:
        return match.group(1).decode("utf-8", "replace")
    try:
        value = json.loads(body).get("event_id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _split_userinfo(url: str) -> tuple[list[str], str | None, str | None]:
    """Servers without ``user:password@``, and the user and password they named.

    Credentials go into the connection options rather than the URLs: nats-py adds the servers a
    cluster node advertises to its pool without any URL's userinfo, so a client whose password
    was in a URL could not authenticate to them after a failover (seen on a 3-node cluster with
    its node killed: services stayed "reconnecting" for minutes)."""
    servers, users = [], set()
    for raw in url.split(","):
        parsed = urlsplit(raw.strip())
        if parsed.username is not None:
            users.add((unquote(parsed.username), unquote(parsed.password or "") or None))
            netloc = parsed.netloc.rsplit("@", 1)[1]
            servers.append(urlunsplit(parsed._replace(netloc=netloc)))
        else:
            servers.append(raw.strip())
    if len(users) > 1:
        raise ValueError("the NATS URLs name different users: give one user for all servers")
    user, password = users.pop() if users else (None, None)
    return servers, user, password


def _redact(url: str) -> str:
    """A NATS URL without its user:password part, for logs."""
    out = []
    for server in url.split(","):
        scheme, sep, rest = server.partition("://")
        if sep and "@" in rest:
            rest = "***@" + rest.split("@", 1)[1]
        out.append(f"{scheme}{sep}{rest}")
    return ",".join(out)
