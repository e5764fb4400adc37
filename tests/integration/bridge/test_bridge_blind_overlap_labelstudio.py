"""Blind overlap in a real Label Studio 1.23: one project per annotator, only their tasks in it.

Community Edition shows every answer of a task to whoever opens it (``is_annotator`` is always
false there, so the task API returns all annotations), so a task several people answer is put in
the own project of each of them. This checks, against the real server, that each annotator's
project holds exactly the tasks assigned to them and none of anyone else's answers, that
answers given in the right project are merged by item into one completion, and that an answer a
stranger gives in someone's project does not count.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from labelstudio_bridge import LiveBridge, answer, label_studio_client

from labelloop.events import AnnotationsSubmitted, BatchCompleted, BatchCreated, BatchTask
from labelloop.project import ProjectConfig
from labelloop_bridge.intake import TASK_ITEM

# fixtures from conftest.py: label_studio (LabelStudioServer), people (LabelStudioPeople)
pytestmark = [pytest.mark.integration, pytest.mark.labelstudio]

TEAM = ("amy-blind", "ben-blind", "cy-blind")
CONFIG = ProjectConfig.model_validate(
    {
        "name": "blind",
        "title": "Blind tickets",
        "task_type": "text_classification",
        "labels": {"classes": ["billing", "bug"]},
        "data_fields": [{"name": "text", "kind": "text"}],
        "quality": {"annotators_per_overlapped_item": 3},
        "annotators": [{"id": who, "email": f"{who}@example.com"} for who in TEAM],
    }
)


@pytest.fixture
async def bridge(label_studio: Any, namespace: str) -> AsyncIterator[LiveBridge]:
    async with label_studio_client(label_studio) as client:
        yield LiveBridge(client, namespace, CONFIG)


async def test_each_annotator_labels_only_their_tasks_in_a_project_of_their_own(
    bridge: LiveBridge, people: Any, namespace: str
) -> None:
    users = {who: await people.user(f"{who}@example.com") for who in TEAM}
    stranger = await people.user("stranger-blind@example.com")
    batch = BatchCreated(
        project="blind",
        batch_id="blind-1",
        round=1,
        strategy="random",
        seed=0,
        tasks=[
            BatchTask(
                item_id=f"item-{i}",
                data={"text": f"ticket {i}"},
                annotations_required=3 if i == 0 else 1,
            )
            for i in range(4)
        ],
    )
    assert await bridge.importer.place(batch, CONFIG) == 3 + 3
    ledger = await bridge.state.ledger("blind", "blind-1")
    assert ledger is not None
    mine: dict[str, dict[str, int]] = {}
    projects: dict[str, int] = {}
    for who in TEAM:
        marker = f"[labelloop:{namespace}/blind/labeling/{who}]"
        (project,) = [
            p for p in await bridge.client.list_projects() if marker in (p["description"] or "")
        ]
        assert project["title"] == f"Blind tickets · {who} · {namespace}"
        assert project["maximum_annotations"] == 1
        projects[who] = int(project["id"])
        tasks = await people.tasks(projects[who])
        mine[who] = {t["data"][TASK_ITEM]: int(t["id"]) for t in tasks}
        assert sorted(mine[who]) == sorted(i for i, t in ledger.tasks.items() if who in t.assignees)
    assert Counter(i for tasks in mine.values() for i in tasks) == {
        "item-0": 3,
        "item-1": 1,
        "item-2": 1,
        "item-3": 1,
    }
    assert sorted(who for who in TEAM if mine[who]) == list(TEAM)  # spread over everyone

    # a stranger answers in someone's project: Label Studio takes it, the bridge does not count it
    first, second, _ = TEAM
    await people.annotate(mine[first]["item-0"], stranger, answer("bug"))
    await bridge.reconciler.run_once()
    assert not [e for e in bridge.published if isinstance(e, AnnotationsSubmitted)]

    # each answers in their own project; the second sees nothing of the first's answer there
    await people.annotate(mine[first]["item-0"], users[first], answer("billing"))
    (theirs,) = [
        t for t in await people.tasks(projects[second]) if t["id"] == mine[second]["item-0"]
    ]
    assert theirs["annotations"] == []
    for who in TEAM:
        for item, task_id in mine[who].items():
            if (who, item) != (first, "item-0"):
                await people.annotate(task_id, users[who], answer("billing"))
    await bridge.reconciler.run_once()
    (done,) = [e for e in bridge.published if isinstance(e, BatchCompleted)]
    assert Counter(a.item_id for a in done.annotations) == {
        "item-0": 3,
        "item-1": 1,
        "item-2": 1,
        "item-3": 1,
    }
    assert {a.annotator_id for a in done.annotations if a.item_id == "item-0"} == set(TEAM)
    assert all(a.value == "billing" for a in done.annotations)
