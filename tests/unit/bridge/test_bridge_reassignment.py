"""Abandoned tasks: a task nobody answered within the project's assignment timeout goes to another
eligible annotator, recorded in the ledger first, copied into their project, withdrawn from the
absent one's; late answers follow the rule in intake.py (fake Label Studio, an injected clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from bridge_support import FakeBridge, choice

from labelloop.events import (
    AnnotationsSubmitted,
    BatchCompleted,
    BatchCreated,
    BatchTask,
    Prediction,
)
from labelloop.project import ProjectConfig
from labelloop_bridge.domain.assignment import Reassignment, overdue
from labelloop_bridge.domain.ledger import BatchLedger
from labelloop_bridge.intake import TASK_ITEM
from labelloop_bridge.labelstudio import LabelStudioUnavailable
from labelloop_bridge.recent import RecentKeys

TEAM = ("ann", "bob", "cat", "dan")
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


# ---------------------------------------------------------------------- the decision (pure)


def _ledger(
    assignees: dict[str, tuple[str, ...]],
    *,
    excluded: tuple[str, ...] = (),
    imported: bool = True,
    placed_at: datetime | None = T0,
) -> BatchLedger:
    ledger = BatchLedger.new(
        "b1",
        "labeling",
        {item: len(people) for item, people in assignees.items()},
        excluded=list(excluded),
        assignees=assignees,
        placed_at=placed_at,
    )
    ledger.imported = imported
    return ledger


def _answer(ledger: BatchLedger, item: str, who: str, n: int, *, cancelled: bool = False) -> None:
    ledger.record(item, f"ls-{n}", who, cancelled=cancelled, deleted=False, updated_at=T0)


def test_nothing_is_reassigned_before_the_timeout() -> None:
    ledger = _ledger({"i1": ("ann",), "i2": ("bob",)})
    assert overdue(ledger, TEAM, T0 + 9 * MINUTE, 10 * MINUTE) == []


def test_an_unanswered_task_goes_to_the_least_loaded_eligible_annotator() -> None:
    ledger = _ledger({"i1": ("ann", "bob"), "i2": ("bob", "cat"), "i3": ("cat",)})
    _answer(ledger, "i1", "bob", 1)
    _answer(ledger, "i2", "bob", 2)
    _answer(ledger, "i2", "cat", 3)
    # ann owes i1, cat owes i3; dan holds nothing and bob has answered everything he holds
    moves = overdue(ledger, TEAM, T0 + 10 * MINUTE, 10 * MINUTE)
    assert moves == [Reassignment("i1", "ann", "dan"), Reassignment("i3", "cat", "bob")]
    assert overdue(ledger, TEAM, T0 + 10 * MINUTE, 10 * MINUTE) == moves  # deterministic


def test_never_a_flagged_annotator_one_who_answered_one_who_holds_it_or_an_absent_one() -> None:
    ledger = _ledger({"i1": ("ann", "bob"), "i2": ("cat",)}, excluded=("dan",))
    _answer(ledger, "i1", "bob", 1)
    # ann is late on i1 (bob holds and answered it; dan is flagged; cat is late on i2: absent)
    moves = overdue(ledger, TEAM, T0 + 11 * MINUTE, 10 * MINUTE)
    assert moves == [Reassignment("i1", "ann", None), Reassignment("i2", "cat", "bob")]
    # an answer from someone no longer assigned (a late answer that counted) keeps them out too
    ledger = _ledger({"i1": ("ann",)})
    _answer(ledger, "i1", "bob", 1, cancelled=True)  # a skip that does not count here
    moves = overdue(ledger, ["ann", "bob", "cat"], T0 + 11 * MINUTE, 10 * MINUTE, count_skips=False)
    assert moves == [Reassignment("i1", "ann", "cat")]


def test_the_successor_gets_the_full_timeout_and_the_absent_one_is_never_chosen_again() -> None:
    ledger = _ledger({"i1": ("ann",)})
    (move,) = overdue(ledger, ["ann", "bob", "cat"], T0 + 10 * MINUTE, 10 * MINUTE)
    assert move.successor is not None
    assert ledger.reassign("i1", "ann", move.successor, T0 + 10 * MINUTE)
    assert not ledger.reassign("i1", "ann", move.successor, T0 + 10 * MINUTE)  # idempotent
    assert ledger.tasks["i1"].assignees == (move.successor,)
    assert ledger.released() == {"ann": ["i1"]}
    assert overdue(ledger, ["ann", "bob", "cat"], T0 + 19 * MINUTE, 10 * MINUTE) == []
    (again,) = overdue(ledger, ["ann", "bob", "cat"], T0 + 20 * MINUTE, 10 * MINUTE)
    assert again.absent == move.successor
    assert again.successor not in ("ann", move.successor)


def test_only_open_imported_labeling_batches_with_a_placing_time_are_reassigned() -> None:
    late = T0 + 60 * MINUTE
    assert overdue(_ledger({"i1": ("ann",)}, imported=False), TEAM, late, MINUTE) == []
    assert overdue(_ledger({"i1": ("ann",)}, placed_at=None), TEAM, late, MINUTE) == []
    done = _ledger({"i1": ("ann",)})
    done.completed = True
    assert overdue(done, TEAM, late, MINUTE) == []
    shared = BatchLedger.new("b1", "labeling", {"i1": 1}, placed_at=T0)
    shared.imported = True
    assert overdue(shared, TEAM, late, MINUTE) == []  # the shared project: nobody to move from


def test_a_reassignment_survives_the_ledgers_json_and_old_ledgers_still_read() -> None:
    ledger = _ledger({"i1": ("ann", "bob"), "i2": ("cat",)})
    ledger.reassign("i1", "ann", "dan", T0 + MINUTE)
    back = BatchLedger.from_json(ledger.to_json())
    assert back.placed_at == T0
    assert back.tasks["i1"].assignees == ("bob", "dan")
    assert back.tasks["i1"].given == {"dan": T0 + MINUTE}
    assert back.tasks["i1"].released == {"ann": T0 + MINUTE}
    assert back.tasks["i2"].given == {}
    assert back.tasks["i2"].released == {}
    assert back.to_json() == ledger.to_json()
    old = (
        b'{"batch_id":"b0","kind":"labeling","tasks":{"i1":[1,{}],"i2":[1,{},["ann"]]},'
        b'"imported":true}'
    )
    legacy = BatchLedger.from_json(old)
    assert legacy.placed_at is None
    assert legacy.tasks["i2"].assignees == ("ann",)
    assert overdue(legacy, TEAM, T0 + 60 * MINUTE, MINUTE) == []


def test_recent_keys_remember_a_bounded_number() -> None:
    keys = RecentKeys(limit=3)
    assert [keys.first(k) for k in (1, 2, 1, 3, 4)] == [True, True, False, True, True]
    assert len(keys) == 3
    assert keys.first(2)  # the oldest (2: 1 was seen again after it) was forgotten
    assert not keys.first(4)
    assert len(keys) == 3


# ---------------------------------------------------------------------- the bridge (fake LS)


def _config(timeout: float | None = 600.0) -> ProjectConfig:
    return ProjectConfig.model_validate(
        {
            "name": "tickets",
            "title": "Support tickets",
            "task_type": "text_classification",
            "labels": {"classes": ["pos", "neg"]},
            "data_fields": [{"name": "text", "kind": "text"}],
            "quality": {"assignment_timeout_seconds": timeout},
            "annotators": [
                *({"id": who, "email": f"{who}@example.com"} for who in TEAM),
                {"id": "dr-x", "role": "expert", "email": "x@example.com"},
            ],
        }
    )


def _batch(n: int = 4) -> BatchCreated:
    return BatchCreated(
        project="tickets",
        batch_id="batch-1",
        round=1,
        strategy="random",
        seed=0,
        tasks=[
            BatchTask(
                item_id=f"item-{i}",
                data={"text": f"ticket {i}"},
                annotations_required=1,
                prediction=Prediction(label="pos", score=0.8, model_version="m1"),
            )
            for i in range(n)
        ],
    )


class Bridge(FakeBridge):
    def __init__(self, fake: Any, kv: Any, config: ProjectConfig) -> None:
        self.now = T0
        super().__init__(fake, kv, config, attempts=1, clock=lambda: self.now, reassign=True)
        self.users = {who: fake.user(f"{who}@example.com") for who in TEAM}

    def items_of(self, who: str) -> dict[str, int]:
        marker = f"[labelloop:test/tickets/labeling/{who}]"
        pids = [p for p, v in self.fake.projects.items() if marker in v["description"]]
        if not pids:
            return {}
        (pid,) = pids
        return {t["data"][TASK_ITEM]: t["id"] for t in self.fake.project_tasks(pid)}

    def answer(self, who: str, item: str, label: str = "pos") -> dict[str, Any]:
        return dict(self.fake.annotate(self.items_of(who)[item], self.users[who], choice(label)))

    async def assignees(self, item: str) -> tuple[str, ...]:
        ledger = await self.state.ledger("tickets", "batch-1")
        assert ledger is not None
        return ledger.tasks[item].assignees

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.registry.get_sample_value(name, labels or {}) or 0.0


@pytest.fixture
def bridge(fake_ls: Any, kv: Any) -> Bridge:
    return Bridge(fake_ls, kv, _config())


async def _placed(bridge: Bridge) -> tuple[str, str]:
    """Place a batch, everyone answers but one person on one item: (that item, that person)."""
    await bridge.importer.place(_batch(), _config())
    ledger = await bridge.state.ledger("tickets", "batch-1")
    assert ledger is not None
    assert ledger.placed_at == T0
    (absent,) = ledger.tasks["item-0"].assignees
    for item, task in ledger.tasks.items():
        for who in task.assignees:
            if item != "item-0":
                bridge.answer(who, item)
    return "item-0", absent


async def test_an_absent_annotators_task_is_reassigned_and_the_batch_completes(
    bridge: Bridge,
) -> None:
    item, absent = await _placed(bridge)
    bridge.now = T0 + 9 * MINUTE
    await bridge.reconciler.run_once()
    assert await bridge.assignees(item) == (absent,)  # not yet
    assert not bridge.of(BatchCompleted)

    bridge.now = T0 + 10 * MINUTE
    await bridge.reconciler.run_once()
    (successor,) = await bridge.assignees(item)
    assert successor != absent
    assert bridge.metric("labelloop_bridge_reassignments_total") == 1
    assert item in bridge.items_of(successor)
    assert item not in bridge.items_of(absent)  # withdrawn: it left their queue
    (copy,) = [t for t in bridge.fake.tasks.values() if t["id"] == bridge.items_of(successor)[item]]
    assert copy["data"]["text"] == "ticket 0"
    assert [p["model_version"] for p in copy["predictions"]] == ["m1"]  # the pre-annotation too

    # another pass: nothing moves, nothing is imported twice
    imports = sum(1 for m, p in bridge.fake.requests if p.endswith("/import"))
    await bridge.reconciler.run_once()
    assert sum(1 for m, p in bridge.fake.requests if p.endswith("/import")) == imports
    assert bridge.metric("labelloop_bridge_reassignments_total") == 1

    bridge.answer(successor, item, "neg")
    await bridge.reconciler.run_once()
    (done,) = bridge.of(BatchCompleted)
    assert [a.annotator_id for a in done.annotations if a.item_id == item] == [successor]


async def test_a_pass_stopped_after_recording_the_move_finishes_it_on_the_next(
    bridge: Bridge,
) -> None:
    item, absent = await _placed(bridge)
    bridge.now = T0 + 10 * MINUTE
    bridge.fake.failures.append(("POST", r"/api/projects/\d+/import/?", "apply-then-503"))
    with pytest.raises(LabelStudioUnavailable):
        await bridge.reconciler.run_once()
    (successor,) = await bridge.assignees(item)  # recorded before the import
    assert item in bridge.items_of(absent)  # not yet withdrawn: the copy came first
    await bridge.reconciler.run_once()
    assert list(bridge.items_of(successor)).count(item) == 1  # the applied import is not redone
    assert sum(1 for t in bridge.fake.tasks.values() if t["data"][TASK_ITEM] == item) == 1
    assert item not in bridge.items_of(absent)
    assert bridge.metric("labelloop_bridge_reassignments_total") == 1


async def test_while_another_replica_holds_the_lease_the_old_copy_stays(bridge: Bridge) -> None:
    """The copy comes before the withdrawal: the absent one's copy may be the only one."""
    item, absent = await _placed(bridge)
    bridge.now = T0 + 10 * MINUTE
    assert await bridge.state.hold_import("tickets", "batch-1", "other", MINUTE, bridge.now)
    await bridge.reconciler.run_once()
    (successor,) = await bridge.assignees(item)  # recorded
    assert item not in bridge.items_of(successor)  # not copied without the lease
    assert item in bridge.items_of(absent)  # so not withdrawn either
    await bridge.state.release_import("tickets", "batch-1", "other")
    await bridge.reconciler.run_once()
    assert item in bridge.items_of(successor)
    assert item not in bridge.items_of(absent)


