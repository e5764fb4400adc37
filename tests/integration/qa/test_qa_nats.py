"""qa-scorer against a real nats-server: a completed batch in; its report, review and, once the
review is answered, the round's labels out."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from labelloop.events import (
    Annotation,
    AnnotationSource,
    BatchCompleted,
    CompletedTask,
    LabelsReady,
    QAReport,
    QualityAlertRaised,
    ReviewRequested,
)
from labelloop.project import parse_project
from labelloop.testing import EventCollector, apply_project, started, wait_until
from labelloop_qa.app import build_app
from labelloop_qa.domain import agreement as ag
from labelloop_qa.domain.aggregation import majority_vote
from labelloop_qa.domain.ratings import Ratings
from labelloop_qa.settings import QASettings

pytestmark = pytest.mark.integration

PROJECT = "qa-int"
CLASSES = ["pos", "neg", "neu"]
CONFIG: dict[str, Any] = {
    "name": PROJECT,
    "task_type": "text_classification",
    "labels": {"classes": CLASSES},
    "data_fields": [{"name": "text", "kind": "text"}],
    "quality": {"consensus": "majority", "min_confidence": 0.6, "min_alpha": 0.8},
}
T0 = datetime(2026, 1, 1, tzinfo=UTC)
VOTES = {
    "i0": ["pos", "pos", "pos"],
    "i1": ["neg", "neg", "pos"],
    "i2": ["neu", "neu", "neu"],
    "i3": ["pos", "pos", "neg"],
    "i4": ["neg", "neg", "neg"],
    "i5": ["pos", "neg", "neu"],  # no majority: to review
}
WHO = ["w1", "w2", "w3"]


def _annotations() -> list[Annotation]:
    return [
        Annotation(
            annotation_id=f"{item}-{who}",
            item_id=item,
            annotator_id=who,
            value=value,
            batch_id="b1",
            lead_time_seconds=2.5,
            created_at=T0,
            updated_at=T0,
            source=AnnotationSource.SIMULATION,
        )
        for item, votes in VOTES.items()
        for who, value in zip(WHO, votes, strict=True)
    ]


def _handled(service: Any, event: str) -> float:
    value = service.registry.get_sample_value(
        "labelloop_runtime_messages_total", {"event": event, "outcome": "ok"}
    )
    return value or 0.0


async def test_annotations_to_labels_report_reviews_and_alert(
    nats_url: str, namespace: str
) -> None:
    settings = QASettings(nats_url=nats_url, namespace=namespace, bootstrap_samples=50)
    service = build_app(settings)
    async with started(service):
        await apply_project(service.stores.projects, parse_project(CONFIG))
        async with (
            EventCollector(nats_url, namespace, LabelsReady) as labels,
            EventCollector(nats_url, namespace, QAReport) as reports,
            EventCollector(nats_url, namespace, ReviewRequested) as reviews,
            EventCollector(nats_url, namespace, QualityAlertRaised) as alerts,
        ):
            tasks = [CompletedTask(item_id=i, annotations_required=3) for i in VOTES]
            completed = BatchCompleted(
                project=PROJECT,
                batch_id="b1",
                round=1,
                n_tasks=6,
                n_annotations=18,
                tasks=tasks,
                annotations=_annotations(),
            )
            await service.publish(completed)
            (report,) = await reports.wait_for(1, timeout=30)
            (review,) = await reviews.wait_for(1, timeout=10)
            (alert,) = await alerts.wait_for(1, timeout=10)
            expert = Annotation(
                annotation_id="e1",
                item_id="i5",
                annotator_id="expert",
                value="neu",
                batch_id="r1",
                created_at=T0,
                updated_at=T0,
                source=AnnotationSource.SIMULATION,
                is_expert=True,
            )
            await service.publish(
                BatchCompleted(
                    project=PROJECT,
                    batch_id="r1",
                    round=1,
                    kind="review",
                    n_tasks=1,
                    n_annotations=1,
                    tasks=[CompletedTask(item_id="i5", annotations_required=1, is_review=True)],
                    annotations=[expert],
                )
            )
            label_events = await labels.wait_for(1, timeout=30)
            # a redelivered completion republishes the same events, which the server drops
            await service.publish(completed.model_copy(update={"event_id": "again"}))
            await wait_until(lambda: _handled(service, "BatchCompleted") >= 2, timeout=20)
            assert len(reports.events) == 1
            assert len(labels.events) == len(label_events)

    anns = _annotations()
    r = Ratings.from_records(
        [a.item_id for a in anns],
        [a.annotator_id for a in anns],
        [a.value for a in anns],
        classes=CLASSES,
    )
    summary = ag.summarize(r, n_boot=0)
    assert report.batch_id == "b1"
    assert report.n_annotations == 18
    assert report.krippendorff_alpha == summary.krippendorff_alpha
    assert report.fleiss_kappa == summary.fleiss_kappa
    assert report.cohen_kappa_mean == summary.cohen_kappa_mean
    assert report.gwet_ac1 == summary.gwet_ac1
    assert report.percent_agreement == summary.percent_agreement
    assert report.consensus_method == "majority"
    assert report.passed is False
    assert alert.value == report.krippendorff_alpha
    assert alert.threshold == 0.8
    assert {s.annotator_id: s.mean_lead_time_seconds for s in report.annotators} == dict.fromkeys(
        WHO, 2.5
    )
    mv = majority_vote(r)
    released = {lab.item_id: lab for e in label_events for lab in e.labels}
    assert set(released) == {"i0", "i1", "i2", "i3", "i4", "i5"}
    assert (released["i5"].label, released["i5"].method) == ("neu", "expert-review")
    for i, item in enumerate(r.item_ids.tolist()):
        if item != "i5":
            assert released[item].label == CLASSES[mv.label[i]]
            assert released[item].confidence == pytest.approx(mv.confidence[i])
    assert [(item.item_id, item.reason) for item in review.items] == [("i5", "disagreement")]
