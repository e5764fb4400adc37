"""Abandoned tasks: taken from an annotator who did not answer in time, given to another.

With blind overlap (the project's ``annotators:`` list, :mod:`labelloop_bridge.importer`) every
task waits for the particular people it was assigned to; one absent person would hold their
batch, and with it QA, export and training, forever. The project's
``quality.assignment_timeout_seconds`` bounds that wait. The reconciliation loop hands this
module each open batch after reading its answers back from Label Studio, so an answer given in
time is counted before anything is decided. Then, crash-safe and idempotent like the import:

1. **decide and record**: :func:`~.domain.assignment.overdue` picks who takes each overdue task
   (never a flagged annotator, nor one who answered the item or had it taken away; least loaded
   first, deterministic), applied to the batch ledger by compare-and-swap. The decision is made
   inside the swap on the ledger as stored, so two replicas never both move a task, and once
   recorded it is final: the successor's clock starts then;
2. **copy**: under the batch's import lease (the importer's), the tasks the ledger gives someone
   that are missing from their own Label Studio project are imported there (listed first, so a
   repeated pass imports nothing twice), copied from another copy of the task: its data and
   pre-annotation;
3. **withdraw**: the copy in the absent annotator's project is deleted, if nobody answered it
   there (a late answer is kept; :mod:`labelloop_bridge.intake` says when it counts).

Steps 2 and 3 compare the ledger with what Label Studio holds, on every pass, for every open
batch that had a task moved: a bridge stopped between steps finishes them on its next pass.

Not for the shared project (no annotators listed): Label Studio hands its tasks to whoever asks
next, and a task someone opened and left is freed by Label Studio's own lock expiry
(``LABEL_STUDIO_TASK_LOCK_TTL``, infra/labelstudio/README.md).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from labelloop.project import ProjectConfig

from .domain.assignment import Reassignment, overdue
from .domain.ledger import BatchLedger
from .intake import TASK_BATCH, TASK_ITEM
from .labelstudio import LabelStudioClient
from .metrics import BridgeMetrics
from .provisioning import ProjectProvisioner
from .recent import RecentKeys
from .store import BridgeState

__all__ = ["Reassigner"]

log = logging.getLogger("labelloop.bridge.reassignment")

ProjectLookup = Callable[[str], Awaitable[ProjectConfig | None]]
Copies = dict[str | None, list[dict[str, Any]]]
"""Annotator -> the batch's tasks in their own Label Studio project, as listed (with their
annotations); ``None``: the shared project."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _copy(task: dict[str, Any]) -> dict[str, Any]:
    """A listed task as import JSON: its data and its pre-annotations."""
    out: dict[str, Any] = {"data": task.get("data") or {}}
    predictions = []
    for prediction in task.get("predictions") or []:
        if not isinstance(prediction, dict) or not isinstance(prediction.get("result"), list):
            continue
        kept = {"result": prediction["result"]}
        for key in ("score", "model_version"):
            if prediction.get(key) is not None:
                kept[key] = prediction[key]
        predictions.append(kept)
    if predictions:
        out["predictions"] = predictions
    return out


