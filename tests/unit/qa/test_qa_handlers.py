"""qa-scorer handlers on the in-memory bus: events in, events out, state in memory stores."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from labelloop.events import (
    Annotation,
    AnnotationSource,
    AnnotationsSubmitted,
    BatchCompleted,
    BatchCreated,
    BatchTask,
    LabelsReady,
    ModelTrained,
    QAReport,
    QualityAlertRaised,
    ReviewRequested,
)
from labelloop.runtime import Service
from labelloop.stores import MemoryStores
from labelloop.testing import in_memory
from labelloop_qa.app import build_app
from labelloop_qa.domain import agreement as ag
from labelloop_qa.domain.ratings import Ratings
from labelloop_qa.domain.scoring import Rating
from labelloop_qa.ledger import Ledger
from labelloop_qa.scorer import AnnotationsPending, BatchNotKnown, QAScorer
from labelloop_qa.settings import QASettings

PROJECT = "qa-demo"
CLASSES = ["pos", "neg", "neu"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
CONFIG: dict[str, Any] = {
    "name": PROJECT,
    "task_type": "text_classification",
    "labels": {"classes": CLASSES},
    "data_fields": [{"name": "text", "kind": "text"}],
    "quality": {"consensus": "majority", "min_alpha": 0.3, "min_confidence": 0.6},
}


def annotation(
    item: str, who: str, value: str | None, *, batch: str | None = "b1", n: int = 0, **kw: Any
) -> Annotation:
    return Annotation(
        annotation_id=kw.pop("annotation_id", f"{item}-{who}"),
        item_id=item,
        annotator_id=who,
        value=value,
        batch_id=batch,
        lead_time_seconds=kw.pop("lead_time_seconds", 4.0),
        created_at=T0,
        updated_at=T0 + timedelta(seconds=n),
        source=AnnotationSource.SIMULATION,
        **kw,
    )


# items i0..i9: 3 annotators; i8 and i9 split three ways (to review)
VOTES = {f"i{k}": [CLASSES[k % 3]] * 3 for k in range(8)}
VOTES["i1"] = ["neg", "neg", "pos"]
VOTES["i8"] = ["pos", "neg", "neu"]
VOTES["i9"] = ["neu", "pos", "neg"]
WHO = ["ann-a", "ann-b", "ann-c"]


def crew_annotations(batch: str = "b1") -> list[Annotation]:
    return [
        annotation(item, who, v, batch=batch)
        for item, votes in VOTES.items()
        for who, v in zip(WHO, votes, strict=True)
    ]


def batch_created(batch: str = "b1") -> BatchCreated:
    return BatchCreated(
        project=PROJECT,
        batch_id=batch,
        tasks=[BatchTask(item_id=i, data={"text": i}, annotations_required=3) for i in VOTES],
        strategy="random",
        seed=0,
    )


async def configure(svc: Service) -> None:
    """Store the project config where ``Service.project`` reads it (``labelloop project apply``)."""
    await svc.stores.projects.put(PROJECT, json.dumps(CONFIG).encode())


def service() -> Service:
    return build_app(QASettings(bootstrap_samples=50), stores=MemoryStores())


async def run_batch(bus: Any, batch: str = "b1") -> None:
    await bus.publish(batch_created(batch))
    await bus.publish(AnnotationsSubmitted(project=PROJECT, annotations=crew_annotations(batch)))
    await bus.publish(BatchCompleted(project=PROJECT, batch_id=batch, n_tasks=10, n_annotations=30))


async def test_batch_gives_labels_report_and_reviews_equal_to_the_pure_functions() -> None:
    svc = service()
    async with in_memory(svc) as bus:
        await configure(svc)
        await run_batch(bus)
        labels = [lab for e in bus.published(LabelsReady) for lab in e.labels]
        (report,) = bus.published(QAReport)
        (review,) = bus.published(ReviewRequested)

    ratings = [
        Rating(a.item_id, a.annotator_id, a.value, 4.0)  # type: ignore[arg-type]
        for a in crew_annotations()
    ]
    r = Ratings.from_records(
        [x.item_id for x in ratings],
        [x.annotator_id for x in ratings],
        [x.value for x in ratings],
        classes=CLASSES,
    )
    summary = ag.summarize(r, n_boot=0)
    assert report.krippendorff_alpha == summary.krippendorff_alpha
    assert report.fleiss_kappa == summary.fleiss_kappa
    assert report.cohen_kappa_mean == summary.cohen_kappa_mean
    assert report.gwet_ac1 == summary.gwet_ac1
    assert report.percent_agreement == summary.percent_agreement
    assert report.n_annotations == 30
    assert report.n_items == 10
    assert report.items_flagged == 2
    assert report.krippendorff_alpha_ci is not None
    assert {s.annotator_id for s in report.annotators} == set(WHO)
    assert {item.item_id for item in review.items} == {"i8", "i9"}
    assert {item.reason for item in review.items} == {"disagreement"}
    released = {lab.item_id: lab for lab in labels}
    assert set(released) == {f"i{k}" for k in range(8)}
    assert released["i1"].label == "neg"
    assert released["i1"].confidence == pytest.approx(2 / 3)
    assert released["i0"].annotators == WHO
    assert all(lab.batch_id == "b1" and lab.method == "majority" for lab in labels)


async def test_replayed_batch_completed_publishes_identical_events() -> None:
    svc = service()
    async with in_memory(svc) as bus:
        await configure(svc)
        await run_batch(bus)
        (first,) = bus.published(QAReport)
        stored = dict(svc.stores.artifacts._data)  # type: ignore[attr-defined]
        completed = BatchCompleted(project=PROJECT, batch_id="b1", n_tasks=10, n_annotations=30)
        await bus.publish(completed)
        await bus.publish(completed)
        # the replays published the very same events (same ids), which NATS drops as duplicates
        assert bus.published(QAReport) == [first]
        dupes = svc.registry.get_sample_value(
            "labelloop_runtime_published_total", {"event": "QAReport", "duplicate": "true"}
        )
        assert dupes == 2
        assert dict(svc.stores.artifacts._data) == stored  # type: ignore[attr-defined]
        # annotator history counted the batch once
        keys = await svc.state.keys("qa.qa-demo.annotator.")
        assert len(keys) == 3
        for key in keys:
            entry = await svc.state.get(key)
            assert entry is not None
            assert json.loads(entry.value)["batches"] == ["b1"]


async def test_expert_answer_releases_a_held_item() -> None:
    svc = service()
    async with in_memory(svc) as bus:
        await configure(svc)
        await run_batch(bus)
        expert = annotation("i8", "expert-1", "neu", batch="review-1", is_expert=True)
        await bus.publish(AnnotationsSubmitted(project=PROJECT, annotations=[expert]))
        released = [lab for e in bus.published(LabelsReady) for lab in e.labels]
        (override,) = [lab for lab in released if lab.item_id == "i8"]
        assert override.label == "neu"
        assert override.reviewed
        assert override.method == "expert-review"
        assert override.batch_id == "b1"
        # a second expert answer for a closed review does not release again
        again = annotation("i8", "expert-2", "pos", batch="review-1", is_expert=True)
        await bus.publish(AnnotationsSubmitted(project=PROJECT, annotations=[again]))
        assert sum(lab.item_id == "i8" for e in bus.published(LabelsReady) for lab in e.labels) == 1


async def test_updates_supersede_and_deleted_or_cancelled_do_not_count() -> None:
    svc = service()
    async with in_memory(svc) as bus:
        await configure(svc)
        await bus.publish(batch_created())
        base = crew_annotations()
        await bus.publish(AnnotationsSubmitted(project=PROJECT, annotations=base))
        changes = [
            # i8: ann-b changes their mind to pos (newer), then a stale older copy arrives
            annotation("i8", "ann-b", "pos", n=10),
            annotation("i8", "ann-b", "neu", n=5),
            # i9: ann-a deletes, ann-b cancels -> one rating left
            annotation("i9", "ann-a", "neu", n=10, deleted=True),
            annotation("i9", "ann-b", None, n=10, cancelled=True),
        ]
        await bus.publish(AnnotationsSubmitted(project=PROJECT, annotations=changes))
        await bus.publish(
            BatchCompleted(project=PROJECT, batch_id="b1", n_tasks=10, n_annotations=30)
        )
        released = {lab.item_id: lab for e in bus.published(LabelsReady) for lab in e.labels}
        (report,) = bus.published(QAReport)
    assert released["i8"].label == "pos"
    assert released["i8"].n_annotations == 3
    assert released["i9"].label == "neg"
    assert released["i9"].n_annotations == 1
    assert report.n_annotations == 28
    assert (
        svc.registry.get_sample_value("labelloop_qa_annotations_stored_total", {"outcome": "stale"})
        == 1
    )


async def test_low_alpha_raises_an_alert_and_metrics() -> None:
    svc = service()
    rng = np.random.default_rng(1)
    noisy = [
        annotation(f"n{k}", who, CLASSES[int(rng.integers(3))], batch="b2")
        for k in range(20)
        for who in WHO
    ]
    async with in_memory(svc) as bus:
        await configure(svc)
        await bus.publish(AnnotationsSubmitted(project=PROJECT, annotations=noisy))
        await bus.publish(
            BatchCompleted(
                project=PROJECT,
                batch_id="b2",
                n_tasks=20,
                n_annotations=60,
                # no BatchCreated was ever seen: an old completion is scored without its tasks
                occurred_at=datetime.now(UTC) - timedelta(hours=1),
            )
        )
        (alert,) = bus.published(QualityAlertRaised)
        (report,) = bus.published(QAReport)
    assert report.passed is False
    assert alert.metric == "krippendorff_alpha"
    assert alert.value == report.krippendorff_alpha
    assert alert.threshold == 0.3
    reg = svc.registry
    assert (
        reg.get_sample_value(
            "labelloop_qa_alerts_total", {"project": PROJECT, "metric": "krippendorff_alpha"}
        )
        == 1
    )
    assert (
        reg.get_sample_value(
            "labelloop_qa_batches_scored_total", {"project": PROJECT, "outcome": "failed"}
        )
        == 1
    )
    assert (
        reg.get_sample_value(
            "labelloop_qa_batch_agreement",
            {"project": PROJECT, "coefficient": "krippendorff_alpha"},
        )
        == report.krippendorff_alpha
    )
    assert reg.get_sample_value("labelloop_qa_scoring_duration_seconds_count") == 1


async def test_model_contradiction_requests_re_review() -> None:
    svc = service()
    async with in_memory(svc) as bus:
        await configure(svc)
        await run_batch(bus)
        buf = io.BytesIO()
        np.savez(
            buf,
            item_ids=np.array(["i0", "i3", "i4", "unknown"]),
            proba=np.array([[0.01, 0.97, 0.02], [0.9, 0.05, 0.05], [0.3, 0.3, 0.4], [1, 0, 0]]),
            classes=np.array(CLASSES),
        )
        await svc.artifacts.put("models/m1/oos.npz", buf.getvalue())
        trained = ModelTrained(
            project=PROJECT,
            model_version="m1",
            dataset_version="d1",
            promoted=True,
            metrics={},
            n_train=8,
            oos_ref="models/m1/oos.npz",
        )
        await bus.publish(trained)
        reviews = [e for e in bus.published(ReviewRequested) if e.batch_id is None]
    (req,) = reviews
    # i0 was labelled pos; the model says neg with 0.97 (> default 0.9); i3 agrees (pos, 0.9)
    assert [(i.item_id, i.reason, i.candidate_label) for i in req.items] == [
        ("i0", "model_contradiction", "pos")
    ]
    assert req.items[0].confidence == pytest.approx(0.97)


async def test_gold_answers_come_from_batch_tasks() -> None:
    svc = service()
    created = BatchCreated(
        project=PROJECT,
        batch_id="b1",
        tasks=[
            BatchTask(
                item_id=i,
                data={"text": i},
                annotations_required=3,
                is_gold=i == "i0",
                gold_label="neu" if i == "i0" else None,
            )
            for i in VOTES
        ],
        strategy="random",
        seed=0,
    )
    async with in_memory(svc) as bus:
        await configure(svc)
        await bus.publish(created)
        await bus.publish(AnnotationsSubmitted(project=PROJECT, annotations=crew_annotations()))
        await bus.publish(
            BatchCompleted(project=PROJECT, batch_id="b1", n_tasks=10, n_annotations=30)
        )
        released = {lab.item_id: lab for e in bus.published(LabelsReady) for lab in e.labels}
        (report,) = bus.published(QAReport)
    # everyone said "pos" on i0, whose known answer is "neu"
    assert released["i0"].label == "neu"
    assert released["i0"].is_gold
    assert released["i0"].method == "gold"
    assert report.gold_accuracy == 0.0
    assert {s.gold_accuracy for s in report.annotators} == {0.0}


async def test_annotations_without_batch_id_use_the_item_index() -> None:
    svc = service()
    async with in_memory(svc) as bus:
        await configure(svc)
        await bus.publish(batch_created())
        anns = [
            a.model_copy(update={"batch_id": None}) if a.item_id == "i0" else a
            for a in crew_annotations()
        ]
        await bus.publish(AnnotationsSubmitted(project=PROJECT, annotations=anns))
        await bus.publish(
            BatchCompleted(project=PROJECT, batch_id="b1", n_tasks=10, n_annotations=30)
        )
        released = {lab.item_id: lab for e in bus.published(LabelsReady) for lab in e.labels}
        assert released["i0"].n_annotations == 3


def _scorer() -> QAScorer:
    from prometheus_client import CollectorRegistry

    from labelloop_qa.metrics import QAMetrics

    stores = MemoryStores()

    async def no_project(name: str) -> None:
        return None

    return QAScorer(
        Ledger(stores.state, stores.artifacts), QAMetrics(CollectorRegistry()), no_project
    )


async def test_an_annotation_for_an_unknown_item_is_retried() -> None:
    # the runtime retries it with backoff, then dead-letters it with this reason
    stray = annotation("nowhere", "ann-a", "pos", batch=None)
    with pytest.raises(BatchNotKnown, match="nowhere"):
        await _scorer().annotations_submitted(
            AnnotationsSubmitted(project=PROJECT, annotations=[stray])
        )


async def test_completion_that_overtakes_its_annotations_is_retried() -> None:
    scorer = _scorer()
    await scorer.batch_created(batch_created())
    completed = BatchCompleted(project=PROJECT, batch_id="b1", n_tasks=10, n_annotations=30)
    with pytest.raises(AnnotationsPending, match="0 of 30"):
        await scorer.batch_completed(completed)
    await scorer.annotations_submitted(
        AnnotationsSubmitted(project=PROJECT, annotations=crew_annotations())
    )
    events = await scorer.batch_completed(completed)
    assert sum(isinstance(e, QAReport) for e in events) == 1


def test_annotator_accuracy_series_are_capped() -> None:
    from prometheus_client import CollectorRegistry

    from labelloop_qa.metrics import QAMetrics

    registry = CollectorRegistry()
    metrics = QAMetrics(registry, max_annotator_series=2)
    for who in ("a", "b", "c", "a"):
        metrics.set_annotator_accuracy(PROJECT, who, 0.9)
    assert (
        registry.get_sample_value(
            "labelloop_qa_annotator_accuracy_ratio", {"project": PROJECT, "annotator": "b"}
        )
        == 0.9
    )
    assert (
        registry.get_sample_value(
            "labelloop_qa_annotator_accuracy_ratio", {"project": PROJECT, "annotator": "c"}
        )
        is None
    )
    assert registry.get_sample_value("labelloop_qa_annotator_series_dropped_total") == 1
