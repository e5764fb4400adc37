"""Abandoned tasks in a real Label Studio 1.23: one annotator never answers, the task moves.

Blind overlap gives each task to named annotators in their own projects; with
``quality.assignment_timeout_seconds`` set (tiny here) the reconciliation loop takes a task from
someone who has not answered it and copies it into another annotator's project, withdrawing the
old copy, and the batch completes on the new assignee's answer. Nothing here is timed: the test
runs passes until the condition holds, within a generous deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from labelstudio_bridge import LiveBridge, answer, label_studio_client

from labelloop.events import BatchCompleted, BatchCreated, BatchTask, Prediction
from labelloop.project import ProjectConfig
from labelloop_bridge.intake import TASK_ITEM
from labelloop_bridge.labelstudio import LabelStudioClient

# fixtures from conftest.py: label_studio (LabelStudioServer), people (LabelStudioPeople)
pytestmark = [pytest.mark.integration, pytest.mark.labelstudio]

TEAM = ("amy-away", "ben-away", "cy-away")
DEADLINE_SECONDS = 120.0
CONFIG = ProjectConfig.model_validate(
    {
        "name": "away",
        "title": "Away tickets",
        "task_type": "text_classification",
        "labels": {"classes": ["billing", "bug"]},
        "data_fields": [{"name": "text", "kind": "text"}],
        "quality": {"assignment_timeout_seconds": 0.5},
        "annotators": [{"id": who, "email": f"{who}@example.com"} for who in TEAM],
    }
)


class Bridge(LiveBridge):
    def __init__(self, client: LabelStudioClient, namespace: str) -> None:
        super().__init__(client, namespace, CONFIG, reassign=True)
        self.namespace = namespace

    async def project_of(self, who: str) -> int | None:
        marker = f"[labelloop:{self.namespace}/away/labeling/{who}]"
        for project in await self.client.list_projects():
            if marker in (project["description"] or ""):
                return int(project["id"])
        return None

    async def assignees(self, item: str) -> tuple[str, ...]:
        ledger = await self.state.ledger("away", "away-1")
        assert ledger is not None
        return ledger.tasks[item].assignees

    async def passes_until(self, condition: Callable[[], Awaitable[bool]]) -> None:
        """Reconciliation passes until ``condition`` holds (a generous deadline, not a timing)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_SECONDS
        while not await condition():
            assert loop.time() < deadline, "the condition did not hold within the deadline"
            await asyncio.sleep(0.2)
            await self.reconciler.run_once()


@pytest.fixture
async def bridge(label_studio: Any, namespace: str) -> AsyncIterator[Bridge]:
    async with label_studio_client(label_studio) as client:
        yield Bridge(client, namespace)


async def test_a_task_nobody_answers_moves_to_another_annotator_and_the_batch_completes(
    bridge: Bridge, people: Any
) -> None:
    users = {who: await people.user(f"{who}@example.com") for who in TEAM}
    batch = BatchCreated(
        project="away",
        batch_id="away-1",
        round=1,
        strategy="random",
        seed=0,
        tasks=[
            BatchTask(
                item_id=f"item-{i}",
                data={"text": f"ticket {i}"},
                annotations_required=1,
                prediction=Prediction(label="bug", score=0.7, model_version="m-away"),
            )
            for i in range(3)
        ],
    )
    assert await bridge.importer.place(batch, CONFIG) == 3
    (absent,) = await bridge.assignees("item-0")
    tasks_of: dict[str, dict[str, int]] = {}
    for who in TEAM:
        ls_id = await bridge.project_of(who)
        assert ls_id is not None
        tasks_of[who] = {t["data"][TASK_ITEM]: int(t["id"]) for t in await people.tasks(ls_id)}
    # everyone else answers before any pass runs: only the absent one's task is overdue
    for who in TEAM:
        for task_id in tasks_of[who].values():
            if who != absent:
                await people.annotate(task_id, users[who], answer("billing"))

    async def moved() -> bool:
        return await bridge.assignees("item-0") != (absent,)

    await bridge.passes_until(moved)
    (successor,) = await bridge.assignees("item-0")
    assert successor in TEAM
    assert successor != absent
    assert bridge.registry.get_sample_value("labelloop_bridge_reassignments_total") == 1

    # the old copy left the absent one's queue; Label Studio refuses an answer to it now
    absent_project = await bridge.project_of(absent)
    assert absent_project is not None
    assert "item-0" not in {t["data"][TASK_ITEM] for t in await people.tasks(absent_project)}
    with pytest.raises(httpx.HTTPStatusError):
        await people.annotate(tasks_of[absent]["item-0"], users[absent], answer("bug"))
    # the copy in the successor's project, once, with the pre-annotation
    successor_project = await bridge.project_of(successor)
    assert successor_project is not None
    (copy,) = [t for t in await people.tasks(successor_project) if t["data"][TASK_ITEM] == "item-0"]
    assert copy["data"]["text"] == "ticket 0"
    assert [p["model_version"] for p in copy["predictions"]] == ["m-away"]
    assert not [e for e in bridge.published if isinstance(e, BatchCompleted)]

    await people.annotate(int(copy["id"]), users[successor], answer("bug"))

    async def completed() -> bool:
        return any(isinstance(e, BatchCompleted) for e in bridge.published)

    await bridge.passes_until(completed)
    (done,) = [e for e in bridge.published if isinstance(e, BatchCompleted)]
    assert {
        (a.item_id, a.annotator_id, a.value) for a in done.annotations if a.item_id == "item-0"
    } == {("item-0", successor, "bug")}
    assert len(done.annotations) == 3
    assert bridge.registry.get_sample_value("labelloop_bridge_reassignments_total") == 1
