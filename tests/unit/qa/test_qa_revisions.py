"""Revisions: an answer updated, deleted or added after its round was scored re-scores the round.

The bridge publishes every change of an annotation as ``AnnotationsSubmitted``, also after the
batch's ``BatchCompleted``. Before revisions, QA ignored them: the dataset kept the old label and
the annotators' scores did not move (issue 16).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from labelloop.events import (
    Annotation,
    AnnotationSource,
    AnnotationsSubmitted,
    AnnotatorScore,
    BatchCompleted,
    CompletedTask,
    LabelsReady,
    QAReport,
)
from labelloop.runtime import Service
from labelloop.stores import MemoryStores
from labelloop.testing import InMemoryBus, in_memory
from labelloop_qa.app import build_app
from labelloop_qa.domain.annotators import Tally
from labelloop_qa.service import merge_annotations
from labelloop_qa.settings import QASettings

PROJECT = "qa-rev"
CLASSES = ["pos", "neg", "neu"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
CONFIG: dict[str, Any] = {
    "name": PROJECT,
    "task_type": "text_classification",
    "labels": {"classes": CLASSES},
    "data_fields": [{"name": "text", "kind": "text"}],
    "quality": {"consensus": "majority", "min_alpha": 0.0, "min_confidence": 0.6},
}
WHO = ["ann-a", "ann-b", "ann-c"]
# every item 2 or 3 of 3 in agreement: released at once, nothing held for review
VOTES = {
    "i0": ["pos", "pos", "neg"],
    "i1": ["neg", "neg", "neg"],
    "i2": ["neu", "neu", "neu"],
    "i3": ["pos", "pos", "pos"],
    "i4": ["neg", "neg", "pos"],
    "i5": ["neu", "neu", "neg"],
}


def annotation(
    item: str, who: str, value: str | None, *, batch: str = "b1", n: int = 0, **kw: Any
) -> Annotation:
    return Annotation(
        annotation_id=f"{batch}-{item}-{who}",
        item_id=item,
        annotator_id=who,
        value=value,
        batch_id=batch,
        lead_time_seconds=4.0,
        created_at=T0,
        updated_at=T0 + timedelta(seconds=n),
        source=AnnotationSource.SIMULATION,
        **kw,
    )


def crew(batch: str, votes: dict[str, list[str]] = VOTES) -> list[Annotation]:
    return [
        annotation(item, who, v, batch=batch)
        for item, item_votes in votes.items()
        for who, v in zip(WHO, item_votes, strict=False)
    ]


def completed(batch: str, number: int, anns: list[Annotation], required: int = 3) -> BatchCompleted:
    items = sorted({a.item_id for a in anns})
    return BatchCompleted(
        project=PROJECT,
        batch_id=batch,
        round=number,
        n_tasks=len(items),
        n_annotations=len(anns),
        tasks=[CompletedTask(item_id=i, annotations_required=required) for i in items],
        annotations=anns,
    )


def submitted(*anns: Annotation) -> AnnotationsSubmitted:
    """As the bridge publishes a change: its id from the annotation's id and state."""
    a = anns[0]
    return AnnotationsSubmitted(
        event_id=f"{a.annotation_id}-{a.updated_at.isoformat()}-{a.deleted}",
        project=PROJECT,
        annotations=list(anns),
    )


def service(stores: MemoryStores | None = None) -> Service:
    return build_app(QASettings(bootstrap_samples=0), stores=stores or MemoryStores())


async def configure(svc: Service) -> None:
    await svc.stores.projects.put(PROJECT, json.dumps(CONFIG).encode())


def ready(bus: InMemoryBus, number: int) -> list[LabelsReady]:
    return sorted(
        (e for e in bus.published(LabelsReady) if e.round == number), key=lambda e: e.revision
    )


def labels(event: LabelsReady) -> dict[str, Any]:
    return {lab.item_id: lab for lab in event.labels}


def scores(report: QAReport) -> dict[str, AnnotatorScore]:
    return {s.annotator_id: s for s in report.annotators}


async def test_an_update_after_scoring_changes_the_label_and_the_annotators_score() -> None:
    svc = service()
    async with in_memory(svc) as bus:
        await configure(svc)
        await bus.publish(completed("b1", 1, crew("b1")))
        (first,) = ready(bus, 1)
        assert labels(first)["i0"].label == "pos"
        # ann-b changes their mind on i0 after the round was scored: 2 of 3 now say neg
        await bus.publish(submitted(annotation("i0", "ann-b", "neg", n=60)))
        first, revised = ready(bus, 1)
        assert revised.revision == 1
        assert revised.event_id != first.event_id
        assert labels(revised)["i0"].label == "neg"
        assert labels(revised)["i0"].annotators == WHO
        assert {i: lab.label for i, lab in labels(revised).items() if i != "i0"} == {
            i: lab.label for i, lab in labels(first).items() if i != "i0"
        }
        await bus.publish(completed("b2", 2, crew("b2")))
        (after,) = bus.published(QAReport)[1:]

    # the same rounds scored with ann-b's final answer from the start: the annotators'
    # cumulative scores are the same (the old answer's contribution replaced, not added to)
    fixed = [
        a if a.annotation_id != "b1-i0-ann-b" else annotation("i0", "ann-b", "neg", n=60)
        for a in crew("b1")
    ]
    fresh = service()
    async with in_memory(fresh) as bus:
        await configure(fresh)
        await bus.publish(completed("b1", 1, fixed))
        await bus.publish(completed("b2", 2, crew("b2")))
        (_, expected) = bus.published(QAReport)
    assert scores(after) == scores(expected)
    assert scores(after)["ann-b"].n_annotations == 2 * len(VOTES)


