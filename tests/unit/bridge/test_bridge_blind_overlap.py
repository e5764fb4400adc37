"""Blind overlap: each task reaches exactly the annotators it was assigned to, each in their own
Label Studio project, and the bridge merges their answers by item (fake Label Studio)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from bridge_support import FakeBridge, choice

from labelloop.events import AnnotationsSubmitted, BatchCompleted, BatchCreated, BatchTask
from labelloop.project import ProjectConfig
from labelloop_bridge.domain.assignment import assign
from labelloop_bridge.domain.label_config import REVIEW_VOTES_FIELD
from labelloop_bridge.intake import TASK_BATCH

TEAM = ("ann", "bob", "cat", "dan")


def _config(team: tuple[str, ...] = TEAM) -> ProjectConfig:
    return ProjectConfig.model_validate(
        {
            "name": "tickets",
            "title": "Support tickets",
            "task_type": "text_classification",
            "labels": {"classes": ["pos", "neg"]},
            "data_fields": [{"name": "text", "kind": "text"}],
            "quality": {"annotators_per_overlapped_item": 3},
            "annotators": [
                *({"id": who, "email": f"{who}@example.com"} for who in team),
                {"id": "rita", "role": "reviewer", "email": "rita@example.com"},
                {"id": "dr-x", "role": "expert", "email": "x@example.com"},
            ],
        }
    )


def _batch(n: int = 6, overlapped: int = 2, excluded: tuple[str, ...] = ()) -> BatchCreated:
    return BatchCreated(
        project="tickets",
        batch_id="batch-1",
        round=1,
        strategy="random",
        seed=0,
        excluded_annotators=list(excluded),
        tasks=[
            BatchTask(
                item_id=f"item-{i}",
                data={"text": f"ticket {i}"},
                annotations_required=3 if i < overlapped else 1,
            )
            for i in range(n)
        ],
    )


class Bridge(FakeBridge):
    def __init__(self, fake: Any, kv: Any, config: ProjectConfig) -> None:
        super().__init__(fake, kv, config, attempts=2)

    def project_of(self, who: str) -> int:
        marker = f"[labelloop:test/tickets/labeling/{who}]"
        (pid,) = [p for p, v in self.fake.projects.items() if marker in v["description"]]
        return int(pid)

    def items_of(self, who: str) -> dict[str, int]:
        """Item id -> task id of the tasks in ``who``'s own project."""
        return {
            t["data"]["labelloop_item_id"]: t["id"]
            for t in self.fake.project_tasks(self.project_of(who))
        }

    def ignored(self, reason: str) -> float:
        value = self.registry.get_sample_value(
            "labelloop_bridge_annotations_ignored_total", {"reason": reason}
        )
        return value or 0.0


def test_each_task_goes_to_as_many_distinct_annotators_as_it_needs_spread_evenly() -> None:
    tasks = [(f"i{k}", 3 if k < 4 else 1) for k in range(20)]
    chosen = assign("b1", tasks, TEAM, excluded=["dan"])
    assert set(chosen) == {item for item, _ in tasks}
    for item, required in tasks:
        assert len(set(chosen[item])) == required
        assert "dan" not in chosen[item]
    load = Counter(person for people in chosen.values() for person in people)
    assert max(load.values()) - min(load.values()) <= 1  # 28 answers over 3 people
    assert assign("b1", tasks, TEAM, excluded=["dan"]) == chosen  # the same batch, the same
    # a team smaller than the overlap: every one of them
    assert assign("b2", [("x", 3)], ["ann", "bob"]) == {"x": ("ann", "bob")}
    assert assign("b3", [("x", 1)], ["ann"], excluded=["ann"]) == {}


async def test_each_annotator_gets_a_project_of_their_own_with_only_their_tasks(
    fake_ls: Any, kv: Any
) -> None:
    bridge = Bridge(fake_ls, kv, _config())
    assert await bridge.importer.place(_batch(), _config()) == 2 * 3 + 4
    ledger = await bridge.state.ledger("tickets", "batch-1")
    assert ledger is not None
    assert ledger.tasks["item-0"].required == 3
    for who in TEAM:
        project = fake_ls.projects[bridge.project_of(who)]
        assert project["title"] == f"Support tickets · {who} · test"
        assert project["maximum_annotations"] == 1
        mine = sorted(bridge.items_of(who))
        assert mine == sorted(i for i, t in ledger.tasks.items() if who in t.assignees)
    # every task reached exactly its assignees, and nobody else's project holds it
    where = Counter(item for who in TEAM for item in bridge.items_of(who))
    assert where == {f"item-{i}": 3 if i < 2 else 1 for i in range(6)}
    # no shared labeling project, no reviewer's or expert's project
    assert len(fake_ls.projects) == len(TEAM)


