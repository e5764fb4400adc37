"""Batches into Label Studio: tasks with labelloop ids and model pre-annotations, imported once.

Nothing lost, nothing imported twice:

* the batch ledger is written to KV *before* the import (so annotations that arrive early count);
* one delivery at a time imports a batch: it holds a lease in KV (``BridgeState.hold_import``,
  renewed before every request that creates tasks). A concurrent delivery of the same
  ``BatchCreated`` (a redelivery, another replica) waits until the holder marks the batch imported
  or its lease runs out (a crashed holder), then takes over; listing-then-importing is not atomic,
  so without the lease both would import the missing tasks;
* the tasks already in Label Studio for the batch are listed first (filtered on
  ``data.labelloop_batch_id``), and only the missing ones are imported, in chunks;
* an import request is never blindly retried (it may have succeeded before the connection broke):
  after a failure the bridge waits, lists the batch's tasks again and imports what is still missing;
* the ledger is marked ``imported`` last; a redelivered ``BatchCreated`` then does nothing.

A task's prediction becomes Label Studio's pre-annotation in the result format of the interface
the bridge generated (:func:`prediction_result`): the chosen class, or for a multi-label project
every label the model predicts (the labels whose probability reaches
``training.multilabel_threshold``, chosen by the sampler from the model's scores), selected in
the ``Choices`` control that takes several; for a NER project, the spans a sequence model
predicts, over the task's own text (:func:`~.domain.results.predicted_spans`); for a
bounding-box project, the boxes (a model hook's, or the producer's own predictions), clipped to
the image, of the project's labels (:func:`~.domain.results.predicted_boxes`).

Blind overlap: when the project's ``annotators:`` list names people with the role ``annotator``,
a labeling batch is assigned (:mod:`labelloop_bridge.domain.assignment`: each task to as many
distinct annotators as it needs answers, fewer when the team is smaller, never to an excluded
one), the assignment is written into the ledger with it, and each task is imported into the own
Label Studio project of each of its annotators. An annotator's project holds only their tasks
and only their answers, so nobody sees another's answer before submitting (Label Studio
Community Edition shows every answer of a task to everyone who opens it); the ledger merges the
answers by item. Without such a list the batch goes to the one shared labeling project.

Each task's overlap in the shared project is set to its ``annotations_required`` when it differs
from the project's.
Gold answers and simulation truths never reach Label Studio: annotators could see them. The ids
the bridge finds its tasks by travel in the task data; after each import the project's Data
Manager tabs are made to hide them again (:meth:`ProjectProvisioner.hide_internal_columns`).

A review task (``BatchCreated.kind == "review"``) tells the expert why it is there and what the
crowd said (:mod:`labelloop_bridge.domain.review_context`): the review reason the sampler copied
from ``ReviewRequested`` into the task's metadata, and every crowd vote on the item, read from
the item's tasks in the labeling project with the annotator ids and labels the bridge recorded
when it published them. The crowd's current label is written out, never imported as a
prediction: Label Studio pre-selects a prediction, and the expert would confirm the crowd's
answer with one key.

With a media root (:class:`~.media.LocalFiles`), an image, audio or video field that holds a path
inside it reaches Label Studio as the file's Local Files URL, which a person's browser loads
from Label Studio; a path outside it goes as it is, and the batch says so once (naming the
fields, not the paths). The batch's data, which labelloop keeps and exports, is not changed.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import JsonValue

from labelloop.events import BatchCreated, BatchTask, LabelValue
from labelloop.project import ProjectConfig, TaskType

from .domain.assignment import assign
from .domain.label_config import REVIEW_REASON_FIELD, REVIEW_VOTES_FIELD
from .domain.ledger import BatchLedger
from .domain.results import ResultError, predicted_boxes, predicted_spans, to_ls_result
from .domain.review_context import CrowdVote, reason_line, votes_line
from .intake import TASK_BATCH, TASK_ITEM, TASK_REQUIRED, AnnotationIntake
from .labelstudio import LabelStudioClient, LabelStudioUnavailable, RetryPolicy
from .media import LocalFiles, media_fields
from .metrics import BridgeMetrics
from .provisioning import ProjectProvisioner, project_fields
from .store import BridgeState

__all__ = ["BatchImporter", "ImportLeaseLost", "ls_task", "prediction_result"]

log = logging.getLogger("labelloop.bridge.importer")

_PARALLEL_REQUESTS = 4


class ImportLeaseLost(RuntimeError):
    """Another delivery took the batch's import over (ours stalled past its lease): retried."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