async def test_the_corrected_score_differs_from_the_uncorrected_one() -> None:
    """The check above can fail: without the revision, round 2 reports other figures."""
    svc = service()
    async with in_memory(svc) as bus:
        await configure(svc)
        await bus.publish(completed("b1", 1, crew("b1")))
        await bus.publish(completed("b2", 2, crew("b2")))
        (_, uncorrected) = bus.published(QAReport)
    other = service()
    async with in_memory(other) as bus:
        await configure(other)
        await bus.publish(completed("b1", 1, crew("b1")))
        await bus.publish(submitted(annotation("i0", "ann-b", "neg", n=60)))
        await bus.publish(completed("b2", 2, crew("b2")))
        (_, corrected) = bus.published(QAReport)
    # i0 went from pos to neg: ann-a (pos) now disagrees, ann-c (neg) now agrees
    before, after = scores(uncorrected), scores(corrected)
    assert after["ann-a"].agreement_with_consensus < before["ann-a"].agreement_with_consensus  # type: ignore[operator]
    assert after["ann-c"].agreement_with_consensus > before["ann-c"].agreement_with_consensus  # type: ignore[operator]


async def test_a_delete_after_scoring_changes_a_label_or_withdraws_it() -> None:
    svc = service()
    async with in_memory(svc) as bus:
        await configure(svc)
        await bus.publish(completed("b1", 1, crew("b1")))
        # i4: the one dissenting answer goes; i2: every answer goes
        await bus.publish(
            submitted(annotation("i4", "ann-c", "pos", n=30, deleted=True)),
        )
        for who in WHO:
            await bus.publish(submitted(annotation("i2", who, "neu", n=40, deleted=True)))
        revisions = ready(bus, 1)
        assert [e.revision for e in revisions] == [0, 1, 2, 3, 4]
        last = revisions[-1]
        assert labels(last)["i4"].label == "neg"
        assert labels(last)["i4"].annotators == ["ann-a", "ann-b"]
        assert labels(last)["i4"].n_annotations == 2
        assert labels(last)["i4"].confidence == 1.0
        # with no answer left, i2's label is withdrawn
        assert "i2" not in labels(last)
        assert last.withdrawn == ["i2"]
        assert "i2" in labels(revisions[2])  # one of three answers deleted: still labeled


async def test_a_redelivered_or_older_change_publishes_nothing_new() -> None:
    svc = service()
    async with in_memory(svc) as bus:
        await configure(svc)
        await bus.publish(completed("b1", 1, crew("b1")))
        change = submitted(annotation("i0", "ann-b", "neg", n=60))
        await bus.publish(change)
        assert len(ready(bus, 1)) == 2
        await bus.publish(change)  # redelivered
        # a webhook racing a reconciliation pass: an older state arrives after the newer one
        await bus.publish(submitted(annotation("i0", "ann-b", "neu", n=30)))
        # the annotation as the batch already held it
        await bus.publish(submitted(annotation("i1", "ann-a", "neg")))
        assert len(ready(bus, 1)) == 2
        assert len({e.event_id for e in bus.published(LabelsReady)}) == 2


async def test_two_replicas_publish_one_revision() -> None:
    stores = MemoryStores()
    await stores.projects.put(PROJECT, json.dumps(CONFIG).encode())
    first, second = service(stores), service(stores)
    change = submitted(annotation("i0", "ann-b", "neg", n=60))
    async with in_memory(first) as bus_1, in_memory(second) as bus_2:
        await bus_1.publish(completed("b1", 1, crew("b1")))
        # the same change reaches both replicas (a redelivery after an ack timeout) at once
        await asyncio.gather(bus_1.publish(change), bus_2.publish(change))
        revisions = [e for e in (*ready(bus_1, 1), *ready(bus_2, 1)) if e.revision > 0]
    assert len(revisions) >= 1
    assert {e.event_id for e in revisions} == {revisions[0].event_id}
    contents = {e.model_dump_json(exclude={"occurred_at"}) for e in revisions}
    assert len(contents) == 1
    entry = await stores.state.get(f"qa.{PROJECT}.revised")
    assert entry is not None
    assert json.loads(entry.value)["1"]["revision"] == 1


