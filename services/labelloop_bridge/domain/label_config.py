"""Label Studio labeling configs (XML) generated from a project's task type and label schema.

The interface fits one screen (1280 x 800): the image is bounded in height, a long text scrolls
in a bounded box, and the options are laid out inline, wrapping like a grid, so every class is
visible without scrolling. A review project's interface adds a panel above the item saying why
it is there and what the crowd answered (task data, see :data:`REVIEW_REASON_FIELD`).

Hotkeys (:func:`option_hotkeys`) are explicit, so that Label Studio does not number them itself
(it gives the first option ``1``: with classes ``0``..``9`` pressing 7 selected 6):

* when every class is one character that can be a key (a digit, or a letter Label Studio does
  not use itself) and no two are the same key, the key is the class (lower case);
* otherwise the options take ``1``..``9``, ``0`` in class order, then the letters
  ``q t a s d f g z x c y i j l n`` (Label Studio's own order, less the keys its tools use);
* Label Studio 1.23 gives an option without a hotkey one of its own choosing and has no way to
  switch that off, so past 25 classes (and for attribute choices) its numbering applies.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import quoteattr

from markdown_it import MarkdownIt

from labelloop.project import DataField, DataKind, ProjectConfig, TaskType

__all__ = [
    "CONTROL_NAME",
    "IMAGE_MAX_HEIGHT",
    "REVIEW_REASON_FIELD",
    "REVIEW_VOTES_FIELD",
    "ControlSpec",
    "LabelConfigError",
    "LabelConfigInfo",
    "build_label_config",
    "guidelines_html",
    "option_hotkeys",
    "parse_label_config",
]

CONTROL_NAME = "label"
"""The ``name`` of the main control tag of every generated config (``from_name`` in results)."""

_OBJECT_TAG = {
    DataKind.TEXT: "Text",
    DataKind.IMAGE: "Image",
    DataKind.AUDIO: "Audio",
    DataKind.VIDEO: "Video",
    DataKind.NUMBER: "Text",
    DataKind.URL: "Text",
}
_OBJECT_TAGS = frozenset(
    {"Text", "HyperText", "Image", "Audio", "AudioPlus", "Video", "Paragraphs"}
)
_CONTROL_OPTIONS = {
    "Choices": "Choice",
    "Labels": "Label",
    "RectangleLabels": "Label",
}
_CONTROL_TAG = {
    TaskType.TEXT_CLASSIFICATION: "Choices",
    TaskType.TEXT_MULTILABEL: "Choices",
    TaskType.NER: "Labels",
    TaskType.IMAGE_CLASSIFICATION: "Choices",
    TaskType.BOUNDING_BOXES: "RectangleLabels",
    TaskType.AUDIO_CLASSIFICATION: "Choices",
    TaskType.VIDEO_CLASSIFICATION: "Choices",
}
_RESERVED_KEYS = frozenset("behkmopruvw")
"""Single keys Label Studio 1.23 binds itself: unselect a region (u) and its tools (pan h,
rectangle r, move v, brush b, eraser e, ellipse o, polygon p, key point k, magic wand w,
auto-detect m). An option on one of them would fire both."""
_FALLBACK_KEYS = "1234567890qtasdfgzxcyijln"
"""Keys for options whose names cannot be their keys: Label Studio's own order, less the
reserved keys."""
IMAGE_MAX_HEIGHT = "45vh"
"""An image's height bound: with the options below it, the item fits a 1280 x 800 screen."""
_VIDEO_HEIGHT = "360"  # pixels: the player and its controls leave room for the options
_TEXT_BOX_STYLE = "max-height: 40vh; overflow-y: auto"
_REVIEW_PANEL_STYLE = (
    "background: #fff7e6; border-left: 4px solid #fa8c16; padding: 4px 12px; margin-bottom: 8px"
)
_PANEL_LINE = "margin: 4px 0"
REVIEW_REASON_FIELD = "labelloop_review_reason"
"""Task data of a review task: why it is in review (shown above the item)."""
REVIEW_VOTES_FIELD = "labelloop_review_votes"
"""Task data of a review task: the crowd's votes and current label (shown above the item)."""


