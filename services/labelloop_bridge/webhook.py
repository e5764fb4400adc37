"""The webhook receiver: a small ASGI app Label Studio POSTs annotation events to.

Label Studio sends no signature, only static headers, so the receiver checks a shared secret in
one header (``hmac.compare_digest``: no timing leak) and refuses everything without it (401,
counted, nothing reaches the bus). It answers within ``answer_within`` seconds: Label Studio waits
one second and disables webhooks that keep failing; work still running then completes in the
background, and the reconciliation loop catches whatever a crash loses.

A body with the right secret that is not a payload the bridge understands (not JSON, not an
object, or fields of the wrong shape: the handler raises :class:`BadPayload`) gets 400 and is
counted as ``bad_payload``; 503 is kept for failures worth retrying (NATS, KV, Label Studio down).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .metrics import BridgeMetrics

__all__ = ["BadPayload", "WebhookReceiver"]

log = logging.getLogger("labelloop.bridge.webhook")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Handler = Callable[[dict[str, Any]], Awaitable[int]]

_MAX_BODY = 4 * 1024 * 1024


class BadPayload(ValueError):
    """A webhook payload of the wrong shape: refused with 400, never retried."""


class WebhookReceiver:
    """ASGI app: ``POST`` with the secret header and a JSON body -> ``handler(payload)``."""

    def __init__(
        self,
        handler: Handler,
        secret: str | None,
        metrics: BridgeMetrics,
        *,
        header: str = "X-Labelloop-Webhook-Secret",
        answer_within: float = 0.5,
    ) -> None:
        self._handler = handler
        self._secret = secret.encode() if secret else None
        self._header = header.lower().encode()
        self._metrics = metrics
        self._answer_within = answer_within
        self._background: set[asyncio.Task[int]] = set()

    def __repr__(self) -> str:
        return f"WebhookReceiver(header={self._header.decode()!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":
            await _respond(send, 405, {"detail": "POST only"})
            return
        headers = dict(scope.get("headers") or [])
        if not self._authorised(headers.get(self._header)):
            self._metrics.webhook_rejections.labels("bad_secret").inc()
            log.warning("webhook call refused: missing or wrong secret header")
            await _respond(send, 401, {"detail": "unauthorised"})
            return
        body = await _read_body(receive)
        if body is None:
            self._metrics.webhook_rejections.labels("too_large").inc()
            await _respond(send, 413, {"detail": "body too large"})
            return
        try:
            payload = json.loads(body)
            if not isinstance(payload, dict):
                raise ValueError("not an object")
        except ValueError:
            self._metrics.webhook_rejections.labels("bad_payload").inc()
            await _respond(send, 400, {"detail": "expected a JSON object"})
            return
        await self._dispatch(payload, send)

    def _authorised(self, offered: bytes | None) -> bool:
        if self._secret is None or offered is None:
            return False
        return hmac.compare_digest(offered, self._secret)

    async def _dispatch(self, payload: dict[str, Any], send: Send) -> None:
        job = asyncio.ensure_future(self._handler(payload))
        self._background.add(job)
        job.add_done_callback(self._finished)
        done, _ = await asyncio.wait({job}, timeout=self._answer_within)
        if not done:
            await _respond(send, 202, {"status": "accepted"})
            return
        error = job.exception()
        if isinstance(error, BadPayload):
            await _respond(send, 400, {"detail": f"malformed payload: {error}"})
            return
        if error is not None:
            # Label Studio will not retry; the reconciliation loop will pick the annotation up
            await _respond(send, 503, {"detail": "not processed; will be reconciled"})
            return
        await _respond(send, 200, {"status": "ok", "published": job.result()})

    def _finished(self, job: asyncio.Task[int]) -> None:
        self._background.discard(job)
        if job.cancelled():
            return
        error = job.exception()
        if isinstance(error, BadPayload):
            self._metrics.webhook_rejections.labels("bad_payload").inc()
            log.warning("webhook payload refused: %s", error)
        elif error is not None:
            log.error("webhook payload not processed (will be reconciled): %r", error)

    @property
    def in_flight(self) -> int:
        return len(self._background)

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait for payloads still being processed (on shutdown); False if some outlived
        ``timeout`` (they are cancelled: the reconciliation loop will read them back)."""
        if not self._background:
            return True
        jobs = set(self._background)
        _, pending = await asyncio.wait(jobs, timeout=timeout)
        for job in pending:
            job.cancel()
        if pending:
            await asyncio.wait(pending)
            log.warning("%d webhook payloads still running at shutdown: cancelled", len(pending))
        return not pending


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > _MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def _respond(send: Send, status: int, body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": raw})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
