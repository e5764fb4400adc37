"""Backpressure and budget: when a batch may be made, how big, and when sampling stops."""

from __future__ import annotations

import pytest

from labelloop.project import BudgetConfig, SamplingConfig
from labelloop_sampler.domain.backpressure import Trigger, batch_room
from labelloop_sampler.domain.budget import budget_room, estimated_cost


def test_new_items_only_start_a_batch_when_none_is_open() -> None:
    s = SamplingConfig(batch_size=20, max_open_tasks=50)
    assert batch_room(s, Trigger.ITEMS_INGESTED, open_tasks=0, open_batches=0).tasks == 20
    v = batch_room(s, Trigger.ITEMS_INGESTED, open_tasks=3, open_batches=1)
    assert (v.tasks, v.reason) == (0, "batch_open")


def test_max_open_tasks_caps_the_batch() -> None:
    s = SamplingConfig(batch_size=20, max_open_tasks=50)
    assert batch_room(s, Trigger.BATCH_COMPLETED, open_tasks=40, open_batches=2).tasks == 10
    v = batch_room(s, Trigger.MODEL_TRAINED, open_tasks=50, open_batches=3)
    assert (v.tasks, v.reason) == (0, "full")


def test_low_watermark_triggers_on_annotations() -> None:
    s = SamplingConfig(batch_size=20, max_open_tasks=100, low_watermark=5)
    assert (
        batch_room(s, Trigger.ANNOTATIONS, open_tasks=6, open_batches=1).reason == "above_watermark"
    )
    assert batch_room(s, Trigger.ANNOTATIONS, open_tasks=5, open_batches=1).tasks == 20
    no_mark = SamplingConfig(batch_size=20, max_open_tasks=100, low_watermark=0)
    assert batch_room(no_mark, Trigger.ANNOTATIONS, open_tasks=0, open_batches=0).tasks == 0


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
    from labelloop.project import BudgetConfig
    from labelloop_sampler.domain.budget import budget_used

    budget = BudgetConfig(max_labels=400, max_annotations=1000, max_cost=100.0, hourly_rate=36.0)
    used = budget_used(budget, labels_used=360, annotations_used=500, mean_lead_seconds=10.0)
    assert used["labels"] == 0.9
    assert used["annotations"] == 0.5
    assert used["cost"] == 500 * 10 / 3600 * 36 / 100  # 0.5
    assert budget_used(BudgetConfig(), labels_used=5, annotations_used=9) == {}
