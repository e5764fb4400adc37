"""The qa-scorer's use cases: score labeling rounds in their order, settle their reviews.

A completed labeling batch carries its tasks and annotations (``BatchCompleted``), so QA scores it
from that one event. Round *n* builds on the annotators' history after round *n - 1*, so rounds
are scored in their order (a :class:`~labelloop.sequencing.RoundSequencer`); a round that
finishes early waits, parked, for the one before it. Scoring a round publishes its ``QAReport``
and then either its ``LabelsReady`` (nothing doubtful) or a ``ReviewRequested`` for an expert; the
review batch's completion settles the held items and publishes the round's ``LabelsReady``. Each
round gets exactly one ``LabelsReady``, so the exporter knows when a round is done.

Every event id derives from the project and the round, and every record is written before the
events it leads to: a redelivered message, or a second replica, republishes the same events,
which JetStream drops.

**Revisions.** An answer updated, deleted or added after its round was scored (the bridge
publishes every change as ``AnnotationsSubmitted``, also after ``BatchCompleted``) re-scores the
round on the latest state of each annotation (:func:`merge_annotations`): consensus, agreement,
the annotators' tallies. The round's new contribution replaces its old one in every later
round's history (``RoundRecord.included``), so nothing is counted twice. It is published as a
``LabelsReady`` with ``revision`` k ≥ 1 that replaces the round's labels; an item with no answer
left is ``withdrawn``. Its id derives from the round and the digest of the annotations' state,
and revisions are committed by compare-and-swap (``qa.<project>.revised``): a redelivered
message, or a second replica, finds the same state and publishes nothing new. A revision asks
for no new expert review: an expert's answer stands, an item the re-score finds doubtful is
released as ``unreviewed`` with its confidence. A change to a round that has no final labels yet
(not scored, or under review) waits in KV until it has them (``labelloop_qa.store``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from labelloop.events import (
    Annotation,
    AnnotationsSubmitted,
    BatchCompleted,
    ConsensusLabel,
    Event,
    LabelsReady,
    LabelValue,
    QAReport,
    QualityAlertRaised,
    ReviewItem,
    ReviewRequested,
    deterministic_id,
)
from labelloop.project import ProjectConfig
from labelloop.sequencing import RoundSequencer
from labelloop.stores import Blobs, KeyValue
from labelloop_qa.domain.annotators import Tally
from labelloop_qa.domain.review import prediction_contradictions
from labelloop_qa.domain.scoring import Rating, TaskInfo, project_scores, score_batch
from labelloop_qa.metrics import QAMetrics
from labelloop_qa.store import (
    History,
    HistoryRecord,
    QAStore,
    Revised,
    RevisionRecord,
    RoundRecord,
)

__all__ = [
    "QAScorer",
    "annotations_digest",
    "live_ratings",
    "merge_annotations",
    "revised_labels",
]

CAS_ATTEMPTS = 50
"""Tries to commit a revision while other replicas commit theirs."""

log = logging.getLogger("labelloop.qa")

Publish = Callable[[Event], Awaitable[object]]
ProjectLookup = Callable[[str], Awaitable[ProjectConfig]]


def live_ratings(annotations: Iterable[Annotation]) -> list[Rating]:
    """Ratings to score: live annotations, the latest one per (item, annotator, expert role)."""
    latest: dict[tuple[str, str, bool], Annotation] = {}
    for a in annotations:
        if a.deleted or a.cancelled or a.value is None:
            continue
        key = (a.item_id, a.annotator_id, a.is_expert)
        cur = latest.get(key)
        if cur is None or (a.updated_at, a.annotation_id) > (cur.updated_at, cur.annotation_id):
            latest[key] = a
    ordered = sorted(latest.values(), key=lambda r: (r.item_id, r.annotator_id, r.is_expert))
    return [
        Rating(a.item_id, a.annotator_id, a.value, a.lead_time_seconds, a.is_expert)  # type: ignore[arg-type]
        for a in ordered
    ]


def merge_annotations(
    before: Iterable[Annotation], after: Iterable[Annotation]
) -> list[Annotation]:
    """The latest state of each annotation (by ``updated_at``; at the same time a deletion
    wins), sorted by annotation id: older states arriving late change nothing, and neither does
    a deletion seen again (the bridge stamps a deletion with the time it saw it)."""
    latest: dict[str, Annotation] = {}
    for a in (*before, *after):
        cur = latest.get(a.annotation_id)
        if cur is not None and cur.deleted and a.deleted:
            continue
        if cur is None or (a.updated_at, a.deleted) > (cur.updated_at, cur.deleted):
            latest[a.annotation_id] = a
    return [latest[k] for k in sorted(latest)]


def annotations_digest(annotations: Iterable[Annotation]) -> str:
    """Of the state of a round's annotations (their order and arrival time aside)."""
    return deterministic_id(
        *(
            (a.annotation_id, a.updated_at.isoformat(), a.deleted, a.cancelled, a.value)
            for a in sorted(annotations, key=lambda a: a.annotation_id)
        )
    )