class LabelConfigError(ValueError):
    """A labeling config Label Studio would reject or labelloop could not read results from."""


@dataclass(frozen=True, slots=True)
class ControlSpec:
    name: str
    tag: str
    to_name: str
    options: tuple[str, ...]
    multiple: bool = False
    per_region: bool = False
    hotkeys: tuple[str | None, ...] = ()
    """Each option's ``hotkey`` attribute, ``None`` where it has none (Label Studio picks one)."""


@dataclass(frozen=True, slots=True)
class LabelConfigInfo:
    """What a parsed config names: its objects (data fields) and controls (what annotators set)."""

    objects: dict[str, str]
    """Object name -> data variable (``$text`` -> ``text``)."""
    controls: dict[str, ControlSpec] = field(default_factory=dict)


def _attr(**attrs: str) -> str:
    return " ".join(f"{key}={quoteattr(value)}" for key, value in attrs.items())


def option_hotkeys(classes: Sequence[str]) -> list[str | None]:
    """The hotkey of each class, in class order (the rule is in the module docstring)."""
    keys = [c.lower() for c in classes]
    if len(set(keys)) == len(keys) and all(_usable_key(k) for k in keys):
        return list(keys)
    return [_FALLBACK_KEYS[i] if i < len(_FALLBACK_KEYS) else None for i in range(len(classes))]


def _usable_key(key: str) -> bool:
    return len(key) == 1 and key.isascii() and key.isalnum() and key not in _RESERVED_KEYS


def _object_tag(data_field: DataField) -> list[str]:
    tag = _OBJECT_TAG[data_field.kind]
    attrs = {"name": data_field.name, "value": "$" + data_field.name}
    if data_field.kind is DataKind.IMAGE:
        attrs.update(zoom="true", maxHeight=IMAGE_MAX_HEIGHT)
    if data_field.kind is DataKind.VIDEO:
        attrs["height"] = _VIDEO_HEIGHT
    line = f"<{tag} {_attr(**attrs)}/>"
    if tag != "Text":
        return [f"  {line}"]
    # a long text scrolls inside its box: the options below it stay on the screen
    return [f"  <View {_attr(style=_TEXT_BOX_STYLE)}>", f"    {line}", "  </View>"]


def _options(tag: str, values: Sequence[str], hotkeys: Sequence[str | None] = ()) -> list[str]:
    option = _CONTROL_OPTIONS[tag]
    keys = list(hotkeys) or [None] * len(values)
    lines = []
    for value, key in zip(values, keys, strict=True):
        attrs = {"value": value} if key is None else {"value": value, "hotkey": key}
        lines.append(f"    <{option} {_attr(**attrs)}/>")
    return lines


def _review_panel() -> list[str]:
    """Why the item is in review and what the crowd said: task data, shown above the item."""
    return [
        f"  <View {_attr(style=_REVIEW_PANEL_STYLE)}>",
        f"    <Header {_attr(value='$' + REVIEW_REASON_FIELD, size='5', style=_PANEL_LINE)}/>",
        f"    <Header {_attr(value='$' + REVIEW_VOTES_FIELD, size='5', style=_PANEL_LINE)}/>",
        "  </View>",
    ]


