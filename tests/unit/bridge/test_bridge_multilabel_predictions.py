"""A multi-label model's predicted labels become Label Studio pre-annotations that the
generated multi-label interface shows: every predicted label selected in its ``Choices``."""

from __future__ import annotations

from typing import Any

from labelloop.events import BatchCreated, BatchTask, Prediction
from labelloop.project import SimulationConfig, TaskType, parse_project
from labelloop_bridge.domain.crew import answer_batch
from labelloop_bridge.domain.label_config import (
    CONTROL_NAME,
    build_label_config,
    parse_label_config,
)
from labelloop_bridge.domain.results import from_ls_result
from labelloop_bridge.importer import ls_task, prediction_result

CLASSES = ["business", "entertainment", "politics", "sports", "tech"]
CONFIG = parse_project(
    {
        "name": "digests",
        "task_type": "text_multilabel",
        "labels": {"classes": CLASSES},
        "data_fields": [{"name": "text", "kind": "text"}],
    }
)


def _batch(*tasks: BatchTask) -> BatchCreated:
    return BatchCreated(
        project="digests",
        batch_id="b1",
        round=2,
        tasks=list(tasks),
        strategy="hybrid",
        model_version="m0001",
        seed=1,
    )


def _task(label: Any, score: float | None = 0.42) -> BatchTask:
    return BatchTask(
        item_id="i1",
        data={"text": "Markets fell. * * * The match was drawn."},
        annotations_required=1,
        prediction=Prediction(label=label, score=score, model_version="m0001"),
    )


def test_predicted_labels_are_selected_in_the_multiple_choice_control() -> None:
    task = _task(["sports", "business"])
    imported: Any = ls_task(task, _batch(task), CONFIG)
    (prediction,) = imported["predictions"]
    assert prediction["score"] == 0.42
    assert prediction["model_version"] == "m0001"
    (item,) = prediction["result"]
    # the interface the bridge generates for the project: one Choices control taking several
    control = parse_label_config(build_label_config(CONFIG)).controls[CONTROL_NAME]
    assert control.multiple
    assert item["from_name"] == control.name
    assert item["to_name"] == control.to_name == "text"
    assert item["type"] == "choices"
    assert item["value"] == {"choices": ["business", "sports"]}  # the project's order
    assert set(item["value"]["choices"]) <= set(control.options)
    # and read back as labelloop reads an annotator's answer
    assert from_ls_result(prediction["result"], TaskType.TEXT_MULTILABEL) == [
        "business",
        "sports",
    ]


def test_no_predicted_label_is_an_empty_pre_annotation() -> None:
    task = _task([], score=0.9)
    imported: Any = ls_task(task, _batch(task), CONFIG)
    (prediction,) = imported["predictions"]
    assert prediction["result"] == []  # the model's word that no section applies
    assert prediction["score"] == 0.9


def test_labels_the_project_no_longer_has_are_left_out() -> None:
    assert prediction_result(["tech", "weather"], CONFIG) == prediction_result(["tech"], CONFIG)


def test_a_single_class_prediction_is_a_set_of_one() -> None:
    (item,) = prediction_result("politics", CONFIG)
    assert item["value"] == {"choices": ["politics"]}


def test_the_simulated_crew_answers_label_sets_from_the_truth() -> None:
    crew = SimulationConfig.model_validate(
        {"seed": 1, "annotators": [{"id": "perfect", "accuracy": 1.0}]}
    )
    task = BatchTask(
        item_id="i1",
        data={"text": "..."},
        annotations_required=1,
        metadata={"simulation_truth": ["politics", "tech"]},
        prediction=Prediction(label=["business"], score=0.7),  # the crew does not copy it
    )
    (answer,) = answer_batch(
        [task], crew, batch_id="b1", task_type=TaskType.TEXT_MULTILABEL, classes=CLASSES
    ).answers
    assert answer.value == ["politics", "tech"]
