"""The simulated backend: a whole batch answered, named a simulation, completed exactly once."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from labelloop.events import (
    AnnotationSource,
    AnnotationsSubmitted,
    BatchCompleted,
    BatchCreated,
    BatchTask,
    Event,
    deterministic_id,
)
from labelloop.project import ProjectConfig
from labelloop_bridge.metrics import BridgeMetrics
from labelloop_bridge.simulation import NoSimulationConfig, SimulatedCrew
from labelloop_bridge.store import BridgeState

CONFIG = ProjectConfig.model_validate(
    {
        "name": "digits",
        "task_type": "image_classification",
        "labels": {"classes": [str(i) for i in range(10)]},
        "data_fields": [{"name": "image", "kind": "image"}],
        "simulation": {
            "seed": 11,
            "annotators": [
                {"id": "good-1", "accuracy": 0.95},
                {"id": "good-2", "accuracy": 0.9},
                {"id": "spam", "behaviour": "spammer"},
                {"id": "expert", "role": "expert", "accuracy": 0.99},
            ],
        },
    }
)


def _batch(kind: str = "labeling", n: int = 30) -> BatchCreated:
    tasks = [
        BatchTask(
            item_id=f"d{i}",
            data={"image": f"data:{i}"},
            annotations_required=3 if i < 5 else 1,
            metadata={"simulation_truth": str(i % 10)},
        )
        for i in range(n)
    ]
    return BatchCreated(
        project="digits",
        batch_id=f"{kind}-7",
        round=7,
        tasks=tasks,
        strategy="random",
        seed=0,
        kind=kind,
    )  # type: ignore[arg-type]


def _crew(kv: Any, chunk_size: int = 10) -> tuple[SimulatedCrew, list[Event], CollectorRegistry]:
    published: list[Event] = []

    async def publish(event: Event) -> None:
        published.append(event)

    registry = CollectorRegistry()
    crew = SimulatedCrew(
        BridgeState(kv), publish, BridgeMetrics(registry, "simulated"), chunk_size=chunk_size
    )
    return crew, published, registry


async def test_a_batch_is_answered_in_chunks_and_completed_once(kv: Any) -> None:
    crew, published, registry = _crew(kv)
    assert await crew.place(_batch(), CONFIG) == 5 * 3 + 25
    chunks = [e for e in published if isinstance(e, AnnotationsSubmitted)]
    assert [len(c.annotations) for c in chunks] == [10, 10, 10, 10]
    annotations = [a for c in chunks for a in c.annotations]
    assert {a.source for a in annotations} == {AnnotationSource.SIMULATION}
    assert {a.annotator_id for a in annotations} <= {"good-1", "good-2", "spam"}
    for item in ("d0", "d4"):
        assert len({a.annotator_id for a in annotations if a.item_id == item}) == 3
    (done,) = [e for e in published if isinstance(e, BatchCompleted)]
    assert done.event_id == deterministic_id("batch-completed", "labeling-7")
    assert (done.n_tasks, done.n_annotations) == (30, 40)
    assert (
        registry.get_sample_value(
            "labelloop_bridge_annotations_received_total",
            {"project": "digits", "source": "simulation", "backend": "simulated"},
        )
        == 40
    )
    # a redelivered BatchCreated publishes nothing more
    assert await crew.place(_batch(), CONFIG) == 0
    assert len(published) == 5


async def test_same_batch_same_answers_on_another_replica(kv: Any) -> None:
    first, published_1, _ = _crew(kv)
    second, published_2, _ = _crew(type(kv)())
    batch = _batch()
    await first.place(batch, CONFIG)
    await second.place(batch, CONFIG)
    assert [e.model_dump(exclude={"occurred_at"}) for e in published_1] == [
        e.model_dump(exclude={"occurred_at"}) for e in published_2
    ]


async def test_review_batches_are_answered_by_experts(kv: Any) -> None:
    crew, published, _ = _crew(kv)
    review = _batch("review", n=4)
    await crew.place(
        review.model_copy(
            update={
                "tasks": [t.model_copy(update={"annotations_required": 1}) for t in review.tasks]
            }
        ),
        CONFIG,
    )
    annotations = [
        a for e in published if isinstance(e, AnnotationsSubmitted) for a in e.annotations
    ]
    assert {(a.annotator_id, a.is_expert) for a in annotations} == {("expert", True)}
    (done,) = [e for e in published if isinstance(e, BatchCompleted)]
    assert done.kind == "review"


async def test_a_project_without_a_crew_is_refused(kv: Any) -> None:
    crew, _, _ = _crew(kv)
    with pytest.raises(NoSimulationConfig):
        await crew.place(_batch(), CONFIG.model_copy(update={"simulation": None}))


async def test_the_completion_carries_the_tasks_and_the_annotations(kv: Any) -> None:
    crew, published, _ = _crew(kv)
    batch = _batch()
    gold = batch.tasks[7].model_copy(update={"is_gold": True, "gold_label": "7"})
    batch = batch.model_copy(update={"tasks": [*batch.tasks[:7], gold, *batch.tasks[8:]]})
    await crew.place(batch, CONFIG)
    (done,) = [e for e in published if isinstance(e, BatchCompleted)]
    sent = [a for e in published if isinstance(e, AnnotationsSubmitted) for a in e.annotations]
    assert done.round == 7
    assert sorted(a.annotation_id for a in done.annotations) == sorted(
        a.annotation_id for a in sent
    )
    assert [t.item_id for t in done.tasks] == [t.item_id for t in batch.tasks]
    (carried,) = [t for t in done.tasks if t.is_gold]
    assert (carried.item_id, carried.gold_label) == ("d7", "7")


async def test_excluded_annotators_get_no_task(kv: Any) -> None:
    crew, published, _ = _crew(kv)
    batch = _batch().model_copy(update={"excluded_annotators": ["spam"]})
    await crew.place(batch, CONFIG)
    sent = [a for e in published if isinstance(e, AnnotationsSubmitted) for a in e.annotations]
    assert {a.annotator_id for a in sent} == {"good-1", "good-2"}
    # three wanted on d0..d4, two left: answered by both (short-handed, said in the log)
    assert {len({a.annotator_id for a in sent if a.item_id == f"d{i}"}) for i in range(5)} == {2}


def test_a_paced_crew_answers_in_order_of_each_annotators_lead_times() -> None:
    from datetime import UTC, datetime

    from labelloop.events import Annotation
    from labelloop_bridge.simulation import paced

    def ann(aid: str, who: str, lead: float) -> Annotation:
        now = datetime(2026, 1, 1, tzinfo=UTC)
        return Annotation(
            annotation_id=aid,
            item_id=aid,
            annotator_id=who,
            value="1",
            lead_time_seconds=lead,
            created_at=now,
            updated_at=now,
            source=AnnotationSource.SIMULATION,
        )

    schedule = paced(
        [ann("a1", "ada", 10), ann("a2", "ada", 10), ann("b1", "ben", 15)], 0.01, window=0.0
    )
    # ada answers at 0.1 s and 0.2 s, ben at 0.15 s (each works through their own tasks)
    assert [(round(due, 3), [a.annotation_id for a in group]) for due, group in schedule] == [
        (0.1, ["a1"]),
        (0.15, ["b1"]),
        (0.2, ["a2"]),
    ]
