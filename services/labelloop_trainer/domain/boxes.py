"""Box predictions of a model the producer serves: its answers read, checked and scored.

Pure: the HTTP calls are :mod:`labelloop_trainer.model_hook`'s. The contract is Label Studio's
ML backend's, as checked in HumanSignal/label-studio-ml-backend at commit d02cedf3 (2026-08-20:
``label_studio_ml/api.py``'s ``/predict`` and ``/health`` routes, ``label_studio_ml/response.py``'s
``ModelResponse``, the ``examples/yolo`` backend's ``RectangleLabelsModel``) and in
label-studio-sdk 2.1.2 (``label_interface.objects.PredictionValue``):

* request: ``POST <url>/predict`` with ``{"tasks": [{"id": int, "data": {...}}, ...],
  "project": str, "label_config": str, "params": {"context": {}}}`` (:func:`predict_request`);
* answer: ``{"results": [prediction, ...]}``, one per task, in the tasks' order. A prediction is
  ``{"result": [region, ...], "score": float, "model_version": str}`` (``PredictionValue``), or
  a list of them (``ModelResponse`` allows several per task: the first is taken). Servers before
  ``ModelResponse`` put ``model_version`` beside ``results``: it is read there too;
* a box region: ``{"type": "rectanglelabels", "value": {"x", "y", "width", "height",
  "rotation", "rectanglelabels": [label]}, "score": float, "from_name", "to_name"}``, the
  coordinates in percent of the image (the yolo example's ``create_rectangles``).

What is refused, and how: an answer that breaks the structure (not an object, no ``results``
list, not one result per task, a prediction that is not an object, a ``result`` that is not a
list) is a :class:`ContractError` for the whole request; a region that cannot be a box of the
project (another type, a label the project lacks, coordinates that are not numbers, nothing left
inside the image once clipped to 0-100) is left out and counted; a score that is not a number in
[0, 1] is taken as no score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import quoteattr

from pydantic import JsonValue

__all__ = [
    "UNKNOWN_CONFIDENCE",
    "BoxPrediction",
    "ContractError",
    "box_uncertainty",
    "label_config",
    "parse_predict_response",
    "predict_request",
]

UNKNOWN_CONFIDENCE = 0.5
"""The confidence taken for a box (or an empty answer) that comes with no score: no
information, the most doubtful a yes/no decision can be."""

_CONTROL = "label"
"""The control's name in the label config sent with each request (the bridge's interface names
its control so too)."""


class ContractError(ValueError):
    """An answer that is not Label Studio's ML backend ``/predict`` answer for the request."""


@dataclass(frozen=True, slots=True)
class BoxPrediction:
    boxes: list[dict[str, JsonValue]]
    """``{"x", "y", "width", "height", "rotation", "label"}`` in percent, inside the image, and
    ``"score"`` when the region or its prediction had one."""
    score: float | None
    """The prediction's own score (the model's confidence in its answer for the image)."""
    model_version: str | None
    dropped: int
    """Regions of the answer left out (not a box of the project)."""


def label_config(field_name: str, labels: Sequence[str]) -> str:
    """A RectangleLabels interface over the image field, for backends that read the project's
    labels from it (``LabelStudioMLBase`` parses ``label_config``)."""
    options = "".join(f"<Label value={quoteattr(label)}/>" for label in labels)
    name = quoteattr(field_name)
    return (
        f"<View><Image name={name} value={quoteattr('$' + field_name)}/>"
        f"<RectangleLabels name={quoteattr(_CONTROL)} toName={name}>{options}</RectangleLabels>"
        "</View>"
    )


def predict_request(
    tasks: Sequence[tuple[int, Mapping[str, JsonValue]]], project: str, config_xml: str
) -> dict[str, Any]:
    """The ``/predict`` body for ``(task id, item data)`` pairs."""
    return {
        "tasks": [{"id": task_id, "data": dict(data)} for task_id, data in tasks],
        "project": project,
        "label_config": config_xml,
        "params": {"context": {}},
    }


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _probability(value: object) -> float | None:
    number = _number(value)
    return number if number is not None and 0.0 <= number <= 1.0 else None


