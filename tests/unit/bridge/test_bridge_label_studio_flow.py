"""Batches into a (fake) Label Studio and annotations back: idempotent import, dedup, completion."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from labelloop.events import (
    AnnotationSource,
    AnnotationsSubmitted,
    BatchCompleted,
    BatchCreated,
    BatchTask,
    Event,
    Prediction,
    deterministic_id,
)
from labelloop.project import ProjectConfig
from labelloop.stores import ConflictError, MemoryKeyValue
from labelloop_bridge.domain.label_config import REVIEW_REASON_FIELD, REVIEW_VOTES_FIELD
from labelloop_bridge.domain.ledger import BatchLedger
from labelloop_bridge.importer import BatchImporter, ImportLeaseLost
from labelloop_bridge.intake import TASK_BATCH, AnnotationIntake, observation_from_ls
from labelloop_bridge.labelstudio import (
    LabelStudioAuthError,
    LabelStudioClient,
    LabelStudioUnavailable,
    RetryPolicy,
)
from labelloop_bridge.metrics import BridgeMetrics
from labelloop_bridge.provisioning import INTERNAL_COLUMNS, ProjectProvisioner, WebhookSpec
from labelloop_bridge.reconciliation import Reconciler
from labelloop_bridge.registry import AnnotatorRegistry
from labelloop_bridge.store import BridgeState
from labelloop_bridge.webhook import BadPayload

TOKEN = "fake-token"
SECRET = "hook-secret"

CONFIG = ProjectConfig.model_validate(
    {
        "name": "reviews",
        "title": "Product reviews",
        "task_type": "text_classification",
        "labels": {"classes": ["pos", "neg"]},
        "data_fields": [{"name": "text", "kind": "text"}],
        "guidelines_text": "# Guide\n\nRead it all.",
        "quality": {"annotators_per_overlapped_item": 3},
        "annotators": [{"id": "dr-x", "role": "expert", "email": "x@example.com"}],
    }
)


def _choice(label: str) -> list[dict[str, Any]]:
    return [
        {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}
    ]


async def _no_sleep(seconds: float) -> None:
    return None


@dataclass
class Bridge:
    fake: Any
    kv: Any
    state: BridgeState
    importer: BatchImporter
    intake: AnnotationIntake
    reconciler: Reconciler
    published: list[Event]
    registry: CollectorRegistry

    def of(self, cls: type[Event]) -> list[Any]:
        return [e for e in self.published if isinstance(e, cls)]

    def ls_id(self) -> int:
        (pid,) = [p for p, v in self.fake.projects.items() if "(review)" not in v["title"]]
        return pid

    def task(self, item_id: str) -> int:
        (tid,) = [
            t["id"] for t in self.fake.tasks.values() if t["data"]["labelloop_item_id"] == item_id
        ]
        return int(tid)


def _bridge(fake: Any, kv: Any, token: str = TOKEN, attempts: int = 3) -> Bridge:
    registry = CollectorRegistry()
    metrics = BridgeMetrics(registry, "label-studio")
    http = httpx.AsyncClient(base_url="http://ls.test", transport=fake.transport)
    retry = RetryPolicy(attempts=attempts, base_delay=0.0)
    client = LabelStudioClient(http, token, retry=retry, observer=metrics, sleep=_no_sleep)
    state = BridgeState(kv)
    published: list[Event] = []

    async def publish(event: Event) -> None:
        published.append(event)

    async def projects(name: str) -> ProjectConfig | None:
        return CONFIG if name == CONFIG.name else None

    intake = AnnotationIntake(state, publish, projects, AnnotatorRegistry(client), metrics)
    hook = WebhookSpec("http://bridge/webhooks/label-studio", "X-Secret", SECRET)
    provisioner = ProjectProvisioner(client, state, "test", hook)
    importer = BatchImporter(
        client,
        state,
        provisioner,
        intake,
        metrics,
        namespace="test",
        chunk_size=2,
        retry=retry,
        sleep=_no_sleep,
        lease_poll_seconds=0.01,
    )
    reconciler = Reconciler(
        client, state, intake, metrics, margin_seconds=0, before_pass=provisioner.ensure_webhooks
    )
    return Bridge(fake, kv, state, importer, intake, reconciler, published, registry)


def _batch(
    batch_id: str = "batch-1", kind: str = "labeling", n: int = 5, first_required: int = 3
) -> BatchCreated:
    tasks = [
        BatchTask(
            item_id=f"item-{i}",
            data={"text": f"review {i}"},
            annotations_required=first_required if i == 0 else 1,
            is_gold=i == 1,
            gold_label="neg" if i == 1 else None,
            metadata={"simulation_truth": "pos"},
            prediction=Prediction(label="pos", score=0.7, model_version="m3") if i == 2 else None,
        )
        for i in range(n)
    ]
    return BatchCreated(
        project="reviews",
        batch_id=batch_id,
        round=1,
        tasks=tasks,
        strategy="margin",
        seed=1,
        kind=kind,
    )  # type: ignore[arg-type]


async def test_a_batch_becomes_a_project_with_tasks_predictions_overlap_and_webhook(
    fake_ls: Any, kv: Any
) -> None:
    bridge = _bridge(fake_ls, kv)
    assert await bridge.importer.place(_batch(), CONFIG) == 5
    project = fake_ls.projects[bridge.ls_id()]
    assert project["title"] == "Product reviews · test"  # the namespace tells runs apart
    assert project["maximum_annotations"] == 3
    assert "<h1>Guide</h1>" in project["expert_instruction"]
    assert "[labelloop:test/reviews/labeling]" in project["description"]
    imports = [r for r in fake_ls.requests if r[1].endswith("/import")]
    assert len(imports) == 3  # chunks of 2
    tasks = {t["data"]["labelloop_item_id"]: t for t in fake_ls.tasks.values()}
    assert tasks["item-0"]["data"]["labelloop_annotations_required"] == 3
    assert tasks["item-0"]["overlap"] == 3
    assert tasks["item-3"]["overlap"] == 1  # lowered per task
    (prediction,) = tasks["item-2"]["predictions"]
    assert prediction["score"] == 0.7
    assert prediction["model_version"] == "m3"
    assert prediction["result"] == _choice("pos")
    leaked = repr(list(fake_ls.tasks.values()))
    assert "simulation_truth" not in leaked
    assert "gold" not in leaked
    (hook,) = fake_ls.webhooks.values()
    assert hook["headers"] == {"X-Secret": SECRET}
    assert "ANNOTATION_UPDATED" in hook["actions"]
    sample = bridge.registry.get_sample_value(
        "labelloop_bridge_tasks_imported_total", {"backend": "label-studio", "kind": "labeling"}
    )
    assert sample == 5


async def test_a_redelivered_batch_and_a_lost_kv_import_nothing_twice(
    fake_ls: Any, kv: Any
) -> None:
    bridge = _bridge(fake_ls, kv)
    await bridge.importer.place(_batch(), CONFIG)
    assert await bridge.importer.place(_batch(), CONFIG) == 0
    # a bridge with an empty KV finds the project by its marker and the tasks by batch id
    fresh = _bridge(fake_ls, type(kv)())
    assert await fresh.importer.place(_batch(), CONFIG) == 0
    assert len(fake_ls.projects) == 1
    assert len(fake_ls.tasks) == 5


async def test_an_import_applied_but_answered_503_is_not_repeated(fake_ls: Any, kv: Any) -> None:
    bridge = _bridge(fake_ls, kv)
    fake_ls.fail("POST", r"/api/projects/\d+/import", "apply-then-503")
    await bridge.importer.place(_batch(), CONFIG)
    assert sorted(t["data"]["labelloop_item_id"] for t in fake_ls.tasks.values()) == [
        f"item-{i}" for i in range(5)
    ]


async def test_label_studio_down_fails_the_handler_and_a_retry_completes_it(
    fake_ls: Any, kv: Any
) -> None:
    bridge = _bridge(fake_ls, kv)
    await bridge.importer.place(_batch("warmup", n=1), CONFIG)

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("down", request=request)

    for _ in range(3):  # every attempt the importer makes
        fake_ls.fail("POST", r"/api/projects/\d+/import", down)
    with pytest.raises(LabelStudioUnavailable):
        await bridge.importer.place(_batch(), CONFIG)
    ledger = await bridge.state.ledger("reviews", "batch-1")
    assert ledger is not None
    assert not ledger.imported
    assert await bridge.importer.place(_batch(), CONFIG) == 5  # redelivery
    assert len(fake_ls.tasks) == 6


async def test_a_wrong_token_is_an_auth_error(fake_ls: Any, kv: Any) -> None:
    bridge = _bridge(fake_ls, kv, token="wrong")
    with pytest.raises(LabelStudioAuthError):
        await bridge.importer.place(_batch(), CONFIG)


def _webhook(
    bridge: Bridge, action: str, annotation: dict[str, Any], task_id: int
) -> dict[str, Any]:
    task = bridge.fake.tasks[task_id]
    return {
        "action": action,
        "annotation": annotation,
        "task": {"id": task_id, "data": task["data"]},
        "project": {"id": task["project"]},
    }


async def test_webhooks_then_reconciliation_publish_each_state_once_and_complete_once(
    fake_ls: Any, kv: Any
) -> None:
    bridge = _bridge(fake_ls, kv)
    await bridge.importer.place(_batch(n=2), CONFIG)
    ann, bob, cat = (fake_ls.user(f"{n}@example.com") for n in ("ann", "bob", "cat"))
    t0, t1 = bridge.task("item-0"), bridge.task("item-1")
    a1 = fake_ls.annotate(t0, ann, _choice("pos"), lead_time=12.5)
    assert await bridge.intake.apply_webhook(_webhook(bridge, "ANNOTATION_CREATED", a1, t0)) == 1
    # the same webhook again (a retry, or another replica) and reconciliation: nothing new
    assert await bridge.intake.apply_webhook(_webhook(bridge, "ANNOTATION_CREATED", a1, t0)) == 0
    assert await bridge.reconciler.run_once() == 0
    (first,) = bridge.of(AnnotationsSubmitted)
    (annotation,) = first.annotations
    assert annotation.annotator_id == f"ls-user-{ann}"  # pseudonymous, never the email
    assert annotation.value == "pos"
    assert annotation.source is AnnotationSource.WEBHOOK
    assert annotation.lead_time_seconds == 12.5
    assert annotation.batch_id == "batch-1"
    assert annotation.item_id == "item-0"

    # the rest arrive without webhooks: reconciliation catches them
    fake_ls.annotate(t0, bob, _choice("neg"))
    fake_ls.annotate(t1, cat, [], cancelled=True)  # a skip counts as an answer
    assert await bridge.reconciler.run_once() == 2
    assert bridge.of(BatchCompleted) == []  # item-0 wants three people
    fake_ls.annotate(t0, cat, _choice("neg"))
    assert await bridge.reconciler.run_once() == 1
    (done,) = bridge.of(BatchCompleted)
    assert done.event_id == deterministic_id("batch-completed", "batch-1")
    assert (done.n_tasks, done.n_annotations) == (2, 4)
    skipped = [a for e in bridge.of(AnnotationsSubmitted) for a in e.annotations if a.cancelled]
    assert [(s.item_id, s.value) for s in skipped] == [("item-1", None)]

    # an update supersedes; a deletion is published as such; completion is not repeated
    updated = fake_ls.update(t0, a1["id"], _choice("neg"))
    assert (
        await bridge.intake.apply_webhook(_webhook(bridge, "ANNOTATION_UPDATED", updated, t0)) == 1
    )
    fake_ls.delete(t0, a1["id"])
    assert await bridge.reconciler.run_once() == 1
    mine = [
        a
        for e in bridge.of(AnnotationsSubmitted)
        for a in e.annotations
        if a.annotation_id == annotation.annotation_id
    ]
    assert [(a.value, a.deleted) for a in mine] == [("pos", False), ("neg", False), (None, True)]
    assert mine[1].updated_at > mine[0].updated_at
    assert await bridge.reconciler.run_once() == 0
    assert len(bridge.of(BatchCompleted)) == 1
    ids = [e.event_id for e in bridge.of(AnnotationsSubmitted)]
    assert len(ids) == len(set(ids))


async def test_deletion_by_webhook_and_a_crash_before_the_completion_was_published(
    fake_ls: Any, kv: Any
) -> None:
    bridge = _bridge(fake_ls, kv)
    await bridge.importer.place(_batch(n=2), CONFIG)
    ann = fake_ls.user("ann@example.com")
    t1 = bridge.task("item-1")
    a = fake_ls.annotate(t1, ann, _choice("pos"))
    await bridge.intake.apply_webhook(_webhook(bridge, "ANNOTATION_CREATED", a, t1))
    fake_ls.delete(t1, a["id"])
    gone = {
        "action": "ANNOTATIONS_DELETED",
        "annotations": [{"id": a["id"]}],
        "project": {"id": bridge.ls_id()},
    }
    assert await bridge.intake.apply_webhook(gone) == 1
    assert await bridge.intake.apply_webhook(gone) == 0
    assert bridge.of(AnnotationsSubmitted)[-1].annotations[0].deleted

    # a ledger completed whose BatchCompleted never went out is repaired by the next pass
    def complete(ledger: Any) -> None:
        ledger.completed = True

    await bridge.state.change_ledger("reviews", "batch-1", complete)
    await bridge.reconciler.run_once()
    (done,) = bridge.of(BatchCompleted)
    assert done.batch_id == "batch-1"
    await bridge.reconciler.run_once()
    assert len(bridge.of(BatchCompleted)) == 1


async def test_review_batches_go_to_the_expert_project_and_come_back_expert(
    fake_ls: Any, kv: Any
) -> None:
    bridge = _bridge(fake_ls, kv)
    await bridge.importer.place(_batch("review-1", kind="review", n=1, first_required=1), CONFIG)
    (review_id,) = [p for p, v in fake_ls.projects.items() if "(review)" in v["title"]]
    assert fake_ls.projects[review_id]["title"] == "Product reviews (review) · test"
    assert fake_ls.projects[review_id]["maximum_annotations"] == 1
    expert = fake_ls.user("x@example.com")
    fake_ls.annotate(bridge.task("item-0"), expert, _choice("neg"))
    await bridge.reconciler.run_once()
    (event,) = bridge.of(AnnotationsSubmitted)
    assert event.annotations[0].is_expert
    assert event.annotations[0].annotator_id == "dr-x"  # from the project's annotators:
    (done,) = bridge.of(BatchCompleted)
    assert done.kind == "review"


async def test_annotations_on_tasks_labelloop_did_not_import_are_ignored(
    fake_ls: Any, kv: Any
) -> None:
    bridge = _bridge(fake_ls, kv)
    await bridge.importer.place(_batch(n=1), CONFIG)
    pid = bridge.ls_id()
    fake_ls.tasks[999] = {
        "id": 999,
        "project": pid,
        "data": {"text": "manual"},
        "annotations": [],
        "overlap": 1,
        "updated_at": fake_ls.now(),
    }
    fake_ls.annotate(999, fake_ls.user("z@example.com"), _choice("pos"))
    assert await bridge.reconciler.run_once() == 0
    assert bridge.of(AnnotationsSubmitted) == []


async def test_a_webhook_label_studio_disabled_is_re_enabled_by_the_next_pass(
    fake_ls: Any, kv: Any
) -> None:
    bridge = _bridge(fake_ls, kv)
    await bridge.importer.place(_batch(n=1), CONFIG)
    (hook,) = fake_ls.webhooks.values()
    hook["is_active"] = False  # what Label Studio does after repeated failures
    await bridge.reconciler.run_once()
    assert hook["is_active"] is True
    assert len(fake_ls.webhooks) == 1


async def test_a_webhook_label_studio_refuses_does_not_hold_the_batch_back(
    fake_ls: Any, kv: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by the compose test: Label Studio refused `http://annotation-bridge:8083/...` (no
    dot in the host: "Enter a valid URL") and every delivery of the batch failed on it, so
    nothing reached the annotators. The tasks go in; the refusal is logged, every pass."""
    bridge = _bridge(fake_ls, kv)

    def invalid(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"validation_errors": {"url": ["Enter a valid URL."]}})

    for _ in range(2):  # the batch, then the reconciliation pass
        fake_ls.fail("POST", "/api/webhooks/", invalid)
    assert await bridge.importer.place(_batch(), CONFIG) == 5
    assert not fake_ls.webhooks
    assert "Label Studio refused the webhook" in caplog.text
    await bridge.reconciler.run_once()  # tries again; still refused, still no failure
    assert caplog.text.count("Label Studio refused the webhook") == 2
    await bridge.reconciler.run_once()  # accepted now
    assert len(fake_ls.webhooks) == 1


