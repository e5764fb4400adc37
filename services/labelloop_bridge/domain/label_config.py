"""Label Studio labeling configs (XML) generated from a project's task type and label schema."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from xml.sax.saxutils import quoteattr

from markdown_it import MarkdownIt

from labelloop.project import DataField, DataKind, ProjectConfig, TaskType

__all__ = [
    "CONTROL_NAME",
    "ControlSpec",
    "LabelConfigError",
    "LabelConfigInfo",
    "build_label_config",
    "guidelines_html",
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


@dataclass(frozen=True, slots=True)
class LabelConfigInfo:
    """What a parsed config names: its objects (data fields) and controls (what annotators set)."""

    objects: dict[str, str]
    """Object name -> data variable (``$text`` -> ``text``)."""
    controls: dict[str, ControlSpec] = field(default_factory=dict)


def _attr(**attrs: str) -> str:
    return " ".join(f"{key}={quoteattr(value)}" for key, value in attrs.items())


def _object_tag(data_field: DataField) -> str:
    tag = _OBJECT_TAG[data_field.kind]
    extra = ""
    if data_field.kind is DataKind.IMAGE:
        extra = ' zoom="true"'
    return f"  <{tag} {_attr(name=data_field.name, value='$' + data_field.name)}{extra}/>"


def _options(tag: str, values: list[str]) -> list[str]:
    option = _CONTROL_OPTIONS[tag]
    return [f"    <{option} {_attr(value=value)}/>" for value in values]


def build_label_config(config: ProjectConfig) -> str:
    """The Label Studio XML for a project, checked with :func:`parse_label_config`."""
    task_type = config.task_type
    primary = config.primary_field
    tag = _CONTROL_TAG[task_type]
    lines = ["<View>"]
    for data_field in config.data_fields:
        if data_field.name != primary.name:
            lines.append(f"  <Header {_attr(value=data_field.name)}/>")
            lines.append(_object_tag(data_field))
    control_attrs: dict[str, str] = {"name": CONTROL_NAME, "toName": primary.name}
    if tag == "Choices":
        control_attrs["choice"] = "multiple" if task_type.is_multilabel else "single-radio"
        control_attrs["showInline"] = "true" if len(config.labels.classes) <= 6 else "false"
    control = [f"  <{tag} {_attr(**control_attrs)}>", *_options(tag, config.labels.classes)]
    control.append(f"  </{tag}>")
    obj = [f"  <Header {_attr(value=primary.name)}/>", _object_tag(primary)]
    # region tools sit above their object in Label Studio's own templates; choices below it
    lines.extend([*control, *obj] if not task_type.is_classification else [*obj, *control])
    for attribute, values in config.labels.attributes.items():
        if attribute == CONTROL_NAME or attribute in {f.name for f in config.data_fields}:
            raise LabelConfigError(f"attribute name {attribute!r} collides with a tag name")
        attrs = {"name": attribute, "toName": primary.name, "choice": "single-radio"}
        if not task_type.is_classification:
            attrs["perRegion"] = "true"
        lines.append(f"  <Header {_attr(value=attribute)}/>")
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
            options = tuple(child.get("value", "") for child in element if child.tag == option_tag)
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
