"""Project configuration: good files load, bad files name the field that is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from labelloop.project import (
    ProjectConfigError,
    TaskType,
    load_project,
    parse_project,
    scaffold_project,
)

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def _base() -> dict[str, object]:
    return {
        "name": "reviews",
        "task_type": "text_classification",
        "labels": {"classes": ["pos", "neg"]},
        "data_fields": [{"name": "text", "kind": "text"}],
    }


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*/*.yaml")), ids=lambda p: p.parent.name)
def test_examples_load(path: Path) -> None:
    config = load_project(path)
    assert config.name
    if config.guidelines:
        assert config.guidelines_text


def test_defaults_follow_the_labeling_practice() -> None:
    config = parse_project(_base())
    assert config.quality.overlap_fraction == 0.15
    assert config.quality.annotators_per_overlapped_item == 3
    assert config.quality.min_alpha == 0.6
    assert config.sampling.strategy == "hybrid"


@pytest.mark.parametrize("task_type", list(TaskType))
def test_scaffold_is_valid_for_every_task_type(task_type: TaskType) -> None:
    config = parse_project(yaml.safe_load(scaffold_project("demo", task_type)))
    assert config.task_type is task_type


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "Has Spaces"}, "name"),
        ({"task_type": "sentiment"}, "task_type"),
        ({"labels": {"classes": []}}, "labels.classes"),
        ({"labels": {"classes": ["a", "a"]}}, "labels"),
        ({"quality": {"overlap_fraction": 1.5}}, "quality.overlap_fraction"),
        ({"quality": {"annotators_per_overlap": 3}}, "quality.annotators_per_overlap"),
        ({"sampling": {"strategy": "stratified"}}, "sampling"),
        ({"sampling": {"batch_size": 0}}, "sampling.batch_size"),
        ({"export": {"splits": {"train": 0.5, "test": 0.2}}}, "export"),
        ({"export": {"formats": ["coco"]}}, "(top level)"),
        ({"data_fields": [{"name": "img", "kind": "image"}]}, "(top level)"),
        ({"budget": {"max_labels": -5}}, "budget.max_labels"),
    ],
)
def test_bad_configs_name_the_field(change: dict[str, object], field: str) -> None:
    raw = {**_base(), **change}
    with pytest.raises(ProjectConfigError) as info:
        parse_project(raw, source="reviews.yaml")
    message = str(info.value)
    assert message.startswith("reviews.yaml: invalid project configuration")
    assert any(p.startswith(f"{field}:") for p in info.value.problems), info.value.problems


def test_unknown_field_says_so(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({**_base(), "sampeling": {}}))
    with pytest.raises(ProjectConfigError, match="sampeling: unknown field"):
        load_project(path)


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("name: x\nlabels: [unclosed\n")
    with pytest.raises(ProjectConfigError, match="line 3"):
        load_project(path)


def test_missing_guidelines_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({**_base(), "guidelines": "nope.md"}))
    with pytest.raises(ProjectConfigError, match="guidelines: cannot read"):
        load_project(path)


def test_guidelines_are_read_beside_the_file(tmp_path: Path) -> None:
    (tmp_path / "guide.md").write_text("# Be kind\n")
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({**_base(), "guidelines": "guide.md"}))
    assert load_project(path).guidelines_text == "# Be kind\n"
