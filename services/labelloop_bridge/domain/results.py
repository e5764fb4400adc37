"""Label Studio result JSON <-> labelloop label values (class names, span and box regions).

Regions on the wire:

* NER span: ``{"start": int, "end": int, "text": str, "label": str}`` (character offsets).
* Box: ``{"x", "y", "width", "height", "rotation", "label"}`` in percent of the image, as Label
  Studio stores them (plus ``original_width``/``original_height`` when Label Studio knows them).
* Per-region attributes (``labels.attributes``) come back under ``"attributes": {name: value}``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pydantic import JsonValue

from labelloop.events import LabelValue
from labelloop.project import TaskType

from .label_config import CONTROL_NAME

__all__ = ["ResultError", "from_ls_result", "predicted_boxes", "predicted_spans", "to_ls_result"]

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


def predicted_spans(
    value: LabelValue, labels: Sequence[str], text: str | None
) -> list[dict[str, JsonValue]]:
    """A sequence model's predicted spans, as Label Studio can show them over ``text``.

    Kept: spans of a label the project has, with integer offsets inside the text (when the
    text is known) and ``end > start``, none overlapping one kept before it (in order of
    start), each with the document's own characters as ``text`` (a span's ``text`` is what
    Label Studio highlights: it must be the text's, whatever the prediction said). The order is
    the text's. Raises :class:`ResultError` when the value is not a list of regions."""
    if isinstance(value, str) or not all(isinstance(v, dict) for v in value):
        raise ResultError("a span prediction is a list of regions, not class names")
    allowed = set(labels)
    found: list[tuple[int, int, str]] = []
    for region in value:
        assert isinstance(region, dict)
        start, end, label = region.get("start"), region.get("end"), region.get("label")
        if not isinstance(start, int) or not isinstance(end, int) or not isinstance(label, str):
            continue
        if isinstance(start, bool) or isinstance(end, bool) or label not in allowed:
            continue
        if start < 0 or end <= start or (text is not None and end > len(text)):
            continue
        found.append((start, end, label))
    kept: list[dict[str, JsonValue]] = []
    last_end = -1
    for start, end, label in sorted(found):
        if start < last_end:
            continue
        span: dict[str, JsonValue] = {"start": start, "end": end, "label": label}
        if text is not None:
            span["text"] = text[start:end]
        kept.append(span)
        last_end = end
    return kept


def _coordinate(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def predicted_boxes(value: LabelValue, labels: Sequence[str]) -> list[dict[str, JsonValue]]:
    """A model's predicted boxes, as Label Studio can show them over the image.

    Kept: boxes of a label the project has, with numeric ``x``, ``y``, ``width``, ``height``
    (percent of the image, Label Studio's unit), clipped to the image (0-100; a box with no
    area left inside it is dropped), ``rotation`` (0 when missing) and, when the prediction has
    one in [0, 1], the box's ``score``. Raises :class:`ResultError` when the value is not a list
    of regions."""
    if isinstance(value, str) or not all(isinstance(v, dict) for v in value):
        raise ResultError("a box prediction is a list of regions, not class names")
    allowed = set(labels)
    kept: list[dict[str, JsonValue]] = []
    for region in value:
        assert isinstance(region, dict)
        label = region.get("label")
        x, y = _coordinate(region.get("x")), _coordinate(region.get("y"))
        width, height = _coordinate(region.get("width")), _coordinate(region.get("height"))
        if not isinstance(label, str) or label not in allowed:
            continue
        if x is None or y is None or width is None or height is None:
            continue
        left, top = min(max(x, 0.0), 100.0), min(max(y, 0.0), 100.0)
        right, bottom = min(max(x + width, 0.0), 100.0), min(max(y + height, 0.0), 100.0)
        if right <= left or bottom <= top:
            continue
        box: dict[str, JsonValue] = {
            "x": left,
            "y": top,
            "width": right - left,
            "height": bottom - top,
            "rotation": _coordinate(region.get("rotation")) or 0.0,
            "label": label,
        }
        score = _coordinate(region.get("score"))
        if score is not None and 0.0 <= score <= 1.0:
            box["score"] = score
        kept.append(box)
    return kept


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
