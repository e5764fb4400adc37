"""The ledger, the round rules, the pool and batch progress: pure state transitions."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from labelloop.events import Annotation, AnnotationSource
from labelloop.project import BudgetConfig, SamplingConfig
from labelloop_sampler.domain.budget import budget_room, budget_used, estimated_cost
from labelloop_sampler.domain.ledger import Ledger, ReviewBatch, Round
from labelloop_sampler.domain.pool import candidates, proba_rows, strata_of
from labelloop_sampler.domain.progress import SeenAnnotations, progress_of
from labelloop_sampler.domain.rounds import batch_size, next_batch


def _round(n: int, tasks: int = 10, labels: int = 9) -> Round:
    return Round(batch_id=f"b{n}", nonce="n", tasks=tasks, labels=labels, annotations=tasks + 5)


def test_ledger_round_trip_and_round_life() -> None:
    ledger = Ledger().with_started().with_round(1, _round(1))
    ledger = Ledger.decode(ledger.encode())
    assert ledger.next_round == 2
    assert ledger.open_tasks() == 10
    assert ledger.open_batches() == 1
    assert ledger.round_of("b1") == 1
    assert (ledger.labels_used, ledger.annotations_used) == (9, 15)
    ledger = ledger.with_progress("b1", 4)
    assert ledger.open_tasks() == 6
    done = ledger.with_completed("b1")
    assert done.open_tasks() == 0
    assert done.with_completed("b1") == done  # idempotent
    assert Ledger.decode(None) == Ledger()
    with pytest.raises(ValueError, match="not the next"):
        done.with_round(3, _round(3))


def test_progress_never_goes_backwards() -> None:
    ledger = Ledger().with_round(1, _round(1)).with_progress("b1", 6)
    assert ledger.with_progress("b1", 2).rounds[1].done == 6


def test_a_rounds_first_outcome_stands() -> None:
    ledger = Ledger().with_model(3, model_version="m3", scores_ref="s3", converged=None)
    again = ledger.with_model(3, model_version="m9", scores_ref="s9", converged="yes")
    assert again.outcomes[3].model_version == "m3"
    ledger = ledger.with_qa(3, flagged=["eve", "eve"], lead_seconds=30.0, lead_count=3)
    assert ledger.outcomes[3].flagged == ["eve"]
    assert ledger.with_qa(3, flagged=[], lead_seconds=0, lead_count=0) == ledger
    assert ledger.mean_lead_seconds(3) == 10.0
    assert ledger.mean_lead_seconds(2) is None


def test_unannounced_batches_are_found_for_repair() -> None:
    ledger = (
        Ledger()
        .with_round(1, _round(1))
        .with_review(1, ReviewBatch(batch_id="r1", nonce="x", tasks=2))
    )
    assert [(k, n) for k, n, _, _ in ledger.unannounced()] == [("labeling", 1), ("review", 1)]
    ledger = ledger.with_announced("labeling", 1).with_announced("review", 1)
    assert ledger.unannounced() == []


def _sampling(**kw: object) -> SamplingConfig:
    base: dict[str, object] = {"batch_size": 10, "max_open_tasks": 100, "max_model_lag": 1}
    return SamplingConfig.model_validate({**base, **kw})


def test_batch_n_waits_for_the_outcome_of_round_n_minus_1_minus_lag() -> None:
    s = _sampling()
    ledger = Ledger().with_started()
    first = next_batch(ledger, s, uses_model=True)
    assert (first.cut, first.round, first.basis) == (True, 1, 0)
    ledger = ledger.with_round(1, _round(1))
    second = next_batch(ledger, s, uses_model=True)
    assert (second.cut, second.round, second.basis) == (True, 2, 0)  # lag 1: no model needed
    ledger = ledger.with_round(2, _round(2))
    third = next_batch(ledger, s, uses_model=True)
    assert (third.cut, third.reason, third.basis) == (False, "waiting_for_model", 1)
    ledger = ledger.with_model(1, model_version="m1", scores_ref="s", converged=None)
    assert next_batch(ledger, s, uses_model=True).reason == "waiting_for_qa"
    ledger = ledger.with_qa(1, flagged=[], lead_seconds=0, lead_count=0)
    assert next_batch(ledger, s, uses_model=True).cut
    # a strategy without a model still waits for QA (the annotators it flagged)
    no_qa = Ledger().with_started().with_round(1, _round(1)).with_round(2, _round(2))
    assert next_batch(no_qa, s, uses_model=False).reason == "waiting_for_qa"


def test_lag_zero_makes_rounds_synchronous() -> None:
    s = _sampling(max_model_lag=0)
    ledger = Ledger().with_started().with_round(1, _round(1))
    verdict = next_batch(ledger, s, uses_model=True)
    assert (verdict.cut, verdict.reason, verdict.basis) == (False, "waiting_for_model", 1)


def test_backpressure_decides_when_never_what() -> None:
    s = _sampling(batch_size=10, max_open_tasks=25, max_model_lag=5)
    ledger = Ledger().with_started().with_round(1, _round(1)).with_round(2, _round(2))
    assert next_batch(ledger, s, uses_model=False).reason == "full"  # 20 open + 10 > 25
    assert batch_size(s) == 10
    assert batch_size(_sampling(batch_size=50, max_open_tasks=30)) == 30
    marked = _sampling(low_watermark=5, max_model_lag=5)
    busy = Ledger().with_started().with_round(1, _round(1))
    assert next_batch(busy, marked, uses_model=False).reason == "above_watermark"
    assert next_batch(busy.with_progress("b1", 5), marked, uses_model=False).cut


def test_sampling_waits_to_be_started_and_stops_when_paused_or_converged() -> None:
    s = _sampling(max_model_lag=0)
    assert next_batch(Ledger(), s, uses_model=False).reason == "not_started"
    assert next_batch(Ledger().with_started().with_paused(), s, uses_model=False).reason == (
        "paused"
    )
    ledger = (
        Ledger()
        .with_started()
        .with_round(1, _round(1))
        .with_model(1, model_version="m1", scores_ref=None, converged="plateau")
        .with_qa(1, flagged=[], lead_seconds=0, lead_count=0)
    )
    verdict = next_batch(ledger, s, uses_model=True)
    assert (verdict.reason, verdict.converged) == ("converged", "plateau")


def test_candidates_are_sorted_and_leave_out_gold_and_taken_items() -> None:
    pool = candidates(
        ["d", "a", "c", "b", "g2", "g1"],
        [False, False, False, False, True, True],
        taken={"c"},
        recent_gold={"g2"},
    )
    assert pool.item_ids == ["a", "b", "d"]
    assert pool.gold_ids == ["g1"]


def test_proba_rows_and_strata() -> None:
    proba = np.array([[0.2, 0.8], [0.6, 0.4]])
    rows = proba_rows(["y", "nope", "x"], {"x": 0, "y": 1}, proba)
    assert rows[0].tolist() == [0.6, 0.4]
    assert np.isnan(rows[1]).all()
    assert rows[2].tolist() == [0.2, 0.8]
    assert strata_of([{"lang": "en"}, {}, {"lang": ["x"]}], "lang").tolist() == [
        "en",
        None,
        "['x']",
    ]


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


def test_no_budget_means_no_limits() -> None:
    room = budget_room(BudgetConfig(), labels_used=10_000, annotations_used=50_000)
    assert (room.labels, room.annotations, room.exhausted) == (None, None, None)


def test_label_budget() -> None:
    b = BudgetConfig(max_labels=100)
    assert budget_room(b, labels_used=90, annotations_used=300).labels == 10
    done = budget_room(b, labels_used=100, annotations_used=300)
    assert done.labels == 0
    assert done.exhausted == "max_labels 100 reached"


def test_annotation_budget() -> None:
    b = BudgetConfig(max_annotations=50)
    assert budget_room(b, labels_used=0, annotations_used=45).annotations == 5
    assert (
        budget_room(b, labels_used=0, annotations_used=50).exhausted == "max_annotations 50 reached"
    )


def test_money_budget_uses_observed_lead_times() -> None:
    b = BudgetConfig(max_cost=10.0, hourly_rate=36.0)  # 1 cent per second
    # default 30 s per annotation -> 0.30 per annotation -> 33 annotations
    assert budget_room(b, labels_used=0, annotations_used=0).annotations == 33
    # observed 10 s -> 0.10 each -> 100 in all, 40 used
    assert (
        budget_room(b, labels_used=0, annotations_used=40, mean_lead_seconds=10).annotations == 60
    )
    spent = budget_room(b, labels_used=0, annotations_used=100, mean_lead_seconds=10)
    assert spent.exhausted == "max_cost 10 USD reached"
    assert estimated_cost(100, 10.0, 36.0) == pytest.approx(10.0)


def test_budget_used_reports_each_configured_limit() -> None:
    budget = BudgetConfig(max_labels=400, max_annotations=1000, max_cost=100.0, hourly_rate=36.0)
    used = budget_used(budget, labels_used=360, annotations_used=500, mean_lead_seconds=10.0)
    assert used["labels"] == 0.9
    assert used["annotations"] == 0.5
    assert used["cost"] == 500 * 10 / 3600 * 36 / 100  # 0.5
    assert budget_used(BudgetConfig(), labels_used=5, annotations_used=9) == {}