# ---------------------------------------------------------------------- defects found in review


async def test_answers_the_watermark_misses_still_complete_an_open_batch(
    fake_ls: Any, kv: Any
) -> None:
    """Annotations made while the batch was imported, whose webhooks were refused and whose
    tasks' ``updated_at`` the watermark already passed, are read back by the open-batch pass."""
    bridge = _bridge(fake_ls, kv)
    await bridge.importer.place(_batch(n=2, first_required=1), CONFIG)
    t0, t1 = bridge.task("item-0"), bridge.task("item-1")
    stale = fake_ls.tasks[t0]["updated_at"]
    await bridge.reconciler.run_once()  # the watermark moves to the import's last update
    ann = fake_ls.user("ann@example.com")
    a0 = fake_ls.annotate(t0, ann, _choice("pos"))
    # the webhook came while the task was unknown (no labelloop ids in its payload)...
    refused = _webhook(bridge, "ANNOTATION_CREATED", a0, t0)
    refused["task"] = {"id": t0}
    assert await bridge.intake.apply_webhook(refused) == 0
    # ...and the task's updated_at lags behind the watermark (clock skew, a racing update)
    fake_ls.tasks[t0]["updated_at"] = stale
    fake_ls.annotate(t1, ann, _choice("neg"))
    await bridge.reconciler.run_once()
    (done,) = bridge.of(BatchCompleted)
    assert done.n_annotations == 2
    ids = sorted(a.annotation_id for e in bridge.of(AnnotationsSubmitted) for a in e.annotations)
    assert len(ids) == len(set(ids)) == 2


