"""Folding the rounds' LabelsReady into the current label per item, in round order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from labelloop.events import ConsensusLabel, LabelsReady
from labelloop_exporter.domain.labels import current_labels, label_classes, label_json

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _event(
    batch: str,
    labels: dict[str, str],
    number: int,
    gold: bool = False,
    withdrawn: list[str] | None = None,
) -> LabelsReady:
    return LabelsReady(
        project="p",
        batch_id=batch,
        round=number,
        # a later round may well be announced earlier: only the round number counts
        occurred_at=T0 - timedelta(minutes=number),
        withdrawn=withdrawn or [],
        labels=[
            ConsensusLabel(
                item_id=i, label=v, confidence=0.9, method="mv", n_annotations=3, is_gold=gold
            )
            for i, v in labels.items()
        ],
    )


def test_redelivered_message_counts_once() -> None:
    event = _event("b1", {"a": "x", "b": "y"}, 1)
    assert current_labels([event, event]) == current_labels([event])
    assert len(current_labels([event, event])) == 2


def test_the_later_round_wins_whatever_the_arrival_order() -> None:
    first = _event("b1", {"a": "x"}, 1)
    review = _event("b2", {"a": "y"}, 2)
    for order in ([first, review], [review, first]):
        got = current_labels(order)["a"]
        assert got.label.label == "y"
        assert (got.batch_id, got.round) == ("b2", 2)


def test_a_withdrawn_label_is_gone_but_gold_is_not() -> None:
    first = _event("b1", {"a": "x", "g": "y"}, 1)
    gold = _event("b1", {"g": "y"}, 1, gold=True)
    later = _event("b2", {"c": "x"}, 2, withdrawn=["a", "g"])
    folded = current_labels([first, gold, later])
    assert set(folded) == {"g", "c"}


def test_gold_is_sticky() -> None:
    gold = _event("b1", {"a": "x"}, 1, gold=True)
    later = _event("b2", {"a": "x"}, 2)
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
