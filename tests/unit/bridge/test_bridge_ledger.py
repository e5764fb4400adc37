"""Batch ledgers: distinct annotators, updates, skips and deletions."""

from __future__ import annotations

from datetime import UTC, datetime

from labelloop_bridge.domain.ledger import BatchLedger


def test_complete_when_every_task_has_its_distinct_annotators() -> None:
    ledger = BatchLedger.new("b", "labeling", {"i1": 2, "i2": 1})
    assert ledger.record("i1", "ls-1", "ann", cancelled=False, deleted=False)
    assert not ledger.record("i1", "ls-1", "ann", cancelled=False, deleted=False)  # replay
    ledger.record("i1", "ls-2", "ann", cancelled=False, deleted=False)  # same person twice
    ledger.record("i2", "ls-3", "bob", cancelled=False, deleted=False)
    assert not ledger.is_complete()
    ledger.record("i1", "ls-4", "cat", cancelled=False, deleted=False)
    assert ledger.is_complete()
    assert ledger.n_annotations() == 4


def test_skips_count_only_when_asked_and_deletions_reopen() -> None:
    ledger = BatchLedger.new("b", "labeling", {"i1": 1})
    ledger.record("i1", "ls-1", "ann", cancelled=True, deleted=False)
    assert ledger.is_complete(count_skips=True)
    assert not ledger.is_complete(count_skips=False)
    assert ledger.record("i1", "ls-1", "ann", cancelled=False, deleted=True)
    assert not ledger.is_complete()
    assert ledger.open_tasks() == 1
    assert not ledger.record("unknown", "ls-9", "x", cancelled=False, deleted=False)


def test_json_round_trip() -> None:
    ledger = BatchLedger.new("b/1", "review", {"i1": 3}, ls_project_id=4)
    ledger.record("i1", "ls-1", "ann", cancelled=True, deleted=False)
    ledger.imported = ledger.completed = True
    back = BatchLedger.from_json(ledger.to_json())
    assert back == ledger


def _at(second: int) -> datetime:
    return datetime(2026, 1, 1, 12, 0, second, tzinfo=UTC)


def test_an_older_state_never_replaces_a_newer_one() -> None:
    ledger = BatchLedger.new("b", "labeling", {"i1": 1})
    assert ledger.record("i1", "ls-1", "ann", cancelled=False, deleted=False, updated_at=_at(5))
    assert not ledger.record("i1", "ls-1", "ann", cancelled=True, deleted=False, updated_at=_at(2))
    assert ledger.is_complete(count_skips=False)
    assert ledger.record("i1", "ls-1", "ann", cancelled=True, deleted=False, updated_at=_at(9))
    assert not ledger.is_complete(count_skips=False)
    assert ledger.tasks["i1"].answers["ls-1"].updated_at == _at(9)


def test_a_deletion_is_final_whatever_arrives_after_it() -> None:
    ledger = BatchLedger.new("b", "labeling", {"i1": 1})
    ledger.record("i1", "ls-1", "ann", cancelled=False, deleted=False, updated_at=_at(1))
    assert ledger.record("i1", "ls-1", "ann", cancelled=False, deleted=True, updated_at=_at(3))
    assert not ledger.record("i1", "ls-1", "ann", cancelled=False, deleted=False, updated_at=_at(9))
    assert not ledger.is_complete()
    assert ledger.n_annotations() == 0
    # a deletion seen before the annotation itself (a webhook race) also holds
    assert not ledger.record("i1", "ls-2", "bob", cancelled=False, deleted=True, updated_at=_at(4))
    assert not ledger.record("i1", "ls-2", "bob", cancelled=False, deleted=False, updated_at=_at(2))
    assert ledger.tasks["i1"].live() == {}


def test_ledgers_written_before_updated_at_was_kept_still_load() -> None:
    old = (
        b'{"batch_id":"b","kind":"labeling","ls_project_id":3,"imported":true,"completed":false,'
        b'"completion_published":false,"tasks":{"i1":[2,{"ls-1":["ann",false],"ls-2":["bob",true]}]}}'
    )
    ledger = BatchLedger.from_json(old)
    assert ledger.tasks["i1"].answered_by(True) == {"ann", "bob"}
    assert ledger.tasks["i1"].answers["ls-1"].updated_at is None
    assert ledger.record("i1", "ls-1", "ann", cancelled=True, deleted=False, updated_at=_at(1))
    assert BatchLedger.from_json(ledger.to_json()) == ledger


def test_a_batchs_rechecks_survive_the_ledger_and_reach_its_completion() -> None:
    from labelloop.events import BatchCreated, BatchTask, SuspectLabel
    from labelloop_bridge.completion import completion_event
    from labelloop_bridge.domain.ledger import BatchLedger

    doubt = SuspectLabel(item_id="old", label="a", model_label="b", probability=0.96, batch_id="b0")
    batch = BatchCreated(
        project="p",
        batch_id="b1",
        round=2,
        tasks=[BatchTask(item_id="i", data={}, annotations_required=1)],
        strategy="random",
        seed=0,
        rechecks=[doubt],
    )
    ledger = BatchLedger.from_json(BatchLedger.of_batch(batch).to_json())
    assert ledger.rechecks == [doubt]
    assert completion_event("p", ledger, []).rechecks == [doubt]