def prediction_result(
    value: LabelValue, config: ProjectConfig, text: str | None = None
) -> list[dict[str, Any]]:
    """A model's prediction as Label Studio result items (:class:`ResultError` if it does not
    fit the task). A multi-label prediction keeps the labels the project has, in its order; one
    of no label is an empty result: the model's word that none applies. A NER model's spans
    become span pre-annotations over ``text`` (:func:`predicted_spans`); predicted boxes become
    rectangles of the project's labels, clipped to the image (:func:`predicted_boxes`)."""
    if config.task_type is TaskType.NER:
        spans = predicted_spans(value, config.labels.classes, text)
        return to_ls_result(spans, config.task_type, config.primary_field.name) if spans else []
    if config.task_type is TaskType.BOUNDING_BOXES:
        boxes = predicted_boxes(value, config.labels.classes)
        items = to_ls_result(boxes, config.task_type, config.primary_field.name) if boxes else []
        for item, box in zip(items, boxes, strict=True):
            if "score" in box:  # each box's own confidence, as an ML backend gives it
                item["score"] = box["score"]
        return items
    if config.task_type.is_multilabel and isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise ResultError(f"{config.task_type.value} takes class names, not regions")
        value = [c for c in config.labels.classes if c in value]
        if not value:
            return []
    return to_ls_result(value, config.task_type, config.primary_field.name)


def ls_task(
    task: BatchTask,
    batch: BatchCreated,
    config: ProjectConfig,
    votes: Sequence[CrowdVote] = (),
    *,
    media: LocalFiles | None = None,
) -> dict[str, JsonValue]:
    """A batch task as Label Studio import JSON (``votes``: the crowd's, for a review task;
    ``media``: where Label Studio serves the media files from, whose paths become its URLs)."""
    data: dict[str, JsonValue] = {
        **task.data,
        TASK_ITEM: task.item_id,
        TASK_BATCH: batch.batch_id,
        TASK_REQUIRED: task.annotations_required,
    }
    if media is not None:
        data.update(media.links(task.data, media_fields(config))[0])
    if batch.kind == "review":
        reason = task.metadata.get("review_reason")
        current = task.prediction.label if task.prediction is not None else None
        data[REVIEW_REASON_FIELD] = reason_line(
            reason if isinstance(reason, str) else None, task.score
        )
        data[REVIEW_VOTES_FIELD] = votes_line(votes, current)
        return {"data": data}  # the candidate is the crowd's label: shown, not pre-selected
    out: dict[str, JsonValue] = {"data": data}
    if task.prediction is not None:
        try:
            text = task.data.get(config.primary_field.name)
            result = prediction_result(
                task.prediction.label, config, text if isinstance(text, str) else None
            )
        except ResultError as exc:
            log.warning("prediction of item %s not imported: %s", task.item_id, exc)
        else:
            prediction: dict[str, JsonValue] = {"result": result}  # type: ignore[dict-item]
            if task.prediction.score is not None:
                prediction["score"] = task.prediction.score
            version = task.prediction.model_version or batch.model_version
            if version:
                prediction["model_version"] = version
            out["predictions"] = [prediction]
    return out