def _version(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    return text[:200] or None


def _box(region: object, allowed: set[str], fallback: float | None) -> dict[str, JsonValue] | None:
    """One region as a box of the project, clipped to the image; ``None`` if it is not one."""
    if not isinstance(region, dict):
        return None
    value = region.get("value")
    if not isinstance(value, dict) or region.get("type", "rectanglelabels") != "rectanglelabels":
        return None
    names = value.get("rectanglelabels")
    if not isinstance(names, list) or not names or names[0] not in allowed:
        return None
    x, y = _number(value.get("x")), _number(value.get("y"))
    width, height = _number(value.get("width")), _number(value.get("height"))
    if x is None or y is None or width is None or height is None:
        return None
    left, top = min(max(x, 0.0), 100.0), min(max(y, 0.0), 100.0)
    right, bottom = min(max(x + width, 0.0), 100.0), min(max(y + height, 0.0), 100.0)
    if right <= left or bottom <= top:
        return None
    rotation = _number(value.get("rotation")) or 0.0
    box: dict[str, JsonValue] = {
        "x": round(left, 4),
        "y": round(top, 4),
        "width": round(right - left, 4),
        "height": round(bottom - top, 4),
        "rotation": round(rotation, 4),
        "label": str(names[0]),
    }
    score = _probability(region.get("score"))
    if score is None:
        score = _probability(value.get("score"))
    score = score if score is not None else fallback
    if score is not None:
        box["score"] = round(score, 6)
    return box


def parse_predict_response(
    body: object, n_tasks: int, labels: Sequence[str]
) -> list[BoxPrediction]:
    """The answer to a ``/predict`` request of ``n_tasks`` tasks, one prediction per task, with
    the boxes of the project's ``labels`` only (:class:`ContractError` if it breaks the
    contract)."""
    if not isinstance(body, dict):
        raise ContractError(f"the answer is a JSON {type(body).__name__}, not an object")
    results = body.get("results")
    if not isinstance(results, list):
        raise ContractError("the answer has no 'results' list")
    if len(results) != n_tasks:
        raise ContractError(f"{len(results)} results for {n_tasks} tasks")
    default_version = _version(body.get("model_version"))
    allowed = set(labels)
    out = []
    for k, entry in enumerate(results):
        if isinstance(entry, list):  # several predictions for the task: the first one
            entry = entry[0] if entry else {"result": []}
        if not isinstance(entry, dict):
            raise ContractError(f"result {k} is a {type(entry).__name__}, not an object")
        if "result" not in entry:
            raise ContractError(f"result {k} has no 'result'")
        regions = entry["result"] if entry["result"] is not None else []
        if not isinstance(regions, list):
            raise ContractError(f"result {k}: 'result' is a {type(regions).__name__}, not a list")
        score = _probability(entry.get("score"))
        boxes = [b for r in regions if (b := _box(r, allowed, score)) is not None]
        out.append(
            BoxPrediction(
                boxes=boxes,
                score=score,
                model_version=_version(entry.get("model_version")) or default_version,
                dropped=len(regions) - len(boxes),
            )
        )
    return out


def _binary_entropy(p: float) -> float:
    return -sum(q * math.log(q) for q in (p, 1.0 - p) if q > 0.0)


def box_uncertainty(prediction: BoxPrediction) -> tuple[float, float, float]:
    """The image's uncertainty, in the columns of a sequence model's table
    (``labelloop.catalog.SEQUENCE_MEASURES``), each box a yes/no decision taken with its score
    ``s`` (an empty answer: one decision, "nothing here", with the prediction's score):

    * least confidence: one minus the probability that every box is right, ``1 - prod(s)``
      (boxes independent; as a sequence's is one minus the probability of its best sequence);
    * margin: one minus the smallest gap between a box's two answers, ``1 - min |2s - 1|``;
    * entropy: the boxes' binary entropies summed (nats), as a sequence's token entropies.

    A missing score counts as :data:`UNKNOWN_CONFIDENCE`."""
    confidences = [
        float(s) if isinstance(s := box.get("score"), float | int) else UNKNOWN_CONFIDENCE
        for box in prediction.boxes
    ]
    if not confidences:
        confidences = [UNKNOWN_CONFIDENCE if prediction.score is None else prediction.score]
    least = 1.0 - math.prod(confidences)
    margin = 1.0 - min(abs(2.0 * s - 1.0) for s in confidences)
    entropy = sum(_binary_entropy(s) for s in confidences)
    return (
        min(max(least, 0.0), 1.0),
        min(max(margin, 0.0), 1.0),
        max(entropy, 0.0),
    )
