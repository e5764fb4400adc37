"""qa-scorer handlers on the in-memory bus: completed batches in, rounds scored in order."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from labelloop.events import (
    Annotation,
    AnnotationSource,
    BatchCompleted,
    CompletedTask,
    DeadLetter,
    LabelsReady,
    Prediction,
    QAReport,
    QualityAlertRaised,
    ReadmitAnnotator,
    ReviewRequested,
)
from labelloop.runtime import Service
from labelloop.stores import MemoryStores
from labelloop.testing import InMemoryBus, in_memory
from labelloop_qa.app import build_app
from labelloop_qa.domain import agreement as ag
from labelloop_qa.domain.ratings import Ratings
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
    item: str, who: str, value: str | None, *, batch: str = "b1", n: int = 0, **kw: Any
) -> Annotation:
    return Annotation(
        annotation_id=kw.pop("annotation_id", f"{batch}-{item}-{who}"),
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


def crew_annotations(batch: str = "b1", votes: dict[str, list[str]] = VOTES) -> list[Annotation]:
    return [
        annotation(item, who, v, batch=batch)
        for item, item_votes in votes.items()
        for who, v in zip(WHO, item_votes, strict=True)
    ]


def completed(
    batch: str = "b1",
    number: int = 1,
    annotations: list[Annotation] | None = None,
    tasks: list[CompletedTask] | None = None,
    kind: str = "labeling",
) -> BatchCompleted:
    anns = crew_annotations(batch) if annotations is None else annotations
    items = sorted({a.item_id for a in anns})
    return BatchCompleted(
        project=PROJECT,
        batch_id=batch,
        round=number,
        n_tasks=len(items),
        n_annotations=len(anns),
        kind=kind,  # type: ignore[arg-type]
        tasks=tasks
        if tasks is not None
        else [CompletedTask(item_id=i, annotations_required=3) for i in items],
        annotations=anns,
    )


def review_completed(number: int, answers: dict[str, str | None]) -> BatchCompleted:
    anns = [
        annotation(item, "expert-1", value, batch=f"review-{number}", is_expert=True)
        for item, value in answers.items()
    ]
    return BatchCompleted(
        project=PROJECT,
        batch_id=f"review-{number}",
        round=number,
        n_tasks=len(answers),
        n_annotations=len(anns),
        kind="review",
        tasks=[CompletedTask(item_id=i, annotations_required=1, is_review=True) for i in answers],
        annotations=anns,
    )


async def configure(svc: Service, config: dict[str, Any] = CONFIG) -> None:
    """Store the project config where ``Service.project`` reads it (``labelloop project apply``)."""
    await svc.stores.projects.put(PROJECT, json.dumps(config).encode())


def service() -> Service:
    return build_app(QASettings(bootstrap_samples=50), stores=MemoryStores())


def labels_of(bus: InMemoryBus, number: int) -> dict[str, Any]:
    (ready,) = [e for e in bus.published(LabelsReady) if e.round == number]
    return {lab.item_id: lab for lab in ready.labels}


async def test_a_round_gives_the_pure_functions_figures_and_holds_doubtful_items() -> None:
    svc = service()
    async with in_memory(svc) as bus:
        await configure(svc)
        await bus.publish(completed())
        (report,) = bus.published(QAReport)
        (review,) = bus.published(ReviewRequested)
        # the round waits for its review: no labels yet
        assert bus.published(LabelsReady) == []

    r = Ratings.from_records(
        [a.item_id for a in crew_annotations()],
        [a.annotator_id for a in crew_annotations()],
        [a.value for a in crew_annotations()],
        classes=CLASSES,
    )
    summary = ag.summarize(r, n_boot=0)
    assert report.round == 1
    assert report.krippendorff_alpha == summary.krippendorff_alpha
    assert report.fleiss_kappa == summary.fleiss_kappa
    assert report.cohen_kappa_mean == summary.cohen_kappa_mean
    assert report.gwet_ac1 == summary.gwet_ac1
    assert report.percent_agreement == summary.percent_agreement
    assert report.n_annotations == 30
    assert report.n_items == 10
    assert report.items_flagged == 2
    assert report.lead_time_seconds == pytest.approx(120.0)
    assert report.n_lead_times == 30
    assert report.krippendorff_alpha_ci is not None
    assert {s.annotator_id for s in report.annotators} == set(WHO)
    assert review.round == 1
    assert {item.item_id for item in review.items} == {"i8", "i9"}
    assert {item.reason for item in review.items} == {"disagreement"}


async def test_the_expert_review_settles_the_round_in_one_labels_ready() -> None:
    svc = service()
    async with in_memory(svc) as bus:
        await configure(svc)
        await bus.publish(completed())
        await bus.publish(review_completed(1, {"i8": "neu", "i9": None}))
        released = labels_of(bus, 1)
        # settling again (a redelivery) changes nothing
        await bus.publish(review_completed(1, {"i8": "pos", "i9": "pos"}))
        assert labels_of(bus, 1) == released
    assert set(released) == {f"i{k}" for k in range(10)}
    assert released["i1"].label == "neg"
    assert released["i1"].confidence == pytest.approx(2 / 3)
    assert released["i0"].annotators == WHO
    assert released["i8"].label == "neu"
    assert released["i8"].reviewed
    assert released["i8"].method == "expert-review"
    assert released["i8"].batch_id == "b1"
    # the expert skipped i9: the crowd's candidate stands with its confidence, unreviewed
    assert released["i9"].method == "unreviewed"
    assert not released["i9"].reviewed
    assert released["i9"].confidence < 0.6


async def test_a_round_with_nothing_doubtful_is_released_at_once() -> None:
    svc = service()
    clear = {f"i{k}": [CLASSES[k % 3]] * 3 for k in range(6)}
    async with in_memory(svc) as bus:
        await configure(svc)
        await bus.publish(completed(annotations=crew_annotations(votes=clear)))
        assert bus.published(ReviewRequested) == []
        released = labels_of(bus, 1)
    assert set(released) == set(clear)
    assert all(lab.batch_id == "b1" and lab.method == "majority" for lab in released.values())


async def _rounds_in(order: list[int]) -> list[LabelsReady]:
    """Three rounds of a Dawid-Skene project, completed in ``order``."""
    config = {**CONFIG, "quality": {**CONFIG["quality"], "consensus": "dawid-skene"}}
    rng = np.random.default_rng(3)
    rounds = {}
    for number in (1, 2, 3):
        votes = {
            f"r{number}-{k}": [CLASSES[int(v)] for v in rng.integers(0, 3, size=3)]
            for k in range(12)
        }
        rounds[number] = completed(f"b{number}", number, crew_annotations(f"b{number}", votes))
    svc = service()
    async with in_memory(svc) as bus:
        await configure(svc, config)
        for number in order:
            await bus.publish(rounds[number])
        reports = bus.published(QAReport)
        assert [r.round for r in reports] == [1, 2, 3], "rounds are scored in their order"
        for number in (1, 2, 3):
            (request,) = [e for e in bus.published(ReviewRequested) if e.round == number]
            answers: dict[str, str | None] = {i.item_id: "pos" for i in request.items}
            await bus.publish(review_completed(number, answers))
        return sorted(bus.published(LabelsReady), key=lambda e: e.round)


async def test_rounds_that_finish_out_of_order_are_scored_as_if_in_order() -> None:
    in_order = await _rounds_in([1, 2, 3])
    reversed_ = await _rounds_in([3, 2, 1])
    shuffled = await _rounds_in([2, 3, 1])
    assert [e.model_dump(exclude={"occurred_at"}) for e in reversed_] == [
        e.model_dump(exclude={"occurred_at"}) for e in in_order
    ]
    assert [e.labels for e in shuffled] == [e.labels for e in in_order]


async def test_a_round_parked_for_an_earlier_one_publishes_nothing_yet() -> None:
    svc = service()
    async with in_memory(svc) as bus:
        await configure(svc)
        await bus.publish(completed("b2", 2, crew_annotations("b2")))
        assert bus.published(QAReport) == []
        assert await svc.state.get("seq.qa-rounds.qa-demo.queued.2") is not None
        await bus.publish(completed("b1", 1))
        assert [r.round for r in bus.published(QAReport)] == [1, 2]
        assert await svc.state.get("seq.qa-rounds.qa-demo.queued.2") is None


async def test_replayed_completion_publishes_identical_events() -> None:
    svc = service()
    async with in_memory(svc) as bus:
        await configure(svc)
        await bus.publish(completed())
        (first,) = bus.published(QAReport)
        stored = dict(svc.stores.artifacts._data)  # type: ignore[attr-defined]
        await bus.publish(completed())
        await bus.publish(completed())
        # the replays published nothing new: the round is done
        assert bus.published(QAReport) == [first]
        assert dict(svc.stores.artifacts._data) == stored  # type: ignore[attr-defined]


async def test_the_latest_state_of_each_annotation_counts() -> None:
    svc = service()
    changes = [
        # i8: ann-b changes their mind to pos (newer), then a stale older copy arrives
        annotation("i8", "ann-b", "pos", n=10, annotation_id="x1"),
        annotation("i8", "ann-b", "neu", n=5, annotation_id="x2"),
        # i9: ann-a deletes, ann-b cancels -> one rating left
        annotation("i9", "ann-a", "neu", n=10, deleted=True, annotation_id="b1-i9-ann-a"),
        annotation("i9", "ann-b", None, n=10, cancelled=True, annotation_id="b1-i9-ann-b"),
    ]
    base = [
        a
        for a in crew_annotations()
        if (a.item_id, a.annotator_id) not in {("i8", "ann-b"), ("i9", "ann-a"), ("i9", "ann-b")}
    ]
    async with in_memory(svc) as bus:
        await configure(svc)
        await bus.publish(completed(annotations=base + changes))
        (report,) = bus.published(QAReport)
        assert bus.published(ReviewRequested) == []  # i8 2-1 for pos, i9 one rating: clear
        released = labels_of(bus, 1)
    assert released["i8"].label == "pos"
    assert released["i8"].n_annotations == 3
    assert released["i9"].label == "neg"
    assert released["i9"].n_annotations == 1
    assert report.n_annotations == 28


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
        await bus.publish(completed("b2", 1, noisy))
        (alert,) = bus.published(QualityAlertRaised)
        (report,) = bus.published(QAReport)
    assert report.passed is False
    assert alert.metric == "krippendorff_alpha"
    assert alert.round == 1
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


async def test_a_confident_prediction_the_consensus_contradicts_goes_to_review() -> None:
    svc = service()
    clear = {f"i{k}": [CLASSES[k % 3]] * 3 for k in range(4)}
    predictions = {
        "i0": Prediction(label="neg", score=0.97),  # labelled pos: contradicted, confident
        "i1": Prediction(label="pos", score=0.6),  # labelled neg: not confident enough
        "i2": Prediction(label="neu", score=0.99),  # agrees
    }
    tasks = [
        CompletedTask(item_id=i, annotations_required=3, prediction=predictions.get(i))
        for i in clear
    ]
    async with in_memory(svc) as bus:
        await configure(svc)
        await bus.publish(completed(annotations=crew_annotations(votes=clear), tasks=tasks))
        (request,) = bus.published(ReviewRequested)
    assert [(i.item_id, i.reason, i.candidate_label) for i in request.items] == [
        ("i0", "model_contradiction", "pos")
    ]


async def test_gold_answers_come_from_the_completed_tasks() -> None:
    svc = service()
    clear = {f"i{k}": [CLASSES[k % 3]] * 3 for k in range(8)}
    tasks = [
        CompletedTask(
            item_id=i,
            annotations_required=3,
            is_gold=i == "i0",
            gold_label="neu" if i == "i0" else None,
        )
        for i in clear
    ]
    async with in_memory(svc) as bus:
        await configure(svc)
        await bus.publish(completed(annotations=crew_annotations(votes=clear), tasks=tasks))
        released = labels_of(bus, 1)
        (report,) = bus.published(QAReport)
    # everyone said "pos" on i0, whose known answer is "neu"
    assert released["i0"].label == "neu"
    assert released["i0"].is_gold
    assert released["i0"].method == "gold"
    assert report.gold_accuracy == 0.0
    assert {s.gold_accuracy for s in report.annotators} == {0.0}


SPAM_CONFIG: dict[str, Any] = {
    **CONFIG,
    "quality": {"consensus": "dawid-skene", "min_alpha": 0.0, "min_confidence": 0.0},
}


def _spam_round(number: int, spammer_alone: list[str], n_items: int = 12) -> BatchCompleted:
    """Three good annotators agree on ``n_items`` items; the spammer answers all of them at
    random, and alone on ``spammer_alone``."""
    rng = np.random.default_rng(number)
    anns = []
    for k in range(n_items):
        item = f"r{number}-{k}"
        truth = CLASSES[k % 3]
        for who in WHO:
            anns.append(annotation(item, who, truth, batch=f"b{number}"))
        anns.append(annotation(item, "spam", CLASSES[int(rng.integers(3))], batch=f"b{number}"))
    for item in spammer_alone:
        anns.append(annotation(item, "spam", CLASSES[int(rng.integers(3))], batch=f"b{number}"))
    return completed(f"b{number}", number, anns)


async def test_a_flagged_annotator_stays_flagged_and_their_lone_labels_are_reviewed() -> None:
    svc = service()
    async with in_memory(svc) as bus:
        await configure(svc, SPAM_CONFIG)
        # round 1: too little evidence to flag anyone; "lone-1" rests on the spammer alone
        await bus.publish(_spam_round(1, ["lone-1"], n_items=6))
        (first,) = bus.published(QAReport)
        assert not any(s.flagged for s in first.annotators)
        labels_of(bus, 1)  # nothing doubtful at min_confidence 0: released at once
        # round 2: the spammer is caught; their earlier lone label goes back to an expert
        await bus.publish(_spam_round(2, []))
        second = next(r for r in bus.published(QAReport) if r.round == 2)
        assert {s.annotator_id for s in second.annotators if s.flagged} == {"spam"}
        (request,) = bus.published(ReviewRequested)
        assert [(i.item_id, i.reason) for i in request.items] == [("lone-1", "flagged_annotator")]
        # the expert skips it: the label is withdrawn
        await bus.publish(review_completed(2, {"lone-1": None}))
        (ready,) = [e for e in bus.published(LabelsReady) if e.round == 2]
        assert ready.withdrawn == ["lone-1"]
        # round 3, without the spammer (excluded): still flagged, and listed
        clean = completed("b3", 3, crew_annotations("b3"))
        await bus.publish(clean)
        third = next(r for r in bus.published(QAReport) if r.round == 3)
        assert {s.annotator_id for s in third.annotators if s.flagged} == {"spam"}


async def test_a_readmitted_annotator_starts_afresh() -> None:
    svc = service()
    scorer_app = svc
    async with in_memory(scorer_app) as bus:
        await configure(svc, SPAM_CONFIG)
        await bus.publish(_spam_round(1, []))
        await bus.publish(_spam_round(2, []))
        report = next(r for r in bus.published(QAReport) if r.round == 2)
        assert any(s.annotator_id == "spam" and s.flagged for s in report.annotators)
        await bus.publish(ReadmitAnnotator(project=PROJECT, annotator_id="spam"))
        await bus.publish(completed("b3", 3, crew_annotations("b3")))
        third = next(r for r in bus.published(QAReport) if r.round == 3)
        assert "spam" not in {s.annotator_id for s in third.annotators}


async def test_a_completion_for_an_unknown_project_is_a_dead_letter() -> None:
    svc = service()
    async with in_memory(svc) as bus:
        await bus.publish(completed())
        (letter,) = bus.published(DeadLetter)
        assert "unknown project" in letter.reason
        assert bus.published(QAReport) == []


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


async def test_labels_the_model_doubts_go_to_the_expert_with_the_next_round() -> None:
    """Round 2 carries two of round 1's labels the retrained model contradicts: they are
    reviewed with round 2; the expert's answer replaces one, a skip leaves the other as it was."""
    from labelloop.events import SuspectLabel

    svc = service()
    clear = {f"i{k}": [CLASSES[k % 3]] * 3 for k in range(6)}
    later = {f"j{k}": [CLASSES[k % 3]] * 3 for k in range(6)}
    doubts = [
        SuspectLabel(item_id="i0", label="pos", model_label="neg", probability=0.97, batch_id="b1"),
        SuspectLabel(item_id="i1", label="neg", model_label="neu", probability=0.93, batch_id="b1"),
    ]
    async with in_memory(svc) as bus:
        await configure(svc)
        await bus.publish(completed(annotations=crew_annotations(votes=clear)))
        assert labels_of(bus, 1)["i0"].label == "pos"
        round2 = completed("b2", 2, annotations=crew_annotations("b2", votes=later))
        await bus.publish(round2.model_copy(update={"rechecks": doubts}))
        (review,) = bus.published(ReviewRequested)
        assert review.round == 2
        assert [(i.item_id, i.reason, i.candidate_label) for i in review.items] == [
            ("i0", "model_recheck", "pos"),
            ("i1", "model_recheck", "neg"),
        ]
        assert [e for e in bus.published(LabelsReady) if e.round == 2] == []  # held for review
        await bus.publish(review_completed(2, {"i0": "neg", "i1": None}))
        released = labels_of(bus, 2)
    assert set(released) == set(later) | {"i0"}  # i1 skipped: round 1's label stands
    assert released["i0"].label == "neg"
    assert released["i0"].reviewed
    assert released["i0"].batch_id == "b1"


