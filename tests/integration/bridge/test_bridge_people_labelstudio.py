"""What people see in a real Label Studio 1.23, as the bridge sets it up.

* the project's title names the run (the namespace); the description keeps the bridge's marker;
* Label Studio takes the generated interface, with the hotkeys that are the classes;
* labelloop's ids in the task data are hidden in every Data Manager tab (the column ids the bridge
  hides are Label Studio's own), a person's tab keeps its filters, and the reconciliation still
  finds a batch's tasks by its id;
* a review task carries why it is in review and every crowd vote, and no pre-selected answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from labelloop.events import (
    AnnotationsSubmitted,
    BatchCreated,
    BatchTask,
    Event,
    Prediction,
)
from labelloop.project import ProjectConfig
from labelloop.stores import MemoryKeyValue
from labelloop_bridge.domain.label_config import REVIEW_REASON_FIELD, REVIEW_VOTES_FIELD
from labelloop_bridge.importer import BatchImporter
from labelloop_bridge.intake import TASK_BATCH, TASK_ITEM, AnnotationIntake
from labelloop_bridge.labelstudio import LabelStudioClient
from labelloop_bridge.metrics import BridgeMetrics
from labelloop_bridge.provisioning import INTERNAL_COLUMNS, ProjectProvisioner
from labelloop_bridge.reconciliation import Reconciler
from labelloop_bridge.registry import AnnotatorRegistry
from labelloop_bridge.store import BridgeState

# fixtures from conftest.py: label_studio (LabelStudioServer), people (LabelStudioPeople)
pytestmark = [pytest.mark.integration, pytest.mark.labelstudio]

DIGITS = ProjectConfig.model_validate(
    {
        "name": "digits",
        "title": "Handwritten digits",
        "task_type": "image_classification",
        "labels": {"classes": [str(d) for d in range(10)]},
        "data_fields": [{"name": "image", "kind": "image"}],
        "guidelines_text": "# Handwritten digits\n\nPick the digit the writer meant.",
        "quality": {"annotators_per_overlapped_item": 3},
    }
)
# a 1x1 white PNG: Label Studio stores the reference, people would see a pixel
PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGP4DwABAQEA"
    "WjQJ9wAAAABJRU5ErkJggg=="
)


def _digit(label: str) -> list[dict[str, Any]]:
    return [
        {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}
    ]


def _batch(batch_id: str, n: int, kind: str = "labeling", **task: Any) -> BatchCreated:
    return BatchCreated(
        project="digits",
        batch_id=batch_id,
        round=1,
        strategy="review" if kind == "review" else "random",
        seed=0,
        kind=kind,  # type: ignore[arg-type]
        tasks=[
            BatchTask(
                item_id=f"item-{i}",
                data={"image": PIXEL},
                annotations_required=3 if i == 0 and kind == "labeling" else 1,
                **task,
            )
            for i in range(n)
        ],
    )


@dataclass
class Bridge:
    client: LabelStudioClient
    importer: BatchImporter
    reconciler: Reconciler
    published: list[Event]

    async def project(self, kind: str, namespace: str) -> dict[str, Any]:
        marker = f"[labelloop:{namespace}/digits/{kind}]"
        (found,) = [
            p for p in await self.client.list_projects() if marker in (p.get("description") or "")
        ]
        return found


@pytest.fixture
async def bridge(label_studio: Any, namespace: str) -> AsyncIterator[Bridge]:
    """The bridge's parts against the real Label Studio, its state in memory."""
    http = httpx.AsyncClient(base_url=label_studio.url, timeout=30.0)
    client = LabelStudioClient(http, label_studio.token)
    state = BridgeState(MemoryKeyValue())
    metrics = BridgeMetrics(CollectorRegistry(), "label-studio")
    published: list[Event] = []

    async def publish(event: Event) -> None:
        published.append(event)

    async def projects(name: str) -> ProjectConfig | None:
        return DIGITS if name == "digits" else None

    intake = AnnotationIntake(state, publish, projects, AnnotatorRegistry(client), metrics)
    provisioner = ProjectProvisioner(client, state, namespace, None)
    importer = BatchImporter(client, state, provisioner, intake, metrics, namespace=namespace)
    reconciler = Reconciler(client, state, intake, metrics, margin_seconds=0)
    yield Bridge(client, importer, reconciler, published)
    await client.aclose()


async def _tabs(people: Any, ls_id: int) -> list[dict[str, Any]]:
    response = await people.http.get("/api/dm/views/", params={"project": ls_id})
    response.raise_for_status()
    return list(response.json())


async def _column_ids(people: Any, ls_id: int) -> set[str]:
    """The Data Manager's ids of a project's columns, as a tab names them."""
    response = await people.http.get("/api/dm/columns/", params={"project": ls_id})
    response.raise_for_status()
    return {
        "tasks:" + ("data." if c.get("parent") == "data" else "") + c["id"]
        for c in response.json()["columns"]
    }


