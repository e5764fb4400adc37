"""What a labeling campaign looks like from the bus: a view folded from the events alone.

``labelloop status`` and ``labelloop demo`` read the streams from their start and fold every
event into a ``CampaignView`` per project. No service's private state is read: events are the
contract, so any tool can rebuild the same picture.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import statistics
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.js.api import ConsumerConfig, DeliverPolicy

from labelloop.artifacts import nats_artifacts
from labelloop.events import (
    ALL_EVENTS,
    AnnotationsSubmitted,
    BatchCompleted,
    BatchCreated,
    BudgetExhausted,
    DatasetExported,
    DeadLetter,
    Event,
    ItemsIngested,
    ItemsRejected,
    ItemsSubmitted,
    LabelingConverged,
    LabelsReady,
    ModelTrained,
    ProjectConfigured,
    QAReport,
    QualityAlertRaised,
    ReadmitAnnotator,
    RequestExport,
    RequestSampling,
    RequestTraining,
    ReviewRequested,
)
from labelloop.payloads import PayloadMissing, resolve
from labelloop.project import ProjectConfig
from labelloop.stores import Blobs
from labelloop.streams import Namespace

__all__ = [
    "AnnotatorFeedback",
    "BatchView",
    "CampaignView",
    "CampaignWatcher",
    "fold",
    "latest_dataset",
]

_MODEL_STRATEGIES = frozenset({"least_confidence", "margin", "entropy", "hybrid"})

WATCHED: tuple[type[Event], ...] = tuple(
    cls
    for cls in ALL_EVENTS
    # inputs and commands say what was asked for, not what happened
    if cls
    not in (
        ProjectConfigured,
        ItemsSubmitted,
        RequestExport,
        RequestTraining,
        RequestSampling,
        ReadmitAnnotator,
    )
)


@dataclass
class BatchView:
    batch_id: str
    round: int
    kind: str
    strategy: str
    n_tasks: int
    n_gold: int
    annotations_required: int
    created: float
    model_version: str | None
    items: list[str] = field(default_factory=list)
    completed: float | None = None
    annotations: set[str] = field(default_factory=set)
    report: QAReport | None = None


@dataclass(frozen=True)
class AnnotatorFeedback:
    annotator_id: str
    annotations: int
    gold_accuracy: float | None
    gold_n: int
    estimated_accuracy: float | None
    agreement: float | None
    trend: list[tuple[int, float]]
    """(round, estimated accuracy after it)."""
    confusions: list[tuple[str, str, float]]
    """(truth, given, soft count), most frequent first."""
    flagged: bool


@dataclass
class CampaignView:
    """Everything the bus says about one project so far."""

    project: str
    items_ingested: int = 0
    items_rejected: int = 0
    duplicates: int = 0
    batches: dict[str, BatchView] = field(default_factory=dict)
    completed_early: dict[str, float] = field(default_factory=dict)
    """Batches whose ``BatchCompleted`` was read before their ``BatchCreated`` (each event type
    is read by a consumer of its own, so the two can come in either order): when it came."""
    annotations: dict[str, tuple[str, float | None, str]] = field(default_factory=dict)
    """annotation id -> (annotator, lead time, item id); updates replace, deletions remove."""
    labeled_items: dict[str, str] = field(default_factory=dict)
    """item id -> the label QA released last (gold items excluded; withdrawn ones removed)."""
    label_confidence: dict[str, float] = field(default_factory=dict)
    gold_items: set[str] = field(default_factory=set)
    external_ids: dict[str, str] = field(default_factory=dict)
    """item id -> the producer's own id, where the producer gave one."""
    reports: list[QAReport] = field(default_factory=list)
    alerts: list[QualityAlertRaised] = field(default_factory=list)
    review_items: int = 0
    review_reasons: dict[str, int] = field(default_factory=dict)
    """Why items went to expert review: reason -> items."""
    datasets: list[DatasetExported] = field(default_factory=list)
    models: list[ModelTrained] = field(default_factory=list)
    converged: LabelingConverged | None = None
    budget_exhausted: BudgetExhausted | None = None
    dead_letters: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    """original subject and first line of the reason -> letters."""
    first_seen: float | None = None
    last_seen: float | None = None

    # ---------------------------------------------------------------- derived

    @property
    def labels_used(self) -> int:
        """Items that got a consensus label, gold excluded (they are reused as honeypots)."""
        return len(set(self.labeled_items) - self.gold_items)

    @property
    def annotations_used(self) -> int:
        return len(self.annotations)

    @property
    def open_batches(self) -> list[BatchView]:
        return [b for b in self.batches.values() if b.completed is None]

    @property
    def open_tasks(self) -> int:
        """Annotations still owed on open batches."""
        return sum(max(b.annotations_required - len(b.annotations), 0) for b in self.open_batches)

    @property
    def pool_size(self) -> int:
        """Items never handed out (gold items are reused, so they never count as pool)."""
        handed_out = {i for b in self.batches.values() for i in b.items} | self.gold_items
        return max(self.items_ingested - len(handed_out), 0)

    @property
    def mean_lead_time(self) -> float | None:
        times = [t for _, t, _ in self.annotations.values() if t is not None]
        return statistics.fmean(times) if times else None

    def cost(self, hourly_rate: float) -> float:
        """Simulated or real labour cost: lead time of every annotation at the hourly rate."""
        seconds = sum(t for _, t, _ in self.annotations.values() if t is not None)
        return seconds / 3600.0 * hourly_rate

    @property
    def latest_model(self) -> ModelTrained | None:
        promoted = [m for m in self.models if m.promoted]
        return max(promoted, key=lambda m: m.round) if promoted else None

    def labeling_batches(self) -> list[BatchView]:
        return sorted(
            (b for b in self.batches.values() if b.kind == "labeling"), key=lambda b: b.round
        )

    def labels_by_round(self) -> dict[int, int]:
        """Labels spent (non-gold tasks handed out) up to and including each labeling round."""
        out: dict[int, int] = {}
        total = 0
        for b in self.labeling_batches():
            total += b.n_tasks - b.n_gold
            out[b.round] = total
        return out

    def round_models(self) -> dict[int, ModelTrained]:
        """Each round's training outcome (the first one announced: the loop's)."""
        out: dict[int, ModelTrained] = {}
        for m in self.models:
            out.setdefault(m.round, m)
        return out

    def next_batch(self, config: ProjectConfig | None) -> str:
        """What the next labeling batch waits for, in words (from the bus and the config)."""
        if self.converged is not None:
            return "converged"
        if self.budget_exhausted is not None:
            return "budget spent"
        if config is None:
            return "-"
        labeling = self.labeling_batches()
        if not labeling:
            return "waiting for items" if not self.items_ingested else "not started"
        number = labeling[-1].round + 1
        basis = number - 1 - config.sampling.max_model_lag
        if basis >= 1:
            uses_model = (
                config.sampling.strategy.value in _MODEL_STRATEGIES
                or config.quality.max_rechecks_per_round > 0
            )
            if uses_model and basis not in self.round_models():
                return f"batch {number} waits for the model of round {basis}"
            if basis not in {r.round for r in self.reports}:
                return f"batch {number} waits for QA of round {basis}"
        if self.open_tasks + config.sampling.batch_size > config.sampling.max_open_tasks:
            return f"batch {number} waits for open tasks to be done"
        return "labeling" if self.open_batches else "idle"

    def annotator_feedback(self) -> list[AnnotatorFeedback]:
        """What each annotator should hear: their standing after the last round, how it moved
        over the rounds, their most frequent mistakes; worst estimated accuracy last."""
        reports = sorted(self.reports, key=lambda r: r.round)
        if not reports:
            return []
        trends: dict[str, list[tuple[int, float]]] = {}
        for report in reports:
            for score in report.annotators:
                if score.estimated_accuracy is not None:
                    trends.setdefault(score.annotator_id, []).append(
                        (report.round, round(score.estimated_accuracy, 4))
                    )
        spent: dict[str, int] = {}
        for who, _, _ in self.annotations.values():
            spent[who] = spent.get(who, 0) + 1
        out = [
            AnnotatorFeedback(
                annotator_id=s.annotator_id,
                annotations=spent.get(s.annotator_id, s.n_annotations),
                gold_accuracy=s.gold_accuracy,
                gold_n=s.gold_n,
                estimated_accuracy=s.estimated_accuracy,
                agreement=s.agreement_with_consensus,
                trend=trends.get(s.annotator_id, []),
                confusions=[(c.truth, c.given, c.weight) for c in s.confusions],
                flagged=s.flagged,
            )
            for s in reports[-1].annotators
        ]
        return sorted(out, key=lambda f: (-(f.estimated_accuracy or 0.0), f.annotator_id))

    @property
    def settled(self) -> bool:
        """Sampling stopped, every batch answered, the last round trained and its dataset
        version written (the exporter writes one for the last round of a stopped campaign):
        nothing is left to happen."""
        if self.budget_exhausted is None and self.converged is None:
            return False
        if any(b.completed is None for b in self.batches.values()):
            return False
        rounds = [b.round for b in self.labeling_batches()]
        if not rounds or max(rounds) not in self.round_models():
            return False
        return bool(self.datasets) and latest_dataset(self.datasets).round >= max(rounds)

    def throughput(self) -> float | None:
        """Annotations per minute over the campaign so far."""
        if self.first_seen is None or self.last_seen is None or self.last_seen <= self.first_seen:
            return None
        return len(self.annotations) / ((self.last_seen - self.first_seen) / 60.0)

    def eta_seconds(self, remaining_labels: int) -> float | None:
        """Time to spend ``remaining_labels`` at the measured pace (annotations per label)."""
        pace = self.throughput()
        if not pace or not self.labels_used:
            return None
        per_label = self.annotations_used / self.labels_used
        return remaining_labels * per_label / pace * 60.0


