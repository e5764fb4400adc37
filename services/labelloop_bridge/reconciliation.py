"""The reconciliation loop: what the webhooks missed, read back from Label Studio.

Webhooks are hints (one POST, 1 s timeout, no retry, auto-disabled after failures). Every
interval the bridge lists, per Label Studio project, the tasks updated since its watermark (Label
Studio bumps a task's ``updated_at`` on every annotation created, updated, skipped or deleted),
re-reading ``margin`` seconds before it to cover clock skew and updates racing the listing. Each
annotation goes through the same intake as a webhook's (deduplicated by id and ``updated_at``);
annotations the ledger counted but Label Studio no longer has are published as deleted. So a
missed or disabled webhook costs at most one interval.
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
from .state import BridgeState, LsProjectRef

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
    ) -> None:
        self._client = client
        self._state = state
        self._intake = intake
        self._metrics = metrics
        self._margin = timedelta(seconds=margin_seconds)
        self._before_pass = before_pass

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
                await self._intake.publish_pending_completions(project)
        except Exception:
            self._metrics.reconciliations.labels("error").inc()
            raise
        self._metrics.reconciliations.labels("ok").inc()
        return published

    async def _project(self, ref: LsProjectRef) -> int:
        watermark = await self._state.watermark(ref.project, ref.kind)
        since = (watermark or _EPOCH) - self._margin
        newest = watermark
        published = 0
        async for task in self._client.tasks_updated_since(ref.ls_project_id, since):
            published += await self._task(ref, task)
            updated = datetime.fromisoformat(str(task["updated_at"]))
            if newest is None or updated > newest:
                newest = updated
        if newest is not None and newest != watermark:
            await self._state.set_watermark(ref.project, ref.kind, newest)
        if published:
            log.info(
                "reconciliation: %d annotations from Label Studio project %d (%s %s)",
                published,
                ref.ls_project_id,
                ref.project,
                ref.kind,
            )
        return published

    async def _task(self, ref: LsProjectRef, task: dict[str, Any]) -> int:
        data = task.get("data") or {}
        if data.get(TASK_ITEM) is None or data.get(TASK_BATCH) is None:
            return 0
        published = 0
        present: set[str] = set()
        for annotation in task.get("annotations") or []:
            present.add(annotation_wire_id(int(annotation["id"])))
            obs = observation_from_ls(
                ref.project, ref.kind, annotation, data, AnnotationSource.RECONCILIATION
            )
            published += await self._intake.observe(obs) == "published"
        ledger = await self._state.ledger(ref.project, str(data[TASK_BATCH]))
        if ledger is None:
            return published
        entry = ledger.tasks.get(str(data[TASK_ITEM]))
        for wire_id in sorted(set(entry.answers) - present) if entry else []:
            ls_id = int(wire_id.removeprefix("ls-"))
            gone = observation_from_ls(
                ref.project, ref.kind, {"id": ls_id}, data, AnnotationSource.RECONCILIATION
            )
            published += await self._intake.observe(replace(gone, deleted=True)) == "deleted"
        return published
