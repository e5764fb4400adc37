"""Batch composition: overlap for agreement, gold honeypots, seeded order, annotation caps."""

from __future__ import annotations

from labelloop.project import QualityConfig
from labelloop_sampler.domain.batching import (
    compose_batch,
    expected_annotations_per_task,
    gold_count,
)


def _ids(n: int, prefix: str = "i") -> list[str]:
    return [f"{prefix}{k}" for k in range(n)]


def test_overlap_fraction_of_tasks_get_several_annotators() -> None:
    q = QualityConfig(overlap_fraction=0.25, annotators_per_overlapped_item=3, gold_fraction=0.1)
    n_gold = gold_count(20, q, n_gold_available=10)
    assert n_gold == 2
    tasks = compose_batch(_ids(18), [0.5] * 18, _ids(n_gold, "g"), q, seed=1)
    assert len(tasks) == 20
    assert sum(t.annotations_required == 3 for t in tasks) == 5
    assert sum(t.annotations_required == 1 for t in tasks) == 15
    gold = [t for t in tasks if t.is_gold]
    assert {t.item_id for t in gold} == {"g0", "g1"}
    assert all(t.score is None for t in gold)
    assert len({t.item_id for t in tasks}) == 20


def test_order_is_shuffled_with_the_seed() -> None:
    q = QualityConfig(overlap_fraction=0.2, gold_fraction=0.0)
    a = compose_batch(_ids(30), [None] * 30, [], q, seed=5)
    b = compose_batch(_ids(30), [None] * 30, [], q, seed=5)
    c = compose_batch(_ids(30), [None] * 30, [], q, seed=6)
    assert a == b
    assert [t.item_id for t in a] != [t.item_id for t in c]
    assert [t.item_id for t in a] != _ids(30)


def test_gold_count_edge_cases() -> None:
    q = QualityConfig(gold_fraction=0.05)
    assert gold_count(20, q, 0) == 0
    assert gold_count(20, q, 5) == 1
    assert gold_count(1, q, 5) == 0
    assert gold_count(100, q, 3) == 3
    assert gold_count(20, QualityConfig(gold_fraction=0.0), 5) == 0


def test_annotation_cap_reduces_overlap_then_items() -> None:
    q = QualityConfig(overlap_fraction=0.5, annotators_per_overlapped_item=3, gold_fraction=0.0)
    full = compose_batch(_ids(10), [None] * 10, [], q, seed=0)
    assert sum(t.annotations_required for t in full) == 20
    capped = compose_batch(_ids(10), [None] * 10, [], q, seed=0, max_annotations=14)
    assert len(capped) == 10
    assert sum(t.annotations_required for t in capped) <= 14
    tiny = compose_batch(_ids(10), [None] * 10, [], q, seed=0, max_annotations=4)
    assert len(tiny) == 4
    assert all(t.annotations_required == 1 for t in tiny)


def test_expected_annotations_per_task() -> None:
    q = QualityConfig(overlap_fraction=0.15, annotators_per_overlapped_item=3)
    assert expected_annotations_per_task(q) == 1.3
