"""The qa-scorer's use cases: load state, call the pure domain, store state, return events.

Handlers stay thin: each calls one method here and publishes what it returns. Every returned event
has a deterministic ``event_id``, so a redelivered message republishes duplicates that JetStream
drops.
"""

from __future__ import annotations

import io
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import numpy as np

from labelloop.events import (
    AnnotationsSubmitted,
    BatchCompleted,
    BatchCreated,
    ConsensusLabel,
    Event,
    LabelsReady,
    ModelTrained,
    QAReport,
    QualityAlertRaised,
    ReviewItem,
    ReviewRequested,
    deterministic_id,
    utc_now,
)
from labelloop.project import ProjectConfig, QualityConfig
from labelloop_qa.domain.review import model_contradictions
from labelloop_qa.domain.scoring import BatchOutcome, TaskInfo, score_batch
from labelloop_qa.ledger import Ledger, live_ratings
from labelloop_qa.metrics import QAMetrics

__all__ = ["AnnotationsPending", "BatchNotKnown", "QAScorer"]

_EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls for cls in (LabelsReady, QAReport, ReviewRequested, QualityAlertRaised)
}


_REVIEW_ITEMS_PER_MESSAGE = 200

TASKS_GRACE = timedelta(minutes=2)
"""A completion this young waits for its batch's tasks; an older one is scored without them.

Shorter than the retry budget of the BatchCompleted consumer (10 deliveries, backoff doubling from
0.5 s to a 60 s cap: about 3 minutes), so the fallback is reached before the dead letters."""


class BatchNotKnown(LookupError):
    """An annotation whose batch QA cannot tell yet (BatchCreated not processed): retry later."""


class AnnotationsPending(RuntimeError):
    """``BatchCompleted`` overtook some of its annotations (another consumer): retry later."""


ProjectLookup = Callable[[str], Awaitable[ProjectConfig | None]]


def _chunks(seq: list[Any], size: int) -> list[list[Any]]:
    return [seq[i : i + size] for i in range(0, len(seq), size)] or [[]]


