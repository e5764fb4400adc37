"""Creating a namespace's streams and buckets: idempotent, safe to run from every replica."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

import nats
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from labelloop.events import Event
from labelloop.streams import KV_BUCKETS, OBJECT_BUCKETS, Namespace, StreamSpec

log = logging.getLogger("labelloop.provisioning")

__all__ = ["NotProvisioned", "advisory_stream", "provision", "subjects_of"]


class NotProvisioned(RuntimeError):
    """A stream or bucket is missing or differs, and this client may not create or change it."""


async def provision(js: JetStreamContext, ns: Namespace, *, replicas: int = 1) -> None:
    """Create or update every stream and bucket of a namespace. Safe to run from every replica.

    Where everything exists as configured, this only reads (what the services' least-privilege
    users may do); otherwise a user without the right raises :class:`NotProvisioned`."""
    try:
        await _provision(js, ns, replicas)
    except (TimeoutError, nats.errors.NoRespondersError) as exc:
        # a JetStream API request the server's permissions dropped gets no answer at all
        raise NotProvisioned(
            f"namespace {ns.prefix}: a stream or bucket is missing or differs from this version's"
            f" and this user may not create it ({type(exc).__name__}); provision it as an"
            " operator: `labelloop-service --provision`"
        ) from None


async def _provision(js: JetStreamContext, ns: Namespace, replicas: int) -> None:
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
        name=advisory_stream(ns),
        description="Max-delivery advisories, moved to the dead letters by the runtime",
        subjects=subjects,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=7 * 24 * 3600.0,
        duplicate_window=120.0,  # the server's default, said: a config that reads back equal
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
    have = {
        "subjects": sorted(current.subjects or []),
        "duplicate_window": current.duplicate_window,
        "max_age": current.max_age,
    }
    want = {
        "subjects": sorted(config.subjects or []),
        "duplicate_window": config.duplicate_window,
        "max_age": config.max_age,
    }
    # unset (None): the server's default, whatever it is
    differs = {k: (have[k], v) for k, v in want.items() if v is not None and have[k] != v}
    if differs:
        log.info("stream %s differs from this version (%s): updating", config.name, differs)
        await js.update_stream(config=config)


def subjects_of(events: Sequence[type[Event]], ns: Namespace) -> list[str]:
    """Absolute subjects of some events (for permissions and docs)."""
    return [ns.subject(e) for e in events]


def advisory_stream(ns: Namespace) -> str:
    """The stream that keeps max-delivery advisories until the runtime moves their messages."""
    return f"{ns.prefix.upper().replace('-', '_')}_ADVISORIES"