def _voters(ratings: Iterable[Rating]) -> dict[str, list[str]]:
    """Item -> the crowd annotators who answered it (experts apart)."""
    out: dict[str, set[str]] = {}
    for r in ratings:
        if not r.is_expert:
            out.setdefault(r.item_id, set()).add(r.annotator_id)
    return {item: sorted(who) for item, who in out.items()}


def _contribution(tallies: dict[str, Tally]) -> HistoryRecord:
    return HistoryRecord(tallies={a: t.to_json() for a, t in sorted(tallies.items())})


def _replaced(history: History, old: HistoryRecord, new: HistoryRecord) -> History:
    """``history`` with a round's old contribution taken out and its new one added."""
    tallies = dict(history.tallies)
    for a, raw in old.tallies.items():
        tallies[a] = tallies.get(a, Tally()).minus(Tally.from_json(raw))
    for a, raw in new.tallies.items():
        tallies[a] = tallies.get(a, Tally()).merged(Tally.from_json(raw))
    return History({a: t for a, t in tallies.items() if not t.is_empty()}, set(history.flagged))


def _cumulative(history: dict[str, Tally], batch: dict[str, Tally]) -> dict[str, Tally]:
    out = dict(history)
    for annotator, tally in batch.items():
        out[annotator] = history.get(annotator, Tally()).merged(tally)
    return out


