"""Large events travel by reference: the body goes to the object store, the message names it.

NATS refuses a message over ``max_payload`` (1 MB by default), and event-carried state (a completed
batch with its annotations, a round's labels) can outgrow it. Publishers call :func:`wire_form`:
an event whose JSON is larger than the limit is stored in the publisher's artefact area, under
``<area>/payloads/<subject>/<project>/<event id>.json`` (written *before* the message, so a
consumer never finds the name without the body), and the message carries a small envelope naming
it in the ``Labelloop-Payload`` header. Consumers call :func:`resolve` before validating; handlers
only ever see the whole event.

An envelope whose body is gone (deleted by an operator) is a poison message: the runtime
dead-letters it with the name it could not find.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from labelloop.events import Event
from labelloop.stores import Blobs

__all__ = ["DEFAULT_INLINE_LIMIT", "PAYLOAD_HEADER", "PayloadMissing", "resolve", "wire_form"]

PAYLOAD_HEADER = "Labelloop-Payload"
DEFAULT_INLINE_LIMIT = 512 * 1024
"""Bodies up to this many bytes travel inline: half of NATS's default ``max_payload``, leaving room
for headers and for servers configured lower."""


class PayloadMissing(LookupError):
    """An envelope names a body the object store does not have."""


def payload_name(event: Event, area: str) -> str:
    return f"{area}/payloads/{event.SUBJECT}/{event.project}/{event.event_id}.json"


async def wire_form(
    event: Event, blobs: Blobs | None, *, area: str | None, limit: int = DEFAULT_INLINE_LIMIT
) -> tuple[bytes, dict[str, str]]:
    """The message body and extra headers that carry ``event``.

    ``area``: the publisher's artefact area, where a body too large to travel inline is stored;
    without one (or without ``blobs``) every body travels inline."""
    body = event.model_dump_json().encode()
    if len(body) <= limit or blobs is None or area is None:
        return body, {}
    name = payload_name(event, area)
    await blobs.put(name, body)
    envelope = {
        "event_id": event.event_id,
        "occurred_at": event.occurred_at.isoformat(),
        "project": event.project,
        "payload_ref": name,
        "payload_bytes": len(body),
    }
    return json.dumps(envelope).encode(), {PAYLOAD_HEADER: name}


async def resolve(body: bytes, headers: Mapping[str, str] | None, blobs: Blobs | None) -> bytes:
    """The event's JSON: ``body`` itself, or the stored body an envelope names."""
    name = (headers or {}).get(PAYLOAD_HEADER)
    if not name:
        return body
    if blobs is None:
        raise PayloadMissing(f"event body {name!r} is stored by reference and no store is open")
    stored = await blobs.get(name)
    if stored is None:
        raise PayloadMissing(f"event body {name!r} is not in the object store")
    return stored