async def test_an_annotation_published_but_never_counted_is_counted_by_the_next_pass(
    fake_ls: Any, kv: Any
) -> None:
    bridge = _bridge(fake_ls, kv)
    await bridge.importer.place(_batch(n=1, first_required=1), CONFIG)
    t0 = bridge.task("item-0")
    a0 = fake_ls.annotate(t0, fake_ls.user("ann@example.com"), _choice("pos"))
    real_change = bridge.state.change_ledger

    async def lost(*args: Any, **kwargs: Any) -> None:
        return None  # the bridge stopped between publishing and counting

    bridge.state.change_ledger = lost  # type: ignore[method-assign]
    assert await bridge.intake.apply_webhook(_webhook(bridge, "ANNOTATION_CREATED", a0, t0)) == 1
    bridge.state.change_ledger = real_change  # type: ignore[method-assign]
    assert bridge.of(BatchCompleted) == []
    await bridge.reconciler.run_once()
    assert len(bridge.of(AnnotationsSubmitted)) == 1  # counted, not published again
    (done,) = bridge.of(BatchCompleted)
    assert done.n_annotations == 1


async def test_only_an_expert_answers_count_in_the_review_project(fake_ls: Any, kv: Any) -> None:
    bridge = _bridge(fake_ls, kv)
    await bridge.importer.place(_batch("review-1", kind="review", n=1, first_required=1), CONFIG)
    task = bridge.task("item-0")
    crowd = fake_ls.user("crowd@example.com")
    fake_ls.annotate(task, crowd, _choice("pos"))
    await bridge.reconciler.run_once()
    await bridge.reconciler.run_once()
    assert bridge.of(AnnotationsSubmitted) == []
    assert bridge.of(BatchCompleted) == []
    ignored = bridge.registry.get_sample_value(
        "labelloop_bridge_annotations_ignored_total", {"reason": "not_expert"}
    )
    assert (ignored or 0) >= 1
    fake_ls.annotate(task, fake_ls.user("x@example.com"), _choice("neg"))
    await bridge.reconciler.run_once()
    (event,) = bridge.of(AnnotationsSubmitted)
    assert [(a.annotator_id, a.is_expert) for a in event.annotations] == [("dr-x", True)]
    (done,) = bridge.of(BatchCompleted)
    assert done.n_annotations == 1


