"""Folding LabelsReady messages into the current label per item."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from labelloop.events import ConsensusLabel, LabelsReady
from labelloop_exporter.domain.labels import current_labels, label_classes, label_json

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _event(batch: str, labels: dict[str, str], at: datetime, gold: bool = False) -> LabelsReady:
    return LabelsReady(
        project="p",
        batch_id=batch,
        occurred_at=at,
        labels=[
            ConsensusLabel(
                item_id=i, label=v, confidence=0.9, method="mv", n_annotations=3, is_gold=gold
            )
            for i, v in labels.items()
        ],
    )


def test_redelivered_message_counts_once() -> None:
    event = _event("b1", {"a": "x", "b": "y"}, T0)
    assert current_labels([event, event]) == current_labels([event])
    assert len(current_labels([event, event])) == 2


def test_latest_label_wins_whatever_the_arrival_order() -> None:
    first = _event("b1", {"a": "x"}, T0)
    review = _event("b2", {"a": "y"}, T0 + timedelta(minutes=5))
    for order in ([first, review], [review, first]):
        got = current_labels(order)["a"]
        assert got.label.label == "y"
        assert got.batch_id == "b2"


def test_gold_is_sticky() -> None:
    gold = _event("b1", {"a": "x"}, T0, gold=True)
    later = _event("b2", {"a": "x"}, T0 + timedelta(minutes=1))
    assert current_labels([gold, later])["a"].is_gold


def test_label_classes_of_every_shape() -> None:
    assert label_classes("x") == ["x"]
    assert label_classes(["x", "y"]) == ["x", "y"]
    assert label_classes(
        [{"start": 0, "end": 2, "labels": ["PER"]}, {"rectanglelabels": ["car"]}]
    ) == [
        "PER",
        "car",
    ]
    assert label_classes(None) == []
    assert label_json(["b", "a"]) == '["b","a"]'
    assert label_json("a") == "a"
