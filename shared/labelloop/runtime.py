"""One service runtime for all six services: broker, streams, delivery policy, dead letters, HTTP.

A service is a ``Service`` with typed handlers registered on it. The runtime owns everything a
handler should not think about:

* JetStream streams and buckets are provisioned at start (idempotently, by every replica);
* each handler is a **durable pull consumer** named after the service and the event, so replicas
  share the work and a restarted replica continues where the last one stopped;
* acknowledgement is explicit (FastStream's default would drop a message whose handler raised):
  success → ack; invalid payload or ``PoisonMessage`` → dead letter at once; any other exception
  → nak with exponential backoff, dead letter after ``max_deliver`` deliveries. A message whose
  deliveries ran out while no handler could report (a crash, a timeout) is moved by the
  max-deliveries advisory, so nothing is lost either way;
* long handlers send ``in_progress`` heartbeats so the server does not redeliver them meanwhile;
* publishing is idempotent: ``Nats-Msg-Id`` is the event id, so a replayed handler's output is
  dropped by the server inside the stream's duplicate window;
* ``/metrics`` (FastStream's series and labelloop's), ``/healthz``, ``/readyz``, ``/asyncapi``;
* JSON logs with one line per handled message; graceful shutdown on SIGTERM.
"""

# runtime-api: v1

import asyncio
import base64
import contextlib
import json
import logging
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import nats
from faststream import AckPolicy, BaseMiddleware
from faststream.asgi import AsgiFastStream, AsgiResponse, get, make_ping_asgi
from faststream.message import AckStatus, StreamMessage
from faststream.nats import ConsumerConfig, JStream, NatsBroker, PullSub
from faststream.nats.annotations import NatsMessage
from faststream.nats.prometheus import NatsPrometheusMiddleware
from faststream.nats.security import NatsSecurity, NatsUserPassword
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_asgi_app
from pydantic import ValidationError

from labelloop.events import DeadLetter, Event, deterministic_id
from labelloop.logs import configure_logging
from labelloop.payloads import PAYLOAD_HEADER, PayloadMissing, resolve, wire_form
from labelloop.project import ProjectConfig, parse_project
from labelloop.settings import ServiceSettings
from labelloop.stores import (
    Blobs,
    KeyValue,
    MemoryStores,
    NatsBlobs,
    NatsKeyValue,
    NatsStores,
    Stores,
)
from labelloop.streams import (
    KV_BUCKETS,
    OBJECT_BUCKETS,
    Namespace,
    StreamSpec,
    split_subject,
    subject_matches,
)

__all__ = ["PoisonMessage", "Service", "ServiceSettings", "nats_connect_options"]

E = TypeVar("E", bound=Event)
Handler = Callable[[E], Awaitable[None]]
Hook = Callable[[], Awaitable[None]]

log = logging.getLogger("labelloop.runtime")


class PoisonMessage(Exception):
    """Raised by a handler for a message that can never succeed: dead-lettered without retry."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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


class _HandlerFailed(Exception):
    """Wraps an exception from handler code, so the runtime can tell it from a payload error."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(repr(original))
        self.original = original


@dataclass(frozen=True, slots=True)
class _Subscription:
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


def nats_connect_options(settings: ServiceSettings) -> dict[str, Any]:
    """Connection options (auth, TLS) for nats-py / FastStream from settings."""
    options: dict[str, Any] = {"servers": [s.strip() for s in settings.nats_url.split(",")]}
    password = settings.nats_password_value()
    if settings.nats_user:
        options["user"] = settings.nats_user
        if password is not None:
            options["password"] = password
    if settings.nats_token is not None:
        options["token"] = settings.nats_token.get_secret_value()
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


