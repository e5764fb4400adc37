"""Acceptance: the bridge against a real nats-server and a real Label Studio 1.23.

A batch goes in, three people annotate through Label Studio's API, and the annotations come back
as ``AnnotationsSubmitted``: by webhook, and again with webhooks off, by reconciliation. Updates
supersede, deletions and skips are marked, and ``BatchCompleted`` is emitted exactly once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn

from labelloop.events import (
    Annotation,
    AnnotationSource,
    AnnotationsSubmitted,
    BatchCompleted,
    BatchCreated,
    BatchTask,
    Prediction,
    deterministic_id,
)
from labelloop.natsserver import free_port
from labelloop.project import ProjectConfig
from labelloop.runtime import Service
from labelloop.testing import EventCollector, apply_project, wait_until
from labelloop_bridge.app import WEBHOOK_PATH, build_app
from labelloop_bridge.settings import BridgeSettings

pytestmark = [pytest.mark.integration, pytest.mark.labelstudio]

SECRET = "integration-webhook-secret"

CONFIG = ProjectConfig.model_validate(
    {
        "name": "tickets",
        "title": "Support tickets",
        "task_type": "text_classification",
        "labels": {"classes": ["billing", "bug", "other"]},
        "data_fields": [{"name": "text", "kind": "text"}],
        "guidelines_text": "# Tickets\n\nPick the **main** topic.",
        "quality": {"annotators_per_overlapped_item": 3},
    }
)


def _choice(label: str) -> list[dict[str, Any]]:
    return [
        {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}
    ]


def _batch() -> BatchCreated:
    return BatchCreated(
        project="tickets",
        batch_id="batch-0001",
        round=1,
        strategy="margin",
        seed=0,
        model_version="m1",
        tasks=[
            BatchTask(
                item_id="item-a",
                data={"text": "I was charged twice"},
                annotations_required=3,
                prediction=Prediction(label="billing", score=0.55),
            ),
            BatchTask(item_id="item-b", data={"text": "The app crashes"}, annotations_required=1),
        ],
    )


@asynccontextmanager
async def serving(service: Service, port: int) -> AsyncIterator[Service]:
    """Run the service with its HTTP surface (webhook receiver) on a loopback port."""
    config = uvicorn.Config(
        service.asgi(),
        host="127.0.0.1",
        port=port,
        lifespan="on",
        log_config=None,
        access_log=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await wait_until(lambda: server.started and service.ready, timeout=60)
        yield service
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=60)


async def _ls_tasks(people: Any, namespace: str) -> dict[str, int]:
    """Item id -> Label Studio task id, once the bridge has imported the batch."""
    marker = f"[labelloop:{namespace}/tickets/labeling]"

    async def imported() -> dict[str, int] | None:
        projects = (await people.http.get("/api/projects", params={"page_size": 1000})).json()
        ids = [p["id"] for p in projects["results"] if marker in (p.get("description") or "")]
        if not ids:
            return None
        tasks = await people.tasks(ids[0])
        found = {t["data"]["labelloop_item_id"]: int(t["id"]) for t in tasks}
        return found if len(found) == 2 else None

    result = await wait_until(imported, timeout=60, interval=0.2)
    assert isinstance(result, dict)
    return result


def _flat(events: list[AnnotationsSubmitted]) -> list[Annotation]:
    return [a for e in events for a in e.annotations]


async def test_annotations_arrive_by_webhook_update_supersedes_batch_completes_once(
    nats_url: str, namespace: str, label_studio: Any, people: Any
) -> None:
    port = free_port()
    settings = BridgeSettings(
        nats_url=nats_url,
        namespace=namespace,
        http_port=port,
        label_studio_url=label_studio.url,
        label_studio_token=label_studio.token,
        webhook_url=f"http://127.0.0.1:{port}{WEBHOOK_PATH}",
        webhook_secret=SECRET,
        reconcile_interval_seconds=3600,  # only webhooks can deliver in this test
    )
    service = build_app(settings)
    async with (
        serving(service, port),
        EventCollector(nats_url, namespace, AnnotationsSubmitted) as annotations,
        EventCollector(nats_url, namespace, BatchCompleted) as completions,
    ):
        await apply_project(service.stores.projects, CONFIG)
        await service.publish(_batch())
        tasks = await _ls_tasks(people, namespace)
        users = [await people.user(f"{name}@example.com") for name in ("ann", "bob", "cat")]

        labels = ["billing", "billing", "bug"]
        created = [
            await people.annotate(tasks["item-a"], uid, _choice(label), lead_time=7.5)
            for uid, label in zip(users, labels, strict=True)
        ]
        await people.annotate(tasks["item-b"], users[0], _choice("bug"))
        got = _flat(await annotations.wait_for(4, timeout=60))
        assert {a.source for a in got} == {AnnotationSource.WEBHOOK}
        by_item = sorted((a.item_id, a.annotator_id, a.value) for a in got)
        ann, bob, cat = (f"ls-user-{uid}" for uid in users)  # pseudonymous: never the email
        assert by_item == sorted(
            [
                ("item-a", ann, "billing"),
                ("item-a", bob, "billing"),
                ("item-a", cat, "bug"),
                ("item-b", ann, "bug"),
            ]
        )
        assert all(a.batch_id == "batch-0001" and a.lead_time_seconds for a in got)

        (done,) = await completions.wait_for(1, timeout=60)
        assert done.event_id == deterministic_id("batch-completed", "batch-0001")
        assert (done.n_tasks, done.n_annotations) == (2, 4)

        # cat changes their mind: the update supersedes the first answer
        await people.update(int(created[2]["id"]), _choice("billing"))
        events = await annotations.wait_for(5, timeout=60)
        newest = _flat(events[-1:])[0]
        first = next(a for a in got if a.annotator_id == cat)
        assert newest.annotation_id == first.annotation_id
        assert newest.value == "billing"
        assert newest.updated_at > first.updated_at
        assert len(completions.events) == 1
        assert (
            service.registry.get_sample_value(
                "labelloop_bridge_annotations_received_total",
                {"project": "tickets", "source": "webhook", "backend": "label-studio"},
            )
            == 5
        )
        assert (
            service.registry.get_sample_value(
                "labelloop_bridge_labelstudio_errors_total",
                {"operation": "import_tasks", "outcome": "server_error"},
            )
            or 0
        ) == 0


async def test_with_webhooks_off_reconciliation_delivers_updates_skips_and_deletions(
    nats_url: str, namespace: str, label_studio: Any, people: Any
) -> None:
    settings = BridgeSettings(
        nats_url=nats_url,
        namespace=namespace,
        http_port=free_port(),
        label_studio_url=label_studio.url,
        label_studio_token=label_studio.token,
        webhook_url=None,
        reconcile_interval_seconds=0.5,
        reconcile_margin_seconds=2.0,
    )
    service = build_app(settings)
    async with (
        serving(service, settings.http_port),
        EventCollector(nats_url, namespace, AnnotationsSubmitted) as annotations,
        EventCollector(nats_url, namespace, BatchCompleted) as completions,
    ):
        await apply_project(service.stores.projects, CONFIG)
        await service.publish(_batch())
        await service.publish(_batch())  # a duplicate publish: dropped or ignored, never twice
        tasks = await _ls_tasks(people, namespace)
        users = [await people.user(f"{name}@example.com") for name in ("dan", "eve", "fay")]
        created = [await people.annotate(tasks["item-a"], uid, _choice("bug")) for uid in users]
        await people.annotate(tasks["item-b"], users[1], [], cancelled=True)  # a skip

        got = _flat(await annotations.wait_for(4, timeout=60))
        assert {a.source for a in got} == {AnnotationSource.RECONCILIATION}
        (skip,) = [a for a in got if a.item_id == "item-b"]
        assert skip.cancelled
        assert skip.value is None
        (done,) = await completions.wait_for(1, timeout=60)
        assert done.batch_id == "batch-0001"

        await people.update(int(created[0]["id"]), _choice("other"))
        events = await annotations.wait_for(5, timeout=60)
        assert _flat(events[-1:])[0].value == "other"

        await people.delete(int(created[1]["id"]))
        events = await annotations.wait_for(6, timeout=60)
        gone = _flat(events[-1:])[0]
        assert gone.deleted
        assert gone.annotation_id == f"ls-{created[1]['id']}"

        # a few more passes change nothing: no duplicates, no second completion
        passes = (
            service.registry.get_sample_value(
                "labelloop_bridge_reconciliations_total", {"outcome": "ok"}
            )
            or 0
        )
        await wait_until(
            lambda: (
                (
                    service.registry.get_sample_value(
                        "labelloop_bridge_reconciliations_total", {"outcome": "ok"}
                    )
                    or 0
                )
                >= passes + 3
            ),
            timeout=30,
        )
        assert len(annotations.events) == 6
        assert len(completions.events) == 1
        ls_tasks = await people.tasks(
            int((await people.http.get(f"/api/tasks/{tasks['item-a']}")).json()["project"])
        )
        assert len(ls_tasks) == 2  # the duplicate BatchCreated imported nothing
