"""Races the bridge must win, against a real nats-server (KV) and a real Label Studio 1.23.

* a batch whose answers the watermark pass cannot see still completes (the open-batch pass);
* two deliveries of one ``BatchCreated`` importing at once create each task once (import lease).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from labelloop.events import BatchCompleted, BatchCreated, BatchTask
from labelloop.project import ProjectConfig
from labelloop.testing import EventCollector, apply_project, started, wait_until
from labelloop_bridge.app import build_app
from labelloop_bridge.importer import BatchImporter
from labelloop_bridge.intake import AnnotationIntake
from labelloop_bridge.labelstudio import LabelStudioClient
from labelloop_bridge.metrics import BridgeMetrics
from labelloop_bridge.provisioning import ProjectProvisioner
from labelloop_bridge.registry import AnnotatorRegistry
from labelloop_bridge.settings import BridgeSettings
from labelloop_bridge.store import BridgeState

pytestmark = [pytest.mark.integration, pytest.mark.labelstudio]

CONFIG = ProjectConfig.model_validate(
    {
        "name": "races",
        "task_type": "text_classification",
        "labels": {"classes": ["billing", "bug", "other"]},
        "data_fields": [{"name": "text", "kind": "text"}],
        "quality": {"annotators_per_overlapped_item": 2},
    }
)


def _choice(label: str) -> list[dict[str, Any]]:
    return [
        {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}
    ]


def _batch(batch_id: str, n: int, required: int = 1) -> BatchCreated:
    return BatchCreated(
        project="races",
        batch_id=batch_id,
        round=1,
        strategy="random",
        seed=0,
        tasks=[
            BatchTask(
                item_id=f"{batch_id}-item-{i}",
                data={"text": f"ticket {i}"},
                annotations_required=required if i == 0 else 1,
            )
            for i in range(n)
        ],
    )


def _settings(nats_url: str, namespace: str, label_studio: Any, **extra: Any) -> BridgeSettings:
    return BridgeSettings(
        nats_url=nats_url,
        namespace=namespace,
        label_studio_url=label_studio.url,
        label_studio_token=label_studio.token,
        webhook_url=None,
        **extra,
    )


async def _batch_tasks(people: Any, namespace: str, batch_id: str, n: int) -> list[dict[str, Any]]:
    marker = f"[labelloop:{namespace}/races/labeling]"

    async def imported() -> list[dict[str, Any]] | None:
        projects = (await people.http.get("/api/projects", params={"page_size": 1000})).json()
        ids = [p["id"] for p in projects["results"] if marker in (p.get("description") or "")]
        if not ids:
            return None
        listed = await people.tasks(ids[0])
        tasks = [t for t in listed if t["data"]["labelloop_batch_id"] == batch_id]
        return tasks if len(tasks) >= n else None

    found = await wait_until(imported, timeout=60, interval=0.2)
    assert isinstance(found, list)
    return found


async def test_answers_behind_the_watermark_still_complete_their_batch(
    nats_url: str, namespace: str, label_studio: Any, people: Any
) -> None:
    settings = _settings(
        nats_url,
        namespace,
        label_studio,
        reconcile_interval_seconds=0.5,
        reconcile_margin_seconds=0.0,
    )
    service = build_app(settings)
    async with (
        started(service),
        EventCollector(nats_url, namespace, BatchCompleted) as completions,
    ):
        await apply_project(service.stores.projects, CONFIG)
        await service.publish(_batch("late-1", n=2, required=2))
        tasks = await _batch_tasks(people, namespace, "late-1", 2)
        # the watermark says everything up to tomorrow was seen (clock skew, a lagging updated_at)
        state = BridgeState(service.state)
        await state.set_watermark("races", "labeling", datetime.now(UTC) + timedelta(days=1))
        users = [await people.user(f"{n}-race@example.com") for n in ("gus", "hal")]
        for task in tasks:
            wanted = int(task["data"]["labelloop_annotations_required"])
            for uid in users[:wanted]:
                await people.annotate(int(task["id"]), uid, _choice("bug"))
        (done,) = await completions.wait_for(1, timeout=60)
        assert (done.batch_id, done.n_tasks, done.n_annotations) == ("late-1", 2, 3)


async def test_two_deliveries_importing_one_batch_at_once_create_each_task_once(
    nats_url: str, namespace: str, label_studio: Any, people: Any
) -> None:
    settings = _settings(nats_url, namespace, label_studio, reconcile_interval_seconds=3600)
    service = build_app(settings)
    async with started(service):
        await apply_project(service.stores.projects, CONFIG)
        state = BridgeState(service.state)
        clients: list[LabelStudioClient] = []

        def replica() -> BatchImporter:
            http = httpx.AsyncClient(base_url=label_studio.url, timeout=30.0)
            client = LabelStudioClient(http, label_studio.token)
            clients.append(client)
            metrics = BridgeMetrics(CollectorRegistry(), "label-studio")
            intake = AnnotationIntake(
                state, service.publish, service.project, AnnotatorRegistry(client), metrics
            )
            provisioner = ProjectProvisioner(client, state, namespace, None)
            return BatchImporter(
                client,
                state,
                provisioner,
                intake,
                metrics,
                namespace=namespace,
                chunk_size=5,
                lease_poll_seconds=0.1,
            )

        one, two = replica(), replica()
        try:
            await one.place(_batch("warmup", n=1), CONFIG)  # the Label Studio project exists
            batch = _batch("twice", n=30)
            counts = await asyncio.gather(one.place(batch, CONFIG), two.place(batch, CONFIG))
        finally:
            for client in clients:
                await client.aclose()
        assert sorted(counts) == [0, 30]
        tasks = await _batch_tasks(people, namespace, "twice", 30)
        items = sorted(t["data"]["labelloop_item_id"] for t in tasks)
        assert items == sorted(f"twice-item-{i}" for i in range(30))