async def test_the_project_names_the_run_takes_the_interface_and_hides_the_ids(
    bridge: Bridge, people: Any, namespace: str
) -> None:
    await bridge.importer.place(_batch("batch-1", n=2), DIGITS)
    project = await bridge.project("labeling", namespace)
    assert project["title"] == f"Handwritten digits · {namespace}"
    assert project["parsed_label_config"]["label"]["labels"] == [str(d) for d in range(10)]
    assert '<Choice value="7" hotkey="7"/>' in project["label_config"]
    ls_id = int(project["id"])

    # the ids the bridge hides are the Data Manager's own column ids
    assert set(INTERNAL_COLUMNS) <= await _column_ids(people, ls_id)
    (tab,) = await _tabs(people, ls_id)
    for mode in ("explore", "labeling"):
        assert set(INTERNAL_COLUMNS) <= set(tab["data"]["hiddenColumns"][mode])
    assert "tasks:data.image" not in tab["data"]["hiddenColumns"]["explore"]

    # a person adds a tab with a filter (Label Studio's defaults show every data key)
    mine = {
        "title": "Unlabeled",
        "filters": {
            "conjunction": "and",
            "items": [
                {
                    "filter": "filter:tasks:total_annotations",
                    "operator": "equal",
                    "type": "Number",
                    "value": 0,
                }
            ],
        },
    }
    added = await people.http.post("/api/dm/views/", json={"project": ls_id, "data": mine})
    added.raise_for_status()
    await bridge.importer.place(_batch("batch-2", n=1), DIGITS)
    (theirs,) = [t for t in await _tabs(people, ls_id) if t["id"] == added.json()["id"]]
    assert theirs["data"]["title"] == "Unlabeled"
    assert set(INTERNAL_COLUMNS) <= set(theirs["data"]["hiddenColumns"]["explore"])
    (kept,) = theirs["data"]["filters"]["items"]
    assert kept["filter"] == "filter:tasks:total_annotations"

    # hidden from people, still found by the bridge: the reconciliation reads the answers back
    tasks = await bridge.client.tasks_with_data(ls_id, TASK_BATCH, "batch-1")
    first = next(t for t in tasks if t["data"][TASK_ITEM] == "item-1")
    annotator = await people.user("digit-reader@example.com")
    await people.annotate(int(first["id"]), annotator, _digit("7"))
    assert await bridge.reconciler.run_once() == 1
    (event,) = [e for e in bridge.published if isinstance(e, AnnotationsSubmitted)]
    assert (event.annotations[0].item_id, event.annotations[0].value) == ("item-1", "7")


async def test_a_review_task_says_why_shows_every_vote_and_preselects_nothing(
    bridge: Bridge, people: Any, namespace: str
) -> None:
    await bridge.importer.place(_batch("batch-1", n=1), DIGITS)
    labeling = await bridge.project("labeling", namespace)
    (task,) = await bridge.client.tasks_with_data(int(labeling["id"]), TASK_BATCH, "batch-1")
    crowd = [await people.user(f"{who}-digits@example.com") for who in ("ann", "bob", "cy")]
    for who, digit in zip(crowd, ("6", "7", "6"), strict=True):
        await people.annotate(int(task["id"]), who, _digit(digit))
    await bridge.reconciler.run_once()

    # as the sampler cuts it from QA's ReviewRequested: the crowd's label as the candidate
    review = _batch(
        "review-1",
        n=1,
        kind="review",
        is_review=True,
        score=0.41,
        prediction=Prediction(label="6", score=0.41),
        metadata={"review_reason": "disagreement"},
    )
    await bridge.importer.place(review, DIGITS)
    project = await bridge.project("review", namespace)
    assert project["title"] == f"Handwritten digits (review) · {namespace}"
    assert f"${REVIEW_REASON_FIELD}" in project["label_config"]
    (shown,) = await people.tasks(int(project["id"]))
    assert shown["predictions"] == []
    assert shown["total_predictions"] == 0  # nothing Label Studio would pre-select
    reason = shown["data"][REVIEW_REASON_FIELD]
    assert reason == "Why review: the crowd's annotators disagree (confidence 0.41)."
    votes = shown["data"][REVIEW_VOTES_FIELD]
    for who, digit in zip(crowd, ("6", "7", "6"), strict=True):
        assert f"ls-user-{who} → {digit}" in votes
    assert "Current label: 6 (not pre-selected" in votes
    # the panel's data: in the table, not in the narrow list beside the labeling screen
    panel = {f"tasks:data.{REVIEW_REASON_FIELD}", f"tasks:data.{REVIEW_VOTES_FIELD}"}
    assert panel <= await _column_ids(people, int(project["id"]))
    (tab,) = await _tabs(people, int(project["id"]))
    assert panel <= set(tab["data"]["hiddenColumns"]["labeling"]) - set(INTERNAL_COLUMNS)
    assert not panel & set(tab["data"]["hiddenColumns"]["explore"])
