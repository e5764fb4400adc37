"""Annotations coming back from Label Studio: deduplicated, published, counted toward batches.

Webhook calls and reconciliation passes both hand each annotation they see to
:meth:`AnnotationIntake.observe`. Order of work, chosen so that a crash at any point loses nothing
and duplicates nothing:

1. skip it if the same annotation with the same ``updated_at`` was already published (KV record);
2. publish ``AnnotationsSubmitted`` with an id derived from (annotation id, updated_at, deleted):
   a concurrent or replayed publish of the same state is dropped by JetStream (``Nats-Msg-Id``);
3. record it in KV (so later passes skip it);
4. count it in the batch ledger by compare-and-swap (a set of annotation ids: idempotent);
5. if that change completed the batch, publish ``BatchCompleted`` (id
   ``deterministic_id("batch-completed", batch_id)``) and mark it published. A crash between the
   two is repaired by :meth:`AnnotationIntake.publish_pending_completions`.

An update supersedes: it is published again with its new ``updated_at``. Consumers keep, per
``annotation_id``, the state with the latest ``updated_at`` (a webhook racing a reconciliation pass
can deliver an older state after a newer one). A deletion is published with ``deleted=True`` and
stops counting.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from labelloop.events import (
    Annotation,
    AnnotationSource,
    AnnotationsSubmitted,
    BatchCompleted,
    Event,
    deterministic_id,
)
from labelloop.project import ProjectConfig

from .domain.ledger import BatchLedger
from .domain.results import from_ls_result
from .metrics import BridgeMetrics
from .registry import AnnotatorRegistry
from .state import AnnotationRecord, BridgeState

__all__ = ["AnnotationIntake", "Observation", "annotation_wire_id", "observation_from_ls"]

log = logging.getLogger("labelloop.bridge.intake")

Kind = Literal["labeling", "review"]
Publish = Callable[[Event], Awaitable[object]]
ProjectLookup = Callable[[str], Awaitable[ProjectConfig | None]]

_ANNOTATION_ACTIONS = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED"}
TASK_ITEM = "labelloop_item_id"
TASK_BATCH = "labelloop_batch_id"
TASK_REQUIRED = "labelloop_annotations_required"


def annotation_wire_id(ls_annotation_id: int) -> str:
    return f"ls-{ls_annotation_id}"


def _parse_time(raw: Any) -> datetime:
    if not raw:
        return datetime.now(UTC)
    moment = datetime.fromisoformat(str(raw))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Observation:
    """One annotation's current state as Label Studio showed it."""

    project: str
    kind: Kind
    ls_annotation_id: int
    item_id: str | None
    batch_id: str | None
    ls_user_id: int | None
    result: list[dict[str, Any]]
    cancelled: bool
    lead_time_seconds: float | None
    created_at: datetime
    updated_at: datetime
    source: AnnotationSource
    deleted: bool = False


def observation_from_ls(
    project: str,
    kind: Kind,
    annotation: dict[str, Any],
    task_data: dict[str, Any] | None,
    source: AnnotationSource,
) -> Observation:
    """An annotation JSON (task list or webhook payload) as an observation."""
    data = task_data or {}
    user = annotation.get("completed_by")
    if isinstance(user, dict):  # some endpoints expand the user
        user = user.get("id")
    lead = annotation.get("lead_time")
    return Observation(
        project=project,
        kind=kind,
        ls_annotation_id=int(annotation["id"]),
        item_id=str(data[TASK_ITEM]) if data.get(TASK_ITEM) is not None else None,
        batch_id=str(data[TASK_BATCH]) if data.get(TASK_BATCH) is not None else None,
        ls_user_id=int(user) if user is not None else None,
        result=list(annotation.get("result") or []),
        cancelled=bool(annotation.get("was_cancelled")),
        lead_time_seconds=max(0.0, float(lead)) if lead is not None else None,
        created_at=_parse_time(annotation.get("created_at")),
        updated_at=_parse_time(annotation.get("updated_at")),
        source=source,
    )


