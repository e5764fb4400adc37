"""The delivery policy: what happens to a message after its handler ran, as one pure function.

* the handler returned: **ack** (the server confirms, a lost ack cannot redeliver it);
* the payload is not the event it claims to be (validation failed, its body by reference is
  gone): **dead letter** at once, kind ``invalid``: no retry can change the bytes;
* the handler raised :class:`PoisonMessage`: **dead letter** at once, kind ``failed``;
* any other exception: **retry** with exponential backoff, until the last delivery: then **dead
  letter**, kind ``failed``, with the exception as the reason. A transport that cannot redeliver
  (the in-memory one of unit tests) dead-letters at the first failure.

A message whose deliveries run out while no handler could report (a crash, an ack timeout) never
reaches this function: the server's max-delivery advisory moves it (kind ``max_deliveries``).
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError

from labelloop.events import DeadLetter, deterministic_id
from labelloop.payloads import PayloadMissing

__all__ = [
    "DeadLetterKind",
    "PoisonMessage",
    "Verdict",
    "build_dead_letter",
    "decide",
    "validation_reason",
]

DeadLetterKind = Literal["invalid", "failed", "max_deliveries"]

MAX_BACKOFF_SECONDS = 60.0


class PoisonMessage(Exception):
    """Raised by a handler for a message that can never succeed: dead-lettered without retry."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Literal["ack", "retry", "dead_letter"]
    reason: str = ""
    kind: DeadLetterKind | None = None
    delay: float = 0.0
    """Seconds before the retry (``retry`` only)."""


def decide(
    error: BaseException | None,
    *,
    deliveries: int,
    max_deliver: int,
    backoff_seconds: float,
    redelivers: bool = True,
) -> Verdict:
    """What to do with a message whose handler ended with ``error`` (``None``: it returned)."""
    if error is None:
        return Verdict("ack")
    if isinstance(error, ValidationError):
        return Verdict("dead_letter", validation_reason(error), "invalid")
    if isinstance(error, PayloadMissing):
        return Verdict("dead_letter", str(error), "invalid")
    if isinstance(error, PoisonMessage):
        return Verdict("dead_letter", error.reason, "failed")
    reason = f"{type(error).__name__}: {error}"[:2000]
    if not redelivers or deliveries >= max_deliver:
        return Verdict("dead_letter", reason, "failed")
    delay = min(backoff_seconds * 2 ** (max(deliveries, 1) - 1), MAX_BACKOFF_SECONDS)
    return Verdict("retry", reason, delay=delay)


def validation_reason(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:10]:
        loc = ".".join(str(p) for p in error["loc"] if p != "body") or "(payload)"
        parts.append(f"{loc}: {error['msg']}")
    more = f" (+{exc.error_count() - 10} more)" if exc.error_count() > 10 else ""
    return "invalid payload: " + "; ".join(parts) + more


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
    kind: DeadLetterKind,
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
