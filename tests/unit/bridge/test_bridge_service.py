"""The bridge as a service, in memory: batches in, annotations and completions out."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from labelloop.events import (
    AnnotationSource,
    AnnotationsSubmitted,
    BatchCompleted,
    BatchCreated,
    BatchTask,
    DeadLetter,
)
from labelloop.project import AnnotatorSpec, ProjectConfig
from labelloop.testing import in_memory
from labelloop_bridge.app import WEBHOOK_PATH, build_app
from labelloop_bridge.settings import BridgeSettings

SECRET = "webhook-secret-for-tests"

CONFIG = ProjectConfig.model_validate(
    {
        "name": "sentiment",
        "task_type": "text_classification",
        "labels": {"classes": ["pos", "neg", "neutral"]},
        "data_fields": [{"name": "text", "kind": "text"}],
        "simulation": {
            "seed": 3,
            "annotators": [
                {"id": "sim-good", "accuracy": 0.9},
                {"id": "sim-confuser", "behaviour": "confuser", "accuracy": 0.7},
                {"id": "sim-spammer", "behaviour": "spammer"},
            ],
        },
    }
)


def _batch(n: int = 6) -> BatchCreated:
    tasks = [
        BatchTask(
            item_id=f"s{i}",
            data={"text": f"text {i}"},
            annotations_required=3 if i < 2 else 1,
            metadata={"simulation_truth": "pos"},
        )
        for i in range(n)
    ]
    return BatchCreated(
        project="sentiment", batch_id="b-1", round=1, tasks=tasks, strategy="random", seed=0
    )


async def test_simulated_backend_answers_and_completes_once() -> None:
    service = build_app(BridgeSettings(backend="simulated"))
    async with in_memory(service) as bus:
        await bus.apply_project(CONFIG)
        await bus.publish(_batch())
        await bus.publish(_batch())  # redelivery
        annotations = [a for e in bus.published(AnnotationsSubmitted) for a in e.annotations]
        assert len(annotations) == 2 * 3 + 4
        assert {a.source for a in annotations} == {AnnotationSource.SIMULATION}
        (done,) = bus.published(BatchCompleted)
        assert done.batch_id == "b-1"
        sample = service.registry.get_sample_value(
            "labelloop_bridge_batches_completed_total", {"backend": "simulated", "kind": "labeling"}
        )
        assert sample == 1


async def test_a_project_without_a_crew_is_dead_lettered_at_once() -> None:
    service = build_app(BridgeSettings(backend="simulated"))
    async with in_memory(service) as bus:
        await bus.apply_project(CONFIG.model_copy(update={"simulation": None}))
        await bus.publish(_batch())
        (letter,) = bus.published(DeadLetter)
        assert "simulation" in letter.reason
        assert bus.published(AnnotationsSubmitted) == []


async def test_label_studio_backend_imports_and_a_bad_webhook_secret_reaches_nothing(
    fake_ls: Any,
) -> None:
    settings = BridgeSettings(
        label_studio_url="http://ls.test",
        label_studio_token="fake-token",  # type: ignore[arg-type]
        webhook_url="http://bridge.test/webhooks/label-studio",
        webhook_secret=SECRET,  # type: ignore[arg-type]
    )
    service = build_app(settings, label_studio_transport=fake_ls.transport)
    async with in_memory(service) as bus:
        await bus.apply_project(CONFIG)
        await bus.publish(_batch())
        assert len(fake_ls.tasks) == 6
        (hook,) = fake_ls.webhooks.values()
        (task_id,) = [
            t["id"] for t in fake_ls.tasks.values() if t["data"]["labelloop_item_id"] == "s3"
        ]
        user = fake_ls.user("ann@example.com")
        result = [
            {
                "from_name": "label",
                "to_name": "text",
                "type": "choices",
                "value": {"choices": ["neg"]},
            }
        ]
        annotation = fake_ls.annotate(task_id, user, result)
        payload = {
            "action": "ANNOTATION_CREATED",
            "annotation": annotation,
            "task": fake_ls.tasks[task_id],
            "project": {"id": fake_ls.tasks[task_id]["project"]},
        }
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=service.asgi()), base_url="http://bridge.test"
        ) as http:
            refused = await http.post(WEBHOOK_PATH, json=payload, headers={hook_header(): "guess"})
            assert refused.status_code == 401
            assert bus.published(AnnotationsSubmitted) == []
            assert (
                service.registry.get_sample_value(
                    "labelloop_bridge_webhook_rejections_total", {"reason": "bad_secret"}
                )
                == 1
            )
            accepted = await http.post(WEBHOOK_PATH, json=payload, headers=hook["headers"])
            assert accepted.status_code == 200
        (event,) = bus.published(AnnotationsSubmitted)
        assert event.annotations[0].value == "neg"
        assert event.annotations[0].source is AnnotationSource.WEBHOOK


def hook_header() -> str:
    return BridgeSettings().webhook_header


class _Recording(httpx.AsyncBaseTransport):
    """Fake Label Studio whose user look-ups are slow; records what happened, in order."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.log: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/api/users/"):
            await asyncio.sleep(0.3)
            self.log.append("user looked up")
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        self.log.append("client closed")


async def test_shutdown_drains_webhook_work_then_closes_the_label_studio_client(
    fake_ls: Any,
) -> None:
    transport = _Recording(fake_ls.transport)
    settings = BridgeSettings(
        label_studio_url="http://ls.test",
        label_studio_token="fake-token",  # type: ignore[arg-type]
        webhook_url="http://bridge.test/webhooks/label-studio",
        webhook_secret=SECRET,  # type: ignore[arg-type]
        webhook_answer_within_seconds=0.01,
    )
    service = build_app(
        settings.model_copy(update={"reconcile_interval_seconds": 3600}),
        label_studio_transport=transport,
    )
    config = CONFIG.model_copy(
        update={"annotators": [AnnotatorSpec(id="ann", email="ann@example.com")]}
    )
    async with in_memory(service) as bus:
        await bus.apply_project(config)
        await bus.publish(_batch())
        (hook,) = fake_ls.webhooks.values()
        task = next(t for t in fake_ls.tasks.values() if t["data"]["labelloop_item_id"] == "s3")
        result = [{"from_name": "label", "value": {"choices": ["neg"]}}]
        annotation = fake_ls.annotate(task["id"], fake_ls.user("ann@example.com"), result)
        payload = {
            "action": "ANNOTATION_CREATED",
            "annotation": annotation,
            "task": task,
            "project": {"id": task["project"]},
        }
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=service.asgi()), base_url="http://bridge.test"
        ) as http:
            answer = await http.post(WEBHOOK_PATH, json=payload, headers=hook["headers"])
            assert answer.status_code == 202  # still looking the user up
    assert transport.log == ["user looked up", "client closed"]