class AnnotationIntake:
    def __init__(
        self,
        state: BridgeState,
        publish: Publish,
        projects: ProjectLookup,
        registry: AnnotatorRegistry,
        metrics: BridgeMetrics,
        *,
        count_skips: bool = True,
    ) -> None:
        self._state = state
        self._publish = publish
        self._projects = projects
        self._registry = registry
        self._metrics = metrics
        self._count_skips = count_skips

    async def observe(self, obs: Observation) -> str:
        """Handle one observation; returns the outcome (published, duplicate, unknown_task, ...)."""
        record = await self._state.annotation(obs.project, obs.ls_annotation_id)
        if obs.deleted:
            if record is None or record.deleted:
                return self._ignored("duplicate" if record else "unknown_annotation")
            return await self._deleted(obs, record)
        if obs.item_id is None or obs.batch_id is None:
            return self._ignored("unknown_task")
        if record is not None and (
            record.deleted or datetime.fromisoformat(record.updated_at) >= obs.updated_at
        ):
            return self._ignored("duplicate")
        config = await self._projects(obs.project)
        if config is None:
            raise LookupError(f"project {obs.project!r} has no configuration yet")
        who = await self._registry.resolve(obs.ls_user_id, config.annotators)
        value = None if obs.cancelled else from_ls_result(obs.result, config.task_type)
        annotation = Annotation(
            annotation_id=annotation_wire_id(obs.ls_annotation_id),
            item_id=obs.item_id,
            annotator_id=who.annotator_id,
            value=value,
            batch_id=obs.batch_id,
            lead_time_seconds=obs.lead_time_seconds,
            created_at=obs.created_at,
            updated_at=obs.updated_at,
            source=obs.source,
            is_expert=obs.kind == "review",
            cancelled=obs.cancelled or value is None,
        )
        await self._publish(
            AnnotationsSubmitted(
                event_id=deterministic_id(
                    "annotation", obs.project, obs.ls_annotation_id, obs.updated_at.isoformat()
                ),
                project=obs.project,
                annotations=[annotation],
            )
        )
        await self._state.put_annotation(
            obs.project,
            obs.ls_annotation_id,
            AnnotationRecord(
                item_id=obs.item_id,
                batch_id=obs.batch_id,
                annotator_id=who.annotator_id,
                updated_at=obs.updated_at.isoformat(),
                created_at=obs.created_at.isoformat(),
            ),
        )
        self._metrics.annotations_received.labels(obs.source.value, "label-studio").inc()
        if obs.lead_time_seconds is not None:
            self._metrics.lead_time.labels("label-studio").observe(obs.lead_time_seconds)
        await self._count(
            obs.project,
            obs.batch_id,
            lambda ledger: ledger.record(
                obs.item_id or "",
                annotation.annotation_id,
                who.annotator_id,
                cancelled=annotation.cancelled,
                deleted=False,
            ),
        )
        return "published"

    async def _deleted(self, obs: Observation, record: AnnotationRecord) -> str:
        now = datetime.now(UTC)
        wire_id = annotation_wire_id(obs.ls_annotation_id)
        await self._publish(
            AnnotationsSubmitted(
                event_id=deterministic_id("annotation-deleted", obs.project, obs.ls_annotation_id),
                project=obs.project,
                annotations=[
                    Annotation(
                        annotation_id=wire_id,
                        item_id=record.item_id,
                        annotator_id=record.annotator_id,
                        value=None,
                        batch_id=record.batch_id,
                        created_at=datetime.fromisoformat(record.created_at),
                        updated_at=now,
                        source=obs.source,
                        is_expert=obs.kind == "review",
                        deleted=True,
                    )
                ],
            )
        )
        await self._state.put_annotation(
            obs.project,
            obs.ls_annotation_id,
            AnnotationRecord(
                item_id=record.item_id,
                batch_id=record.batch_id,
                annotator_id=record.annotator_id,
                updated_at=now.isoformat(),
                created_at=record.created_at,
                deleted=True,
            ),
        )
        self._metrics.annotations_received.labels(obs.source.value, "label-studio").inc()
        await self._count(
            obs.project,
            record.batch_id,
            lambda ledger: ledger.record(
                record.item_id, wire_id, record.annotator_id, cancelled=False, deleted=True
            ),
        )
        return "deleted"

    async def apply_webhook(self, payload: dict[str, Any]) -> int:
        """Apply one Label Studio webhook payload; the number of annotations it published."""
        action = payload.get("action")
        project = payload.get("project") or {}
        ls_project_id = project.get("id") if isinstance(project, dict) else project
        if ls_project_id is None:
            return 0
        ref = await self._state.lookup_ls_project(int(ls_project_id))
        if ref is None:
            log.info("webhook for Label Studio project %s: not managed here", ls_project_id)
            self._ignored("unmanaged_project")
            return 0
        published = 0
        source = AnnotationSource.WEBHOOK
        if action in _ANNOTATION_ACTIONS and isinstance(payload.get("annotation"), dict):
            task = payload.get("task") or {}
            obs = observation_from_ls(
                ref.project, ref.kind, payload["annotation"], task.get("data"), source
            )
            published += await self.observe(obs) == "published"
        elif action == "ANNOTATIONS_CREATED":
            # bulk creation: the payload may lack task data; the reconciliation loop reads them back
            tasks = {int(t["id"]): t for t in payload.get("tasks") or [] if isinstance(t, dict)}
            for annotation in payload.get("annotations") or []:
                task = tasks.get(int(annotation.get("task") or -1), {})
                data = task.get("data")
                obs = observation_from_ls(ref.project, ref.kind, annotation, data, source)
                published += await self.observe(obs) == "published"
        elif action == "ANNOTATIONS_DELETED":
            for annotation in payload.get("annotations") or []:
                gone = observation_from_ls(
                    ref.project, ref.kind, {"id": annotation["id"]}, None, source
                )
                published += await self.observe(replace(gone, deleted=True)) == "deleted"
        return published

    def _ignored(self, reason: str) -> str:
        self._metrics.annotations_ignored.labels(reason).inc()
        return reason

    async def _count(
        self, project: str, batch_id: str, change: Callable[[BatchLedger], object]
    ) -> None:
        result = await self._state.change_ledger(
            project,
            batch_id,
            change,
            complete_when=lambda ledger: ledger.imported and ledger.is_complete(self._count_skips),
        )
        if result is None:
            log.info("annotation for batch %s, which this bridge did not import", batch_id)
        elif result.completed_now:
            await self.publish_completion(project, result.ledger)

    async def publish_completion(self, project: str, ledger: BatchLedger) -> None:
        await self._publish(
            BatchCompleted(
                event_id=deterministic_id("batch-completed", ledger.batch_id),
                project=project,
                batch_id=ledger.batch_id,
                n_tasks=len(ledger.tasks),
                n_annotations=ledger.n_annotations(self._count_skips),
                kind=ledger.kind,
            )
        )
        await self._state.change_ledger(
            project, ledger.batch_id, lambda stored: setattr(stored, "completion_published", True)
        )
        await self._state.mark_open(project, ledger.batch_id, False)
        self._metrics.batches_completed.labels("label-studio", ledger.kind).inc()
        log.info("batch %s completed: %d tasks", ledger.batch_id, len(ledger.tasks))

    async def publish_pending_completions(self, project: str) -> int:
        """Announce completed batches whose BatchCompleted may not have gone out (a crash)."""
        done = 0
        for batch_id in await self._state.open_batches(project):
            ledger = await self._state.ledger(project, batch_id)
            if ledger is None:  # placed but not yet recorded: its import is still running
                continue
            if ledger.completion_published:
                await self._state.mark_open(project, batch_id, False)
            elif ledger.completed:
                await self.publish_completion(project, ledger)
                done += 1
        return done

    async def check_completion(self, project: str, batch_id: str) -> None:
        """Complete a batch whose answers arrived before its import was recorded as finished."""
        result = await self._state.change_ledger(
            project,
            batch_id,
            lambda ledger: None,
            complete_when=lambda ledger: ledger.imported and ledger.is_complete(self._count_skips),
        )
        if result is not None and result.completed_now:
            await self.publish_completion(project, result.ledger)
