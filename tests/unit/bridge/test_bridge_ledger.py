"""Batch ledgers: distinct annotators, updates, skips and deletions."""

from __future__ import annotations

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
