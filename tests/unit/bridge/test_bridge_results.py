"""Label Studio result JSON to labelloop values and back."""

from __future__ import annotations

from typing import Any

import pytest

from labelloop.events import LabelValue
from labelloop.project import TaskType
from labelloop_bridge.domain.results import ResultError, from_ls_result, to_ls_result


@pytest.mark.parametrize(
    ("task_type", "value", "to_name"),
    [
        (TaskType.TEXT_CLASSIFICATION, "pos", "text"),
        (TaskType.IMAGE_CLASSIFICATION, "cat", "image"),
        (TaskType.AUDIO_CLASSIFICATION, "speech", "audio"),
        (TaskType.VIDEO_CLASSIFICATION, "goal", "video"),
        (TaskType.TEXT_MULTILABEL, ["a", "c"], "text"),
        (TaskType.NER, [{"start": 0, "end": 5, "text": "Alice", "label": "PER"}], "text"),
        (
            TaskType.BOUNDING_BOXES,
            [{"x": 10.0, "y": 20.0, "width": 5.0, "height": 6.0, "rotation": 0, "label": "car"}],
            "image",
        ),
    ],
)
def test_round_trip(task_type: TaskType, value: LabelValue, to_name: str) -> None:
    result = to_ls_result(value, task_type, to_name)
    assert all(r["from_name"] == "label" and r["to_name"] == to_name for r in result)
    assert from_ls_result(result, task_type) == value


def test_empty_or_foreign_results_are_none() -> None:
    assert from_ls_result([], TaskType.TEXT_CLASSIFICATION) is None
    other = [{"from_name": "comment", "type": "textarea", "value": {"text": ["hi"]}}]
    assert from_ls_result(other, TaskType.NER) is None


def test_per_region_attributes_are_attached_by_region_id() -> None:
    result: list[dict[str, Any]] = [
        {
            "id": "r1",
            "from_name": "label",
            "to_name": "image",
            "type": "rectanglelabels",
            "original_width": 640,
            "original_height": 480,
            "value": {
                "x": 1,
                "y": 2,
                "width": 3,
                "height": 4,
                "rotation": 0,
                "rectanglelabels": ["car"],
            },
        },
        {
            "id": "r1",
            "from_name": "occluded",
            "to_name": "image",
            "type": "choices",
            "value": {"choices": ["yes"]},
        },
    ]
    (region,) = from_ls_result(result, TaskType.BOUNDING_BOXES)  # type: ignore[misc]
    assert region["attributes"] == {"occluded": "yes"}
    assert region["original_width"] == 640


@pytest.mark.parametrize(
    ("task_type", "value"),
    [
        (TaskType.TEXT_CLASSIFICATION, ["a", "b"]),
        (TaskType.TEXT_CLASSIFICATION, [{"label": "a"}]),
        (TaskType.NER, "PER"),
        (TaskType.NER, [{"start": 0, "end": 1}]),
        (TaskType.BOUNDING_BOXES, [{"x": 1, "label": "car"}]),
    ],
)
def test_values_that_do_not_fit_the_task_type_are_refused(
    task_type: TaskType, value: LabelValue
) -> None:
    with pytest.raises(ResultError):
        to_ls_result(value, task_type, "x")