async def test_a_late_answer_counts_while_the_task_lacks_its_answers(bridge: Bridge) -> None:
    item, absent = await _placed(bridge)
    bridge.now = T0 + 10 * MINUTE
    bridge.fake.failures.append(("DELETE", r"/api/tasks/\d+/?", lambda r: httpx.Response(503)))
    with pytest.raises(LabelStudioUnavailable):  # the withdrawal fails: their copy stays
        await bridge.reconciler.run_once()
    (successor,) = await bridge.assignees(item)
    assert item in bridge.items_of(absent)
    assert item in bridge.items_of(successor)
    bridge.answer(absent, item)  # they came back before the successor answered
    await bridge.reconciler.run_once()
    (done,) = bridge.of(BatchCompleted)
    assert [a.annotator_id for a in done.annotations if a.item_id == item] == [absent]
    assert item in bridge.items_of(absent)  # answered there: kept
    assert (
        bridge.metric("labelloop_bridge_annotations_ignored_total", {"reason": "reassigned"}) == 0
    )


async def test_a_late_answer_after_the_successors_is_ignored_as_reassigned(
    bridge: Bridge,
) -> None:
    item, absent = await _placed(bridge)
    bridge.now = T0 + 10 * MINUTE
    await bridge.reconciler.run_once()
    (successor,) = await bridge.assignees(item)
    bridge.answer(successor, item, "neg")
    await bridge.reconciler.run_once()
    assert bridge.of(BatchCompleted)
    # an answer of theirs the bridge sees only now (given between a pass's listing and the
    # withdrawal, its webhook late): the task has its answer, so it does not count
    ref = next(r for r in await bridge.state.ls_projects() if r.annotator == absent)
    published = await bridge.intake.apply_webhook(
        {
            "action": "ANNOTATION_CREATED",
            "project": {"id": ref.ls_project_id},
            "task": {"id": 99_000, "data": {TASK_ITEM: item, "labelloop_batch_id": "batch-1"}},
            "annotation": {
                "id": 99_001,
                "task": 99_000,
                "result": choice("pos"),
                "completed_by": bridge.users[absent],
                "was_cancelled": False,
                "created_at": "2026-01-01T12:11:00Z",
                "updated_at": "2026-01-01T12:11:00Z",
            },
        }
    )
    assert published == 0
    assert (
        bridge.metric("labelloop_bridge_annotations_ignored_total", {"reason": "reassigned"}) == 1
    )
    late = [
        a
        for e in bridge.of(AnnotationsSubmitted)
        for a in e.annotations
        if a.annotator_id == absent and a.item_id == item
    ]
    assert late == []


