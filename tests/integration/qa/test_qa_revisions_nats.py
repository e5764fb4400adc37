"""Revisions on a real nats-server, with two qa-scorer replicas sharing the work: a change after
scoring gives exactly one revision; a change that overtakes its batch's completion waits for it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from labelloop.events import (
    Annotation,
    AnnotationSource,
    AnnotationsSubmitted,
    BatchCompleted,
    CompletedTask,
    LabelsReady,
)
from labelloop.project import parse_project
from labelloop.runtime import Service
from labelloop.testing import EventCollector, apply_project, publish_events, started, wait_until
from labelloop_qa.app import build_app
from labelloop_qa.settings import QASettings

pytestmark = pytest.mark.integration

PROJECT = "qa-rev-int"
CONFIG: dict[str, Any] = {
    "name": PROJECT,
    "task_type": "text_classification",
    "labels": {"classes": ["pos", "neg"]},
    "data_fields": [{"name": "text", "kind": "text"}],
    "quality": {"consensus": "majority", "min_confidence": 0.6, "min_alpha": 0.0},
}
T0 = datetime(2026, 1, 1, tzinfo=UTC)
VOTES = {"i0": ["pos", "pos", "neg"], "i1": ["neg", "neg", "neg"], "i2": ["pos", "pos", "pos"]}
WHO = ["w1", "w2", "w3"]


def _annotation(item: str, who: str, value: str, batch: str, seconds: int = 0) -> Annotation:
    return Annotation(
        annotation_id=f"{batch}-{item}-{who}",
        item_id=item,
        annotator_id=who,
        value=value,
        batch_id=batch,
        created_at=T0,
        updated_at=T0 + timedelta(seconds=seconds),
        source=AnnotationSource.SIMULATION,
    )


def _completed(batch: str, number: int) -> BatchCompleted:
    anns = [
        _annotation(item, who, value, batch)
        for item, votes in VOTES.items()
        for who, value in zip(WHO, votes, strict=True)
    ]
    return BatchCompleted(
        project=PROJECT,
        batch_id=batch,
        round=number,
        n_tasks=len(VOTES),
        n_annotations=len(anns),
        tasks=[CompletedTask(item_id=i, annotations_required=3) for i in VOTES],
        annotations=anns,
    )


def _handled(services: list[Service], event: str) -> float:
    labels = {"event": event, "outcome": "ok"}
    return sum(
        s.registry.get_sample_value("labelloop_runtime_messages_total", labels) or 0.0
        for s in services
    )


def _labels(event: LabelsReady) -> dict[str, Any]:
    return {lab.item_id: lab.label for lab in event.labels}


async def test_two_replicas_publish_one_revision_per_change(nats_url: str, namespace: str) -> None:
    settings = QASettings(nats_url=nats_url, namespace=namespace, bootstrap_samples=0)
    first, second = build_app(settings), build_app(settings)
    async with started(first), started(second):
        await apply_project(first.stores.projects, parse_project(CONFIG))
        async with EventCollector(nats_url, namespace, LabelsReady) as ready:
            await publish_events(nats_url, namespace, _completed("b1", 1))
            (original,) = await ready.wait_for(1, timeout=60)
            assert _labels(original)["i0"] == "pos"
            # w2 changes their answer; the change reaches QA three times: the bridge's message
            # twice (the stream drops the copy) and once more under another id (a replay
            # after the duplicate window), which both replicas may take at once
            change = _annotation("i0", "w2", "neg", "b1", seconds=90)
            message = AnnotationsSubmitted(event_id="c1", project=PROJECT, annotations=[change])
            again = message.model_copy(update={"event_id": "c1-replayed"})
            await publish_events(nats_url, namespace, message, message, again)
            _, revised = await ready.wait_for(2, timeout=60)
            await wait_until(
                lambda: _handled([first, second], "AnnotationsSubmitted") >= 2, timeout=60
            )
            assert len(ready.events) == 2
    assert (revised.round, revised.revision) == (1, 1)
    assert _labels(revised) == {**_labels(original), "i0": "neg"}


async def test_a_change_that_overtakes_its_completion_becomes_a_revision(
    nats_url: str, namespace: str
) -> None:
    settings = QASettings(nats_url=nats_url, namespace=namespace, bootstrap_samples=0)
    service = build_app(settings)
    async with started(service):
        await apply_project(service.stores.projects, parse_project(CONFIG))
        async with EventCollector(nats_url, namespace, LabelsReady) as ready:
            change = _annotation("i1", "w3", "pos", "b1", seconds=30)
            late = AnnotationsSubmitted(project=PROJECT, annotations=[change])
            await publish_events(nats_url, namespace, late)
            await wait_until(lambda: _handled([service], "AnnotationsSubmitted") >= 1, timeout=60)
            pending = await service.state.keys(f"qa.{PROJECT}.pending.")
            assert len(pending) == 1
            await publish_events(nats_url, namespace, _completed("b1", 1))
            original, revised = await ready.wait_for(2, timeout=60)
            assert await service.state.keys(f"qa.{PROJECT}.pending.") == []
    assert revised.revision == 1
    i1 = next(lab for lab in revised.labels if lab.item_id == "i1")
    assert (i1.label, i1.confidence) == ("neg", pytest.approx(2 / 3))
    assert next(lab for lab in original.labels if lab.item_id == "i1").confidence == 1.0
