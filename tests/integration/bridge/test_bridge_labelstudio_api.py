"""The Label Studio client against a real Label Studio 1.23: what the bridge relies on, checked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from labelloop.project import ProjectConfig, TaskType
from labelloop_bridge.domain.label_config import (
    REVIEW_REASON_FIELD,
    REVIEW_VOTES_FIELD,
    build_label_config,
    guidelines_html,
)
from labelloop_bridge.domain.results import to_ls_result
from labelloop_bridge.labelstudio import LabelStudioAuthError, LabelStudioClient

# fixtures from conftest.py: label_studio (LabelStudioServer), people (LabelStudioPeople)
LabelStudioServer = LabelStudioPeople = Any

pytestmark = [pytest.mark.integration, pytest.mark.labelstudio]

_KIND = {
    TaskType.TEXT_CLASSIFICATION: "text",
    TaskType.TEXT_MULTILABEL: "text",
    TaskType.NER: "text",
    TaskType.IMAGE_CLASSIFICATION: "image",
    TaskType.BOUNDING_BOXES: "image",
    TaskType.AUDIO_CLASSIFICATION: "audio",
    TaskType.VIDEO_CLASSIFICATION: "video",
}


def _config(task_type: TaskType) -> ProjectConfig:
    kind = _KIND[task_type]
    formats = {TaskType.NER: ["conll"], TaskType.BOUNDING_BOXES: ["coco"]}.get(task_type, ["csv"])
    return ProjectConfig.model_validate(
        {
            "name": f"api-{task_type.value}".replace("_", "-"),
            "task_type": task_type.value,
            "labels": {"classes": ["alpha", "beta", "gamma & delta"]},
            "data_fields": [{"name": kind, "kind": kind}, {"name": "note", "kind": "text"}],
            "export": {"formats": formats},
        }
    )


@pytest.fixture
async def client(label_studio: LabelStudioServer) -> AsyncIterator[LabelStudioClient]:
    http = httpx.AsyncClient(base_url=label_studio.url, timeout=30.0)
    ls = LabelStudioClient(http, label_studio.token)
    yield ls
    await ls.aclose()


@pytest.mark.parametrize("review", [False, True], ids=["labeling", "review"])
@pytest.mark.parametrize("task_type", list(TaskType))
async def test_label_studio_accepts_the_generated_config_of_every_task_type(
    client: LabelStudioClient, task_type: TaskType, review: bool
) -> None:
    config = _config(task_type)
    xml = build_label_config(config, review=review)
    created = await client.create_project(
        {
            "title": f"cfg {task_type.value} {review}"[:50],
            "label_config": xml,
            "expert_instruction": guidelines_html("# Guide\n\nBe *careful*."),
            "show_instruction": True,
        }
    )
    project = await client.get_project(int(created["id"]))
    assert project is not None
    assert "<em>careful</em>" in project["expert_instruction"]
    assert project["parsed_label_config"]["label"]["to_name"] == [_KIND[task_type]]
    assert project["label_config"] == xml  # hotkeys, layout and panel kept as generated
    data = {"note": "n", _KIND[task_type]: "t", "labelloop_item_id": "i"}
    if review:
        data |= {REVIEW_REASON_FIELD: "Why review: ...", REVIEW_VOTES_FIELD: "Crowd votes: ..."}
    assert len(await client.import_tasks(int(created["id"]), [{"data": data}])) == 1


async def test_tasks_predictions_filters_and_timestamps(
    client: LabelStudioClient, people: LabelStudioPeople
) -> None:
    config = _config(TaskType.TEXT_CLASSIFICATION)
    created = await client.create_project(
        {"title": "api tasks", "label_config": build_label_config(config)}
    )
    ls_id = int(created["id"])
    await client.update_project(ls_id, {"maximum_annotations": 3})
    assert (await client.get_project(ls_id) or {})["maximum_annotations"] == 3
    prediction = {
        "result": to_ls_result("beta", TaskType.TEXT_CLASSIFICATION, "text"),
        "score": 0.8,
        "model_version": "m1",
    }
    tasks: list[dict[str, Any]] = [
        {
            "data": {
                "text": f"t{i}",
                "note": "",
                "labelloop_batch_id": "b/1",
                "labelloop_item_id": f"i{i}",
            },
            "predictions": [prediction],
        }
        for i in range(150)
    ]
    tasks.append(
        {
            "data": {
                "text": "other",
                "note": "",
                "labelloop_batch_id": "b/2",
                "labelloop_item_id": "x",
            }
        }
    )
    ids = await client.import_tasks(ls_id, tasks)
    assert len(ids) == 151
    batch = await client.tasks_with_data(ls_id, "labelloop_batch_id", "b/1")
    assert len(batch) == 150  # two pages of 100
    assert batch[0]["predictions"][0]["model_version"] == "m1"
    assert batch[0]["overlap"] == 3
    await client.set_task_overlap(int(batch[0]["id"]), 1)

    before = datetime.now(UTC) - timedelta(seconds=1)
    assert [t async for t in client.tasks_updated_since(ls_id, before + timedelta(hours=1))] == []
    user = await people.user("api-annotator@example.com")
    result = to_ls_result("alpha", TaskType.TEXT_CLASSIFICATION, "text")
    annotation = await people.annotate(int(batch[5]["id"]), user, result)
    skipped = await people.annotate(int(batch[6]["id"]), user, [], cancelled=True)
    changed = [t async for t in client.tasks_updated_since(ls_id, before)]
    # creating an annotation, or a skip, bumps its task's updated_at
    assert {int(t["id"]) for t in changed} >= {int(batch[5]["id"]), int(batch[6]["id"])}
    by_id = {int(t["id"]): t for t in changed}
    (ann,) = by_id[int(batch[5]["id"])]["annotations"]
    assert ann["id"] == annotation["id"]
    assert ann["completed_by"] == user
    (skip,) = by_id[int(batch[6]["id"])]["annotations"]
    assert skip["was_cancelled"] is True
    assert skip["id"] == skipped["id"]

    mark = datetime.fromisoformat(by_id[int(batch[5]["id"])]["updated_at"])
    assert await client.annotation_exists(int(annotation["id"]))
    await people.delete(int(annotation["id"]))
    assert not await client.annotation_exists(int(annotation["id"]))  # 404 once deleted
    assert await client.annotation_exists(int(skipped["id"]))
    after_delete = [t async for t in client.tasks_updated_since(ls_id, mark)]
    # a deletion bumps it too, and the annotation is gone from the listing
    assert [t["annotations"] for t in after_delete if t["id"] == batch[5]["id"]] == [[]]


async def test_webhooks_and_users(client: LabelStudioClient, people: LabelStudioPeople) -> None:
    created = await client.create_project(
        {"title": "api hooks", "label_config": build_label_config(_config(TaskType.NER))}
    )
    ls_id = int(created["id"])
    hook = await client.create_webhook(
        {
            "url": "http://127.0.0.1:9/hook",
            "project": ls_id,
            "send_payload": True,
            "actions": ["ANNOTATION_CREATED"],
            "headers": {"X-Secret": "s"},
            "is_active": True,
        }
    )
    assert [h["id"] for h in await client.list_webhooks(ls_id)] == [hook["id"]]
    await client.update_webhook(
        int(hook["id"]), {"actions": ["ANNOTATION_CREATED", "ANNOTATION_UPDATED"]}
    )
    await client.delete_webhook(int(hook["id"]))
    assert await client.list_webhooks(ls_id) == []
    uid = await people.user("someone@example.com")
    assert (await client.get_user(uid) or {})["email"] == "someone@example.com"
    assert uid in {int(u["id"]) for u in await client.list_users()}


async def test_a_wrong_token_is_an_auth_error(label_studio: LabelStudioServer) -> None:
    http = httpx.AsyncClient(base_url=label_studio.url, timeout=30.0)
    ls = LabelStudioClient(http, "not-the-token")
    with pytest.raises(LabelStudioAuthError):
        await ls.list_projects()
    assert await ls.health()
    await ls.aclose()