async def test_without_a_timeout_nothing_is_ever_reassigned(fake_ls: Any, kv: Any) -> None:
    bridge = Bridge(fake_ls, kv, _config(timeout=None))
    item, absent = await _placed(bridge)
    bridge.now = T0 + timedelta(days=30)
    await bridge.reconciler.run_once()
    assert await bridge.assignees(item) == (absent,)
    assert bridge.metric("labelloop_bridge_reassignments_total") == 0


# ------------------------------------------------------------------ what `labelloop status` says


def test_status_names_a_batch_open_longer_than_the_assignment_timeout() -> None:
    """The shared project (no annotators listed) cannot reassign: Label Studio gives its tasks to
    whoever asks next and frees a left task at its lock TTL; status says how long a batch waits."""
    from rich.console import Console

    from labelloop_console.campaign import CampaignView, fold
    from labelloop_console.status import render

    shared = _config(timeout=600.0).model_copy(update={"annotators": []})
    view = CampaignView(project="tickets")
    fold(view, _batch(), now=1_000.0)
    fold(view, _batch().model_copy(update={"batch_id": "batch-2"}), now=1_500.0)

    def state(now: float, config: ProjectConfig | None = shared) -> str:
        console = Console(record=True, width=400)
        console.print(render({"tickets": view}, {"tickets": config}, now=now))
        return console.export_text()

    assert "waiting" not in state(1_600.0)
    assert "waiting 10m01s on batch-1, over the 10m00s timeout" in state(1_601.0)
    assert "waiting 15m00s on batch-1, over" in state(1_900.0)  # batch-2: 6m40s
    assert "waiting 20m00s on batch-1 and 1 more" in state(2_200.0)
    assert "waiting" not in state(9_999.0, _config(timeout=None))
