"""The bridge's state stays bounded: the Label Studio project index split per project (the old
single value still read), a completed batch's ledger compacted and its import lease forgotten."""

from __future__ import annotations

import json
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from labelloop.events import (
    BatchCompleted,
    BatchCreated,
    BatchTask,
    Event,
    Prediction,
    deterministic_id,
)
from labelloop.project import ProjectConfig
from labelloop.stores import Entry, MemoryKeyValue
from labelloop_bridge.importer import BatchImporter
from labelloop_bridge.intake import AnnotationIntake
from labelloop_bridge.labelstudio import LabelStudioClient, RetryPolicy
from labelloop_bridge.metrics import BridgeMetrics
from labelloop_bridge.provisioning import ProjectProvisioner
from labelloop_bridge.reconciliation import Reconciler
from labelloop_bridge.registry import AnnotatorRegistry
from labelloop_bridge.store import BridgeState, LsProjectRef

TOKEN = "fake-token"


class CountingKeyValue(MemoryKeyValue):
    """Remembers which keys were read."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    async def get(self, key: str) -> Entry | None:
        self.reads.append(key)
        return await super().get(key)


async def test_each_label_studio_project_has_its_own_key_and_each_project_its_own_index() -> None:
    kv = CountingKeyValue()
    state = BridgeState(kv)
    await state.claim_ls_project("tickets", "labeling", 11)
    await state.claim_ls_project("tickets", "labeling", 12, annotator="amy")
    await state.claim_ls_project("tickets", "review", 13)
    await state.claim_ls_project("digits", "labeling", 21)
    assert await kv.get("bridge.lsprojects") is None  # the old single value is never written
    index = await kv.get("bridge.tickets.lsprojects")
    assert index is not None
    assert sorted(json.loads(index.value)) == ["11", "12", "13"]  # tickets' only
    assert await state.ls_projects("digits") == [LsProjectRef(21, "digits", "labeling")]
    assert [r.ls_project_id for r in await state.ls_projects()] == [11, 12, 13, 21]

    kv.reads.clear()
    assert await state.lookup_ls_project(12) == LsProjectRef(12, "tickets", "labeling", "amy")
    assert kv.reads == ["bridge.lsproject.12"]  # a webhook's lookup: one small value
    assert await state.lookup_ls_project(99) is None


async def test_the_index_written_before_the_split_is_still_read() -> None:
    kv = MemoryKeyValue()
    legacy = {
        "5": {"project": "tickets", "kind": "labeling"},
        "6": {"project": "tickets", "kind": "labeling", "annotator": "amy"},
        "7": {"project": "old", "kind": "review"},
    }
    await kv.put("bridge.lsprojects", json.dumps(legacy).encode())
    state = BridgeState(kv)
    await state.claim_ls_project("tickets", "review", 8)
    assert await state.lookup_ls_project(6) == LsProjectRef(6, "tickets", "labeling", "amy")
    assert await state.lookup_ls_project(8) == LsProjectRef(8, "tickets", "review")
    assert [r.ls_project_id for r in await state.ls_projects()] == [5, 6, 7, 8]
    assert [r.ls_project_id for r in await state.ls_projects("tickets")] == [5, 6, 8]
    # a project the bridge records again (a redelivered claim) lives under the new keys as well
    await state.replace_ls_project("tickets", "labeling", 5)
    assert await kv.get("bridge.lsproject.5") is not None
    assert [r.ls_project_id for r in await state.ls_projects("tickets")] == [5, 6, 8]


CONFIG = ProjectConfig.model_validate(
    {
        "name": "tickets",
        "title": "Support tickets",
        "task_type": "text_classification",
        "labels": {"classes": ["pos", "neg"]},
        "data_fields": [{"name": "text", "kind": "text"}],
    }
)


async def _no_sleep(seconds: float) -> None:
    return None


async def test_a_completed_batch_is_compacted_and_a_redelivery_imports_nothing(
    fake_ls: Any,
) -> None:
    kv = MemoryKeyValue()
    registry = CollectorRegistry()
    metrics = BridgeMetrics(registry, "label-studio")
    http = httpx.AsyncClient(base_url="http://ls.test", transport=fake_ls.transport)
    retry = RetryPolicy(attempts=1, base_delay=0.0)
    client = LabelStudioClient(http, TOKEN, retry=retry, observer=metrics, sleep=_no_sleep)
    state = BridgeState(kv)
    published: list[Event] = []

    async def publish(event: Event) -> None:
        published.append(event)

    async def projects(name: str) -> ProjectConfig | None:
        return CONFIG

    intake = AnnotationIntake(state, publish, projects, AnnotatorRegistry(client), metrics)
    importer = BatchImporter(
        client,
        state,
        ProjectProvisioner(client, state, "test", None),
        intake,
        metrics,
        namespace="test",
        retry=retry,
    )
    reconciler = Reconciler(client, state, intake, metrics, margin_seconds=0)
    batch = BatchCreated(
        project="tickets",
        batch_id="b-1",
        round=1,
        strategy="random",
        seed=0,
        tasks=[
            BatchTask(
                item_id=f"i{k}",
                data={"text": f"t{k}"},
                annotations_required=1,
                is_gold=k == 0,
                gold_label="pos" if k == 0 else None,
                prediction=Prediction(label="neg", score=0.9),
            )
            for k in range(3)
        ],
    )
    assert await importer.place(batch, CONFIG) == 3
    assert await kv.get("bridge.tickets.import." + _hash("b-1")) is not None
    user = fake_ls.user("amy@example.com")
    for task in list(fake_ls.tasks.values()):
        fake_ls.annotate(task["id"], user, [_choice("pos")])
    await reconciler.run_once()
    (done,) = [e for e in published if isinstance(e, BatchCompleted)]
    assert [t.gold_label for t in done.tasks] == ["pos", None, None]  # carried by the event

    ledger = await state.ledger("tickets", "b-1")
    assert ledger is not None
    assert ledger.completion_published
    assert ledger.info == []  # compacted: the event carried it
    assert sum(len(t.live()) for t in ledger.tasks.values()) == 3  # the answers stay
    assert await kv.get("bridge.tickets.import." + _hash("b-1")) is None  # lease forgotten

    before = len(fake_ls.tasks)
    assert await importer.place(batch, CONFIG) == 0  # a redelivered BatchCreated
    assert len(fake_ls.tasks) == before
    await reconciler.run_once()
    assert len([e for e in published if isinstance(e, BatchCompleted)]) == 1


def _hash(batch_id: str) -> str:
    return deterministic_id(batch_id)


def _choice(label: str) -> dict[str, Any]:
    return {
        "from_name": "label",
        "to_name": "text",
        "type": "choices",
        "value": {"choices": [label]},
    }