class Service:
    """A labelloop service: typed handlers on a NATS JetStream bus, plus its HTTP surface."""

    def __init__(
        self,
        name: str,
        settings: ServiceSettings,
        *,
        stores: MemoryStores | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.ns = Namespace(settings.namespace)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = RuntimeMetrics(self.registry, name)
        self.log = logging.getLogger(f"labelloop.{name}")
        broker_log = logging.getLogger(f"labelloop.{name}.faststream")
        broker_log.addFilter(_SpuriousFetchTimeout())
        self._stores: Stores | MemoryStores | NatsStores | None = stores
        self._memory = stores is not None
        self._subscriptions: dict[str, _Subscription] = {}
        self._startup_hooks: list[Hook] = []
        self._shutdown_hooks: list[Hook] = []
        self._periodic: list[tuple[float, Hook]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._routes: list[tuple[str, Any]] = []
        self._ready = False
        self._stopping = False
        self.sent: list[Event] = []
        """In memory (tests): every event published, duplicates by event id dropped as NATS does."""
        self._sent_ids: set[str] = set()
        self._advisory_sub: Any = None
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
            sub = _Subscription(
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
            subscriber = self.broker.subscriber(
                sub.subject,
                stream=JStream(name=sub.stream, declare=False),
                durable=sub.durable,
                pull_sub=PullSub(batch_size=batch_size, timeout=1.0),
                ack_policy=AckPolicy.MANUAL,
                config=ConsumerConfig(max_deliver=sub.max_deliver, ack_wait=sub.ack_wait),
                title=f"{self.name}:{event.__name__}",
                description=(fn.__doc__ or "").strip() or None,
            )
            subscriber(_consumer_for(event, fn))
            return fn

        return register

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

    def mount(self, path: str, app: Any) -> None:
        """Serve an extra ASGI app (e.g. a webhook receiver) next to /metrics and /healthz."""
        self._routes.append((path, app))

    # ------------------------------------------------------------------ using

    @property
    def stores(self) -> Stores | MemoryStores | NatsStores:
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
        return parse_project(json.loads(entry.value), source=f"project {name!r}")

    def use_memory(self) -> MemoryStores:
        """Switch to in-memory stores (for ``labelloop.testing.in_memory``)."""
        stores = self._stores if isinstance(self._stores, MemoryStores) else MemoryStores()
        self._stores = stores
        self._memory = True
        return stores

    async def require_project(self, name: str) -> ProjectConfig:
        """The project's configuration; a message about an unknown project is a dead letter."""
        config = await self.project(name)
        if config is None:
            raise PoisonMessage(f"unknown project {name!r}: apply its configuration first")
        return config

    async def publish(self, event: Event) -> bool:
        """Publish an event idempotently. Returns ``False`` when the server dropped a duplicate.

        An event too large for one message travels by reference (``labelloop.payloads``)."""
        cls = type(event)
        if self._memory:
            if event.event_id in self._sent_ids:
                self.metrics.published.labels(event=cls.__name__, duplicate="true").inc()
                return False
            self._sent_ids.add(event.event_id)
            self.sent.append(event)
        stream = self.ns.stream_name(self.ns.stream_for(cls))
        body, extra = await wire_form(
            event,
            self._stores.artifacts if self._stores is not None else None,
            limit=self.settings.max_inline_payload_bytes,
        )
        ack = await self.broker.publish(
            body,
            self.ns.subject(event),
            headers={
                "Nats-Msg-Id": event.event_id,
                "content-type": "application/json",
                **extra,
            },
            stream=None if self._memory else stream,
        )
        duplicate = bool(getattr(ack, "duplicate", False))
        self.metrics.published.labels(event=cls.__name__, duplicate=str(duplicate).lower()).inc()
        return not duplicate

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect, provision, start consuming and run startup hooks (no HTTP)."""
        await self._before_broker()
        await self.broker.start()
        await self._after_broker()

    async def stop(self) -> None:
        """Stop consuming; in-flight handlers finish (up to the graceful timeout)."""
        await self._before_stop()
        limit = self.settings.graceful_timeout_seconds + 10
        try:
            await asyncio.wait_for(self.broker.stop(), timeout=limit)
        except TimeoutError:
            self.log.warning("the broker did not stop within %.0f s: closing the connection", limit)
            with contextlib.suppress(Exception):
                await self.broker.connection.close()
        await self._after_stop()

    async def _after_stop(self) -> None:
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
            on_startup=[self._before_broker],
            after_startup=[self._after_broker],
            on_shutdown=[self._before_stop],
            after_shutdown=[self._after_stop],
            asyncapi_path="/asyncapi",
        )

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT: what ``labelloop run SERVICE`` and the containers call."""
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

    async def _before_broker(self) -> None:
        self._stopping = False
        if self._memory:
            return
        await self.broker.connect()
        js = self.broker.connection.jetstream()
        await provision(js, self.ns, replicas=self.settings.stream_replicas)
        await self._provision_consumers(js)
        self._stores = await self._open_stores()
        await self.run_startup_hooks()

    async def run_startup_hooks(self) -> None:
        for hook in self._startup_hooks:
            await hook()

    async def _after_broker(self) -> None:
        for seconds, hook in self._periodic:
            self._tasks.append(asyncio.create_task(self._every(seconds, hook)))
        if not self._memory:
            self._tasks.append(asyncio.create_task(self._move_exhausted()))
        self._ready = True
        self.metrics.ready.set(1)
        self.log.info("ready", extra={"handlers": sorted(self._subscriptions)})

    async def _before_stop(self) -> None:
        self._ready = False
        self._stopping = True
        self.metrics.ready.set(0)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # bounded: a task that ignores its cancellation must not keep the service alive
            _, stuck = await asyncio.wait(self._tasks, timeout=5.0)
            for task in stuck:
                self.log.warning("background task %s did not stop", task.get_name())
        self._tasks.clear()
        if self._advisory_sub is not None:
            # a pull subscription left to the connection's drain would wait for its queue forever
            with contextlib.suppress(Exception):
                await self._advisory_sub.unsubscribe()
            self._advisory_sub = None
        self.log.info("stopping")

    async def _provision_consumers(self, js: JetStreamContext) -> None:
        # FastStream does not change an existing durable's config; this does (STACK_NOTES).
        for sub in self._subscriptions.values():
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

    async def _open_stores(self) -> NatsStores:
        state = await self.broker.key_value(self.ns.kv_bucket("state"), declare=False)
        projects = await self.broker.key_value(self.ns.kv_bucket("projects"), declare=False)
        artifacts = await self.broker.object_storage(
            self.ns.object_bucket("artifacts"), declare=False
        )
        return NatsStores(NatsKeyValue(state), NatsKeyValue(projects), NatsBlobs(artifacts))

    async def _every(self, seconds: float, hook: Hook) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await hook()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("periodic task %s failed", getattr(hook, "__name__", hook))

    # ------------------------------------------------------------------ delivery policy

    def _middleware_factory(self, msg: Any, /, *, context: Any) -> BaseMiddleware:
        return _DeliveryMiddleware(msg, context=context, service=self)

    async def handle_outcome(
        self, msg: StreamMessage[Any], call_next: Callable[[Any], Awaitable[Any]]
    ) -> Any:
        meta = getattr(msg.raw_message, "metadata", None) if not self._memory else None
        consumer = getattr(meta, "consumer", None)
        sub = self._subscriptions.get(consumer) if consumer else None
        if sub is None and self._memory:
            sub = self._subscription_for_subject(getattr(msg.raw_message, "subject", ""))
        if sub is None:  # not one of ours (e.g. a plain request): no policy to apply
            return await call_next(msg)
        deliveries = int(getattr(meta, "num_delivered", 1) or 1)
        event_name = sub.event.__name__
        if deliveries > 1:
            self.metrics.redeliveries.labels(event=event_name).inc()
        heartbeat = (
            None
            if self._memory
            else asyncio.create_task(
                _heartbeat(msg, sub.ack_wait, self.settings.max_handler_seconds)
            )
        )
        started = time.perf_counter()
        outcome = "ok"
        try:
            await self._resolve_payload(msg)
            await call_next(msg)
        except PayloadMissing as exc:
            outcome = "dead_lettered"
            await self._dead_letter(msg, sub, "invalid", str(exc), deliveries)
        except ValidationError as exc:
            outcome = "dead_lettered"
            await self._dead_letter(msg, sub, "invalid", _validation_reason(exc), deliveries)
        except _HandlerFailed as failed:
            err = failed.original
            if isinstance(err, PoisonMessage):
                outcome = "dead_lettered"
                await self._dead_letter(msg, sub, "failed", err.reason, deliveries)
            elif deliveries >= sub.max_deliver or self._memory:
                outcome = "dead_lettered"
                self.log.error(
                    "handler failed on its last delivery",
                    exc_info=err,
                    extra={"event": event_name, "deliveries": deliveries},
                )
                await self._dead_letter(msg, sub, "failed", _reason(err), deliveries)
            else:
                outcome = "retried"
                self.log.warning(
                    "handler failed, will retry: %s",
                    _reason(err),
                    extra={"event": event_name, "deliveries": deliveries},
                )
                delay = self.settings.retry_backoff_seconds * 2 ** (deliveries - 1)
                await msg.raw_message.nak(delay=min(delay, 60.0))
                msg.committed = AckStatus.NACKED
        else:
            await _ack(msg)
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
            elapsed = time.perf_counter() - started
            self.metrics.duration.labels(event=event_name).observe(elapsed)
            self.metrics.messages.labels(event=event_name, outcome=outcome).inc()
            self.log.info(
                "handled",
                extra={
                    "event": event_name,
                    "event_id": _event_id(msg.body),
                    "subject": sub.subject,
                    "outcome": outcome,
                    "deliveries": deliveries,
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )
        return None

    def _subscription_for_subject(self, subject: str) -> _Subscription | None:
        relative = self.ns.relative(subject)
        return next(
            (
                s
                for s in self._subscriptions.values()
                if subject_matches(self.ns.relative(s.subject), relative)
            ),
            None,
        )

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
        sub: _Subscription,
        kind: Literal["invalid", "failed", "max_deliveries"],
        reason: str,
        deliveries: int,
    ) -> None:
        meta = None if self._memory else msg.raw_message.metadata
        seq = getattr(getattr(meta, "sequence", None), "stream", None)
        body: bytes = msg.body
        letter = build_dead_letter(
            body,
            subject=sub.subject,
            stream=sub.stream if seq is not None else None,
            sequence=seq,
            consumer=sub.durable,
            kind=kind,
            reason=reason,
            deliveries=deliveries,
            headers=dict(msg.headers or {}),
        )
        await self.publish(letter)
        self.metrics.dead_letters.labels(event=sub.event.__name__, kind=kind).inc()
        self.log.warning(
            "dead-lettered",
            extra={"event": sub.event.__name__, "kind": kind, "reason": reason[:500]},
        )
        if not self._memory:
            await msg.reject()  # TERM: the server stops redelivering it

    async def _move_exhausted(self) -> None:
        """Move messages whose deliveries ran out without a verdict (crash, timeout) to the DLQ."""
        js = self.broker.connection.jetstream()
        advisories = f"{self.ns.prefix.upper().replace('-', '_')}_ADVISORIES"
        durable = f"{self.ns.prefix}_deadletter_mover".replace("-", "_")
        try:
            psub = await js.pull_subscribe("", durable=durable, stream=advisories)
            self._advisory_sub = psub
        except Exception:
            self.log.exception("cannot watch max-delivery advisories")
            return
        while not self._stopping:
            try:
                msgs = await psub.fetch(10, timeout=1.0)
            except TimeoutError:  # nothing to move (nats-py raises asyncio's, an alias)
                continue
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("reading max-delivery advisories failed")
                await asyncio.sleep(1.0)
                continue
            for adv in msgs:
                try:
                    await self._move_one(js, adv)
                except Exception:  # one bad advisory must not stop the mover; it comes back
                    self.log.exception("moving an exhausted message to the dead letters failed")

    async def _move_one(self, js: JetStreamContext, adv: Any) -> None:
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
        await self.publish(letter)
        event_name, _ = split_subject(self.ns.relative(subject))
        self.metrics.dead_letters.labels(event=event_name, kind="max_deliveries").inc()
        await adv.ack()


class _DeliveryMiddleware(BaseMiddleware):
    def __init__(self, msg: Any, /, *, context: Any, service: Service) -> None:
        super().__init__(msg, context=context)
        self._service = service

    async def consume_scope(
        self, call_next: Callable[[Any], Awaitable[Any]], msg: StreamMessage[Any]
    ) -> Any:
        return await self._service.handle_outcome(msg, call_next)


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


async def _ack(msg: StreamMessage[Any]) -> None:
    raw = msg.raw_message
    if hasattr(raw, "ack_sync"):
        await raw.ack_sync()  # double ack: the server confirms, so a lost ack cannot redeliver
        msg.committed = AckStatus.ACKED
    else:
        await msg.ack()


async def _heartbeat(msg: StreamMessage[Any], ack_wait: float, max_seconds: float) -> None:
    """Tell the server the handler is alive, up to ``max_seconds``: then let it redeliver."""
    deadline = time.monotonic() + max_seconds
    with contextlib.suppress(asyncio.CancelledError, Exception):
        while time.monotonic() < deadline:
            await asyncio.sleep(max(ack_wait / 3, 0.5))
            await msg.raw_message.in_progress()
        log.warning("a handler exceeded max_handler_seconds: its message will be redelivered")


def _reason(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"[:2000]


def _validation_reason(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:10]:
        loc = ".".join(str(p) for p in error["loc"] if p != "body") or "(payload)"
        parts.append(f"{loc}: {error['msg']}")
    more = f" (+{exc.error_count() - 10} more)" if exc.error_count() > 10 else ""
    return "invalid payload: " + "; ".join(parts) + more


def _event_id(body: bytes) -> str | None:
    try:
        value = json.loads(body).get("event_id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _redact(url: str) -> str:
    """A NATS URL without its user:password part, for logs."""
    out = []
    for server in url.split(","):
        scheme, sep, rest = server.partition("://")
        if sep and "@" in rest:
            rest = "***@" + rest.split("@", 1)[1]
        out.append(f"{scheme}{sep}{rest}")
    return ",".join(out)


_PROJECT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")

_MAX_KEPT_PAYLOAD = 256 * 1024
"""Bytes of the original payload a dead letter keeps: base64 of it must fit in a NATS message
(1 MB by default), or the dead letter itself could not be published. The whole payload stays in its
original stream at ``original_sequence``; ``payload_size`` is always the full size."""


def build_dead_letter(
    body: bytes,
    *,
    subject: str,
    stream: str | None,
    sequence: int | None,
    consumer: str,
    kind: Literal["invalid", "failed", "max_deliveries"],
    reason: str,
    deliveries: int,
    headers: dict[str, str],
) -> DeadLetter:
    """The dead-letter record of a message. Its id is stable per original message."""
    project = "-"
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict) and isinstance(parsed.get("project"), str):
            candidate = parsed["project"]
            # the project becomes a subject token of the dead letter: only a valid name will do
            if _PROJECT_NAME.fullmatch(candidate) and len(candidate) <= 64:
                project = candidate
    except ValueError:
        pass
    natural = (stream, sequence) if sequence is not None else (subject, body)
    return DeadLetter(
        event_id=deterministic_id("dead-letter", consumer, *natural),
        project=project,
        original_subject=subject,
        original_stream=stream,
        original_sequence=sequence,
        consumer=consumer,
        reason=reason,
        kind=kind,
        deliveries=deliveries,
        headers={k: v for k, v in headers.items() if k.lower() != "authorization"},
        payload_b64=base64.b64encode(body[:_MAX_KEPT_PAYLOAD]).decode(),
        payload_size=len(body),
    )


# ---------------------------------------------------------------------- provisioning


async def provision(js: JetStreamContext, ns: Namespace, *, replicas: int = 1) -> None:
    """Create or update every stream and bucket of a namespace. Safe to run from every replica."""
    for spec in ns.streams:
        await _ensure_stream(js, _stream_config(ns, spec, replicas))
    await _ensure_stream(js, _advisory_config(ns, replicas))
    for bucket in KV_BUCKETS:
        name = ns.kv_bucket(bucket.name)
        try:
            await js.key_value(name)
        except (NotFoundError, nats.js.errors.BucketNotFoundError):
            await js.create_key_value(
                bucket=name,
                description=bucket.description,
                history=bucket.history,
                replicas=replicas,
            )
    for bucket in OBJECT_BUCKETS:
        name = ns.object_bucket(bucket.name)
        try:
            await js.object_store(name)
        except (NotFoundError, nats.js.errors.BucketNotFoundError):
            await js.create_object_store(
                bucket=name,
                config=nats.js.api.ObjectStoreConfig(
                    bucket=name, description=bucket.description, replicas=replicas
                ),
            )


def _stream_config(ns: Namespace, spec: StreamSpec, replicas: int) -> StreamConfig:
    return StreamConfig(
        name=ns.stream_name(spec),
        description=spec.description,
        subjects=ns.stream_subjects(spec),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=spec.max_age_seconds,
        duplicate_window=spec.duplicate_window_seconds,
        num_replicas=replicas,
    )


def _advisory_config(ns: Namespace, replicas: int) -> StreamConfig:
    """Captures max-delivery advisories of our streams: core advisories are lost if unheard."""
    subjects = [
        f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{ns.stream_name(spec)}.*"
        for spec in ns.streams
        if spec.name != "DLQ"
    ]
    return StreamConfig(
        name=f"{ns.prefix.upper().replace('-', '_')}_ADVISORIES",
        description="Max-delivery advisories, moved to the dead letters by the runtime",
        subjects=subjects,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=7 * 24 * 3600.0,
        num_replicas=replicas,
    )


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    assert config.name is not None
    try:
        info = await js.stream_info(config.name)
    except NotFoundError:
        with contextlib.suppress(BadRequestError):  # a racing replica created it first
            await js.add_stream(config=config)
        return
    current = info.config
    if (
        sorted(current.subjects or []) != sorted(config.subjects or [])
        or current.duplicate_window != config.duplicate_window
        or current.max_age != config.max_age
    ):
        await js.update_stream(config=config)


def subjects_of(events: Sequence[type[Event]], ns: Namespace) -> list[str]:
    """Absolute subjects of some events (for permissions and docs)."""
    return [ns.subject(e) for e in events]