_VERSION = re.compile(r"v(\d+)(?:-r(\d+))?$")


def latest_dataset(datasets: list[DatasetExported]) -> DatasetExported:
    """The newest version: the last round's, and of its rewrites (``v0003-r2``, written when a
    revised round changed labels it holds) the last."""

    def order(dataset: DatasetExported) -> tuple[int, int]:
        match = _VERSION.match(dataset.version)
        if match is None:
            return dataset.round, 0
        return dataset.round, int(match.group(2) or 0)

    return max(datasets, key=order)


def fold(view: CampaignView, event: Event, now: float | None = None) -> None:
    """Apply one event to a project's view. Replays are harmless (everything is keyed).

    Times are the event's own (``occurred_at``), not the moment it is read: a view replayed
    from the streams dates batches and annotations as they happened (its rates and waits are
    right at once, not only for what arrives while it watches)."""
    now = event.occurred_at.timestamp() if now is None else now
    if isinstance(event, ItemsIngested):
        view.items_ingested += len(event.items)
        view.duplicates += event.duplicates
        view.external_ids.update((i.item_id, i.external_id) for i in event.items if i.external_id)
    elif isinstance(event, ItemsRejected):
        view.items_rejected += len(event.rejections)
    elif isinstance(event, BatchCreated):
        if event.batch_id not in view.batches:
            batch = BatchView(
                batch_id=event.batch_id,
                round=event.round,
                kind=event.kind,
                strategy=event.strategy,
                n_tasks=len(event.tasks),
                n_gold=sum(t.is_gold for t in event.tasks),
                annotations_required=sum(t.annotations_required for t in event.tasks),
                created=now,
                model_version=event.model_version,
                items=[t.item_id for t in event.tasks],
                completed=view.completed_early.pop(event.batch_id, None),
            )
            view.batches[event.batch_id] = batch
            view.gold_items.update(t.item_id for t in event.tasks if t.is_gold)
    elif isinstance(event, AnnotationsSubmitted):
        for a in event.annotations:
            if a.deleted or a.cancelled:
                view.annotations.pop(a.annotation_id, None)
                continue
            view.annotations[a.annotation_id] = (a.annotator_id, a.lead_time_seconds, a.item_id)
            owner = view.batches.get(a.batch_id or "")
            if owner is not None:
                owner.annotations.add(a.annotation_id)
        view.first_seen = view.first_seen or now
        view.last_seen = now
    elif isinstance(event, BatchCompleted):
        done = view.batches.get(event.batch_id)
        if done is None:
            view.completed_early.setdefault(event.batch_id, now)
        elif done.completed is None:
            done.completed = now
    elif isinstance(event, LabelsReady):
        for label in event.labels:
            if not label.is_gold:
                view.labeled_items[label.item_id] = str(label.label)
                view.label_confidence[label.item_id] = label.confidence
        for item_id in event.withdrawn:
            view.labeled_items.pop(item_id, None)
            view.label_confidence.pop(item_id, None)
    elif isinstance(event, QAReport):
        view.reports.append(event)
        scored = view.batches.get(event.batch_id)
        if scored is not None:
            scored.report = event
    elif isinstance(event, QualityAlertRaised):
        view.alerts.append(event)
    elif isinstance(event, ReviewRequested):
        view.review_items += len(event.items)
        for item in event.items:
            view.review_reasons[item.reason] = view.review_reasons.get(item.reason, 0) + 1
    elif isinstance(event, DatasetExported):
        view.datasets.append(event)
    elif isinstance(event, ModelTrained):
        view.models.append(event)
    elif isinstance(event, LabelingConverged):
        view.converged = view.converged or event
    elif isinstance(event, BudgetExhausted):
        view.budget_exhausted = view.budget_exhausted or event
    elif isinstance(event, DeadLetter):
        view.dead_letters += 1
        key = f"{event.original_subject}: {event.reason.splitlines()[0][:160]}"
        view.dead_letter_reasons[key] = view.dead_letter_reasons.get(key, 0) + 1


