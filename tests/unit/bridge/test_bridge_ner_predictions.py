"""A NER model's predicted spans become Label Studio span pre-annotations over the task's text,
in the interface the bridge generates for a NER project."""

from __future__ import annotations

from typing import Any

import pytest

from labelloop.events import BatchCreated, BatchTask, Prediction
from labelloop.project import TaskType, parse_project
from labelloop_bridge.domain.label_config import (
    CONTROL_NAME,
    build_label_config,
    parse_label_config,
)
from labelloop_bridge.domain.results import ResultError, from_ls_result, predicted_spans
from labelloop_bridge.importer import ls_task, prediction_result

TYPES = ["person", "place"]
CONFIG = parse_project(
    {
        "name": "tweets",
        "task_type": "ner",
        "labels": {"classes": TYPES},
        "data_fields": [{"name": "text", "kind": "text"}],
    }
)
TEXT = "Emma Stone flew to New York today"


def _batch(*tasks: BatchTask) -> BatchCreated:
    return BatchCreated(
        project="tweets",
        batch_id="b1",
        round=2,
        tasks=list(tasks),
        strategy="hybrid",
        model_version="m0002",
        seed=1,
    )


def _task(spans: Any, score: float | None = 0.31) -> BatchTask:
    return BatchTask(
        item_id="i1",
        data={"text": TEXT},
        annotations_required=1,
        prediction=Prediction(label=spans, score=score, model_version="m0002"),
    )


def _span(start: int, end: int, label: str, **extra: Any) -> dict[str, Any]:
    return {"start": start, "end": end, "label": label, **extra}


def test_predicted_spans_are_span_regions_in_the_generated_interface() -> None:
    task = _task([_span(19, 27, "place", text="New York"), _span(0, 10, "person")])
    imported: Any = ls_task(task, _batch(task), CONFIG)
    (prediction,) = imported["predictions"]
    assert prediction["score"] == 0.31
    assert prediction["model_version"] == "m0002"
    control = parse_label_config(build_label_config(CONFIG)).controls[CONTROL_NAME]
    first, second = prediction["result"]
    for item in (first, second):
        assert item["from_name"] == control.name
        assert item["to_name"] == control.to_name == "text"
        assert item["type"] == "labels"
        assert set(item["value"]["labels"]) <= set(control.options)
    # in the text's order, each with the text's own characters
    assert first["value"] == {"start": 0, "end": 10, "text": "Emma Stone", "labels": ["person"]}
    assert second["value"] == {"start": 19, "end": 27, "text": "New York", "labels": ["place"]}
    assert first["id"] != second["id"]
    # read back as labelloop reads an annotator's answer
    assert from_ls_result(prediction["result"], TaskType.NER) == [
        {"start": 0, "end": 10, "text": "Emma Stone", "label": "person"},
        {"start": 19, "end": 27, "text": "New York", "label": "place"},
    ]


def test_no_predicted_entity_is_an_empty_pre_annotation() -> None:
    task = _task([], score=0.97)
    imported: Any = ls_task(task, _batch(task), CONFIG)
    (prediction,) = imported["predictions"]
    assert prediction["result"] == []  # the model's word that the text names nothing


def test_spans_that_do_not_fit_the_text_or_the_project_are_left_out() -> None:
    spans = [
        _span(0, 4, "person"),  # "Emma": kept
        _span(0, 10, "person"),  # overlaps the kept one (same start, sorted after): dropped
        _span(11, 15, "city"),  # a label the project does not have
        _span(28, 99, "place"),  # past the end of the text
        _span(5, 5, "place"),  # empty
        {"start": "19", "end": 27, "label": "place"},  # offsets are not integers
        _span(19, 27, "place", text="somewhere else"),  # kept, with the text's own characters
    ]
    assert predicted_spans(spans, TYPES, TEXT) == [
        {"start": 0, "end": 4, "label": "person", "text": "Emma"},
        {"start": 19, "end": 27, "label": "place", "text": "New York"},
    ]
    # without the text, offsets are kept as they are and no text is added
    assert predicted_spans([_span(28, 99, "place")], TYPES, None) == [_span(28, 99, "place")]


def test_a_prediction_of_class_names_is_no_span_prediction() -> None:
    with pytest.raises(ResultError, match="list of regions"):
        prediction_result(["person"], CONFIG, TEXT)
    # the importer logs it and imports the task without a pre-annotation
    task = _task(["person"])
    imported: Any = ls_task(task, _batch(task), CONFIG)
    assert "predictions" not in imported
