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
can deliver an older state after a newer one); so does the batch ledger, inside its
compare-and-swap (:meth:`BatchLedger.record`). A deletion is published with ``deleted=True`` and
stops counting.

Assignees: in an annotator's own labeling project (blind overlap, see
:mod:`labelloop_bridge.importer`) only that annotator's answers count; anyone else's there is
ignored, counted as ``not_assignee``. Reviewers (role ``reviewer``) oversee: their answers count
nowhere (``reviewer``).

Experts: an answer is an expert answer (``is_expert``) when it was given in the review project by
someone whose role is ``expert`` (the project's ``annotators:`` list). Anyone else's answer in the
review project is *ignored*, counted as ``not_expert``: it was given under review instructions on
items picked because the crowd disagreed, it must not override the crowd's consensus, and it must
not complete a review batch that waits for an expert. (Label Studio Community Edition cannot keep
people out of a project, so this is where the role is enforced.)

Reassigned tasks (:mod:`labelloop_bridge.reassignment`): a task taken from an annotator who did
not answer it in time may still get their answer, in their own project (its copy there is
deleted, but they may have submitted before). Rule: a late answer counts if the task still lacks
answers when it is first seen; once the task has the answers it needs (the new assignee was
quicker) it is ignored, counted as ``reassigned``, and so are its later updates. A late answer
that counted stays counted, and the new assignee's answer then counts as well (one answer more).

Webhook payloads are validated before anything is published: a payload of the wrong shape raises
:class:`~labelloop_bridge.webhook.BadPayload` (400 at the receiver).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from labelloop.events import (
    Annotation,
    AnnotationSource,
    AnnotationsSubmitted,
    Event,
    deterministic_id,
)
from labelloop.project import ProjectConfig

from .completion import completion_event
from .domain.ledger import BatchLedger
from .domain.results import from_ls_result
from .metrics import BridgeMetrics
from .recent import RecentKeys
from .registry import AnnotatorRegistry
from .store import AnnotationRecord, BridgeState
from .webhook import BadPayload

__all__ = ["AnnotationIntake", "Observation", "annotation_wire_id", "observation_from_ls"]

log = logging.getLogger("labelloop.bridge.intake")

Kind = Literal["labeling", "review"]
Publish = Callable[[Event], Awaitable[object]]
ProjectLookup = Callable[[str], Awaitable[ProjectConfig | None]]

_ANNOTATION_ACTIONS = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED"}
_BULK_ACTIONS = {"ANNOTATIONS_CREATED", "ANNOTATIONS_DELETED"}
TASK_ITEM = "labelloop_item_id"
TASK_BATCH = "labelloop_batch_id"
TASK_REQUIRED = "labelloop_annotations_required"


def annotation_wire_id(ls_annotation_id: int) -> str:
    return f"ls-{ls_annotation_id}"


def _parse_time(raw: Any, what: str) -> datetime:
    if raw is None or raw == "":
        return datetime.now(UTC)
    if not isinstance(raw, str):
        raise BadPayload(f"{what} is not a date-time string")
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise BadPayload(f"{what} is not an ISO date-time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _int_id(raw: Any, what: str) -> int:
    """A Label Studio id: a JSON integer (not a bool, not a string of digits)."""
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise BadPayload(f"{what} is not an integer id")
    return raw


def _label(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadPayload(f"task data {key} is not a string")
    return str(value)


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
    ls_task_id: int | None = None
    owner: str | None = None
    """The annotator whose own project the annotation is in; ``None``: a shared project."""


def observation_from_ls(
    project: str,
    kind: Kind,
    annotation: Any,
    task_data: Any,
    source: AnnotationSource,
    owner: str | None = None,
) -> Observation:
    """An annotation JSON (task list or webhook payload) as an observation.

    Raises :class:`BadPayload` when a field has the wrong shape.
    """
    if not isinstance(annotation, dict):
        raise BadPayload("an annotation is not an object")
    if task_data is not None and not isinstance(task_data, dict):
        raise BadPayload("task data is not an object")
    data = task_data or {}
    user = annotation.get("completed_by")
    if isinstance(user, dict):  # some endpoints expand the user
        user = user.get("id")
    lead = annotation.get("lead_time")
    if lead is not None and (
        isinstance(lead, bool) or not isinstance(lead, int | float) or not math.isfinite(lead)
    ):
        raise BadPayload("lead_time is not a number")
    result = annotation.get("result")
    if result is not None and (
        not isinstance(result, list) or not all(isinstance(r, dict) for r in result)
    ):
        raise BadPayload("result is not a list of objects")
    return Observation(
        project=project,
        kind=kind,
        ls_annotation_id=_int_id(annotation.get("id"), "annotation id"),
        item_id=_label(data, TASK_ITEM),
        batch_id=_label(data, TASK_BATCH),
        ls_user_id=_int_id(user, "completed_by") if user is not None else None,
        result=list(result or []),
        cancelled=bool(annotation.get("was_cancelled")),
        lead_time_seconds=max(0.0, float(lead)) if lead is not None else None,
        created_at=_parse_time(annotation.get("created_at"), "created_at"),
        updated_at=_parse_time(annotation.get("updated_at"), "updated_at"),
        source=source,
        ls_task_id=task_id if isinstance(task_id := annotation.get("task"), int) else None,
        owner=owner,
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
        set_overlap: Callable[[int, int], Awaitable[object]] | None = None,
    ) -> None:
        self._state = state
        self._publish = publish
        self._projects = projects
        self._set_overlap = set_overlap
        self._registry = registry
        self._metrics = metrics
        self._count_skips = count_skips
        self._warned = RecentKeys()

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
        if who.role == "reviewer":
            return self._ignored("reviewer")
        if obs.owner is not None and who.annotator_id != obs.owner:
            if self._warned.first((obs.project, obs.ls_annotation_id)):
                log.warning(
                    "annotation %d is in the own project of %s, by %s: ignored",
                    obs.ls_annotation_id,
                    obs.owner,
                    who.annotator_id,
                )
            return self._ignored("not_assignee")
        if obs.kind == "review" and who.role != "expert":
            if self._warned.first((obs.project, obs.ls_annotation_id)):
                log.warning(
                    "annotation %d in the review project of %s is by %s, not an expert: ignored",
                    obs.ls_annotation_id,
                    obs.project,
                    who.annotator_id,
                )
            return self._ignored("not_expert")
        is_expert = obs.kind == "review"  # and, from the check above, by an expert
        ledger = await self._state.ledger(obs.project, obs.batch_id)
        if ledger is not None and who.annotator_id in ledger.excluded:
            # flagged by QA before this batch was cut: the answer does not count, and the task
            # gets room for one more annotator (Label Studio closes a task at its overlap)
            await self._make_room(obs, ledger)
            return self._ignored("excluded_annotator")
        if record is None and ledger is not None and self._too_late(obs, ledger):
            if self._warned.first((obs.project, obs.ls_annotation_id)):
                log.info(
                    "annotation %d: item %s was reassigned from %s and has its answers: ignored",
                    obs.ls_annotation_id,
                    obs.item_id,
                    obs.owner,
                )
            return self._ignored("reassigned")
        try:
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
                is_expert=is_expert,
                cancelled=obs.cancelled or value is None,
            )
        except (AttributeError, TypeError, ValueError) as exc:  # a result of the wrong shape
            raise BadPayload(f"annotation {obs.ls_annotation_id}: unreadable result") from exc
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
                cancelled=annotation.cancelled,
                is_expert=is_expert,
                value=annotation.value,
                lead_time_seconds=obs.lead_time_seconds,
                source=obs.source.value,
            ),
        )
        self._metrics.annotations(obs.project, obs.source.value, "label-studio")
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
                updated_at=obs.updated_at,
            ),
        )
        return "published"

    def _too_late(self, obs: Observation, ledger: BatchLedger) -> bool:
        """A first answer in the own project of someone the task was taken from, after the task
        got the answers it needs (the rule in this module's docstring)."""
        task = ledger.tasks.get(obs.item_id or "")
        if task is None or obs.owner is None or obs.owner in task.assignees:
            return False
        if obs.owner not in task.released:
            return False
        return len(task.answered_by(self._count_skips)) >= task.required

    async def _make_room(self, obs: Observation, ledger: BatchLedger) -> None:
        """An excluded annotator answered: keep the answer out of the count (a tombstone) and
        raise the task's overlap in Label Studio so that someone else can still answer it."""
        item = obs.item_id or ""
        wire_id = annotation_wire_id(obs.ls_annotation_id)
        task = ledger.tasks.get(item)
        if task is None or wire_id in task.answers:
            return
        change = await self._state.change_ledger(
            obs.project,
            ledger.batch_id,
            lambda stored: stored.record(
                item, wire_id, "", cancelled=False, deleted=True, updated_at=obs.updated_at
            ),
        )
        if change is None or self._set_overlap is None or obs.ls_task_id is None:
            return
        stored = change.ledger.tasks[item]
        tombstones = sum(1 for a in stored.answers.values() if a.deleted and not a.annotator_id)
        await self._set_overlap(obs.ls_task_id, stored.required + tombstones)

    async def recount(self, project: str, batch_id: str, ls_annotation_ids: Iterable[int]) -> None:
        """Count published annotations the batch ledger lacks (e.g. published, then the bridge
        stopped before counting): from their KV records, so nothing is published again."""
        records = []
        for ls_id in sorted(set(ls_annotation_ids)):
            record = await self._state.annotation(project, ls_id)
            if record is not None and not record.deleted and record.batch_id == batch_id:
                records.append((annotation_wire_id(ls_id), record))
        if not records:
            return

        def change(ledger: BatchLedger) -> None:
            for wire_id, record in records:
                ledger.record(
                    record.item_id,
                    wire_id,
                    record.annotator_id,
                    cancelled=record.cancelled,
                    deleted=False,
                    updated_at=datetime.fromisoformat(record.updated_at),
                )

        await self._count(project, batch_id, change)

    async def _deleted(self, obs: Observation, record: AnnotationRecord) -> str:
        now = datetime.now(UTC)
        wire_id = annotation_wire_id(obs.ls_annotation_id)
        is_expert = record.is_expert if record.is_expert is not None else obs.kind == "review"
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
                        is_expert=is_expert,
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
                cancelled=record.cancelled,
                is_expert=is_expert,
                value=None,
                lead_time_seconds=record.lead_time_seconds,
                source=obs.source.value,
            ),
        )
        self._metrics.annotations(obs.project, obs.source.value, "label-studio")
        await self._count(
            obs.project,
            record.batch_id,
            lambda ledger: ledger.record(
                record.item_id,
                wire_id,
                record.annotator_id,
                cancelled=record.cancelled,
                deleted=True,
                updated_at=now,
            ),
        )
        return "deleted"

    async def apply_webhook(self, payload: dict[str, Any]) -> int:
        """Apply one Label Studio webhook payload; the number of annotations it published.

        Actions the bridge does not subscribe to are ignored. For the annotation actions the whole
        payload is checked before anything is published: :class:`BadPayload` when it is malformed.
        """
        action = payload.get("action")
        if action not in _ANNOTATION_ACTIONS and action not in _BULK_ACTIONS:
            return 0
        project = payload.get("project")
        raw_id = project.get("id") if isinstance(project, dict) else project
        ls_project_id = _int_id(raw_id, "project id")
        ref = await self._state.lookup_ls_project(ls_project_id)
        if ref is None:
            log.info("webhook for Label Studio project %s: not managed here", ls_project_id)
            self._ignored("unmanaged_project")
            return 0
        source = AnnotationSource.WEBHOOK
        observations: list[Observation] = []
        if action in _ANNOTATION_ACTIONS:
            task = payload.get("task")
            if task is not None and not isinstance(task, dict):
                raise BadPayload("task is not an object")
            data = (task or {}).get("data")
            annotation = payload.get("annotation")
            observations.append(
                observation_from_ls(ref.project, ref.kind, annotation, data, source, ref.annotator)
            )
        elif action == "ANNOTATIONS_CREATED":
            # bulk creation: the payload may lack task data; the reconciliation loop reads them back
            tasks: dict[int, dict[str, Any]] = {}
            for task in _objects(payload.get("tasks"), "tasks"):
                tasks[_int_id(task.get("id"), "task id")] = task
            for annotation in _objects(payload.get("annotations"), "annotations"):
                task_id = annotation.get("task")
                task = tasks.get(task_id, {}) if isinstance(task_id, int) else {}
                data = task.get("data")
                observations.append(
                    observation_from_ls(
                        ref.project, ref.kind, annotation, data, source, ref.annotator
                    )
                )
        else:  # ANNOTATIONS_DELETED
            for annotation in _objects(payload.get("annotations"), "annotations"):
                ls_id = _int_id(annotation.get("id"), "annotation id")
                gone = observation_from_ls(ref.project, ref.kind, {"id": ls_id}, None, source)
                observations.append(replace(gone, deleted=True))
        published = 0
        for obs in observations:
            published += await self.observe(obs) in ("published", "deleted")
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
        """Announce a completed batch with the annotations that completed it (their latest
        state, from the records of what was published)."""
        annotations: list[Annotation] = []
        for task in ledger.tasks.values():
            for wire_id, answer in sorted(task.live().items()):
                if not wire_id.startswith("ls-"):
                    continue
                ls_id = int(wire_id.removeprefix("ls-"))
                record = await self._state.annotation(project, ls_id)
                if record is not None and not record.deleted:
                    annotations.append(record.annotation(ls_id))
                elif answer.annotator_id:
                    log.warning("annotation %s of batch %s has no record", wire_id, ledger.batch_id)
        await self._publish(completion_event(project, ledger, annotations))
        await self._state.close_batch(project, ledger.batch_id)
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


def _objects(raw: Any, what: str) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(x, dict) for x in raw):
        raise BadPayload(f"{what} is not a list of objects")
    return raw