async def test_a_doubted_label_that_rests_on_a_newly_flagged_spammer_is_withdrawn_if_skipped() -> (
    None
):
    """The model doubts "lone-1" too, but its label rests on the spammer QA flags with this
    round: it is reviewed as the flagged annotator's, and withdrawn when the expert skips it."""
    from labelloop.events import SuspectLabel

    svc = service()
    async with in_memory(svc) as bus:
        await configure(svc, SPAM_CONFIG)
        await bus.publish(_spam_round(1, ["lone-1"], n_items=6))
        doubt = SuspectLabel(item_id="lone-1", label="pos", model_label="neg", probability=0.95)
        await bus.publish(_spam_round(2, []).model_copy(update={"rechecks": [doubt]}))
        (request,) = bus.published(ReviewRequested)
        assert [(i.item_id, i.reason) for i in request.items] == [("lone-1", "flagged_annotator")]
        await bus.publish(review_completed(2, {"lone-1": None}))
        (ready,) = [e for e in bus.published(LabelsReady) if e.round == 2]
        assert ready.withdrawn == ["lone-1"]


async def test_a_configured_projects_gate_counters_exist_at_zero_before_its_first_batch() -> None:
    """``increase()`` sees a project's first failed batch only against an earlier 0 sample."""
    stores = MemoryStores()
    await stores.projects.put(PROJECT, json.dumps(CONFIG).encode())
    svc = build_app(QASettings(bootstrap_samples=50), stores=stores)
    async with in_memory(svc):
        for outcome in ("passed", "failed", "unmeasured"):
            labels = {"project": PROJECT, "outcome": outcome}
            assert svc.registry.get_sample_value("labelloop_qa_batches_scored_total", labels) == 0


