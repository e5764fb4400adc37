"""Project fields: a title that names the run, and Data Manager tabs that hide labelloop's ids."""

from __future__ import annotations

from typing import Any

import pytest

from labelloop.project import ProjectConfig
from labelloop_bridge.provisioning import (
    INTERNAL_COLUMNS,
    hidden_columns,
    project_fields,
    project_title,
)

DIGITS = ProjectConfig.model_validate(
    {
        "name": "digits",
        "title": "Handwritten digits",
        "task_type": "image_classification",
        "labels": {"classes": [str(d) for d in range(10)]},
        "data_fields": [{"name": "image", "kind": "image"}],
    }
)


def test_the_title_names_the_namespace_and_the_marker_stays_in_the_description() -> None:
    labeling = project_fields(DIGITS, "labeling", "demo20261201094500")
    review = project_fields(DIGITS, "review", "demo20261201094500")
    assert labeling["title"] == "Handwritten digits · demo20261201094500"
    assert review["title"] == "Handwritten digits (review) · demo20261201094500"
    assert "[labelloop:demo20261201094500/digits/labeling]" in labeling["description"]
    assert "[labelloop:demo20261201094500/digits/review]" in review["description"]
    other = project_fields(DIGITS, "labeling", "demo20261202080000")
    assert other["title"] != labeling["title"]


def test_an_annotators_own_project_names_them_takes_one_answer_and_has_its_own_marker() -> None:
    mine = project_fields(DIGITS, "labeling", "demo20261201094500", "amy")
    assert mine["title"] == "Handwritten digits · amy · demo20261201094500"
    assert mine["maximum_annotations"] == 1
    assert "[labelloop:demo20261201094500/digits/labeling/amy]" in mine["description"]
    # the shared project's marker is not found inside an annotator's
    assert "[labelloop:demo20261201094500/digits/labeling]" not in mine["description"]
    long = project_title("A" * 80, "labeling", "demo20261201094500", "lead.annotator@example.com")
    assert len(long) <= 50
    assert long.endswith(" · lead.annotat · demo20261201094500")


@pytest.mark.parametrize("kind", ["labeling", "review"])
@pytest.mark.parametrize(
    ("title", "namespace"),
    [
        ("A very long project title that alone would nearly fill it", "demo20261201094500"),
        ("ok", "t" + "0123456789abcdef" * 4),
        ("x" * 60, "n" * 60),
    ],
)
def test_a_long_title_is_shortened_and_keeps_the_end_of_the_namespace(
    title: str, namespace: str, kind: Any
) -> None:
    shown = project_title(title, kind, namespace)
    assert 3 <= len(shown) <= 50  # Label Studio's bounds
    assert shown.endswith(namespace[-12:])
    assert shown.startswith(title[:2])


def _columns() -> list[dict[str, Any]]:
    data = {"explore": True, "labeling": False}
    return [
        {
            "id": "image",
            "parent": "data",
            "visibility_defaults": {"explore": True, "labeling": True},
        },
        {"id": "labelloop_item_id", "parent": "data", "visibility_defaults": data},
        {"id": "id", "visibility_defaults": {"explore": True, "labeling": False}},
        {"id": "inner_id", "visibility_defaults": {"explore": False, "labeling": False}},
    ]


def test_a_tab_without_its_own_list_keeps_label_studios_defaults_and_hides_ours() -> None:
    hidden = hidden_columns(None, _columns(), "labeling")
    assert hidden["explore"] == ["tasks:inner_id", *INTERNAL_COLUMNS]
    assert hidden["labeling"] == [
        "tasks:data.labelloop_item_id",
        "tasks:id",
        "tasks:inner_id",
        *INTERNAL_COLUMNS[1:],
    ]


def test_a_persons_list_is_kept_and_ours_added_once() -> None:
    theirs = {"explore": ["tasks:id", INTERNAL_COLUMNS[0]], "labeling": []}
    hidden = hidden_columns(theirs, _columns(), "labeling")
    assert hidden["explore"] == ["tasks:id", *INTERNAL_COLUMNS]
    assert hidden["labeling"] == list(INTERNAL_COLUMNS)
    assert hidden_columns(hidden, _columns(), "labeling") == hidden  # nothing left to change
    assert theirs == {"explore": ["tasks:id", INTERNAL_COLUMNS[0]], "labeling": []}


def test_a_review_project_keeps_its_panels_data_out_of_the_list_beside_the_labeling_screen() -> (
    None
):
    hidden = hidden_columns({"explore": [], "labeling": []}, _columns(), "review")
    panel = ["tasks:data.labelloop_review_reason", "tasks:data.labelloop_review_votes"]
    assert hidden["labeling"] == [*INTERNAL_COLUMNS, *panel]
    assert hidden["explore"] == list(INTERNAL_COLUMNS)  # the table may show why, and sort by it
