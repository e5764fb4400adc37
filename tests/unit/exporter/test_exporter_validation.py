"""Validation leaves bad rows out of a version and says which and why."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from labelloop.project import TaskType
from labelloop_exporter.domain.validation import validate

CLASSES = ["cat", "dog"]


def _rows(*rows: tuple[str, Any, float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [r[0] for r in rows],
            "label": [r[1] for r in rows],
            "confidence": [r[2] for r in rows],
            "weight": [1.0] * len(rows),
        }
    )


def _check(rows: pd.DataFrame, task: TaskType = TaskType.TEXT_CLASSIFICATION, **kw: Any) -> Any:
    kw.setdefault("min_confidence", 0.0)
    kw.setdefault("low_confidence", "exclude")
    return validate(rows, task_type=task, classes=CLASSES, **kw)


def test_clean_rows_pass() -> None:
    result = _check(_rows(("a", "cat", 0.9), ("b", "dog", 0.8)))
    assert result.problems == []
    assert len(result.rows) == 2


@pytest.mark.parametrize(
    ("rows", "code"),
    [
        (_rows(("a", "cat", 0.9), ("a", "dog", 0.9)), "duplicate_items"),
        (_rows(("a", "", 0.9)), "empty_label"),
        (_rows(("a", None, 0.9)), "empty_label"),
        (_rows(("a", "cow", 0.9)), "unknown_class"),
        (_rows(("a", ["cat"], 0.9)), "label_shape"),
    ],
)
def test_each_problem_is_named(rows: pd.DataFrame, code: str) -> None:
    clean = _rows(("z", "dog", 0.9))
    result = _check(pd.concat([rows, clean], ignore_index=True))
    assert [p.code for p in result.problems] == [code]
    assert code in result.reason()
    assert "a" in result.problems[0].item_ids
    assert result.excluded_rows == {code: 1}
    # the bad row is left out (of a duplicate, the first row stays); the clean one stays
    expected = ["a", "z"] if code == "duplicate_items" else ["z"]
    assert result.rows["item_id"].tolist() == expected


def test_unknown_class_names_the_class() -> None:
    result = _check(_rows(("a", "cow", 0.9), ("b", "cat", 0.9)))
    assert "cow" in result.reason()


def test_rows_of_items_missing_from_the_catalog_are_left_out() -> None:
    result = _check(_rows(("a", "cat", 0.9), ("b", "dog", 0.9)), missing_items=["a"])
    assert [p.code for p in result.problems] == ["missing_item_data"]
    assert result.rows["item_id"].tolist() == ["b"]


def test_low_confidence_excluded() -> None:
    result = _check(_rows(("a", "cat", 0.9), ("b", "dog", 0.4)), min_confidence=0.5)
    assert result.problems == []
    assert result.rows["item_id"].tolist() == ["a"]
    assert result.excluded_low_confidence == 1


def test_low_confidence_weighted() -> None:
    result = _check(
        _rows(("a", "cat", 0.9), ("b", "dog", 0.4)), min_confidence=0.5, low_confidence="weight"
    )
    assert result.problems == []
    assert result.rows["weight"].tolist() == [1.0, 0.4]
    assert result.weighted_low_confidence == 1


def test_everything_excluded_leaves_an_empty_version() -> None:
    result = _check(_rows(("a", "cat", 0.1)), min_confidence=0.5)
    assert result.rows.empty
    assert result.excluded_low_confidence == 1


def test_multilabel_lists_are_checked_per_class() -> None:
    task = TaskType.TEXT_MULTILABEL
    assert not _check(_rows(("a", ["cat", "dog"], 0.9)), task).problems
    assert [p.code for p in _check(_rows(("a", [], 0.9)), task).problems] == ["empty_label"]
    assert [p.code for p in _check(_rows(("a", ["cow"], 0.9)), task).problems] == ["unknown_class"]


def test_regions_may_be_empty_but_each_needs_a_class() -> None:
    task = TaskType.NER
    assert not _check(
        _rows(("a", [], 0.9)), task
    ).problems  # a sentence without entities is an answer
    bad = _rows(("a", [{"start": 0, "end": 3}], 0.9))
    assert [p.code for p in _check(bad, task).problems] == ["empty_label"]
    unknown = _rows(("a", [{"start": 0, "end": 3, "labels": ["PER"]}], 0.9))
    assert [p.code for p in _check(unknown, task).problems] == ["unknown_class"]


def test_coco_needs_image_sizes() -> None:
    box = {"x": 10, "y": 10, "width": 5, "height": 5, "rectanglelabels": ["cat"]}
    rows = _rows(("a", [box], 0.9))
    task = TaskType.BOUNDING_BOXES
    assert not _check(rows, task, formats=["yolo"]).problems
    assert [p.code for p in _check(rows, task, formats=["coco"]).problems] == ["missing_image_size"]
    sized = _rows(("a", [{**box, "original_width": 640, "original_height": 480}], 0.9))
    assert not _check(sized, task, formats=["coco"]).problems
