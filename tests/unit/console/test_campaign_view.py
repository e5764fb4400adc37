"""The campaign view folded from events, and the status table drawn from it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console

from labelloop.events import (
    Annotation,
    AnnotationSource,
    AnnotationsSubmitted,
    BatchCompleted,
    BatchCreated,
    BatchTask,
    BudgetExhausted,
    ConsensusLabel,
    DatasetExported,
    IngestedItem,
    ItemsIngested,
    LabelsReady,
    ModelTrained,
    QAReport,
)
from labelloop.project import ProjectConfig, parse_project
from labelloop_console.campaign import CampaignView, fold
from labelloop_console.status import render

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _annotation(aid: str, item: str, who: str, lead: float) -> Annotation:
    return Annotation(
        annotation_id=aid,
        item_id=item,
        annotator_id=who,
        value="a",
        batch_id="b1",
        lead_time_seconds=lead,
        created_at=T0,
        updated_at=T0,
        source=AnnotationSource.SIMULATION,
    )


def _events() -> list[object]:
    return [
        ItemsIngested(
            project="p",
            submission_id="s",
            items=[IngestedItem(item_id=f"i{n}", data={"text": "x"}) for n in range(5)],
        ),
        BatchCreated(
            project="p",
            batch_id="b1",
            round=1,
            strategy="random",
            seed=0,
            tasks=[
                BatchTask(item_id="i0", data={}, annotations_required=2),
                BatchTask(item_id="i1", data={}, annotations_required=1),
                BatchTask(item_id="g", data={}, annotations_required=1, is_gold=True),
            ],
        ),
        AnnotationsSubmitted(
            project="p",
            annotations=[
                _annotation("a1", "i0", "ann", 30.0),
                _annotation("a2", "i0", "bob", 90.0),
                _annotation("a3", "i1", "ann", 60.0),
            ],
        ),
    ]


def test_open_tasks_follow_annotations_and_completion() -> None:
    view = CampaignView("p")
    for n, event in enumerate(_events()):
        fold(view, event, now=100.0 + n * 60)  # type: ignore[arg-type]
    assert view.items_ingested == 5
    assert view.open_tasks == 1  # 4 required, 3 received
    assert view.annotations_used == 3
    assert view.cost(hourly_rate=36.0) == (30 + 90 + 60) / 3600 * 36
    fold(view, BatchCompleted(project="p", batch_id="b1", round=1, n_tasks=3, n_annotations=4))
    assert view.open_batches == []
    assert view.open_tasks == 0


def test_labels_exclude_gold_and_replays_change_nothing() -> None:
    view = CampaignView("p")
    for event in _events():
        fold(view, event)  # type: ignore[arg-type]
    ready = LabelsReady(
        project="p",
        batch_id="b1",
        round=1,
        labels=[
            ConsensusLabel(item_id="i0", label="a", confidence=0.9, method="mv", n_annotations=2),
            ConsensusLabel(
                item_id="g", label="a", confidence=1, method="gold", n_annotations=1, is_gold=True
            ),
        ],
    )
    fold(view, ready)
    fold(view, ready)
    fold(view, _events()[2])  # type: ignore[arg-type]  # a replayed annotation message
    assert view.labels_used == 1
    assert view.annotations_used == 3
    assert view.pool_size == 5 - 3  # i0, i1 handed out; g is gold


def test_status_table_shows_budget_state_and_agreement() -> None:
    view = CampaignView("p")
    for event in _events():
        fold(view, event)  # type: ignore[arg-type]
    fold(
        view,
        QAReport(
            project="p",
            batch_id="b1",
            round=1,
            n_items=2,
            n_annotations=3,
            krippendorff_alpha=0.71,
            consensus_method="majority",
        ),
    )
    fold(view, BudgetExhausted(project="p", labels_used=2, annotations_used=3, reason="max"))
    config = parse_project(
        {
            "name": "p",
            "task_type": "text_classification",
            "labels": {"classes": ["a", "b"]},
            "data_fields": [{"name": "text", "kind": "text"}],
            "budget": {"max_labels": 10, "hourly_rate": 36.0},
        }
    )
    console = Console(record=True, width=220)
    console.print(render({"p": view}, {"p": config}))
    text = console.export_text()
    assert "0.71" in text
    assert "0/10" in text
    assert "budget spent" in text
    assert "USD" in text

    # 2026-12-01: at 80 columns the fifteen headers were cut to `pr… in… po…`
    narrow = Console(record=True, width=80)
    narrow.print(render({"p": view}, {"p": config}, width=80))
    lines = narrow.export_text()
    for label in ("ingested", "rejected", "open tasks", "annotations", "model acc.", "state"):
        assert label in lines, label
    assert "0/10" in lines
    assert "…" not in lines
    assert "no projects yet" in str(render({}, {}, width=80))


def _config(**sampling: object) -> ProjectConfig:
    return parse_project(
        {
            "name": "p",
            "task_type": "text_classification",
            "labels": {"classes": ["a", "b"]},
            "data_fields": [{"name": "text", "kind": "text"}],
            "sampling": {"batch_size": 3, "max_model_lag": 0, **sampling},
            "budget": {"max_labels": 10},
        }
    )


def _trained(number: int, serving: str | None) -> ModelTrained:
    return ModelTrained(
        project="p",
        model_version=f"m{number:04d}",
        dataset_version=f"v{number:04d}",
        round=number,
        promoted=serving is not None,
        metrics={},
        n_train=2,
        serving_model_version=serving,
    )


def _version(number: int) -> DatasetExported:
    return DatasetExported(
        project="p",
        version=f"v{number:04d}",
        round=number,
        path=f"/exports/p/v{number:04d}",
        n_rows=2,
        n_new_rows=2,
        split_sizes={},
        class_counts={},
        formats=["parquet"],
        manifest_sha256="0" * 64,
    )


def test_the_view_says_what_the_next_batch_waits_for() -> None:
    view = CampaignView("p")
    for event in _events():
        fold(view, event)  # type: ignore[arg-type]
    config = _config()
    assert view.next_batch(config) == "batch 2 waits for the model of round 1"
    fold(view, _trained(1, "m0001"))
    assert view.next_batch(config) == "batch 2 waits for QA of round 1"
    assert view.next_batch(_config(strategy="random")) == "batch 2 waits for QA of round 1"
    assert view.round_models()[1].serving_model_version == "m0001"
    assert view.labels_by_round() == {1: 2}
    assert not view.settled
    fold(view, BatchCompleted(project="p", batch_id="b1", round=1, n_tasks=3, n_annotations=4))
    fold(view, BudgetExhausted(project="p", labels_used=2, annotations_used=3, reason="max"))
    assert not view.settled  # the last round trained, but its dataset version is not there
    fold(view, _version(1))
    assert view.settled  # sampling stopped, every batch answered, the last round trained


def test_a_withdrawn_label_is_no_longer_counted_as_released() -> None:
    view = CampaignView("p")

    def label(item: str, value: str, confidence: float = 0.9) -> ConsensusLabel:
        return ConsensusLabel(
            item_id=item, label=value, confidence=confidence, method="majority", n_annotations=3
        )

    fold(view, LabelsReady(project="p", batch_id="b1", round=1, labels=[label("i0", "a")]))
    fold(
        view,
        LabelsReady(
            project="p", batch_id="b2", round=2, labels=[label("i1", "b", 0.4)], withdrawn=["i0"]
        ),
    )
    assert view.labeled_items == {"i1": "b"}
    assert view.label_confidence == {"i1": 0.4}
    assert view.labels_used == 1


def test_a_replayed_view_dates_events_as_they_happened() -> None:
    """Replaying the streams read a campaign's hour of annotations within a millisecond, and
    the view dated them all 'now': millions of annotations a minute, an ETA of 0s, and no batch
    ever waiting long. Events carry their own time."""
    view = CampaignView("p")
    events = _events()
    for n, event in enumerate(events):  # ingested, batch created, annotations: 30 minutes apart
        fold(view, event.model_copy(update={"occurred_at": T0 + timedelta(minutes=30 * n)}))  # type: ignore[attr-defined]
    later = AnnotationsSubmitted(
        project="p",
        occurred_at=T0 + timedelta(minutes=90),
        annotations=[_annotation("a4", "i2", "ann", 10.0)],
    )
    fold(view, later)
    assert view.batches["b1"].created == (T0 + timedelta(minutes=30)).timestamp()
    assert view.throughput() == pytest.approx(4 / 30)  # 4 annotations over 30 minutes


def test_a_completion_read_before_its_batch_still_completes_it() -> None:
    """The watcher reads each event type with a consumer of its own: a BatchCompleted can be
    folded before its BatchCreated (whose tasks are fetched from the object store). The demo
    then waited for a batch that was long done, and stopped after two minutes of no news."""
    view = CampaignView("p")
    created = _events()[1]
    fold(view, BatchCompleted(project="p", batch_id="b1", round=1, n_tasks=3, n_annotations=4))
    assert view.batches == {}
    fold(view, created)  # type: ignore[arg-type]
    assert view.batches["b1"].completed is not None
    assert view.open_batches == []