async def test_answers_merge_by_item_and_only_the_assignees_count(fake_ls: Any, kv: Any) -> None:
    bridge = Bridge(fake_ls, kv, _config())
    await bridge.importer.place(_batch(n=3, overlapped=1), _config())
    users = {who: fake_ls.user(f"{who}@example.com") for who in (*TEAM, "rita")}
    stranger = fake_ls.user("someone@example.com")
    ledger = await bridge.state.ledger("tickets", "batch-1")
    assert ledger is not None
    first, *others = ledger.tasks["item-0"].assignees
    # someone else answers in an assignee's project: never counted
    fake_ls.annotate(bridge.items_of(first)["item-0"], stranger, choice("neg"))
    fake_ls.annotate(bridge.items_of(first)["item-0"], users["rita"], choice("neg"))
    await bridge.reconciler.run_once()
    assert not bridge.of(AnnotationsSubmitted)
    assert bridge.ignored("not_assignee") > 0  # each pass that sees it says so
    assert bridge.ignored("reviewer") > 0
    for item, task in ledger.tasks.items():
        for who in task.assignees:
            fake_ls.annotate(bridge.items_of(who)[item], users[who], choice("pos"))
    await bridge.reconciler.run_once()
    (done,) = bridge.of(BatchCompleted)
    by_item = Counter(a.item_id for a in done.annotations)
    assert by_item == {"item-0": 3, "item-1": 1, "item-2": 1}
    assert {a.annotator_id for a in done.annotations if a.item_id == "item-0"} == {first, *others}
    await bridge.reconciler.run_once()  # nothing taken for deleted, nothing twice
    assert len(bridge.of(AnnotationsSubmitted)) == 5


async def test_a_webhook_from_an_annotators_project_counts_only_their_answer(
    fake_ls: Any, kv: Any
) -> None:
    bridge = Bridge(fake_ls, kv, _config())
    await bridge.importer.place(_batch(n=1, overlapped=1), _config())
    ledger = await bridge.state.ledger("tickets", "batch-1")
    assert ledger is not None
    owner, other, _ = ledger.tasks["item-0"].assignees
    task_id = bridge.items_of(owner)["item-0"]

    def hook(annotation: dict[str, Any]) -> dict[str, Any]:
        task = fake_ls.tasks[task_id]
        return {
            "action": "ANNOTATION_CREATED",
            "annotation": annotation,
            "task": {"id": task_id, "data": task["data"]},
            "project": {"id": task["project"]},
        }

    wrong = fake_ls.annotate(task_id, fake_ls.user(f"{other}@example.com"), choice("neg"))
    assert await bridge.intake.apply_webhook(hook(wrong)) == 0
    right = fake_ls.annotate(task_id, fake_ls.user(f"{owner}@example.com"), choice("pos"))
    assert await bridge.intake.apply_webhook(hook(right)) == 1
    (event,) = bridge.of(AnnotationsSubmitted)
    assert event.annotations[0].annotator_id == owner


async def test_a_redelivered_batch_keeps_its_first_assignment_and_imports_nothing_twice(
    fake_ls: Any, kv: Any
) -> None:
    bridge = Bridge(fake_ls, kv, _config())
    await bridge.importer.place(_batch(), _config())
    before = {who: bridge.items_of(who) for who in TEAM}
    # the first delivery crashed after importing, before marking the batch imported
    await bridge.state.change_ledger(
        "tickets", "batch-1", lambda stored: setattr(stored, "imported", False)
    )
    # ... and the team changed meanwhile: the stored assignment wins
    smaller = _config(("ann", "bob"))
    again = Bridge(fake_ls, kv, smaller)
    assert await again.importer.place(_batch(), smaller) == 0
    assert {who: again.items_of(who) for who in TEAM} == before


async def test_without_annotators_in_the_project_a_batch_goes_to_the_shared_project(
    fake_ls: Any, kv: Any
) -> None:
    shared = _config(()).model_copy(update={"annotators": []})
    bridge = Bridge(fake_ls, kv, shared)
    await bridge.importer.place(_batch(), shared)
    (project,) = fake_ls.projects.values()
    assert "[labelloop:test/tickets/labeling]" in project["description"]
    assert project["maximum_annotations"] == 3
    # every annotator excluded: the shared project too, rather than nobody
    everyone = _batch(excluded=TEAM)
    everyone = everyone.model_copy(update={"batch_id": "batch-2"})
    fresh = Bridge(fake_ls, kv, _config())
    await fresh.importer.place(everyone, _config())
    assert len(fake_ls.projects) == 1


async def test_a_review_task_shows_the_votes_given_in_each_annotators_own_project(
    fake_ls: Any, kv: Any
) -> None:
    bridge = Bridge(fake_ls, kv, _config())
    await bridge.importer.place(_batch(n=1, overlapped=1), _config())
    ledger = await bridge.state.ledger("tickets", "batch-1")
    assert ledger is not None
    votes = dict(zip(ledger.tasks["item-0"].assignees, ("pos", "neg", "pos"), strict=True))
    for who, label in votes.items():
        user = fake_ls.user(f"{who}@example.com")
        fake_ls.annotate(bridge.items_of(who)["item-0"], user, choice(label))
    await bridge.reconciler.run_once()
    review = BatchCreated(
        project="tickets",
        batch_id="review-1",
        round=1,
        strategy="review",
        seed=0,
        kind="review",
        tasks=[BatchTask(item_id="item-0", data={"text": "ticket 0"}, annotations_required=1)],
    )
    await bridge.importer.place(review, _config())
    (task,) = [t for t in fake_ls.tasks.values() if t["data"][TASK_BATCH] == "review-1"]
    for who, label in votes.items():
        assert f"{who} → {label}" in task["data"][REVIEW_VOTES_FIELD]
