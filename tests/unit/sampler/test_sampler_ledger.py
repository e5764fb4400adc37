"""The ledger, the pool and batch progress: pure state transitions."""

# ruff: noqa: N806  (X is scikit-learn's name for a feature matrix)

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from labelloop.events import Annotation, AnnotationSource
from labelloop_sampler.domain.ledger import Ledger
from labelloop_sampler.domain.pool import Pool
from labelloop_sampler.domain.progress import SeenAnnotations, progress_of


def test_ledger_round_trip_and_batch_life() -> None:
    ledger = Ledger().with_batch(
        "b1", nonce="n1", kind="labeling", item_ids=["a", "b", "c"], labels=3, annotations=5
    )
    ledger = Ledger.decode(ledger.encode())
    assert ledger.open_tasks() == 3
    assert ledger.open_batches() == 1
    assert ledger.items_in_open_batches() == {"a", "b", "c"}
    ledger = ledger.with_progress("b1", done=2, lead_seconds=30.0, lead_count=3)
    assert ledger.open_tasks() == 1
    assert ledger.mean_lead_seconds == 10.0
    closed = ledger.with_closed("b1")
    assert closed.open_tasks() == 0
    assert closed.has_batch("b1")
    assert closed.nonce_of("b1") == "n1"
    assert closed.mean_lead_seconds == 10.0
    assert closed.with_closed("b1") == closed  # idempotent
    assert (closed.labels_used, closed.annotations_used) == (3, 5)
    assert Ledger.decode(None) == Ledger()


def test_review_batches_do_not_count_as_labeling_work() -> None:
    ledger = Ledger().with_batch(
        "r1", nonce="n", kind="review", item_ids=["a"], labels=0, annotations=1
    )
    assert ledger.open_tasks() == 0
    assert ledger.open_tasks("review") == 1


def test_pool_masks_gold_and_taken_items() -> None:
    pool = Pool()
    X = np.eye(4, dtype=np.float32)
    added = pool.add_chunk(
        "c1",
        ["a", "b", "c", "d"],
        is_gold=[False, False, False, True],
        metadata=[{"lang": "en"}, {"lang": "fr"}, {}, {}],
        features=(["d", "c", "b", "a"], X),
    )
    assert added == 4
    assert pool.add_chunk("c1", ["a"], is_gold=[False], metadata=[{}]) == 0
    assert pool.add_chunk("c2", ["a", "e"], is_gold=[False, False], metadata=[{}, {}]) == 1
    pool.mark_taken(["b"])
    view = pool.view(exclude=["c"])
    assert view.item_ids.tolist() == ["a", "e"]
    assert pool.item_ids_at(view.gold_positions) == ["d"]
    assert view.X is not None
    assert view.X[0].tolist() == [0, 0, 0, 1]  # "a" got the 4th row
    assert np.allclose(view.X[1], X.mean(axis=0))  # "e" has no vector: the mean
    assert pool.strata(view.positions, "lang").tolist() == ["en", None]
    assert pool.n_unlabeled == 3


def _annotation(
    aid: str, item: str, who: str, *, lead: float = 10.0, value: str | None = "x"
) -> Annotation:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    return Annotation(
        annotation_id=aid,
        item_id=item,
        annotator_id=who,
        value=value,
        lead_time_seconds=lead,
        created_at=now,
        updated_at=now,
        source=AnnotationSource.SIMULATION,
    )


def test_progress_counts_distinct_annotators_and_ignores_replays() -> None:
    seen = SeenAnnotations().with_annotations(
        [
            _annotation("1", "a", "ann1"),
            _annotation("2", "b", "ann1"),
            _annotation("3", "b", "ann2"),
            _annotation("4", "b", "ann2"),  # same annotator again
            _annotation("5", "c", "ann1", value=None),  # skipped
            _annotation("6", "zzz", "ann1"),  # another batch's item
        ]
    )
    seen = seen.with_annotations([_annotation("1", "a", "ann1")])  # redelivered
    p = progress_of({"a": 1, "b": 3, "c": 1}, seen)
    assert p.done == 1
    assert p.lead_count == 4
    assert p.lead_seconds == 40.0


def test_progress_never_goes_backwards() -> None:
    from labelloop_sampler.domain.ledger import Ledger

    ledger = Ledger().with_batch(
        "b1", nonce="n", kind="labeling", item_ids=["a", "b"], labels=2, annotations=4
    )
    newer = ledger.with_progress("b1", done=2, lead_seconds=30.0, lead_count=3)
    stale = newer.with_progress("b1", done=1, lead_seconds=10.0, lead_count=1)
    assert stale.open["b1"].done == 2
    assert stale.open["b1"].lead_count == 3