async def test_every_replica_reports_the_latest_rounds_agreement_not_its_own_last() -> None:
    """Two replicas share the state; each scored one round. A replica's gauge followed what it
    scored itself (2026-12-01: "agreement of the last batch" was a max across replicas); now
    every replica sets it from the latest round's record."""
    stores = MemoryStores()
    await stores.projects.put(PROJECT, json.dumps(CONFIG).encode())
    first = build_app(QASettings(bootstrap_samples=50), stores=stores)
    second = build_app(QASettings(bootstrap_samples=50), stores=stores)
    split = {item: [votes[0], votes[0], votes[-1]] for item, votes in VOTES.items()}

    def alpha(svc: Service) -> float | None:
        labels = {"project": PROJECT, "coefficient": "krippendorff_alpha"}
        return svc.registry.get_sample_value("labelloop_qa_batch_agreement", labels)

    async with in_memory(first) as bus_1, in_memory(second) as bus_2:
        await bus_1.publish(completed("b1", 1, crew_annotations("b1")))
        await bus_2.publish(completed("b2", 2, crew_annotations("b2", split)))
        (report_1,) = bus_1.published(QAReport)
        (report_2,) = bus_2.published(QAReport)
        assert report_1.krippendorff_alpha != report_2.krippendorff_alpha
        assert alpha(first) == report_1.krippendorff_alpha  # what it scored itself
        await first.run_periodic()
        assert alpha(first) == alpha(second) == report_2.krippendorff_alpha
