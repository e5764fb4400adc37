"""Item validation against the project: the data fields the labeling UI needs, types and sizes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from labelloop.events import ItemIn, LabelValue
from labelloop.project import DataKind, ProjectConfig

from .identity import canonical_json

__all__ = ["Limits", "RejectReason", "Verdict", "validate_item"]


class RejectReason(StrEnum):
    """Why an item was rejected: a small fixed set (metric label), detail in the message."""

    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    TOO_LONG = "too_long"
    TOO_LARGE = "too_large"
    BAD_FEATURES = "bad_features"
    BAD_LABEL = "bad_label"


@dataclass(frozen=True, slots=True)
class Limits:
    max_item_bytes: int = 200_000
    """Canonical JSON size of a whole item (data, metadata, features, labels)."""
    text_max_length: int = 100_000
    """Characters of a text field whose data field sets no ``max_length``."""
    max_feature_dim: int = 4_096


@dataclass(frozen=True, slots=True)
class Verdict:
    reason: RejectReason
    detail: str

    @property
    def message(self) -> str:
        return f"{self.reason.value}: {self.detail}"


_STRING_KINDS = {DataKind.TEXT, DataKind.IMAGE, DataKind.AUDIO, DataKind.VIDEO, DataKind.URL}


def validate_item(item: ItemIn, project: ProjectConfig, limits: Limits) -> Verdict | None:
    """``None`` when the item is fine, else the first problem found."""
    for field in project.data_fields:
        value = item.data.get(field.name)
        if value is None or value == "":
            if field.required:
                return Verdict(RejectReason.MISSING_FIELD, f"data.{field.name} is required")
            continue
        if field.kind in _STRING_KINDS:
            if not isinstance(value, str):
                return Verdict(
                    RejectReason.WRONG_TYPE,
                    f"data.{field.name} must be a string ({field.kind.value}), "
                    f"got {type(value).__name__}",
                )
            limit = field.max_length
            if limit is None and field.kind is DataKind.TEXT:
                limit = limits.text_max_length
            if limit is not None and len(value) > limit:
                return Verdict(
                    RejectReason.TOO_LONG,
                    f"data.{field.name} has {len(value)} characters, the limit is {limit}",
                )
        elif field.kind is DataKind.NUMBER and (
            isinstance(value, bool) or not isinstance(value, int | float)
        ):
            return Verdict(
                RejectReason.WRONG_TYPE,
                f"data.{field.name} must be a number, got {type(value).__name__}",
            )
    if item.features is not None:
        problem = _check_features(item.features, limits)
        if problem:
            return Verdict(RejectReason.BAD_FEATURES, problem)
    for name, label in (
        ("known_label", item.known_label),
        ("prediction.label", item.prediction.label if item.prediction else None),
    ):
        if label is not None:
            problem = _check_label(label, project)
            if problem:
                return Verdict(RejectReason.BAD_LABEL, f"{name}: {problem}")
    try:
        size = len(canonical_json(item.model_dump(mode="json", exclude_none=True)))
    except ValueError:
        return Verdict(RejectReason.WRONG_TYPE, "the item is not valid JSON (NaN or infinity)")
    if size > limits.max_item_bytes:
        return Verdict(
            RejectReason.TOO_LARGE,
            f"the item is {size} bytes, the limit is {limits.max_item_bytes}",
        )
    return None


def _check_features(features: list[float], limits: Limits) -> str | None:
    if not features:
        return "features must not be empty"
    if len(features) > limits.max_feature_dim:
        return f"{len(features)} features, the limit is {limits.max_feature_dim}"
    if not all(math.isfinite(x) for x in features):
        return "features must be finite numbers"
    return None


def _check_label(label: LabelValue, project: ProjectConfig) -> str | None:
    task = project.task_type
    classes = set(project.labels.classes)
    if not task.is_classification:
        if not isinstance(label, list) or not all(isinstance(r, dict) for r in label):
            return "a region task needs a list of regions (objects)"
        return None
    if task.is_multilabel:
        names = [label] if isinstance(label, str) else label
        if not all(isinstance(n, str) for n in names):
            return "a multi-label task needs class names"
        unknown = sorted({str(n) for n in names} - classes)
        return f"unknown classes {unknown}" if unknown else None
    if not isinstance(label, str):
        return "a single-label task needs one class name"
    return None if label in classes else f"unknown class {label!r}"
