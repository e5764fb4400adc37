"""The simulated crew on a real nats-server: deterministic answers, one completion per batch."""

from __future__ import annotations

import pytest

from labelloop.events import (
    AnnotationSource,
    AnnotationsSubmitted,
    BatchCompleted,
    BatchCreated,
    BatchTask,
)
from labelloop.project import ProjectConfig
from labelloop.testing import EventCollector, apply_project, started, wait_until
from labelloop_bridge.app import build_app
from labelloop_bridge.settings import BridgeSettings

pytestmark = pytest.mark.integration

CONFIG = ProjectConfig.model_validate(
    {
        "name": "iris",
        "task_type": "text_classification",
        "labels": {"classes": ["setosa", "versicolor", "virginica"]},
        "data_fields": [{"name": "text", "kind": "text"}],
        "simulation": {
            "seed": 5,
            "annotators": [
                {"id": "sim-a", "accuracy": 0.95},
                {"id": "sim-b", "behaviour": "confuser", "accuracy": 0.8},
                {"id": "sim-c", "behaviour": "adversary"},
            ],
        },
    }
)


def _batch(event_id: str) -> BatchCreated:
    tasks = [
        BatchTask(
            item_id=f"f{i}",
            data={"text": str(i)},
            annotations_required=3,
            metadata={"simulation_truth": CONFIG.labels.classes[i % 3]},
        )
        for i in range(40)
    ]
    return BatchCreated(
        event_id=event_id,
        project="iris",
        batch_id="sim-batch",
        round=1,
        tasks=tasks,
        strategy="random",
        seed=0,
    )


async def test_simulated_crew_over_nats_completes_once_even_if_the_batch_comes_twice(
    nats_url: str, namespace: str
) -> None:
    settings = BridgeSettings(
        backend="simulated", nats_url=nats_url, namespace=namespace, simulation_chunk_size=50
    )
    service = build_app(settings)
    async with (
        started(service),
        EventCollector(nats_url, namespace, AnnotationsSubmitted) as annotations,
        EventCollector(nats_url, namespace, BatchCompleted) as completions,
    ):
        await apply_project(service.stores.projects, CONFIG)
        await service.publish(_batch("first"))
        await service.publish(_batch("second"))  # same batch, another message: answered once
        events = await annotations.wait_for(3, timeout=20)
        (done,) = await completions.wait_for(1, timeout=20)
        assert (done.n_tasks, done.n_annotations) == (40, 120)
        await wait_until(
            lambda: (
                service.registry.get_sample_value(
                    "labelloop_runtime_messages_total", {"event": "BatchCreated", "outcome": "ok"}
                )
                == 2
            ),
            timeout=20,
        )
        assert len(annotations.events) == 3  # 120 annotations in chunks of 50, once
        assert len(completions.events) == 1
        flat = [a for e in events for a in e.annotations]
        assert {a.source for a in flat} == {AnnotationSource.SIMULATION}
        adversary = [a for a in flat if a.annotator_id == "sim-c"]
        truth = {f"f{i}": CONFIG.labels.classes[i % 3] for i in range(40)}
        assert all(a.value != truth[a.item_id] for a in adversary)