async def test_an_extra_answer_from_a_second_person_counts_both() -> None:
    """Issue 16: two users answering a single-annotator task; the row showed ``[]`` and 0."""
    svc = service()
    single = {item: votes[:1] for item, votes in VOTES.items()}
    async with in_memory(svc) as bus:
        await configure(svc)
        await bus.publish(completed("b1", 1, crew("b1", single), required=1))
        assert labels(ready(bus, 1)[0])["i3"].annotators == ["ann-a"]
        await bus.publish(submitted(annotation("i3", "ann-b", "pos", n=10)))
        i3 = labels(ready(bus, 1)[-1])["i3"]
        assert (i3.label, i3.annotators, i3.n_annotations) == ("pos", ["ann-a", "ann-b"], 2)


async def test_two_answers_to_a_single_annotator_task_list_both_when_the_expert_skips() -> None:
    """Issue 16's row: two people disagree on a task that needed one answer, the item goes to
    review, the expert skips it, and the crowd's candidate is released: with both annotators
    and ``n_annotations`` 2, not ``[]`` and 0."""
    svc = service()
    anns = [annotation("i0", "ann-a", "pos"), annotation("i0", "ann-b", "neg")]
    anns += [annotation("i1", "ann-a", "neg")]
    async with in_memory(svc) as bus:
        await configure(svc)
        await bus.publish(completed("b1", 1, anns, required=1))
        assert ready(bus, 1) == []  # i0 is held for the expert
        skip = annotation("i0", "expert-1", None, batch="review-1", is_expert=True)
        await bus.publish(
            BatchCompleted(
                project=PROJECT,
                batch_id="review-1",
                round=1,
                n_tasks=1,
                n_annotations=1,
                kind="review",
                tasks=[CompletedTask(item_id="i0", annotations_required=1, is_review=True)],
                annotations=[skip],
            )
        )
        (final,) = ready(bus, 1)
    i0 = labels(final)["i0"]
    assert i0.method == "unreviewed"
    assert (i0.annotators, i0.n_annotations) == (["ann-a", "ann-b"], 2)


async def test_a_change_before_the_round_is_scored_or_settled_is_applied_once_it_is() -> None:
    """The change's consumer can overtake the completion's (and a round can wait for its
    review): the change waits, and becomes a revision once the round has its labels."""
    svc = service()
    async with in_memory(svc) as bus:
        await configure(svc)
        # published after the bridge's BatchCompleted was cut, but handled before QA scored it
        await bus.publish(submitted(annotation("i0", "ann-b", "neg", n=60)))
        # an annotation the completion holds anyway: waits, then changes nothing
        await bus.publish(submitted(annotation("i1", "ann-a", "neg")))
        assert bus.published(LabelsReady) == []
        await bus.publish(completed("b1", 1, crew("b1")))
        first, revised = ready(bus, 1)
        assert labels(first)["i0"].label == "pos"
        assert labels(revised)["i0"].label == "neg"
        assert await svc.stores.state.keys(f"qa.{PROJECT}.pending.") == []


async def test_a_revision_keeps_the_experts_answers() -> None:
    svc = service()
    votes = {**VOTES, "i9": ["pos", "neg", "neu"]}  # split three ways: to the expert
    async with in_memory(svc) as bus:
        await configure(svc)
        await bus.publish(completed("b1", 1, crew("b1", votes)))
        # a change while the round waits for its review
        await bus.publish(submitted(annotation("i0", "ann-b", "neg", n=60)))
        assert ready(bus, 1) == []
        answer = annotation("i9", "expert-1", "neu", batch="review-1", is_expert=True)
        await bus.publish(
            BatchCompleted(
                project=PROJECT,
                batch_id="review-1",
                round=1,
                n_tasks=1,
                n_annotations=1,
                kind="review",
                tasks=[CompletedTask(item_id="i9", annotations_required=1, is_review=True)],
                annotations=[answer],
            )
        )
        first, revised = ready(bus, 1)
        assert labels(first)["i9"].label == labels(revised)["i9"].label == "neu"
        assert labels(revised)["i9"].reviewed
        assert labels(revised)["i0"].label == "neg"


def test_the_latest_state_of_each_annotation_wins_whatever_the_order() -> None:
    old = annotation("i0", "ann-a", "pos")
    new = annotation("i0", "ann-a", "neg", n=5)
    gone = annotation("i0", "ann-a", "neg", n=5, deleted=True)
    assert merge_annotations([new], [old]) == merge_annotations([old], [new]) == [new]
    assert merge_annotations([new], [gone]) == merge_annotations([gone], [new]) == [gone]
    # a deletion published again, stamped later (a replay of the bridge's): no change
    again = annotation("i0", "ann-a", None, n=50, deleted=True)
    assert merge_annotations([gone], [again]) == [gone]


def test_a_tally_minus_its_contribution_is_what_it_was() -> None:
    base = Tally(3, 2, 1, 1, 1, 7.5, 3, {"pos": {"pos": 0.7, "neg": 0.3}})
    batch = Tally(2, 2, 2, 0, 0, 0.1, 1, {"pos": {"pos": 0.2}, "neg": {"neg": 1.0}})
    assert base.merged(batch).minus(batch) == base
    assert Tally().merged(batch).minus(batch).is_empty()