class QAScorer:
    def __init__(
        self,
        store: QAStore,
        *,
        kv: Callable[[], KeyValue],
        blobs: Callable[[], Blobs],
        publish: Publish,
        project: ProjectLookup,
        metrics: QAMetrics,
        bootstrap_samples: int = 200,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self._publish = publish
        self._project = project
        self.bootstrap_samples = bootstrap_samples
        self.rounds = RoundSequencer("qa-rounds", kv, blobs, self._score_round, area="qa")
        self._locks: dict[str, asyncio.Lock] = {}

    # ------------------------------------------------------------------ inputs

    async def batch_completed(self, event: BatchCompleted) -> str:
        """A labeling round is scored in its turn; a review batch settles its round."""
        if event.kind == "review":
            await self._settle(event)
            return "settled"
        return await self.rounds.offer(event.project, event.round, event.model_dump_json().encode())

    async def annotations_submitted(self, event: AnnotationsSubmitted) -> list[str]:
        """Annotations of rounds already settled re-score them; those of rounds without final
        labels yet wait for them (one outcome per batch the message touches)."""
        by_batch: dict[str, list[Annotation]] = {}
        for a in event.annotations:
            # an expert's answer belongs to a review, settled by the review batch's completion
            if a.batch_id is not None and not a.is_expert:
                by_batch.setdefault(a.batch_id, []).append(a)
        outcomes: list[str] = []
        for batch_id, changed in sorted(by_batch.items()):
            record = await self._revisable(event.project, batch_id)
            key = None
            if record is None:
                # write, then look again: the scorer writes the round's final, then looks here
                key = await self.store.put_pending(event.project, batch_id, event.event_id, changed)
                record = await self._revisable(event.project, batch_id)
            outcome = "pending"
            if record is not None:
                outcome = await self._revise(event.project, record, changed)
                if key is not None:
                    await self.store.drop_pending([key])
            self.metrics.annotations.labels(outcome).inc(len(changed))
            outcomes.append(outcome)
        return outcomes

    async def readmit(self, project: str, annotator_id: str) -> None:
        """An operator re-admits a flagged annotator: their history starts afresh next round."""
        await self.store.readmit(project, annotator_id)
        log.info("%s: annotator %s re-admitted from the next round on", project, annotator_id)

    # ------------------------------------------------------------------ scoring a round

    async def _score_round(self, project: str, number: int, payload: bytes) -> None:
        event = BatchCompleted.model_validate_json(payload)
        existing = await self.store.round(project, number)
        if existing is not None:
            await self.store.index_batch(project, existing.batch_id, number)
            await self._publish_round(existing)  # scored before: the same events again
            await self._apply_pending(project, existing)
            return
        config = await self._project(project)
        started = time.perf_counter()
        history, included = await self._history_after(project, number - 1)
        readmitted = await self.store.readmissions(project)
        for annotator in readmitted:
            # a fresh start: the old record would flag them again at once
            history.tallies.pop(annotator, None)
            history.flagged.discard(annotator)
        decided = await asyncio.to_thread(self._decide, config, event, history, None)
        if decided is None:  # someone is flagged for the first time: look at their earlier labels
            earlier = await self._earlier_labels(project, number)
            decided = await asyncio.to_thread(self._decide, config, event, history, earlier)
        assert decided is not None
        record, after = decided
        record = record.model_copy(
            update={"history": after.dump(), "included": included, "completed": event}
        )
        await self.store.save_round(project, record)
        await self.store.index_batch(project, event.batch_id, number)
        if readmitted:
            await self.store.clear_readmissions(project, readmitted)
        self.metrics.duration.observe(time.perf_counter() - started)
        self._observe(project, record)
        await self._publish_round(record)
        await self._apply_pending(project, record)

    def _decide(
        self,
        config: ProjectConfig,
        event: BatchCompleted,
        history: History,
        earlier: dict[str, ConsensusLabel] | None,
    ) -> tuple[RoundRecord, History] | None:
        """The whole QA decision on one round (pure: the same inputs give the same record).

        ``earlier`` (the labels earlier rounds released) is read only when an annotator is
        flagged for the first time: ``None`` from a call without them means "call again with
        them" (reading every earlier round for every round would make a round's cost grow with
        the campaign)."""
        project, batch_id, number = event.project, event.batch_id, event.round
        ratings = live_ratings(event.annotations)
        tasks = [
            TaskInfo(t.item_id, t.is_gold, t.gold_label if t.is_gold else None) for t in event.tasks
        ]
        outcome = score_batch(
            batch_id,
            ratings,
            tasks,
            config,
            history.tallies,
            n_boot=self.bootstrap_samples,
            random_state=int(deterministic_id(project, batch_id)[:8], 16),
        )
        labels = list(outcome.labels)
        review = list(outcome.review)
        origin = {item.item_id: batch_id for item in review}
        # the model that chose the batch predicted its items: a confident prediction the
        # consensus contradicts is a label to look at again
        predictions = {
            t.item_id: (t.prediction.label, t.prediction.score)
            for t in event.tasks
            if t.prediction is not None and t.prediction.score is not None and not t.is_gold
        }
        contradicted = prediction_contradictions(
            {lab.item_id: lab.label for lab in labels if not lab.reviewed and not lab.is_gold},
            predictions,
            threshold=config.quality.model_contradiction_threshold,
        )
        if contradicted:
            by_item = {lab.item_id: lab for lab in labels}
            for item_id, (model_label, probability) in sorted(contradicted.items()):
                lab = by_item[item_id]
                review.append(
                    ReviewItem(
                        item_id=item_id,
                        reason="model_contradiction",
                        candidate_label=lab.label,
                        confidence=lab.confidence,
                    )
                )
                origin[item_id] = batch_id
                log.info(
                    "%s: item %s labeled %s, the model said %s (p=%.2f): review",
                    project,
                    item_id,
                    lab.label,
                    model_label,
                    probability,
                )
            labels = [lab for lab in labels if lab.item_id not in contradicted]
        # the annotators over their whole history (not only this batch's crew); once flagged,
        # an annotator stays flagged (and gets no tasks) until an operator re-admits them
        tallies = _cumulative(history.tallies, outcome.tallies)
        flagged = history.flagged | {
            s.annotator_id for s in project_scores(config, tallies) if s.flagged
        }
        scores = project_scores(config, tallies, flagged)
        # annotators flagged for the first time with this round: labels of earlier rounds that
        # rest on their word alone go back to an expert
        newly = flagged - history.flagged
        if newly and earlier is None:
            return None
        in_review = {item.item_id for item in review}
        for item_id, lab in sorted((earlier or {}).items()):
            if (
                newly
                and lab.annotators
                and set(lab.annotators) <= newly
                and not lab.reviewed
                and not lab.is_gold
                and item_id not in in_review
            ):
                review.append(
                    ReviewItem(
                        item_id=item_id,
                        reason="flagged_annotator",
                        candidate_label=lab.label,
                        confidence=lab.confidence,
                    )
                )
                origin[item_id] = lab.batch_id or batch_id
        # earlier labels the retrained model contradicts out of sample (carried by the batch
        # from the sampler): an expert looks at them with this round's review. After the
        # flagged annotators' labels: a label resting on a spammer alone is withdrawn if the
        # expert skips it, a doubted one stands
        held = {item.item_id for item in review}
        for suspect in event.rechecks:
            if suspect.item_id in held:
                continue
            held.add(suspect.item_id)
            review.append(
                ReviewItem(
                    item_id=suspect.item_id,
                    reason="model_recheck",
                    candidate_label=suspect.label,
                    confidence=round(1.0 - suspect.probability, 6),
                )
            )
            origin[suspect.item_id] = suspect.batch_id or batch_id
        lead = [r.lead_time_seconds for r in ratings if r.lead_time_seconds is not None]
        report_fields = {**outcome.report, "items_flagged": len(review), "annotators": scores}
        report = QAReport(
            event_id=deterministic_id("qa.report", project, number),
            project=project,
            batch_id=batch_id,
            round=number,
            lead_time_seconds=float(sum(lead)),
            n_lead_times=len(lead),
            **report_fields,
        )
        alert = None
        if outcome.alert is not None:
            alert = QualityAlertRaised(
                event_id=deterministic_id("qa.alert", project, number),
                project=project,
                batch_id=batch_id,
                round=number,
                **outcome.alert,
            )
        request = None
        final = None
        if review:
            request = ReviewRequested(
                event_id=deterministic_id("qa.review", project, number),
                project=project,
                batch_id=batch_id,
                round=number,
                items=review,
            )
        else:
            final = self._labels_ready(report, labels, [])
        record = RoundRecord(
            round=number,
            batch_id=batch_id,
            labels=labels,
            review=review,
            origin=origin,
            report=report,
            alert=alert,
            request=request,
            final=final,
            contribution=_contribution(outcome.tallies),
        )
        return record, History(tallies, flagged)

    async def _earlier_labels(self, project: str, number: int) -> dict[str, ConsensusLabel]:
        """Labels released by earlier rounds, the latest per item (for re-reviews)."""
        out: dict[str, ConsensusLabel] = {}
        for earlier in range(1, number):
            record = await self.store.round(project, earlier)
            if record is None:
                continue
            released = record.final.labels if record.final is not None else record.labels
            for lab in released:
                out[lab.item_id] = lab
        return out

    # ------------------------------------------------------------------ settling a review

    async def _settle(self, event: BatchCompleted) -> None:
        project, number = event.project, event.round
        lock = self._locks.setdefault(project, asyncio.Lock())
        async with lock:
            record = await self.store.round(project, number)
            if record is None:
                # the review was requested by the round's record, written before the request
                raise LookupError(f"{project}: review of round {number} before its scoring")
            if record.final is None:
                config = await self._project(project)
                labels, withdrawn = settle_review(
                    record, live_ratings(event.annotations), list(config.labels.classes)
                )
                final = self._labels_ready(record.report, labels, withdrawn)
                record = record.model_copy(update={"final": final})
                await self.store.save_round(project, record)
                reviewed = sum(1 for lab in labels if lab.reviewed)
                self.metrics.labels.labels(project, "expert-review").inc(reviewed)
            assert record.final is not None
            await self._publish(record.final)
        await self._apply_pending(project, record)

    # ------------------------------------------------------------------ revising a round

    async def _revisable(self, project: str, batch_id: str) -> RoundRecord | None:
        """The record of the batch's round if it has its final labels (and the annotations a
        re-score needs), else ``None``."""
        number = await self.store.batch_round(project, batch_id)
        if number is None:
            return None
        record = await self.store.round(project, number)
        if record is None or record.final is None or record.completed is None:
            return None
        return record

    async def _apply_pending(self, project: str, record: RoundRecord) -> None:
        """Changes that arrived before the round had its final labels: a revision now."""
        if record.final is None or record.completed is None:
            return
        keys, annotations = await self.store.pending(project, record.batch_id)
        if not keys:
            return
        outcome = await self._revise(project, record, annotations)
        await self.store.drop_pending(keys)
        self.metrics.annotations.labels(outcome).inc(len(annotations))

    async def _history_after(self, project: str, number: int) -> tuple[History, dict[str, str]]:
        """The annotators' history after round ``number``, with every revised round's latest
        contribution in place of the one the record holds; and which revisions it holds."""
        history = await self.store.history(project, number)
        if number < 1:
            return history, {}
        record = await self.store.round(project, number)
        included = dict(record.included) if record is not None else {}
        _, revised = await self.store.revised(project)
        for r, latest in sorted(revised.items()):
            if r > number or included.get(str(r)) == latest.name:
                continue
            old = await self._contribution_of(project, r, included.get(str(r)))
            new = (await self.store.revision(latest.name)).contribution
            history = _replaced(history, old, new)
            included[str(r)] = latest.name
        return history, included

    async def _contribution_of(self, project: str, number: int, name: str | None) -> HistoryRecord:
        if name is not None:
            return (await self.store.revision(name)).contribution
        record = await self.store.round(project, number)
        if record is None:
            raise LookupError(f"QA record of {project}'s round {number} is missing")
        return record.contribution

    async def _revise(
        self, project: str, record: RoundRecord, annotations: list[Annotation]
    ) -> str:
        """Re-score a settled round if ``annotations`` change the state of its answers:
        ``revised``, or ``unchanged`` (a redelivery, an older state, a state already applied)."""
        number = record.round
        assert record.completed is not None
        lock = self._locks.setdefault(project, asyncio.Lock())
        async with lock:
            for _ in range(CAS_ATTEMPTS):
                seen, revised = await self.store.revised(project)
                latest = revised.get(number)
                base = await self.store.revision(latest.name) if latest is not None else None
                before = merge_annotations(
                    base.annotations if base is not None else record.completed.annotations, []
                )
                merged = merge_annotations(before, annotations)
                if merged == before:
                    if base is not None:
                        await self._publish(base.final)  # in case a crash came before it
                    return "unchanged"
                k = (latest.revision if latest is not None else 0) + 1
                digest = annotations_digest(merged)
                config = await self._project(project)
                history, _ = await self._history_after(project, number - 1)
                revision = await asyncio.to_thread(
                    self._rescore, config, record, merged, k, digest, history
                )
                # one name per attempt: a replica that loses the race never overwrites the winner's
                name = self.store.revision_name(
                    project, number, k, deterministic_id(digest, seen.revision if seen else 0)
                )
                await self.store.save_revision(name, revision)
                entry = Revised(revision=k, digest=digest, name=name)
                if await self.store.commit_revision(project, seen, {**revised, number: entry}):
                    log.info(
                        "%s: round %d revised (revision %d): %d labels, %d withdrawn",
                        project,
                        number,
                        k,
                        len(revision.final.labels),
                        len(revision.final.withdrawn),
                    )
                    await self._publish(revision.final)
                    return "revised"
            raise RuntimeError(f"{project}: revisions of round {number} kept racing: retry later")

    def _rescore(
        self,
        config: ProjectConfig,
        record: RoundRecord,
        annotations: list[Annotation],
        revision: int,
        digest: str,
        history: History,
    ) -> RevisionRecord:
        """The round scored again on its annotations' latest state (pure)."""
        assert record.completed is not None
        project, number = record.report.project, record.round
        event = record.completed.model_copy(update={"annotations": annotations, "rechecks": []})
        # earlier labels are not looked at again: a revision changes this round's labels only
        decided = self._decide(config, event, history, {})
        assert decided is not None
        rescored, _ = decided
        labels, withdrawn = revised_labels(record, rescored, live_ratings(annotations))
        report = rescored.report.model_copy(
            update={"event_id": deterministic_id("qa.report", project, number, revision, digest)}
        )
        final = self._labels_ready(report, labels, withdrawn).model_copy(
            update={
                "event_id": deterministic_id("qa.labels", project, number, revision, digest),
                "revision": revision,
            }
        )
        return RevisionRecord(
            round=number,
            revision=revision,
            digest=digest,
            annotations=annotations,
            contribution=rescored.contribution,
            report=report,
            final=final,
        )

    @staticmethod
    def _labels_ready(
        report: QAReport, labels: list[ConsensusLabel], withdrawn: list[str]
    ) -> LabelsReady:
        return LabelsReady(
            event_id=deterministic_id("qa.labels", report.project, report.round),
            project=report.project,
            batch_id=report.batch_id,
            round=report.round,
            labels=sorted(labels, key=lambda lab: lab.item_id),
            withdrawn=sorted(withdrawn),
            percent_agreement=report.percent_agreement,
            krippendorff_alpha=report.krippendorff_alpha,
            n_items=report.n_items,
        )

    # ------------------------------------------------------------------ publishing

    async def _publish_round(self, record: RoundRecord) -> None:
        """The round's events, at once: each goes to its own consumers, and whoever needs two
        of them (the sampler: the report and the model of a round) waits for both in its state."""
        events = [record.report, record.alert, record.request, record.final]
        await asyncio.gather(*(self._publish(e) for e in events if e is not None))

    async def observe(self, project: str) -> None:
        """The project's gauges from the latest scored round's record (every replica, now and
        then): what a replica scored last may be older than what another scored since."""
        latest = await self.rounds.next_round(project) - 1
        record = await self.store.round(project, latest) if latest >= 1 else None
        if record is not None:
            self._set_gauges(project, record)

    def _observe(self, project: str, record: RoundRecord) -> None:
        self.metrics.count_report(project, record.report.model_dump())
        for lab in record.labels:
            self.metrics.labels.labels(project, lab.method).inc()
        for item in record.review:
            self.metrics.flagged.labels(project, item.reason).inc()
        if record.alert is not None:
            self.metrics.alerts.labels(project, record.alert.metric).inc()
        self._set_gauges(project, record)

    def _set_gauges(self, project: str, record: RoundRecord) -> None:
        self.metrics.set_agreement(project, record.report.model_dump())
        for score in record.report.annotators:
            if score.estimated_accuracy is not None:
                self.metrics.set_annotator_accuracy(
                    project, score.annotator_id, score.estimated_accuracy
                )


def settle_review(
    record: RoundRecord, ratings: list[Rating], classes: list[str]
) -> tuple[list[ConsensusLabel], list[str]]:
    """The round's final labels once its review is answered, and the labels withdrawn.

    An item the expert labeled takes the expert's label. An item the expert skipped keeps the
    crowd's candidate with its (low) confidence, for the export policy to weigh; an earlier label
    that rested on a flagged annotator alone, skipped too, is withdrawn: nothing stands behind it;
    an earlier label the model doubted, skipped, stands as it was.
    """
    # the crowd behind an unreviewed candidate: however many answered, whatever was required
    voters = _voters(live_ratings(record.completed.annotations)) if record.completed else {}
    experts: dict[str, LabelValue] = {}
    for r in ratings:
        if r.is_expert and _valid(r.value, classes):
            experts[r.item_id] = r.value
    who = {r.item_id: r.annotator_id for r in ratings if r.is_expert}
    labels = list(record.labels)
    held = {lab.item_id for lab in labels}
    withdrawn: list[str] = []
    for item in record.review:
        batch = record.origin.get(item.item_id, record.batch_id)
        if item.item_id in experts:
            label = ConsensusLabel(
                item_id=item.item_id,
                label=experts[item.item_id],
                confidence=1.0,
                method="expert-review",
                n_annotations=1,
                reviewed=True,
                annotators=[who[item.item_id]],
                batch_id=batch,
            )
        elif item.reason == "model_recheck":
            continue  # skipped: the earlier label stands as it was released
        elif item.reason == "flagged_annotator" or item.candidate_label is None:
            if batch != record.batch_id:
                withdrawn.append(item.item_id)
            continue
        else:
            crowd = voters.get(item.item_id, []) if batch == record.batch_id else []
            label = ConsensusLabel(
                item_id=item.item_id,
                label=item.candidate_label,
                confidence=max(0.0, min(1.0, item.confidence or 0.0)),
                method="unreviewed",
                n_annotations=len(crowd),
                annotators=crowd,
                batch_id=batch,
            )
        if item.item_id in held:
            labels = [lab for lab in labels if lab.item_id != item.item_id]
        labels.append(label)
    return labels, withdrawn


def revised_labels(
    record: RoundRecord, rescored: RoundRecord, ratings: list[Rating]
) -> tuple[list[ConsensusLabel], list[str]]:
    """A revised round's labels (all of them) and withdrawn items, from its final labels and
    its batch scored again.

    An expert's answer stands, and so do corrections of earlier rounds' labels the round
    released. Each other item of the batch takes the re-scored label; an item the re-score would
    send to review is released as ``unreviewed`` with its candidate and confidence (a revision
    asks for no new review); an item nobody answers any more is withdrawn.
    """
    assert record.final is not None
    assert record.completed is not None
    batch = record.batch_id
    voters = _voters(ratings)
    rescored_labels = {lab.item_id: lab for lab in rescored.labels}
    doubtful = {item.item_id: item for item in rescored.review}
    labels: list[ConsensusLabel] = []
    withdrawn = set(record.final.withdrawn)
    for lab in record.final.labels:
        if (lab.batch_id or batch) != batch or lab.reviewed:
            labels.append(lab)
    settled = {lab.item_id for lab in labels}
    mine = {t.item_id for t in record.completed.tasks} | {
        lab.item_id for lab in record.final.labels if (lab.batch_id or batch) == batch
    }
    for item_id in sorted(mine - settled):
        label = rescored_labels.get(item_id)
        review = doubtful.get(item_id)
        if label is None and review is not None and review.candidate_label is not None:
            crowd = voters.get(item_id, [])
            label = ConsensusLabel(
                item_id=item_id,
                label=review.candidate_label,
                confidence=max(0.0, min(1.0, review.confidence or 0.0)),
                method="unreviewed",
                n_annotations=len(crowd),
                annotators=crowd,
                batch_id=batch,
            )
        if label is None:
            withdrawn.add(item_id)
        else:
            labels.append(label)
            withdrawn.discard(item_id)
    return labels, sorted(withdrawn)


def _valid(value: Any, classes: list[str]) -> bool:
    if isinstance(value, str):
        return value in classes
    if isinstance(value, list):
        return all(v in classes for v in value if isinstance(v, str))
    return value is not None