class BatchImporter:
    def __init__(
        self,
        client: LabelStudioClient,
        state: BridgeState,
        provisioner: ProjectProvisioner,
        intake: AnnotationIntake,
        metrics: BridgeMetrics,
        *,
        namespace: str,
        chunk_size: int = 500,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        lease_seconds: float = 120.0,
        lease_poll_seconds: float = 0.5,
        clock: Callable[[], datetime] = _utcnow,
        media: LocalFiles | None = None,
    ) -> None:
        self._client = client
        self._state = state
        self._provisioner = provisioner
        self._intake = intake
        self._metrics = metrics
        self._namespace = namespace
        self._chunk_size = chunk_size
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._lease = timedelta(seconds=lease_seconds)
        self._lease_poll = lease_poll_seconds
        self._clock = clock
        self._media = media

    async def place(self, batch: BatchCreated, config: ProjectConfig) -> int:
        """Import a batch (idempotent); the number of tasks newly imported.

        A labeling batch of a project that names its annotators is assigned (:func:`assign`)
        and each task imported into the own project of each annotator it went to; the
        assignment is kept in the ledger, written before anything is imported, so a redelivery
        or another replica imports the same tasks to the same people."""
        kind = batch.kind
        tasks = {t.item_id: t for t in batch.tasks}  # an item appears once per batch
        team = [a.id for a in config.annotators if a.role == "annotator"]
        assignees = None
        if kind == "labeling" and team:
            wanted = [(t.item_id, t.annotations_required) for t in batch.tasks]
            assignees = assign(batch.batch_id, wanted, team, batch.excluded_annotators) or None
        ls_id = None if assignees else await self._provisioner.ensure(config, kind)
        await self._state.mark_open(batch.project, batch.batch_id, True)
        ledger = await self._state.create_ledger(
            batch.project,
            BatchLedger.of_batch(
                batch, ls_project_id=ls_id, assignees=assignees, placed_at=self._clock()
            ),
        )
        if ledger.imported:
            log.info("batch %s already imported", batch.batch_id)
            await self._intake.check_completion(batch.project, batch.batch_id)
            return 0
        owner = uuid.uuid4().hex
        if not await self._acquire(batch, owner):
            log.info("batch %s was imported by a concurrent delivery", batch.batch_id)
            await self._intake.check_completion(batch.project, batch.batch_id)
            return 0
        try:
            places: list[tuple[int, str | None, list[str]]]
            if ledger.assigned:  # as stored first: a redelivery keeps the first assignment
                places = [
                    (await self._provisioner.ensure(config, kind, person), person, items)
                    for person, items in sorted(ledger.assignments().items())
                ]
            else:
                ls_id = ls_id or await self._provisioner.ensure(config, kind)
                places = [(ls_id, None, list(tasks))]
            return await self._import(batch, config, places, tasks, owner)
        finally:
            await self._state.release_import(batch.project, batch.batch_id, owner)

    async def _acquire(self, batch: BatchCreated, owner: str) -> bool:
        """Hold the batch's import lease; False when another delivery imported it meanwhile."""
        waited = False
        while True:
            if await self._state.hold_import(
                batch.project, batch.batch_id, owner, self._lease, self._clock()
            ):
                # the previous holder may have finished between our ledger read and now
                ledger = await self._state.ledger(batch.project, batch.batch_id)
                if ledger is not None and ledger.imported:
                    await self._state.release_import(batch.project, batch.batch_id, owner)
                    return False
                return True
            ledger = await self._state.ledger(batch.project, batch.batch_id)
            if ledger is not None and ledger.imported:
                return False
            if not waited:
                log.info("batch %s is being imported by another delivery: waiting", batch.batch_id)
                waited = True
            await asyncio.sleep(self._lease_poll)

    async def _renew(self, batch: BatchCreated, owner: str) -> None:
        if not await self._state.hold_import(
            batch.project, batch.batch_id, owner, self._lease, self._clock()
        ):
            raise ImportLeaseLost(f"the import of batch {batch.batch_id} was taken over")

    async def _import(
        self,
        batch: BatchCreated,
        config: ProjectConfig,
        places: list[tuple[int, str | None, list[str]]],
        tasks: dict[str, BatchTask],
        owner: str,
    ) -> int:
        """Import the batch's tasks into each ``(Label Studio project, its annotator or None,
        the items it gets)``, then mark the ledger imported."""
        self._warn_outside(batch, config, tasks.values())
        imported = 0
        for ls_id, annotator, items in places:
            subset = {item: tasks[item] for item in items}
            imported += await self._import_into(ls_id, annotator, batch, config, subset, owner)
        await self._state.change_ledger(
            batch.project, batch.batch_id, lambda stored: setattr(stored, "imported", True)
        )
        for ls_id, _, _ in places:
            await self._provisioner.hide_internal_columns(ls_id, batch.kind)
        self._metrics.tasks_imported.labels("label-studio", batch.kind).inc(imported)
        self._metrics.project_seen(batch.project)
        await self._intake.check_completion(batch.project, batch.batch_id)
        return imported

    async def _import_into(
        self,
        ls_id: int,
        annotator: str | None,
        batch: BatchCreated,
        config: ProjectConfig,
        tasks: dict[str, BatchTask],
        owner: str,
    ) -> int:
        kind = batch.kind
        present = await self._present(ls_id, batch.batch_id)
        missing = [t for item, t in tasks.items() if item not in present]
        votes: dict[str, list[CrowdVote]] = {}
        if kind == "review" and missing:
            votes = await self._crowd_votes(batch.project, [t.item_id for t in missing])
        for start in range(0, len(missing), self._chunk_size):
            chunk = missing[start : start + self._chunk_size]
            await self._import_chunk(ls_id, batch, config, chunk, owner, votes)
        present = await self._present(ls_id, batch.batch_id)
        lost = sorted(set(tasks) - set(present))
        if lost:
            raise LabelStudioUnavailable(
                "import_tasks", None, f"{len(lost)} tasks of {batch.batch_id} missing after import"
            )
        if annotator is None:  # an annotator's own project takes one answer per task: theirs
            fields = project_fields(config, kind, self._namespace)
            default_overlap = fields["maximum_annotations"]
            await self._renew(batch, owner)
            await self._set_overlaps(
                [
                    (present[item][0], task.annotations_required)
                    for item, task in tasks.items()
                    if task.annotations_required != (present[item][1] or default_overlap)
                ]
            )
        log.info(
            "batch %s: %d tasks imported into Label Studio project %d%s (%d were there)",
            batch.batch_id,
            len(missing),
            ls_id,
            f" of {annotator}" if annotator is not None else "",
            len(tasks) - len(missing),
        )
        return len(missing)

    def _warn_outside(
        self, batch: BatchCreated, config: ProjectConfig, tasks: Iterable[BatchTask]
    ) -> None:
        """Once per batch: which media fields hold paths Label Studio cannot serve (outside the
        media root). The paths themselves stay out of the log."""
        fields = media_fields(config)
        if self._media is None or not fields:
            return
        outside: Counter[str] = Counter()
        for task in tasks:
            outside.update(self._media.links(task.data, fields)[1])
        if outside:
            log.warning(
                "batch %s: %d media paths outside the media root %s (field %s); Label Studio"
                " gets them as they are, and people cannot load them",
                batch.batch_id,
                outside.total(),
                self._media.media_root,
                ", ".join(f"{name}: {n}" for name, n in sorted(outside.items())),
            )

    async def _set_overlaps(self, changes: list[tuple[int, int]]) -> None:
        """Per-task overlap, a few requests at a time (Label Studio has no bulk update for it)."""
        limit = asyncio.Semaphore(_PARALLEL_REQUESTS)

        async def one(task_id: int, overlap: int) -> None:
            async with limit:
                await self._client.set_task_overlap(task_id, overlap)

        await asyncio.gather(*(one(task_id, overlap) for task_id, overlap in changes))

    async def _crowd_votes(self, project: str, items: list[str]) -> dict[str, list[CrowdVote]]:
        """Item -> the crowd's votes on it: the annotations of its tasks in the labeling projects
        (the shared one and each annotator's own), as the bridge recorded them when it published
        them (labelloop's annotator id and label). Annotations the bridge never counted (an
        excluded annotator's, say) are left out."""
        labeling = [
            ref.ls_project_id
            for ref in await self._state.ls_projects(project)
            if ref.kind == "labeling"
        ]
        if not labeling:
            return {}
        limit = asyncio.Semaphore(_PARALLEL_REQUESTS)
        votes: dict[str, list[CrowdVote]] = {}

        async def one(item: str) -> None:
            tasks = []
            for ls_id in labeling:
                async with limit:
                    tasks += await self._client.tasks_with_data(ls_id, TASK_ITEM, item)
            found = []
            for task in tasks:
                for annotation in task.get("annotations") or []:
                    ls_annotation_id = (
                        annotation.get("id") if isinstance(annotation, dict) else None
                    )
                    if not isinstance(ls_annotation_id, int):
                        continue
                    record = await self._state.annotation(project, ls_annotation_id)
                    if record is not None and not record.deleted and record.item_id == item:
                        found.append(CrowdVote(record.annotator_id, record.value))
            votes[item] = found

        await asyncio.gather(*(one(item) for item in items))
        return votes

    async def _present(self, ls_id: int, batch_id: str) -> dict[str, tuple[int, int | None]]:
        """Item id -> (task id, overlap) of the batch's tasks already in Label Studio."""
        found: dict[str, tuple[int, int | None]] = {}
        for task in await self._client.tasks_with_data(ls_id, TASK_BATCH, batch_id):
            data: dict[str, Any] = task.get("data") or {}
            if data.get(TASK_BATCH) == batch_id and data.get(TASK_ITEM) is not None:
                found[str(data[TASK_ITEM])] = (int(task["id"]), task.get("overlap"))
        return found

    async def _import_chunk(
        self,
        ls_id: int,
        batch: BatchCreated,
        config: ProjectConfig,
        chunk: Sequence[BatchTask],
        owner: str,
        votes: dict[str, list[CrowdVote]],
    ) -> None:
        pending = list(chunk)
        for attempt in range(self._retry.attempts):
            await self._renew(batch, owner)  # never create tasks without holding the lease
            try:
                await self._client.import_tasks(
                    ls_id,
                    [
                        ls_task(t, batch, config, votes.get(t.item_id, ()), media=self._media)
                        for t in pending
                    ],
                )
                return
            except LabelStudioUnavailable as exc:
                if attempt + 1 >= self._retry.attempts:
                    raise
                delay = self._retry.delay(attempt)
                log.warning(
                    "import of %d tasks failed (%s); retry in %.1fs", len(pending), exc, delay
                )
                await self._sleep(delay)
                # the failed request may have been applied: import only what is still missing
                present = await self._present(ls_id, batch.batch_id)
                pending = [t for t in pending if t.item_id not in present]
                if not pending:
                    return