async def test_an_expert_in_the_labeling_project_is_one_of_the_crowd(fake_ls: Any, kv: Any) -> None:
    bridge = _bridge(fake_ls, kv)
    await bridge.importer.place(_batch(n=1, first_required=1), CONFIG)
    fake_ls.annotate(bridge.task("item-0"), fake_ls.user("x@example.com"), _choice("neg"))
    await bridge.reconciler.run_once()
    (event,) = bridge.of(AnnotationsSubmitted)
    assert [(a.annotator_id, a.is_expert) for a in event.annotations] == [("dr-x", False)]


class _Yielding(httpx.AsyncBaseTransport):
    """Hands control to the event loop before each request, as a real network does."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.001)
        return await self.inner.handle_async_request(request)


async def test_two_concurrent_deliveries_of_a_batch_import_its_tasks_once(
    fake_ls: Any, kv: Any
) -> None:
    real = fake_ls.transport
    fake_ls.transport = _Yielding(real)
    one, two = _bridge(fake_ls, kv), _bridge(fake_ls, kv)  # two replicas, one KV bucket
    await one.importer.place(_batch("warmup", n=1), CONFIG)  # the project exists
    counts = await asyncio.gather(
        one.importer.place(_batch(), CONFIG), two.importer.place(_batch(), CONFIG)
    )
    assert sorted(counts) == [0, 5]
    batch = [t for t in fake_ls.tasks.values() if t["data"]["labelloop_batch_id"] == "batch-1"]
    assert sorted(t["data"]["labelloop_item_id"] for t in batch) == [f"item-{i}" for i in range(5)]


async def test_a_stale_import_lease_is_taken_over_and_a_live_one_is_not(kv: Any) -> None:
    state = BridgeState(kv)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    lease = timedelta(seconds=60)
    assert await state.hold_import("p", "b", "crashed", lease, now)
    assert not await state.hold_import("p", "b", "second", lease, now + timedelta(seconds=59))
    assert await state.hold_import("p", "b", "crashed", lease, now)  # the holder renews
    assert await state.hold_import("p", "b", "second", lease, now + timedelta(seconds=61))
    assert not await state.hold_import("p", "b", "crashed", lease, now + timedelta(seconds=62))
    await state.release_import("p", "b", "crashed")  # not the holder: no effect
    assert not await state.hold_import("p", "b", "third", lease, now + timedelta(seconds=62))
    await state.release_import("p", "b", "second")
    assert await state.hold_import("p", "b", "third", lease, now + timedelta(seconds=62))


async def test_an_import_that_lost_its_lease_stops_before_creating_tasks(
    fake_ls: Any, kv: Any
) -> None:
    bridge = _bridge(fake_ls, kv)
    await bridge.importer.place(_batch("warmup", n=1), CONFIG)
    taken = False

    def steal(request: httpx.Request) -> httpx.Response:
        nonlocal taken
        taken = True  # meanwhile another delivery took the (expired) lease over
        return httpx.Response(503, text="slow")

    real_hold = bridge.state.hold_import

    async def hold(project: str, batch_id: str, owner: str, lease: Any, now: Any) -> bool:
        return not taken and await real_hold(project, batch_id, owner, lease, now)

    bridge.state.hold_import = hold  # type: ignore[method-assign]
    fake_ls.fail("POST", r"/api/projects/\d+/import", steal)
    with pytest.raises(ImportLeaseLost):
        await bridge.importer.place(_batch(), CONFIG)
    assert [t for t in fake_ls.tasks.values() if t["data"]["labelloop_batch_id"] == "batch-1"] == []


async def test_an_older_state_arriving_last_does_not_undo_a_newer_one_in_the_ledger(
    fake_ls: Any, kv: Any
) -> None:
    bridge = _bridge(fake_ls, kv)
    await bridge.importer.place(_batch(n=1, first_required=1), CONFIG)
    t0 = bridge.task("item-0")
    user = fake_ls.user("ann@example.com")
    skipped = fake_ls.annotate(t0, user, [], cancelled=True)
    older = dict(skipped)
    newer = {**fake_ls.update(t0, skipped["id"], _choice("pos")), "was_cancelled": False}
    # both read "not seen yet" before either recorded (two replicas, or webhook vs. pass)
    obs_new = observation_from_ls(
        "reviews", "labeling", newer, fake_ls.tasks[t0]["data"], AnnotationSource.WEBHOOK
    )
    obs_old = observation_from_ls(
        "reviews", "labeling", older, fake_ls.tasks[t0]["data"], AnnotationSource.RECONCILIATION
    )
    assert await bridge.intake.observe(obs_new) == "published"
    await kv.delete(next(k for k in kv._data if ".ann." in k))  # the older one's stale read
    await bridge.intake.observe(obs_old)
    ledger = await bridge.state.ledger("reviews", "batch-1")
    assert ledger is not None
    (answer,) = ledger.tasks["item-0"].answers.values()
    assert not answer.cancelled
    assert answer.updated_at == obs_new.updated_at


class _AlwaysConflicting(MemoryKeyValue):
    async def update(self, key: str, value: bytes, revision: int) -> int | None:
        if ".batch." in key:
            return None  # another writer always wins
        return await super().update(key, value, revision)


async def test_a_ledger_change_under_endless_conflicts_gives_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import labelloop.stores

    monkeypatch.setattr(labelloop.stores, "MAX_BACKOFF_SECONDS", 0.0)  # the count, not the pause
    state = BridgeState(_AlwaysConflicting())
    await state.create_ledger("p", BatchLedger.new("b", "labeling", {"i": 1}))
    with pytest.raises(ConflictError):
        await asyncio.wait_for(
            state.change_ledger("p", "b", lambda ledger: setattr(ledger, "imported", True)),
            timeout=30,
        )


async def test_no_email_reaches_events_metrics_or_logs(
    fake_ls: Any, kv: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="labelloop")
    bridge = _bridge(fake_ls, kv)
    await bridge.importer.place(_batch(n=2, first_required=1), CONFIG)
    await bridge.importer.place(_batch("review-1", kind="review", n=1, first_required=1), CONFIG)
    ann = fake_ls.user("ann.private@example.com")
    t0 = next(
        t["id"] for t in fake_ls.tasks.values() if t["data"]["labelloop_batch_id"] == "batch-1"
    )
    a0 = fake_ls.annotate(t0, ann, _choice("pos"))
    await bridge.intake.apply_webhook(_webhook(bridge, "ANNOTATION_CREATED", a0, t0))
    review_task = next(
        t["id"] for t in fake_ls.tasks.values() if t["data"]["labelloop_batch_id"] == "review-1"
    )
    fake_ls.annotate(review_task, ann, _choice("neg"))  # not an expert: ignored, logged
    await bridge.reconciler.run_once()
    events = " ".join(e.model_dump_json() for e in bridge.published)
    assert f"ls-user-{ann}" in events
    assert "ann.private" not in events
    assert "@" not in generate_latest(bridge.registry).decode()
    assert "ann.private" not in caplog.text
    assert "ann.private" not in repr(dict(kv._data))


async def test_malformed_webhooks_are_refused_before_anything_is_published(
    fake_ls: Any, kv: Any
) -> None:
    bridge = _bridge(fake_ls, kv)
    await bridge.importer.place(_batch(n=1, first_required=1), CONFIG)
    pid = bridge.ls_id()
    t0 = bridge.task("item-0")
    good = fake_ls.annotate(t0, fake_ls.user("ann@example.com"), _choice("pos"))
    data = fake_ls.tasks[t0]["data"]
    malformed: list[dict[str, Any]] = [
        {"action": "ANNOTATION_CREATED", "project": "abc"},
        {"action": "ANNOTATION_CREATED", "project": {"id": True}},
        {"action": "ANNOTATION_CREATED", "project": pid, "annotation": {"result": []}},
        {"action": "ANNOTATION_CREATED", "project": pid, "annotation": [1]},
        {"action": "ANNOTATION_UPDATED", "project": pid, "annotation": good, "task": [1]},
        {"action": "ANNOTATION_UPDATED", "project": pid, "annotation": {**good, "id": "7"}},
        {"action": "ANNOTATION_UPDATED", "project": pid, "annotation": {**good, "lead_time": "x"}},
        {"action": "ANNOTATION_UPDATED", "project": pid, "annotation": {**good, "result": 3}},
        {
            "action": "ANNOTATION_UPDATED",
            "project": pid,
            "annotation": {**good, "updated_at": "yesterday"},
            "task": {"data": data},
        },
        {
            "action": "ANNOTATION_UPDATED",
            "project": pid,
            "annotation": {**good, "result": [{"from_name": "label", "value": 5}]},
            "task": {"data": data},
        },
        {
            "action": "ANNOTATION_CREATED",
            "project": pid,
            "annotation": good,
            "task": {"data": {**data, "labelloop_item_id": {"x": 1}}},
        },
        # a bulk payload whose last element is bad publishes none of the good ones
        {"action": "ANNOTATIONS_CREATED", "project": pid, "annotations": [good, {"task": 1}]},
        {"action": "ANNOTATIONS_CREATED", "project": pid, "annotations": {"id": 1}},
        {"action": "ANNOTATIONS_DELETED", "project": pid, "annotations": [{"id": None}]},
    ]
    for payload in malformed:
        with pytest.raises(BadPayload):
            await bridge.intake.apply_webhook(payload)
    assert bridge.of(AnnotationsSubmitted) == []
    # other actions, and a project this bridge does not manage, are ignored (not errors)
    assert await bridge.intake.apply_webhook({"action": "TASKS_CREATED", "project": "abc"}) == 0
    assert await bridge.intake.apply_webhook({"project": 1}) == 0
    stranger = {"action": "ANNOTATION_CREATED", "project": 9999, "annotation": good}
    assert await bridge.intake.apply_webhook(stranger) == 0
    ok = _webhook(bridge, "ANNOTATION_CREATED", good, t0)
    assert await bridge.intake.apply_webhook(ok) == 1


async def test_reconciliation_skips_an_unreadable_annotation_and_carries_on(
    fake_ls: Any, kv: Any
) -> None:
    bridge = _bridge(fake_ls, kv)
    await bridge.importer.place(_batch(n=2, first_required=1), CONFIG)
    user = fake_ls.user("ann@example.com")
    bad = fake_ls.annotate(bridge.task("item-0"), user, _choice("pos"))
    bad["lead_time"] = "not a number"
    fake_ls.annotate(bridge.task("item-1"), user, _choice("neg"))
    await bridge.reconciler.run_once()
    (event,) = bridge.of(AnnotationsSubmitted)
    assert event.annotations[0].item_id == "item-1"
    assert (
        bridge.registry.get_sample_value(
            "labelloop_bridge_annotations_ignored_total", {"reason": "malformed"}
        )
        or 0
    ) >= 1


async def test_an_annotation_counted_after_the_listing_was_read_is_not_taken_for_deleted(
    fake_ls: Any, kv: Any
) -> None:
    """The campaign's hang: a pass read the task list, a webhook then counted a new annotation,
    and the pass, not finding it in its (older) list, published it as deleted: for good."""
    bridge = _bridge(fake_ls, kv)
    await bridge.importer.place(_batch(n=1, first_required=2), CONFIG)
    t0 = bridge.task("item-0")
    snapshot = json.loads(json.dumps(fake_ls.tasks[t0]))  # what the pass read: no annotations

    def stale_listing(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"tasks": [snapshot], "total": 1})

    a0 = fake_ls.annotate(t0, fake_ls.user("ann@example.com"), _choice("pos"))
    assert await bridge.intake.apply_webhook(_webhook(bridge, "ANNOTATION_CREATED", a0, t0)) == 1
    for _ in range(2):  # the watermark pass and the open-batch pass
        fake_ls.fail("GET", "/api/tasks", stale_listing)
    await bridge.reconciler.run_once()
    assert not any(a.deleted for e in bridge.of(AnnotationsSubmitted) for a in e.annotations)
    fake_ls.annotate(t0, fake_ls.user("bob@example.com"), _choice("pos"))
    await bridge.reconciler.run_once()
    (done,) = bridge.of(BatchCompleted)
    assert done.n_annotations == 2
    # a real deletion is still seen
    fake_ls.delete(t0, a0["id"])
    await bridge.reconciler.run_once()
    assert bridge.of(AnnotationsSubmitted)[-1].annotations[0].deleted


# ------------------------------------------------------------------ what people see


async def test_labelloops_ids_are_hidden_in_every_data_manager_tab(fake_ls: Any, kv: Any) -> None:
    bridge = _bridge(fake_ls, kv)
    await bridge.importer.place(_batch(n=2), CONFIG)
    pid = bridge.ls_id()
    (tab,) = [v for v in fake_ls.views.values() if v["project"] == pid]
    hidden = tab["data"]["hiddenColumns"]
    for mode in ("explore", "labeling"):
        assert set(INTERNAL_COLUMNS) <= set(hidden[mode])
    assert "tasks:inner_id" in hidden["explore"]  # Label Studio's own defaults stay hidden
    assert "tasks:data.text" not in hidden["explore"]  # the item itself stays visible

    # people add tabs (Label Studio's defaults show every data key) or unhide a column
    fake_ls.views[9001] = {
        "id": 9001,
        "project": pid,
        "data": {"title": "Mine", "type": "grid", "ordering": ["-tasks:id"]},
    }
    tab["data"]["hiddenColumns"] = {"explore": ["tasks:id"], "labeling": []}
    await bridge.importer.place(_batch("batch-2", n=1), CONFIG)
    assert set(INTERNAL_COLUMNS) <= set(tab["data"]["hiddenColumns"]["explore"])
    assert "tasks:id" in tab["data"]["hiddenColumns"]["explore"]  # their choice is kept
    mine = fake_ls.views[9001]["data"]
    assert set(INTERNAL_COLUMNS) <= set(mine["hiddenColumns"]["labeling"])
    assert (mine["title"], mine["type"]) == ("Mine", "grid")
    assert "ordering" not in mine  # kept by Label Studio apart from the tab's data


async def test_a_data_manager_that_refuses_tabs_does_not_hold_the_batch_back(
    fake_ls: Any, kv: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Hiding columns is cosmetic: a refusal (a permission on tabs, say) is logged, the tasks go
    in, and the next batch tries again."""
    bridge = _bridge(fake_ls, kv)
    for status in (403, 400):  # the new project, then after the import
        fake_ls.fail("GET", "/api/dm/views/", lambda r, s=status: httpx.Response(s, json={}))
    assert await bridge.importer.place(_batch(n=1), CONFIG) == 1
    assert "internal columns not hidden" in caplog.text
    assert not fake_ls.views
    await bridge.importer.place(_batch("batch-2", n=1), CONFIG)
    assert len(fake_ls.views) == 1