class QAScorer:
    def __init__(
        self,
        ledger: Ledger,
        metrics: QAMetrics,
        project: ProjectLookup,
        *,
        bootstrap_samples: int = 200,
        labels_per_message: int = 500,
    ) -> None:
        self.ledger = ledger
        self.metrics = metrics
        self.project = project
        self.bootstrap_samples = bootstrap_samples
        self.labels_per_message = labels_per_message

    # ------------------------------------------------------------------ BatchCreated

    async def batch_created(self, event: BatchCreated) -> None:
        tasks = [
            TaskInfo(
                t.item_id,
                t.is_gold,
                t.gold_label if t.is_gold else None,
                dict(t.data),
            )
            for t in event.tasks
        ]
        await self.ledger.save_tasks(event.project, event.batch_id, event.kind, tasks)

    # ------------------------------------------------------------------ AnnotationsSubmitted

    async def annotations_submitted(self, event: AnnotationsSubmitted) -> list[Event]:
        project = event.project
        by_batch: dict[str, list[Any]] = {}
        reviews: dict[str, dict[str, Any]] = {}
        for a in event.annotations:
            review = await self.ledger.review_of(project, a.item_id) if a.is_expert else None
            if review is not None:
                reviews[a.item_id] = review
            batch = a.batch_id or await self.ledger.batch_of(project, a.item_id)
            batch = batch or (review or {}).get("batch")
            if batch is None:
                raise BatchNotKnown(f"no batch known for item {a.item_id!r} yet")
            by_batch.setdefault(batch, []).append(a)
        for batch, batch_annotations in sorted(by_batch.items()):
            counts = await self.ledger.add_annotations(project, batch, batch_annotations)
            self.metrics.annotations.labels("new").inc(counts.new)
            self.metrics.annotations.labels("updated").inc(counts.updated)
            self.metrics.annotations.labels("stale").inc(counts.stale)
        events: list[Event] = []
        for a in event.annotations:
            review = reviews.get(a.item_id)
            if review is None or a.deleted or a.cancelled or a.value is None:
                continue
            batch = review.get("batch") or a.batch_id or "review"
            label = ConsensusLabel(
                item_id=a.item_id,
                label=a.value,
                confidence=1.0,
                method="expert-review",
                n_annotations=1,
                reviewed=True,
                annotators=[a.annotator_id],
                batch_id=batch,
            )
            events.append(
                LabelsReady(
                    event_id=deterministic_id("qa.expert", project, a.annotation_id, a.updated_at),
                    project=project,
                    batch_id=batch,
                    labels=[label],
                )
            )
            self.metrics.labels.labels(project, "expert-review").inc()
        return events

    async def after_expert_release(
        self, event: AnnotationsSubmitted, published: list[Event]
    ) -> None:
        """Close the reviews the published expert labels answered (after publishing)."""
        for e in published:
            if isinstance(e, LabelsReady):
                for lab in e.labels:
                    await self.ledger.record_labels(
                        event.project, e.batch_id, {lab.item_id: {"l": lab.label, "r": True}}
                    )
                    await self.ledger.close_review(event.project, lab.item_id)

    # ------------------------------------------------------------------ BatchCompleted

    async def batch_completed(self, event: BatchCompleted) -> list[Event]:
        """The batch's events; computed once, then replayed from the stored outcome."""
        project, batch_id = event.project, event.batch_id
        stored = await self.ledger.load_outcome(project, batch_id)
        if stored is None:
            started = time.perf_counter()
            stored = await self._score(event)
            await self.ledger.save_outcome(project, batch_id, stored)
            self.metrics.duration.observe(time.perf_counter() - started)
            self._observe(project, stored)
        await self._apply(project, batch_id, stored)
        return [_EVENT_TYPES[e["type"]].model_validate(e["event"]) for e in stored["events"]]

    async def _score(self, event: BatchCompleted) -> dict[str, Any]:
        project, batch_id = event.project, event.batch_id
        config = await self.project(project)
        known_tasks = await self.ledger.load_tasks(project, batch_id)
        if known_tasks is None and utc_now() - event.occurred_at < TASKS_GRACE:
            # BatchCreated comes through another consumer too: scoring before it is stored
            # would release the gold items as ordinary consensus labels
            raise AnnotationsPending(f"batch {batch_id}: its tasks (BatchCreated) not stored yet")
        tasks = known_tasks or []
        records = await self.ledger.load_annotations(project, batch_id)
        if len(records) < event.n_annotations:
            # annotations and batch completions arrive on different consumers; scoring early
            # would freeze an incomplete batch, so let the message come back with backoff
            raise AnnotationsPending(
                f"batch {batch_id}: {len(records)} of {event.n_annotations} annotations stored"
            )
        ratings = live_ratings(records)
        crowd = {r.annotator_id for r in ratings if not r.is_expert}
        history = await self.ledger.history(project, crowd)
        outcome = score_batch(
            batch_id,
            ratings,
            tasks,
            config,
            history,
            n_boot=self.bootstrap_samples,
            random_state=int(deterministic_id(project, batch_id)[:8], 16),
        )
        # scored all the same when BatchCreated was never seen (no gold information then)
        outcome.report["details"]["tasks_known"] = known_tasks is not None
        events = self._events(project, batch_id, outcome)
        return {
            "events": [
                {"type": type(e).__name__, "event": e.model_dump(mode="json")} for e in events
            ],
            "tallies": {a: t.to_json() for a, t in outcome.tallies.items()},
            "reviews": {item.item_id: item.reason for item in outcome.review},
            "labels": {lab.item_id: {"l": lab.label, "r": lab.reviewed} for lab in outcome.labels},
            "annotators": {
                s.annotator_id: s.estimated_accuracy for s in outcome.report["annotators"]
            },
        }

    def _events(self, project: str, batch_id: str, outcome: BatchOutcome) -> list[Event]:
        events: list[Event] = []
        for n, chunk in enumerate(_chunks(outcome.labels, self.labels_per_message)):
            events.append(
                LabelsReady(
                    event_id=deterministic_id("qa.labels", project, batch_id, n),
                    project=project,
                    batch_id=batch_id,
                    labels=chunk,
                )
            )
        if outcome.review:
            # review items carry the item's data (up to 2 KB each): smaller messages
            size = min(self.labels_per_message, _REVIEW_ITEMS_PER_MESSAGE)
            for n, items in enumerate(_chunks(outcome.review, size)):
                events.append(
                    ReviewRequested(
                        event_id=deterministic_id("qa.review", project, batch_id, n),
                        project=project,
                        batch_id=batch_id,
                        items=items,
                    )
                )
        events.append(
            QAReport(
                event_id=deterministic_id("qa.report", project, batch_id),
                project=project,
                batch_id=batch_id,
                **outcome.report,
            )
        )
        if outcome.alert is not None:
            events.append(
                QualityAlertRaised(
                    event_id=deterministic_id("qa.alert", project, batch_id),
                    project=project,
                    batch_id=batch_id,
                    **outcome.alert,
                )
            )
        return events

    async def _apply(self, project: str, batch_id: str, stored: dict[str, Any]) -> None:
        """State changes of a scored batch; each is idempotent, so replays are harmless."""
        from labelloop_qa.domain.annotators import Tally

        tallies = {a: Tally.from_json(t) for a, t in stored["tallies"].items()}
        await self.ledger.apply_tallies(project, batch_id, tallies)
        await self.ledger.open_reviews(project, batch_id, stored["reviews"])
        await self.ledger.record_labels(project, batch_id, stored["labels"])

    def _observe(self, project: str, stored: dict[str, Any]) -> None:
        for e in stored["events"]:
            body = e["event"]
            if e["type"] == "QAReport":
                self.metrics.observe_report(project, body)
            elif e["type"] == "LabelsReady":
                for lab in body["labels"]:
                    self.metrics.labels.labels(project, lab["method"]).inc()
            elif e["type"] == "ReviewRequested":
                for item in body["items"]:
                    self.metrics.flagged.labels(project, item["reason"]).inc()
            elif e["type"] == "QualityAlertRaised":
                self.metrics.alerts.labels(project, body["metric"]).inc()
        for annotator, accuracy in sorted(stored["annotators"].items()):
            if accuracy is not None:
                self.metrics.set_annotator_accuracy(project, annotator, accuracy)

    # ------------------------------------------------------------------ ModelTrained

    async def model_trained(self, event: ModelTrained) -> list[Event]:
        """Released labels that the model's out-of-sample probabilities contradict."""
        if not event.oos_ref:
            return []
        data = await self.ledger.blobs.get(event.oos_ref)
        if data is None:
            raise FileNotFoundError(f"out-of-sample probabilities {event.oos_ref!r} not found")
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            item_ids = [str(x) for x in npz["item_ids"].tolist()]
            proba = np.asarray(npz["proba"], dtype=np.float64)
            classes = [str(x) for x in npz["classes"].tolist()]
        config = await self.project(event.project)
        quality = config.quality if config else QualityConfig()
        released = await self.ledger.released_labels(event.project, item_ids)
        rows = [
            i
            for i, item in enumerate(item_ids)
            if item in released
            and isinstance(released[item]["l"], str)
            and not released[item].get("r")
        ]
        found = model_contradictions(
            [item_ids[i] for i in rows],
            [released[item_ids[i]]["l"] for i in rows],
            proba[rows],
            classes,
            threshold=quality.model_contradiction_threshold,
        )
        if not found:
            return []
        items = [
            ReviewItem(
                item_id=c.item_id,
                reason="model_contradiction",
                candidate_label=c.label,
                confidence=c.model_probability,
            )
            for c in found
        ]
        for c in found:
            await self.ledger.open_reviews(
                event.project, released[c.item_id]["b"], {c.item_id: "model_contradiction"}
            )
            self.metrics.flagged.labels(event.project, "model_contradiction").inc()
        return [
            ReviewRequested(
                event_id=deterministic_id("qa.oos", event.project, event.model_version, n),
                project=event.project,
                items=chunk,
            )
            for n, chunk in enumerate(_chunks(items, self.labels_per_message))
        ]