class CampaignWatcher:
    """Follows the bus and keeps a ``CampaignView`` per project up to date."""

    def __init__(
        self, nc: NatsClient, ns: Namespace, projects: Iterable[str] | None = None
    ) -> None:
        self._nc = nc
        self._ns = ns
        self._only = set(projects) if projects is not None else None
        self.views: dict[str, CampaignView] = {}
        self._subs: list[Any] = []
        self._backlog: list[int] = []
        self._done: dict[int, int] = {}
        self._blobs: Blobs | None = None
        self.changed = asyncio.Event()

    def view(self, project: str) -> CampaignView:
        if project not in self.views:
            self.views[project] = CampaignView(project)
        return self.views[project]

    async def start(self) -> None:
        js = self._nc.jetstream()
        self._blobs = nats_artifacts(js, self._ns, home=None)
        for index, cls in enumerate(WATCHED):
            stream = self._ns.stream_name(self._ns.stream_for(cls))
            sub = await js.subscribe(
                self._ns.subject(cls),
                stream=stream,
                ordered_consumer=True,
                cb=self._callback(index),
                config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
            )
            info = await sub.consumer_info()
            delivered = info.delivered.consumer_seq if info.delivered else 0
            self._backlog.append((delivered or 0) + (info.num_pending or 0))
            self._subs.append(sub)

    async def caught_up(self, timeout: float = 30.0) -> bool:
        """Wait until every event that was on the bus at ``start`` is folded into the views
        (False if that takes longer than ``timeout``: the views are then a partial picture)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while any(self._done.get(i, 0) < n for i, n in enumerate(self._backlog)):
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def _callback(self, index: int) -> Callable[[Any], Awaitable[None]]:
        async def on_message(msg: Any) -> None:
            try:
                await self._on_message(msg)
            finally:
                self._done[index] = max(self._done.get(index, 0), msg.metadata.sequence.consumer)

        return on_message

    async def stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):  # the connection may already be closing
                await sub.unsubscribe()
        self._subs.clear()

    async def _on_message(self, msg: Any) -> None:
        cls, _ = self._ns.parse(msg.subject)
        if cls is None:
            return
        try:
            event = cls.model_validate_json(await resolve(msg.data, msg.headers, self._blobs))
        except (ValueError, PayloadMissing):
            return  # malformed payloads are the dead-letter stream's business, not the view's
        if self._only is not None and event.project not in self._only:
            return
        fold(self.view(event.project), event)
        self.changed.set()
