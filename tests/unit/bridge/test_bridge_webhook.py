"""The webhook receiver: shared-secret check, fast answers (ASGI, in process, no sockets)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from labelloop_bridge.metrics import BridgeMetrics
from labelloop_bridge.webhook import BadPayload, WebhookReceiver

SECRET = "s3cret-value"
HEADER = "X-Labelloop-Webhook-Secret"


class Recorder:
    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.delay = delay
        self.fail = fail

    async def __call__(self, payload: dict[str, Any]) -> int:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("bus down")
        self.payloads.append(payload)
        return 1


def _setup(
    handler: Recorder, secret: str | None = SECRET, answer_within: float = 0.5
) -> tuple[httpx.AsyncClient, WebhookReceiver, CollectorRegistry]:
    registry = CollectorRegistry()
    receiver = WebhookReceiver(
        handler,
        secret,
        BridgeMetrics(registry, "label-studio"),
        header=HEADER,
        answer_within=answer_within,
    )
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=receiver), base_url="http://bridge"
    )
    return client, receiver, registry


def _rejections(registry: CollectorRegistry, reason: str) -> float:
    value = registry.get_sample_value(
        "labelloop_bridge_webhook_rejections_total", {"reason": reason}
    )
    return value or 0.0


@pytest.mark.parametrize(
    "headers", [{HEADER: "wrong"}, {}, {HEADER: SECRET + "x"}, {"X-Other": SECRET}]
)
async def test_a_wrong_or_missing_secret_gets_401_is_counted_and_goes_nowhere(
    headers: dict[str, str],
) -> None:
    handler = Recorder()
    client, _, registry = _setup(handler)
    response = await client.post("/", json={"action": "ANNOTATION_CREATED"}, headers=headers)
    assert response.status_code == 401
    assert handler.payloads == []
    assert _rejections(registry, "bad_secret") == 1


async def test_without_a_configured_secret_everything_is_refused() -> None:
    handler = Recorder()
    client, _, _ = _setup(handler, secret=None)
    response = await client.post("/", json={}, headers={HEADER: ""})
    assert response.status_code == 401
    assert handler.payloads == []


async def test_the_right_secret_hands_the_payload_on() -> None:
    handler = Recorder()
    client, _, _ = _setup(handler)
    response = await client.post("/", json={"action": "X"}, headers={HEADER: SECRET})
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "published": 1}
    assert handler.payloads == [{"action": "X"}]


async def test_slow_work_is_answered_202_and_finished_in_the_background() -> None:
    handler = Recorder(delay=0.3)
    client, receiver, _ = _setup(handler, answer_within=0.05)
    response = await client.post("/", json={"n": 1}, headers={HEADER: SECRET})
    assert response.status_code == 202
    await receiver.drain()
    assert handler.payloads == [{"n": 1}]


async def test_a_failing_handler_answers_503() -> None:
    client, _, _ = _setup(Recorder(fail=True))
    response = await client.post("/", json={"n": 1}, headers={HEADER: SECRET})
    assert response.status_code == 503


async def test_bad_json_and_wrong_method() -> None:
    handler = Recorder()
    client, _, registry = _setup(handler)
    bad = await client.post("/", content=b"{not json", headers={HEADER: SECRET})
    assert bad.status_code == 400
    assert _rejections(registry, "bad_payload") == 1
    listed = await client.post("/", json=[1, 2], headers={HEADER: SECRET})
    assert listed.status_code == 400
    assert (await client.get("/")).status_code == 405
    assert handler.payloads == []


class Malformed(Recorder):
    async def __call__(self, payload: dict[str, Any]) -> int:
        if self.delay:
            await asyncio.sleep(self.delay)
        raise BadPayload("project id is not an integer id")


async def test_a_payload_of_the_wrong_shape_is_400_and_counted_not_503(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, _, registry = _setup(Malformed())
    with caplog.at_level(logging.WARNING, logger="labelloop.bridge"):
        response = await client.post("/", json={"project": "abc"}, headers={HEADER: SECRET})
    assert response.status_code == 400
    assert "integer" in response.json()["detail"]
    assert _rejections(registry, "bad_payload") == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_malformed_payload_found_in_the_background_is_counted_too() -> None:
    client, receiver, registry = _setup(Malformed(delay=0.2), answer_within=0.01)
    response = await client.post("/", json={"n": 1}, headers={HEADER: SECRET})
    assert response.status_code == 202
    assert await receiver.drain(timeout=5)
    assert _rejections(registry, "bad_payload") == 1


async def test_drain_waits_for_work_and_cancels_what_outlives_the_timeout() -> None:
    handler = Recorder(delay=0.2)
    client, receiver, _ = _setup(handler, answer_within=0.01)
    assert (await client.post("/", json={"n": 1}, headers={HEADER: SECRET})).status_code == 202
    assert receiver.in_flight == 1
    assert await receiver.drain(timeout=5)
    assert handler.payloads == [{"n": 1}]
    slow = Recorder(delay=30)
    client, receiver, _ = _setup(slow, answer_within=0.01)
    assert (await client.post("/", json={"n": 2}, headers={HEADER: SECRET})).status_code == 202
    assert not await receiver.drain(timeout=0.05)
    assert receiver.in_flight == 0
    assert slow.payloads == []