def build_label_config(config: ProjectConfig, *, review: bool = False) -> str:
    """The Label Studio XML for a project, checked with :func:`parse_label_config`.

    ``review``: the expert review project's interface, with the review panel above the item (its
    tasks carry :data:`REVIEW_REASON_FIELD` and :data:`REVIEW_VOTES_FIELD`).
    """
    task_type = config.task_type
    primary = config.primary_field
    tag = _CONTROL_TAG[task_type]
    lines = ["<View>"]
    if review:
        lines.extend(_review_panel())
    several = len(config.data_fields) > 1  # a header tells the fields apart; alone, it is noise
    for data_field in config.data_fields:
        if data_field.name != primary.name:
            lines.append(f"  <Header {_attr(value=data_field.name, size='5')}/>")
            lines.extend(_object_tag(data_field))
    control_attrs: dict[str, str] = {"name": CONTROL_NAME, "toName": primary.name}
    if tag == "Choices":
        control_attrs["choice"] = "multiple" if task_type.is_multilabel else "single-radio"
        control_attrs["layout"] = "inline"
    classes = config.labels.classes
    control = [
        f"  <{tag} {_attr(**control_attrs)}>",
        *_options(tag, classes, option_hotkeys(classes)),
    ]
    control.append(f"  </{tag}>")
    obj = [f"  <Header {_attr(value=primary.name, size='5')}/>"] if several else []
    obj.extend(_object_tag(primary))
    # region tools sit above their object in Label Studio's own templates; choices below it
    lines.extend([*control, *obj] if not task_type.is_classification else [*obj, *control])
    for attribute, values in config.labels.attributes.items():
        if attribute == CONTROL_NAME or attribute in {f.name for f in config.data_fields}:
            raise LabelConfigError(f"attribute name {attribute!r} collides with a tag name")
        attrs = {"name": attribute, "toName": primary.name, "choice": "single-radio"}
        if not task_type.is_classification:
            attrs["perRegion"] = "true"
        attrs["layout"] = "inline"
        lines.append(f"  <Header {_attr(value=attribute, size='5')}/>")
        lines.append(f"  <Choices {_attr(**attrs)}>")
        lines.extend([*_options("Choices", values), "  </Choices>"])
    lines.append("</View>")
    xml = "\n".join(lines)
    info = parse_label_config(xml)
    if CONTROL_NAME not in info.controls:
        raise LabelConfigError("generated config lacks its main control")  # pragma: no cover
    return xml


def parse_label_config(xml: str) -> LabelConfigInfo:
    """Parse and check a config: well-formed, a ``<View>`` root, controls pointing at objects."""
    try:
        # the XML is ours (generated above) or an operator's project file, never a stranger's
        root = ET.fromstring(xml)  # noqa: S314
    except ET.ParseError as exc:
        raise LabelConfigError(f"label config is not well-formed XML: {exc}") from None
    if root.tag != "View":
        raise LabelConfigError(f"label config root must be <View>, got <{root.tag}>")
    objects: dict[str, str] = {}
    controls: dict[str, ControlSpec] = {}
    names: set[str] = set()
    for element in root.iter():
        name = element.get("name")
        if name is None:
            continue
        if name in names:
            raise LabelConfigError(f"tag name {name!r} is used twice")
        names.add(name)
        if element.tag in _OBJECT_TAGS:
            value = element.get("value", "")
            if not value.startswith("$"):
                raise LabelConfigError(f"<{element.tag} name={name!r}> needs value='$field'")
            objects[name] = value[1:]
        elif element.get("toName") is not None:
            option_tag = _CONTROL_OPTIONS.get(element.tag)
            children = [child for child in element if child.tag == option_tag]
            options = tuple(child.get("value", "") for child in children)
            if option_tag and not options:
                raise LabelConfigError(f"control {name!r} has no <{option_tag}> options")
            if len(set(options)) != len(options):
                raise LabelConfigError(f"control {name!r} repeats an option")
            controls[name] = ControlSpec(
                name=name,
                tag=element.tag,
                to_name=element.get("toName", ""),
                options=options,
                multiple=element.get("choice") == "multiple",
                per_region=element.get("perRegion") == "true",
                hotkeys=tuple(child.get("hotkey") for child in children),
            )
    if not controls:
        raise LabelConfigError("label config names no control tag (Choices, Labels, ...)")
    for control in controls.values():
        if control.to_name not in objects:
            raise LabelConfigError(
                f"control {control.name!r} points at {control.to_name!r}, which is no object tag"
            )
    return LabelConfigInfo(objects=objects, controls=controls)


def guidelines_html(markdown: str | None) -> str:
    """Project guidelines (markdown) as the HTML Label Studio shows as instructions.

    Raw HTML in the markdown is escaped, not passed through: the instructions are rendered into
    every annotator's page.
    """
    if not markdown or not markdown.strip():
        return ""
    renderer = MarkdownIt("commonmark", {"html": False, "linkify": False})
    return str(renderer.render(markdown)).strip()