async def test_a_review_task_says_why_and_shows_every_crowd_vote_with_nothing_preselected(
    fake_ls: Any, kv: Any
) -> None:
    bridge = _bridge(fake_ls, kv)
    await bridge.importer.place(_batch(n=2), CONFIG)
    ann, bob, cat = (fake_ls.user(f"{n}@example.com") for n in ("ann", "bob", "cat"))
    t0 = bridge.task("item-0")
    fake_ls.annotate(t0, ann, _choice("pos"))
    fake_ls.annotate(t0, bob, _choice("neg"))
    fake_ls.annotate(t0, cat, [], cancelled=True)
    await bridge.reconciler.run_once()

    review = BatchCreated(
        project="reviews",
        batch_id="review-1",
        round=1,
        strategy="review",
        seed=0,
        kind="review",
        tasks=[
            BatchTask(  # as the sampler cuts it from QA's ReviewRequested
                item_id="item-0",
                data={"text": "review 0"},
                annotations_required=1,
                is_review=True,
                score=0.41,
                prediction=Prediction(label="pos", score=0.41),
                metadata={"review_reason": "disagreement", "simulation_truth": "neg"},
            )
        ],
    )
    await bridge.importer.place(review, CONFIG)
    (task,) = [t for t in fake_ls.tasks.values() if t["data"][TASK_BATCH] == "review-1"]
    assert task["predictions"] == []  # the crowd's label is not pre-selected
    assert task["data"][REVIEW_REASON_FIELD] == (
        "Why review: the crowd's annotators disagree (confidence 0.41)."
    )
    votes = task["data"][REVIEW_VOTES_FIELD]
    for who, label in ((ann, "pos"), (bob, "neg"), (cat, "skipped")):
        assert f"ls-user-{who} → {label}" in votes
    assert "Current label: pos (not pre-selected" in votes
    assert "simulation_truth" not in repr(task)
    # the expert's answer still comes back as the review's
    fake_ls.annotate(task["id"], fake_ls.user("x@example.com"), _choice("neg"))
    await bridge.reconciler.run_once()
    (done,) = [e for e in bridge.of(BatchCompleted) if e.kind == "review"]
    assert done.tasks[0].prediction is not None  # QA still gets what the task was sent with


async def test_a_review_of_an_item_labeloop_never_sent_to_label_studio_has_no_votes(
    fake_ls: Any, kv: Any
) -> None:
    bridge = _bridge(fake_ls, kv)
    review = _batch("review-1", kind="review", n=1, first_required=1)
    await bridge.importer.place(review, CONFIG)
    (task,) = fake_ls.tasks.values()
    assert task["data"][REVIEW_VOTES_FIELD] == "Crowd votes: none recorded."
    assert task["data"][REVIEW_REASON_FIELD] == "Why review: QA held this label back."
