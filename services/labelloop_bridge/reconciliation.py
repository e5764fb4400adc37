"""The reconciliation loop: what the webhooks missed, read back from Label Studio.

Webhooks are hints (one POST, 1 s timeout, no retry, auto-disabled after failures). Every
interval the bridge makes two passes per labelloop project:

1. **Recent changes**, per Label Studio project: the tasks updated since its watermark (Label
   Studio bumps a task's ``updated_at`` on every annotation created, updated, skipped or deleted),
   re-reading ``margin`` seconds before it to cover clock skew and updates racing the listing.
   This catches updates and deletions anywhere, including in batches already completed.
2. **Open batches**: for every batch placed and not yet complete, all of its tasks (Label Studio
   filters on ``data.labelloop_batch_id``; in the own project of each annotator it was assigned
   to, or in the shared one) with their annotations, whatever the watermark says.
   Annotations the ledger has not counted are observed (published if new) and counted; a batch
   cannot stay incomplete once all its answers are in Label Studio, even when they were made
   while the batch was still being imported and their webhooks were refused or lost. The cost is
   bounded by the open batches (the sampler's open-task limit), and completed batches cost nothing.

3. **Abandoned tasks**: after each open batch of a project with annotators listed is read back,
   :class:`~labelloop_bridge.reassignment.Reassigner` moves the tasks nobody answered within the
   project's ``quality.assignment_timeout_seconds`` to another annotator, and brings Label
   Studio in line with the ledger (the moved task copied to its new assignee, the old copy
   withdrawn). The projects of the people a task was taken from are still read, for late answers.

Each annotation goes through the same intake as a webhook's (deduplicated by id and
``updated_at``). Annotations the ledger counted but the listing lacks are published as deleted
only once Label Studio confirms it no longer has them (404): a webhook may have counted an
annotation created after the listing was read, and a deletion is final. So a missed or disabled
webhook costs at most one interval. An annotation Label Studio returns in a shape the bridge
cannot read is skipped and counted (``malformed``), never allowed to stop a pass.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from labelloop.events import AnnotationSource

from .intake import TASK_BATCH, TASK_ITEM, AnnotationIntake, annotation_wire_id, observation_from_ls
from .labelstudio import LabelStudioClient
from .metrics import BridgeMetrics
from .reassignment import Copies, Reassigner
from .store import BridgeState, LsProjectRef
from .webhook import BadPayload

__all__ = ["Reconciler"]

log = logging.getLogger("labelloop.bridge.reconciliation")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Reconciler:
    def __init__(
        self,
        client: LabelStudioClient,
        state: BridgeState,
        intake: AnnotationIntake,
        metrics: BridgeMetrics,
        *,
        margin_seconds: float = 60.0,
        before_pass: Callable[[], Awaitable[None]] | None = None,
        reassigner: Reassigner | None = None,
    ) -> None:
        self._client = client
        self._state = state
        self._intake = intake
        self._metrics = metrics
        self._margin = timedelta(seconds=margin_seconds)
        self._before_pass = before_pass
        self._reassigner = reassigner

    async def run_once(self) -> int:
        """One pass over every Label Studio project the bridge manages; annotations published."""
        published = 0
        try:
            if self._before_pass is not None:
                await self._before_pass()
            refs = await self._state.ls_projects()
            for ref in refs:
                published += await self._project(ref)
            for project in sorted({ref.project for ref in refs}):
                published += await self._open_batches(project, refs)
                await self._intake.publish_pending_completions(project)
        except Exception:
            self._metrics.reconciliations.labels("error").inc()
            raise
        self._metrics.reconciliations.labels("ok").inc()
        return published

    async def _project(self, ref: LsProjectRef) -> int:
        watermark = await self._state.watermark(ref.project, ref.kind, ref.annotator)
        since = (watermark or _EPOCH) - self._margin
        newest = watermark
        published = 0
        async for task in self._client.tasks_updated_since(ref.ls_project_id, since):
            published += await self._task(ref, task)
            updated = datetime.fromisoformat(str(task["updated_at"]))
            if newest is None or updated > newest:
                newest = updated
        if newest is not None and newest != watermark:
            await self._state.set_watermark(ref.project, ref.kind, newest, ref.annotator)
        if published:
            log.info(
                "reconciliation: %d annotations from Label Studio project %d (%s %s)",
                published,
                ref.ls_project_id,
                ref.project,
                ref.kind,
            )
        return published

    async def _open_batches(self, project: str, refs: list[LsProjectRef]) -> int:
        """Read back every task of each open, incomplete batch, whatever the watermark says."""
        published = 0
        for batch_id in await self._state.open_batches(project):
            ledger = await self._state.ledger(project, batch_id)
            if ledger is None or ledger.completed:  # not yet recorded, or already complete
                continue
            people = set(ledger.assignments()) | set(ledger.released())
            where = [
                r
                for r in refs
                if r.project == project
                and r.kind == ledger.kind
                and (r.annotator in people if people else r.annotator is None)
            ]
            seen: set[int] = set()
            copies: Copies = {}
            for ref in where:
                tasks = await self._client.tasks_with_data(ref.ls_project_id, TASK_BATCH, batch_id)
                copies[ref.annotator] = tasks
                for task in tasks:
                    published += await self._task(ref, task, seen)
            # published earlier but never counted (a stop between the two): count them now
            after = await self._state.ledger(project, batch_id)
            if after is not None and not after.completed:
                counted = {a for t in after.tasks.values() for a in t.answers}
                lacking = [i for i in seen if annotation_wire_id(i) not in counted]
                if lacking:
                    await self._intake.recount(project, batch_id, lacking)
            if self._reassigner is not None and people:
                latest = await self._state.ledger(project, batch_id)
                if latest is not None:
                    await self._reassigner.batch(project, latest, copies)
        if published:
            log.info("reconciliation: %d annotations from open batches of %s", published, project)
        return published

    async def _task(
        self, ref: LsProjectRef, task: dict[str, Any], seen: set[int] | None = None
    ) -> int:
        data = task.get("data") or {}
        if data.get(TASK_ITEM) is None or data.get(TASK_BATCH) is None:
            return 0
        published = 0
        present: set[str] = set()
        for annotation in task.get("annotations") or []:
            try:
                obs = observation_from_ls(
                    ref.project,
                    ref.kind,
                    annotation,
                    data,
                    AnnotationSource.RECONCILIATION,
                    ref.annotator,
                )
                outcome = await self._intake.observe(obs)
            except BadPayload as exc:
                self._metrics.annotations_ignored.labels("malformed").inc()
                log.warning("reconciliation: unreadable annotation skipped: %s", exc)
                raw_id = annotation.get("id") if isinstance(annotation, dict) else None
                if isinstance(raw_id, int):  # still there: not a deletion
                    present.add(annotation_wire_id(raw_id))
                continue
            present.add(annotation_wire_id(obs.ls_annotation_id))
            if seen is not None:
                seen.add(obs.ls_annotation_id)
            published += outcome == "published"
        ledger = await self._state.ledger(ref.project, str(data[TASK_BATCH]))
        if ledger is None:
            return published
        entry = ledger.tasks.get(str(data[TASK_ITEM]))
        live = entry.live() if entry else {}
        if ref.annotator is not None:  # this project holds its owner's answers, no one else's
            live = {a: x for a, x in live.items() if x.annotator_id == ref.annotator}
        for wire_id in sorted(set(live) - present):
            ls_id = int(wire_id.removeprefix("ls-"))
            # counted but not in the listing: deleted, or created (and counted from its webhook)
            # after the listing was read. Only Label Studio can tell: a false deletion is final.
            if await self._client.annotation_exists(ls_id):
                continue
            gone = observation_from_ls(
                ref.project,
                ref.kind,
                {"id": ls_id},
                data,
                AnnotationSource.RECONCILIATION,
                ref.annotator,
            )
            published += await self._intake.observe(replace(gone, deleted=True)) == "deleted"
        return published
