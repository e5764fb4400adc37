"""Label Studio result JSON <-> labelloop label values (class names, span and box regions).

Regions on the wire:

* NER span: ``{"start": int, "end": int, "text": str, "label": str}`` (character offsets).
* Box: ``{"x", "y", "width", "height", "rotation", "label"}`` in percent of the image, as Label
  Studio stores them (plus ``original_width``/``original_height`` when Label Studio knows them).
* Per-region attributes (``labels.attributes``) come back under ``"attributes": {name: value}``.
"""

from __future__ import annotations

from typing import Any

from pydantic import JsonValue

from labelloop.events import LabelValue
from labelloop.project import TaskType

from .label_config import CONTROL_NAME

__all__ = ["ResultError", "from_ls_result", "to_ls_result"]

_REGION_TYPE = {TaskType.NER: "labels", TaskType.BOUNDING_BOXES: "rectanglelabels"}
_SPAN_KEYS = ("start", "end", "text")
_BOX_KEYS = ("x", "y", "width", "height", "rotation")


class ResultError(ValueError):
    """A label value that does not fit the project's task type."""


def to_ls_result(value: LabelValue, task_type: TaskType, to_name: str) -> list[dict[str, Any]]:
    """A labelloop value (e.g. a model prediction) as Label Studio result items."""
    if task_type.is_classification:
        if isinstance(value, str):
            choices = [value]
        elif all(isinstance(v, str) for v in value):
            choices = [str(v) for v in value]
        else:
            raise ResultError(f"{task_type.value} takes class names, not regions")
        if not task_type.is_multilabel and len(choices) != 1:
            raise ResultError(f"{task_type.value} takes exactly one class, got {len(choices)}")
        return [_item("choices", to_name, {"choices": choices})]
    if isinstance(value, str) or not all(isinstance(v, dict) for v in value):
        raise ResultError(f"{task_type.value} takes regions, not class names")
    region_type = _REGION_TYPE[task_type]
    keys = _SPAN_KEYS if task_type is TaskType.NER else _BOX_KEYS
    items = []
    for index, region in enumerate(value):
        assert isinstance(region, dict)
        label = region.get("label")
        if not isinstance(label, str):
            raise ResultError(f"region {index} has no 'label'")
        payload: dict[str, Any] = {k: region[k] for k in keys if k in region}
        missing = [k for k in keys if k not in payload and k not in {"text", "rotation"}]
        if missing:
            raise ResultError(f"region {index} lacks {missing}")
        payload[region_type] = [label]
        items.append({**_item(region_type, to_name, payload), "id": f"r{index}"})
    return items


def _item(kind: str, to_name: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"from_name": CONTROL_NAME, "to_name": to_name, "type": kind, "value": value}


def from_ls_result(result: list[dict[str, Any]], task_type: TaskType) -> LabelValue | None:
    """Label Studio result items as a labelloop value; ``None`` when nothing was labeled."""
    main = [r for r in result if r.get("from_name") == CONTROL_NAME]
    if task_type.is_classification:
        choices: list[str] = []
        for item in main:
            choices.extend(str(c) for c in item.get("value", {}).get("choices", []))
        if not choices:
            return None
        return choices if task_type.is_multilabel else choices[0]
    region_type = _REGION_TYPE[task_type]
    keys = _SPAN_KEYS if task_type is TaskType.NER else _BOX_KEYS
    attributes = _region_attributes(result)
    regions: list[dict[str, JsonValue]] = []
    for item in main:
        value = item.get("value", {})
        labels = value.get(region_type) or []
        if not labels:
            continue
        region: dict[str, JsonValue] = {k: value[k] for k in keys if k in value}
        region["label"] = str(labels[0])
        for extra in ("original_width", "original_height"):
            if extra in item:
                region[extra] = item[extra]
        if item.get("id") in attributes:
            region["attributes"] = dict(attributes[str(item["id"])])
        regions.append(region)
    return regions or None


def _region_attributes(result: list[dict[str, Any]]) -> dict[str, dict[str, JsonValue]]:
    """Per-region choices (perRegion attributes) by region id."""
    found: dict[str, dict[str, JsonValue]] = {}
    for item in result:
        name = item.get("from_name")
        if name == CONTROL_NAME or item.get("type") != "choices" or "id" not in item:
            continue
        choices = item.get("value", {}).get("choices", [])
        if choices:
            found.setdefault(str(item["id"]), {})[str(name)] = str(choices[0])
    return found
