"""Predicted boxes (a model hook's, or the producer's own) become Label Studio rectangle
pre-annotations in the interface the bridge generates for a bounding-box project: percent
coordinates clipped to the image, the project's labels only, each box's score."""

from __future__ import annotations

from typing import Any

import pytest

from labelloop.events import BatchCreated, BatchTask, Prediction
from labelloop.project import parse_project
from labelloop_bridge.domain.label_config import (
    CONTROL_NAME,
    build_label_config,
    parse_label_config,
)
from labelloop_bridge.domain.results import ResultError, from_ls_result, predicted_boxes
from labelloop_bridge.importer import ls_task, prediction_result

LABELS = ["cat", "dog"]
CONFIG = parse_project(
    {
        "name": "pets",
        "task_type": "bounding_boxes",
        "labels": {"classes": LABELS},
        "data_fields": [{"name": "image", "kind": "image"}],
    }
)


def _box(
    label: str, x: Any = 10, y: Any = 20, width: Any = 30, height: Any = 40, **extra: Any
) -> dict[str, Any]:
    return {"x": x, "y": y, "width": width, "height": height, "label": label, **extra}


def _task(boxes: Any, score: float | None = 0.42) -> BatchTask:
    return BatchTask(
        item_id="i1",
        data={"image": "https://img.example/1.png"},
        annotations_required=1,
        prediction=Prediction(label=boxes, score=score, model_version="m0003"),
    )


def _batch(task: BatchTask) -> BatchCreated:
    return BatchCreated(
        project="pets",
        batch_id="b3",
        round=3,
        tasks=[task],
        strategy="hybrid",
        model_version="m0003",
        seed=1,
    )


def test_predicted_boxes_are_rectangles_in_the_generated_interface() -> None:
    task = _task([_box("cat", score=0.9), _box("dog", x=50, rotation=15)])
    imported: Any = ls_task(task, _batch(task), CONFIG)
    (prediction,) = imported["predictions"]
    assert prediction["score"] == 0.42
    assert prediction["model_version"] == "m0003"
    cat, dog = prediction["result"]
    info = parse_label_config(build_label_config(CONFIG))
    assert cat["from_name"] == CONTROL_NAME
    assert CONTROL_NAME in info.controls
    assert cat["to_name"] == "image"
    assert cat["type"] == "rectanglelabels"
    assert cat["value"] == {
        "x": 10.0,
        "y": 20.0,
        "width": 30.0,
        "height": 40.0,
        "rotation": 0.0,
        "rectanglelabels": ["cat"],
    }
    assert cat["score"] == 0.9  # the box's own confidence
    assert "score" not in dog
    assert dog["value"]["rotation"] == 15.0
    # what Label Studio shows is what an annotator's answer reads back as
    back = from_ls_result(prediction["result"], CONFIG.task_type)
    assert isinstance(back, list)
    assert [r["label"] for r in back] == ["cat", "dog"]


def test_boxes_are_clipped_to_the_image_and_foreign_labels_dropped() -> None:
    boxes = predicted_boxes(
        [
            _box("cat", x=-10, y=90, width=30, height=40),  # sticks out left and below
            _box("dog", x=100, y=10),  # wholly outside
            _box("bird"),  # not the project's
            _box("cat", x="10"),  # not a number
            _box("cat", width=True),
            _box("dog", x=5, y=5, width=0, height=10),  # no area
            _box("cat", score=1.5),  # a score out of [0, 1] is not kept
        ],
        LABELS,
    )
    assert boxes == [
        {"x": 0.0, "y": 90.0, "width": 20.0, "height": 10.0, "rotation": 0.0, "label": "cat"},
        {"x": 10.0, "y": 20.0, "width": 30.0, "height": 40.0, "rotation": 0.0, "label": "cat"},
    ]


def test_a_prediction_without_boxes_of_the_project_is_an_empty_pre_annotation() -> None:
    assert prediction_result([_box("bird")], CONFIG) == []
    assert prediction_result([], CONFIG) == []


def test_class_names_are_no_box_prediction() -> None:
    with pytest.raises(ResultError):
        predicted_boxes(["cat"], LABELS)
    with pytest.raises(ResultError):
        predicted_boxes("cat", LABELS)
    imported: Any = ls_task(_task(["cat"]), _batch(_task(["cat"])), CONFIG)
    assert "predictions" not in imported  # logged and left out, the task still imported