def _by_item(tasks: list[dict[str, Any]], batch_id: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for task in tasks:
        data = task.get("data") or {}
        if data.get(TASK_BATCH) == batch_id and data.get(TASK_ITEM) is not None:
            found[str(data[TASK_ITEM])] = task
    return found


class Reassigner:
    def __init__(
        self,
        client: LabelStudioClient,
        state: BridgeState,
        provisioner: ProjectProvisioner,
        projects: ProjectLookup,
        metrics: BridgeMetrics,
        *,
        count_skips: bool = True,
        lease_seconds: float = 120.0,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._client = client
        self._state = state
        self._provisioner = provisioner
        self._projects = projects
        self._metrics = metrics
        self._count_skips = count_skips
        self._lease = timedelta(seconds=lease_seconds)
        self._clock = clock
        self._stuck = RecentKeys()

    async def batch(self, project: str, ledger: BatchLedger, copies: Copies) -> int:
        """Reassign the batch's overdue tasks and bring Label Studio in line with the ledger;
        the number of tasks reassigned now."""
        if not ledger.assigned or ledger.completed or not ledger.imported:
            return 0
        config = await self._projects(project)
        if config is None:
            return 0
        moved = 0
        timeout = config.quality.assignment_timeout_seconds
        if timeout is not None:
            ledger, moved = await self._decide(project, ledger, config, timedelta(seconds=timeout))
        if any(t.given or t.released for t in ledger.tasks.values()):
            await self._repair(project, config, ledger, copies)
        return moved

    async def _decide(
        self, project: str, ledger: BatchLedger, config: ProjectConfig, timeout: timedelta
    ) -> tuple[BatchLedger, int]:
        team = [a.id for a in config.annotators if a.role == "annotator"]
        now = self._clock()
        if not overdue(ledger, team, now, timeout, count_skips=self._count_skips):
            return ledger, 0  # the common case: no write
        decided: list[Reassignment] = []

        def change(stored: BatchLedger) -> None:
            # decided again on the ledger as stored: a racing replica's move is seen here
            decided[:] = overdue(stored, team, now, timeout, count_skips=self._count_skips)
            for move in decided:
                if move.successor is not None:
                    stored.reassign(move.item_id, move.absent, move.successor, now)

        result = await self._state.change_ledger(project, ledger.batch_id, change)
        if result is None:
            return ledger, 0
        moved = 0
        for move in decided:
            if move.successor is None:
                if self._stuck.first((project, ledger.batch_id, move.item_id, move.absent)):
                    log.warning(
                        "batch %s: item %s waits on %s past the assignment timeout and nobody "
                        "else may take it",
                        ledger.batch_id,
                        move.item_id,
                        move.absent,
                    )
                continue
            moved += 1
            log.info(
                "batch %s: item %s reassigned from %s to %s (no answer within %.0f s)",
                ledger.batch_id,
                move.item_id,
                move.absent,
                move.successor,
                timeout.total_seconds(),
            )
        self._metrics.reassignments.inc(moved)
        return result.ledger, moved

    async def _repair(
        self, project: str, config: ProjectConfig, ledger: BatchLedger, copies: Copies
    ) -> None:
        """Copy each task to whoever the ledger gives it and lacks it; withdraw the unanswered
        copies of the people it was taken from."""
        listed = {person: _by_item(tasks, ledger.batch_id) for person, tasks in copies.items()}
        sources: dict[str, dict[str, Any]] = {}
        for tasks in listed.values():
            for item, task in tasks.items():
                sources.setdefault(item, task)
        lacking = {
            person: [i for i in items if i not in listed.get(person, {})]
            for person, items in ledger.assignments().items()
        }
        lacking = {person: items for person, items in lacking.items() if items}
        if lacking and not await self._copy(project, config, ledger, lacking, sources):
            return  # withdraw nothing before every copy is in place: it may be the only one
        for person, items in sorted(ledger.released().items()):
            for item in items:
                old = listed.get(person, {}).get(item)
                if old is None or old.get("annotations"):
                    continue  # gone already, or answered there (kept: a late answer)
                if await self._client.delete_task(int(old["id"])):
                    log.info(
                        "batch %s: item %s withdrawn from the project of %s",
                        ledger.batch_id,
                        item,
                        person,
                    )

    async def _copy(
        self,
        project: str,
        config: ProjectConfig,
        ledger: BatchLedger,
        lacking: dict[str, list[str]],
        sources: dict[str, dict[str, Any]],
    ) -> bool:
        """Under the import lease: list again, import what is still missing; whether every
        task is now where the ledger says."""
        owner = uuid.uuid4().hex
        batch_id = ledger.batch_id
        if not await self._state.hold_import(project, batch_id, owner, self._lease, self._clock()):
            return False  # another replica is at it; the next pass looks again
        complete = True
        try:
            for person, items in sorted(lacking.items()):
                ls_id = await self._provisioner.ensure(config, "labeling", person)
                present = _by_item(
                    await self._client.tasks_with_data(ls_id, TASK_BATCH, batch_id), batch_id
                )
                missing = [i for i in items if i not in present and i in sources]
                for item in items:
                    if item not in present and item not in sources:
                        complete = False
                        log.warning(
                            "batch %s: no copy of item %s to give %s", batch_id, item, person
                        )
                if not missing:
                    continue
                if not await self._state.hold_import(
                    project, batch_id, owner, self._lease, self._clock()
                ):
                    return False  # the lease ran out, another took over: never import without
                await self._client.import_tasks(ls_id, [_copy(sources[i]) for i in missing])
                await self._provisioner.hide_internal_columns(ls_id, "labeling")
                log.info(
                    "batch %s: %d reassigned tasks imported into the project of %s",
                    batch_id,
                    len(missing),
                    person,
                )
        finally:
            await self._state.release_import(project, batch_id, owner)
        return complete
