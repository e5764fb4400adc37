"""Forged and malformed Label Studio webhooks against the bridge's HTTP surface.

The bridge runs for real on NATS (label-studio backend); Label Studio itself is a mock transport
(the receiver only asks it who a user is). Calls go through the service's whole ASGI app, so the
mount at ``/webhooks/label-studio`` is part of what is tested.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from labelloop.events import AnnotationsSubmitted
from labelloop.project import parse_project
from labelloop.testing import EventCollector, apply_project, started, wait_until
from labelloop_bridge.app import WEBHOOK_PATH, build_app
from labelloop_bridge.settings import BridgeSettings
from labelloop_bridge.store import BridgeState

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

SECRET = "webhook-secret-for-forgery-tests"
HEADER = "X-Labelloop-Webhook-Secret"
LS_PROJECT = 41
CONFIG = parse_project(
    {
        "name": "hooks",
        "task_type": "text_classification",
        "labels": {"classes": ["a", "b"]},
        "data_fields": [{"name": "text", "kind": "text"}],
    }
)


def _fake_label_studio(request: httpx.Request) -> httpx.Response:
    if request.url.path.startswith("/api/users/"):
        uid = int(request.url.path.rstrip("/").rsplit("/", 1)[1])
        return httpx.Response(200, json={"id": uid, "email": f"user{uid}@example.com"})
    return httpx.Response(404, json={"detail": "not found"})


def _annotation_payload(
    ann_id: int, updated_at: str, *, data: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "action": "ANNOTATION_UPDATED",
        "project": {"id": LS_PROJECT},
        "task": {"id": 7, "data": data if data is not None else {"text": "hello"}},
        "annotation": {
            "id": ann_id,
            "task": 7,
            "completed_by": 3,
            "result": [
                {
                    "from_name": "label",
                    "to_name": "text",
                    "type": "choices",
                    "value": {"choices": ["a"]},
                }
            ],
            "created_at": "2026-01-01T10:00:00+00:00",
            "updated_at": updated_at,
            "lead_time": 2.0,
        },
    }


def _malformed() -> list[bytes]:
    """Bodies a confused or hostile caller might send, with the right secret."""
    leaf = st.none() | st.booleans() | st.integers() | st.text(max_size=10)
    anything = st.recursive(
        leaf,
        lambda i: st.lists(i, max_size=3) | st.dictionaries(st.text(max_size=5), i, max_size=3),
        max_leaves=10,
    )
    shaped = st.fixed_dictionaries(
        {
            "action": st.sampled_from(
                [
                    "ANNOTATION_CREATED",
                    "ANNOTATION_UPDATED",
                    "ANNOTATIONS_CREATED",
                    "ANNOTATIONS_DELETED",
                    "TASKS_CREATED",
                    "?",
                ]
            ),
            "project": st.one_of(st.just({"id": LS_PROJECT}), st.just(LS_PROJECT), anything),
            "annotation": anything,
            "annotations": st.lists(anything, max_size=3),
            "task": anything,
        }
    )
    strategy = st.one_of(
        st.binary(max_size=300),
        anything.map(lambda v: json.dumps(v).encode()),
        shaped.map(lambda v: json.dumps(v).encode()),
    )
    drawn: list[bytes] = []

    @settings(
        max_examples=60,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def draw(body: bytes) -> None:
        drawn.append(body)

    draw()
    return drawn


def _value(service: Any, name: str, **labels: str) -> float:
    return service.registry.get_sample_value(name, labels) or 0.0


async def test_forged_replayed_and_malformed_webhooks_publish_nothing(
    nats_url: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings_ = BridgeSettings(
        nats_url=nats_url,
        namespace=namespace,
        label_studio_url="http://label-studio.invalid",
        label_studio_token="token-never-used-for-real",
        webhook_secret=SECRET,
        reconcile_interval_seconds=3600,
        webhook_answer_within_seconds=5.0,
    )
    service = build_app(settings_, label_studio_transport=httpx.MockTransport(_fake_label_studio))
    async with (
        started(service),
        EventCollector(nats_url, namespace, AnnotationsSubmitted) as published,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=service.asgi()), base_url="http://bridge"
        ) as http,
    ):
        await apply_project(service.stores.projects, CONFIG)
        await BridgeState(service.state).claim_ls_project("hooks", "labeling", LS_PROJECT)
        good = {HEADER: SECRET}
        ids = {"labelloop_item_id": "item-1", "labelloop_batch_id": "batch-1", "text": "hi"}

        async def post(body: Any, headers: dict[str, str]) -> httpx.Response:
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            return await http.post(WEBHOOK_PATH, content=raw, headers=headers)

        # 1. wrong, missing or near-miss secret: 401, counted, nothing processed
        valid = _annotation_payload(1, "2026-01-01T10:05:00+00:00", data=ids)
        for headers in (
            {HEADER: "wrong"},
            {},
            {HEADER: SECRET[:-1]},
            {HEADER.lower(): SECRET + " "},
        ):
            assert (await post(valid, headers)).status_code == 401
        assert (
            _value(service, "labelloop_bridge_webhook_rejections_total", reason="bad_secret") == 4
        )

        # 2. unknown task: a managed project's task without labelloop ids, and a project not ours
        unknown_task = await post(
            _annotation_payload(2, "2026-01-01T10:05:00+00:00", data={}), good
        )
        assert unknown_task.status_code == 200
        assert unknown_task.json()["published"] == 0
        assert (
            _value(service, "labelloop_bridge_annotations_ignored_total", reason="unknown_task")
            == 1
        )
        stranger = _annotation_payload(3, "2026-01-01T10:05:00+00:00", data=ids)
        stranger["project"] = {"id": 999}
        answer = await post(stranger, good)
        assert answer.status_code == 200
        assert answer.json()["published"] == 0
        assert (
            _value(
                service, "labelloop_bridge_annotations_ignored_total", reason="unmanaged_project"
            )
            == 1
        )

        # 3. a real annotation, then a replay of an older state of it: the older one is ignored
        assert (await post(valid, good)).json()["published"] == 1
        await published.wait_for(1, timeout=10)
        older = _annotation_payload(1, "2026-01-01T10:01:00+00:00", data=ids)
        older["annotation"]["result"][0]["value"]["choices"] = ["b"]
        replay = await post(older, good)
        assert replay.status_code == 200
        assert replay.json()["published"] == 0
        assert (await post(valid, good)).json()["published"] == 0  # the same state again
        assert (
            _value(service, "labelloop_bridge_annotations_ignored_total", reason="duplicate") == 2
        )

        # 4. malformed bodies with the right secret: refused (400, counted) or ignored, never
        #    published, never a 503 (that is for failures worth retrying) nor an ERROR log
        caplog.set_level(logging.WARNING, logger="labelloop")
        for shaped in (
            {"action": "ANNOTATION_CREATED", "project": "abc"},
            {"action": "ANNOTATION_CREATED", "project": {"id": LS_PROJECT}, "annotation": {}},
            {"action": "ANNOTATIONS_DELETED", "project": LS_PROJECT, "annotations": [{}]},
        ):
            refused = await post(shaped, good)
            assert refused.status_code == 400, (refused.status_code, shaped)
        statuses: dict[int, int] = {400: 3}
        for body in _malformed():
            response = await post(body, good)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code in (200, 202):
                assert response.json().get("published", 0) == 0, body
            else:
                assert response.status_code == 400, (response.status_code, body)
        assert _value(
            service, "labelloop_bridge_webhook_rejections_total", reason="bad_payload"
        ) == statuses.get(400, 0)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert not errors, [r.getMessage() for r in errors]
        too_big = await post(b"{" + b" " * (5 * 1024 * 1024) + b"}", good)
        assert too_big.status_code == 413
        assert _value(service, "labelloop_bridge_webhook_rejections_total", reason="too_large") == 1
        print(f"\nmalformed webhooks: statuses {dict(sorted(statuses.items()))}")

        # nothing but the one real annotation reached the bus, and the bridge is still ready
        await wait_until(lambda: service.ready, timeout=5)
        assert (await http.get("/readyz")).status_code == 200
        assert [a.annotation_id for e in published.events for a in e.annotations] == ["ls-1"]
