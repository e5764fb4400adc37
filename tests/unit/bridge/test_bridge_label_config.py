"""Label configs for every task type: well-formed XML naming the controls labelloop reads, an
interface that fits one screen, hotkeys that are the classes, a review panel."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest

from labelloop.project import ProjectConfig, TaskType
from labelloop_bridge.domain.label_config import (
    CONTROL_NAME,
    IMAGE_MAX_HEIGHT,
    REVIEW_REASON_FIELD,
    REVIEW_VOTES_FIELD,
    LabelConfigError,
    build_label_config,
    guidelines_html,
    option_hotkeys,
    parse_label_config,
)

_FIELD = {
    TaskType.TEXT_CLASSIFICATION: ("text", "text", "Text", "Choices"),
    TaskType.TEXT_MULTILABEL: ("text", "text", "Text", "Choices"),
    TaskType.NER: ("text", "text", "Text", "Labels"),
    TaskType.IMAGE_CLASSIFICATION: ("image", "image", "Image", "Choices"),
    TaskType.BOUNDING_BOXES: ("image", "image", "Image", "RectangleLabels"),
    TaskType.AUDIO_CLASSIFICATION: ("audio", "audio", "Audio", "Choices"),
    TaskType.VIDEO_CLASSIFICATION: ("video", "video", "Video", "Choices"),
}


def _config(task_type: TaskType, **extra: Any) -> ProjectConfig:
    name, kind, _, _ = _FIELD[task_type]
    raw: dict[str, Any] = {
        "name": "demo",
        "task_type": task_type.value,
        "labels": {"classes": ["cat", "dog", "bird & <fish>"]},
        "data_fields": [{"name": name, "kind": kind}],
    }
    if task_type in {TaskType.NER}:
        raw["export"] = {"formats": ["jsonl"]}
    if task_type in {TaskType.BOUNDING_BOXES}:
        raw["export"] = {"formats": ["jsonl", "coco"]}
    raw.update(extra)
    return ProjectConfig.model_validate(raw)


@pytest.mark.parametrize("task_type", list(TaskType))
def test_every_task_type_gives_xml_naming_its_control(task_type: TaskType) -> None:
    xml = build_label_config(_config(task_type))
    root = ET.fromstring(xml)  # noqa: S314 - our own output
    assert root.tag == "View"
    field, _, object_tag, control_tag = _FIELD[task_type]
    info = parse_label_config(xml)
    control = info.controls[CONTROL_NAME]
    assert control.tag == control_tag
    assert control.to_name == field
    assert info.objects == {field: field}
    assert root.find(f".//{object_tag}[@name='{field}']") is not None
    assert control.options == ("cat", "dog", "bird & <fish>")
    assert control.multiple is (task_type is TaskType.TEXT_MULTILABEL)


def test_single_label_is_radio_multilabel_is_multiple() -> None:
    single = ET.fromstring(build_label_config(_config(TaskType.TEXT_CLASSIFICATION)))  # noqa: S314
    multi = ET.fromstring(build_label_config(_config(TaskType.TEXT_MULTILABEL)))  # noqa: S314
    assert single.find("Choices").get("choice") == "single-radio"  # type: ignore[union-attr]
    assert multi.find("Choices").get("choice") == "multiple"  # type: ignore[union-attr]


def test_extra_fields_are_shown_and_attributes_become_per_region_choices() -> None:
    config = _config(
        TaskType.BOUNDING_BOXES,
        data_fields=[{"name": "caption", "kind": "text"}, {"name": "image", "kind": "image"}],
        labels={"classes": ["car", "person"], "attributes": {"occluded": ["yes", "no"]}},
    )
    info = parse_label_config(build_label_config(config))
    assert set(info.objects) == {"caption", "image"}
    assert info.controls["occluded"].per_region
    assert info.controls["occluded"].options == ("yes", "no")
    assert info.controls[CONTROL_NAME].to_name == "image"


def test_attribute_named_like_the_control_is_refused() -> None:
    config = _config(
        TaskType.TEXT_CLASSIFICATION, labels={"classes": ["a", "b"], "attributes": {"label": ["x"]}}
    )
    with pytest.raises(LabelConfigError, match="collides"):
        build_label_config(config)


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        ("<View><Text name='t' value='$t'/>", "well-formed"),
        ("<Root/>", "root must be <View>"),
        ("<View><Text name='t' value='$t'/></View>", "no control"),
        (
            "<View><Text name='t' value='$t'/><Choices name='c' toName='x'>"
            "<Choice value='a'/></Choices></View>",
            "no object tag",
        ),
        ("<View><Text name='t' value='$t'/><Choices name='c' toName='t'/></View>", "no <Choice>"),
        (
            "<View><Text name='t' value='$t'/><Choices name='t' toName='t'>"
            "<Choice value='a'/></Choices></View>",
            "used twice",
        ),
        ("<View><Text name='t' value='t'/></View>", "value='\\$field'"),
    ],
)
def test_invalid_configs_are_refused_with_a_reason(xml: str, message: str) -> None:
    with pytest.raises(LabelConfigError, match=message):
        parse_label_config(xml)


def test_guidelines_markdown_becomes_html_with_raw_html_escaped() -> None:
    html = guidelines_html("# Rules\n\nLabel **sarcasm** as *negative*.\n\n<script>x()</script>")
    assert "<h1>Rules</h1>" in html
    assert "<strong>sarcasm</strong>" in html
    assert "<script>" not in html
    assert guidelines_html(None) == ""
    assert guidelines_html("   ") == ""


# ---------------------------------------------------------------------------- one screen, hotkeys


def _digits(**extra: Any) -> ProjectConfig:
    classes = [str(d) for d in range(10)]
    return _config(TaskType.IMAGE_CLASSIFICATION, labels={"classes": classes}, **extra)


def test_digit_classes_are_their_own_hotkeys() -> None:
    """Label Studio numbers options itself from 1: class 0 took key 1, and 7 selected 6."""
    control = parse_label_config(build_label_config(_digits())).controls[CONTROL_NAME]
    assert control.options == tuple("0123456789")
    assert control.hotkeys == tuple("0123456789")


@pytest.mark.parametrize(
    ("classes", "keys"),
    [
        (["A", "C", "d"], ["a", "c", "d"]),  # single letters: the letter (lower case)
        (["3", "1", "x"], ["3", "1", "x"]),
        (["cat", "dog"], ["1", "2"]),  # names: 1..9 then 0 in class order
        (["a", "A"], ["1", "2"]),  # the same key twice
        (["a", "b"], ["1", "2"]),  # b is Label Studio's brush tool
        (["u", "x"], ["1", "2"]),  # u unselects a region
        (["é", "x"], ["1", "2"]),  # not a key on every keyboard
        ([f"c{i}" for i in range(10)], list("1234567890")),
        (
            [f"c{i}" for i in range(27)],
            [*"1234567890qtasdfgzxcyijln", None, None],  # beyond: none from labelloop
        ),
    ],
)
def test_hotkey_rule(classes: list[str], keys: list[str | None]) -> None:
    assert option_hotkeys(classes) == keys


def test_options_of_every_control_carry_the_hotkeys_label_studio_shows() -> None:
    for task_type in TaskType:
        config = _config(task_type, labels={"classes": ["yes", "no", "maybe"]})
        control = parse_label_config(build_label_config(config)).controls[CONTROL_NAME]
        assert control.hotkeys == ("1", "2", "3"), task_type


def test_the_digits_interface_fits_one_screen() -> None:
    """Options inline (a wrapping row, not one per line) and the image bounded in height."""
    root = ET.fromstring(build_label_config(_digits()))  # noqa: S314 - our own output
    choices = root.find("Choices")
    assert choices is not None
    assert choices.get("layout") == "inline"
    assert choices.get("showInline") is None  # it would override the layout
    image = root.find("Image")
    assert image is not None
    assert image.get("maxHeight") == IMAGE_MAX_HEIGHT
    assert image.get("maxHeight", "").endswith("vh")
    assert root.find("Header") is None  # one data field: no header to push the item down


def test_a_long_text_scrolls_in_a_bounded_box_above_its_options() -> None:
    root = ET.fromstring(build_label_config(_config(TaskType.TEXT_CLASSIFICATION)))  # noqa: S314
    box, choices = list(root)
    assert box.tag == "View"
    assert "max-height" in box.get("style", "")
    assert "overflow-y: auto" in box.get("style", "")
    assert box.find("Text[@name='text']") is not None
    assert choices.tag == "Choices"


def test_several_data_fields_keep_their_headers() -> None:
    config = _config(
        TaskType.IMAGE_CLASSIFICATION,
        data_fields=[{"name": "caption", "kind": "text"}, {"name": "image", "kind": "image"}],
    )
    root = ET.fromstring(build_label_config(config))  # noqa: S314 - our own output
    assert [h.get("value") for h in root.iter("Header")] == ["caption", "image"]


def test_the_review_interface_shows_why_and_the_votes_above_the_item() -> None:
    plain = build_label_config(_digits())
    review = build_label_config(_digits(), review=True)
    root = ET.fromstring(review)  # noqa: S314 - our own output
    panel = root[0]
    assert panel.tag == "View"
    assert [h.get("value") for h in panel.iter("Header")] == [
        f"${REVIEW_REASON_FIELD}",
        f"${REVIEW_VOTES_FIELD}",
    ]
    # the same controls and objects: annotations of both projects read alike
    assert parse_label_config(review) == parse_label_config(plain)
    assert REVIEW_REASON_FIELD not in plain
