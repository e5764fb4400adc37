"""An answer updated after its batch was scored reaches a new dataset version (issue 16).

The ingester, two qa-scorer replicas, the exporter and the trainer run as real processes on a
real nats-server. A raw nats-py publisher plays the bridge: a completed batch, then an update of
one answer published after QA scored the batch (as the bridge publishes every change, also after
``BatchCompleted``). QA re-scores the round, the exporter writes a new version with the
corrected label, and the next round's version, which the trainer trains on, keeps it. A version
comes every six labels (``export.every_n_labels``): round 1 (six labels) writes one, round 2 (five)
would export a delta only, and writes a full version because a round before it was revised.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from labelloop.events import (
    Annotation,
    AnnotationSource,
    AnnotationsSubmitted,
    BatchCompleted,
    CompletedTask,
    DatasetExported,
    ItemIn,
    ItemsIngested,
    LabelsReady,
    ModelTrained,
    deterministic_id,
)
from labelloop.testing import EventCollector, configure_project, publish_events, wait_until
from labelloop_console.commands.ingest import submissions
from labelloop_console.processes import Supervisor

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

PROJECT = "revisions"
CLASSES = ["pos", "neg"]
WHO = ["ann-a", "ann-b", "ann-c"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _project() -> dict[str, Any]:
    return {
        "name": PROJECT,
        "task_type": "text_classification",
        "labels": {"classes": CLASSES},
        "data_fields": [{"name": "text", "kind": "text"}],
        "quality": {"consensus": "majority", "min_confidence": 0.6, "min_alpha": 0.0},
        "sampling": {"start": "on_command"},
        "export": {"every_n_labels": 6},
        "training": {"min_new_labels": 1},
    }


def _annotation(item: str, who: str, value: str, batch: str, seconds: int = 0) -> Annotation:
    return Annotation(
        annotation_id=f"ls-{batch}-{item}-{who}",
        item_id=item,
        annotator_id=who,
        value=value,
        batch_id=batch,
        lead_time_seconds=3.0,
        created_at=T0,
        updated_at=T0 + timedelta(seconds=seconds),
        source=AnnotationSource.WEBHOOK,
    )


def _completed(number: int, votes: dict[str, list[str]]) -> BatchCompleted:
    batch = f"batch-{number}"
    anns = [
        _annotation(item, who, value, batch)
        for item, item_votes in votes.items()
        for who, value in zip(WHO, item_votes, strict=True)
    ]
    return BatchCompleted(
        event_id=deterministic_id("batch-completed", batch),
        project=PROJECT,
        batch_id=batch,
        round=number,
        n_tasks=len(votes),
        n_annotations=len(anns),
        tasks=[CompletedTask(item_id=item, annotations_required=3) for item in votes],
        annotations=anns,
    )


def _rows(event: DatasetExported) -> dict[str, dict[str, Any]]:
    lines = (Path(event.path) / "dataset.jsonl").read_text().splitlines()
    return {row["item_id"]: row for row in map(json.loads, lines)}


async def test_an_update_after_scoring_reaches_a_new_dataset_version(
    nats_url: str, namespace: str, tmp_path: Path
) -> None:
    exports = tmp_path / "exports"
    supervisor = Supervisor(
        nats_url, namespace, tmp_path, env={"LABELLOOP_EXPORTER_EXPORT_DIR": str(exports)}
    )
    texts = [f"review {k}: {'lovely great' if k % 2 == 0 else 'awful poor'}" for k in range(12)]
    items = [
        ItemIn(data={"text": text}, metadata={"n": k}, external_id=f"r{k}")
        for k, text in enumerate(texts)
    ]
    try:
        async with (
            EventCollector(nats_url, namespace, ItemsIngested) as ingested,
            EventCollector(nats_url, namespace, LabelsReady) as ready,
            EventCollector(nats_url, namespace, DatasetExported) as exported,
            EventCollector(nats_url, namespace, ModelTrained) as models,
        ):
            for service in ("ingester", "qa-scorer", "exporter", "trainer"):
                supervisor.start(service)
            supervisor.start("qa-scorer", replica=1)
            await asyncio.to_thread(supervisor.wait_ready, 240)
            await configure_project(nats_url, namespace, _project())
            await publish_events(nats_url, namespace, *submissions(items, PROJECT, source="test"))

            def ids() -> dict[str, str]:
                return {
                    str(i.data["text"]): i.item_id for event in ingested.events for i in event.items
                }

            await wait_until(lambda: len(ids()) == len(texts), timeout=120)
            item = [ids()[text] for text in texts]
            truth = {item[k]: CLASSES[k % 2] for k in range(12)}

            # round 1: item 0 is labeled pos by two of three (ann-b among them)
            votes_1 = {item[k]: [truth[item[k]]] * 3 for k in range(6)}
            votes_1[item[0]] = ["pos", "pos", "neg"]
            await publish_events(nats_url, namespace, _completed(1, votes_1))
            (v1,) = await exported.wait_for(1, timeout=120)
            assert _rows(v1)[item[0]]["label"] == "pos"
            await models.wait_for(1, timeout=180)  # round 1 trained before anything changes

            # after the round was scored, ann-b changes their answer on item 0 to neg
            update = _annotation(item[0], "ann-b", "neg", "batch-1", seconds=600)
            await publish_events(
                nats_url,
                namespace,
                AnnotationsSubmitted(
                    event_id=deterministic_id(
                        "annotation", update.annotation_id, update.updated_at, update.deleted
                    ),
                    project=PROJECT,
                    annotations=[update],
                ),
            )
            _, revised = await exported.wait_for(2, timeout=120)
            revisions = [e for e in ready.events if e.revision > 0]
            assert [(e.round, e.revision) for e in revisions] == [(1, 1)]
            assert (revised.version, revised.round, revised.revisions) == (
                "v0001-r1",
                1,
                {"1": 1},
            )
            row = _rows(revised)[item[0]]
            assert row["label"] == "neg"
            assert (row["n_annotations"], row["annotators"]) == (3, WHO)
            assert _rows(v1)[item[0]]["label"] == "pos"  # the old version never changes

            # the next round's version keeps the correction, and the trainer trains on it: five
            # labels are fewer than every_n_labels, the revision of round 1 writes the version
            votes_2 = {item[k]: [truth[item[k]]] * 3 for k in range(6, 11)}
            await publish_events(nats_url, namespace, _completed(2, votes_2))

            def trained_on_round_2() -> list[ModelTrained]:
                return [m for m in models.events if m.round == 2]

            await wait_until(trained_on_round_2, timeout=240)
            (v2,) = [e for e in exported.events if e.version == "v0002"]
            assert _rows(v2)[item[0]]["label"] == "neg"
            assert v2.revisions == {"1": 1}
            assert trained_on_round_2()[0].dataset_version == "v0002"
            assert len(ready.events) == 3  # round 1, its one revision, round 2
    finally:
        supervisor.stop_all()
