"""Item validation against the project: the data fields the labeling UI needs, types and sizes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple, cast

import numpy as np
from pydantic import JsonValue

from labelloop.events import ItemIn, LabelValue
from labelloop.project import DataKind, ProjectConfig

from .identity import canonical_json

__all__ = [
    "ItemRules",
    "Limits",
    "RejectReason",
    "Valid",
    "Verdict",
    "finite_features",
    "validate_item",
]


class RejectReason(StrEnum):
    """Why an item was rejected: a small fixed set (metric label), detail in the message."""

    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    TOO_LONG = "too_long"
    TOO_LARGE = "too_large"
    BAD_FEATURES = "bad_features"
    BAD_LABEL = "bad_label"
    UNREADABLE_MEDIA = "unreadable_media"
    """An audio or video file that cannot be decoded (corrupt, truncated, not media)."""


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


class Valid(NamedTuple):
    """What checking a valid item found out on the way, for what follows (a tuple: one is made
    per item, and a frozen dataclass takes twice as long to build)."""

    data: bytes
    """The canonical JSON of the item's data: what its id hashes."""
    size: int
    """The canonical JSON size of the whole item, or more (never less): with a feature vector,
    an upper bound unless the item is near the size limit."""


def validate_item(item: ItemIn, project: ProjectConfig, limits: Limits) -> Verdict | None:
    """``None`` when the item is fine, else the first problem found."""
    found = ItemRules(project, limits).check(item)
    return found if isinstance(found, Verdict) else None


@dataclass(frozen=True, slots=True)
class _FieldRule:
    name: str
    kind: str
    string: bool
    number: bool
    required: bool
    max_length: int | None


class ItemRules:
    """A project's rules for an item, read from its configuration once (for a whole message)."""

    def __init__(self, project: ProjectConfig, limits: Limits) -> None:
        self.limits = limits
        self._fields = tuple(
            _FieldRule(
                name=f.name,
                kind=f.kind.value,
                string=f.kind in _STRING_KINDS,
                number=f.kind is DataKind.NUMBER,
                required=f.required,
                max_length=(
                    f.max_length
                    if f.max_length is not None or f.kind is not DataKind.TEXT
                    else limits.text_max_length
                ),
            )
            for f in project.data_fields
        )
        task = project.task_type
        self._classification = task.is_classification
        self._multilabel = task.is_multilabel
        self._classes = frozenset(project.labels.classes)

    def check(self, item: ItemIn, *, finite: bool | None = None) -> Verdict | Valid:
        """The first problem found, else the canonical JSON of the item's data (what its id
        hashes: computed once, for the size check and the id) and its size.

        ``finite``: whether the item's features are all finite numbers, when the caller checked
        a whole message at once (:func:`finite_features`); ``None``: checked here."""
        data = item.data
        for rule in self._fields:
            value = data.get(rule.name)
            if value is None or value == "":
                if rule.required:
                    return Verdict(RejectReason.MISSING_FIELD, f"data.{rule.name} is required")
                continue
            if rule.string:
                if not isinstance(value, str):
                    return Verdict(
                        RejectReason.WRONG_TYPE,
                        f"data.{rule.name} must be a string ({rule.kind}), "
                        f"got {type(value).__name__}",
                    )
                limit = rule.max_length
                if limit is not None and len(value) > limit:
                    return Verdict(
                        RejectReason.TOO_LONG,
                        f"data.{rule.name} has {len(value)} characters, the limit is {limit}",
                    )
            elif rule.number and (isinstance(value, bool) or not isinstance(value, int | float)):
                return Verdict(
                    RejectReason.WRONG_TYPE,
                    f"data.{rule.name} must be a number, got {type(value).__name__}",
                )
        if item.features is not None:
            problem = self._check_features(item.features, finite)
            if problem:
                return Verdict(RejectReason.BAD_FEATURES, problem)
        if item.known_label is not None:
            problem = self._check_label(item.known_label)
            if problem:
                return Verdict(RejectReason.BAD_LABEL, f"known_label: {problem}")
        if item.prediction is not None:
            problem = self._check_label(item.prediction.label)
            if problem:
                return Verdict(RejectReason.BAD_LABEL, f"prediction.label: {problem}")
        limit = self.limits.max_item_bytes
        try:
            canonical = canonical_json(data)
            size = _size(item, canonical, limit)
        except ValueError:
            return Verdict(RejectReason.WRONG_TYPE, "the item is not valid JSON (NaN or infinity)")
        if size > limit:
            return Verdict(
                RejectReason.TOO_LARGE, f"the item is {size} bytes, the limit is {limit}"
            )
        return Valid(canonical, size)

    def _check_features(self, features: list[float], finite: bool | None) -> str | None:
        if not features:
            return "features must not be empty"
        if len(features) > self.limits.max_feature_dim:
            return f"{len(features)} features, the limit is {self.limits.max_feature_dim}"
        if finite is None:
            finite = bool(np.isfinite(np.asarray(features, dtype=np.float64)).all())
        if not finite:
            return "features must be finite numbers"
        return None

    def _check_label(self, label: LabelValue) -> str | None:
        if not self._classification:
            if not isinstance(label, list) or not all(isinstance(r, dict) for r in label):
                return "a region task needs a list of regions (objects)"
            return None
        if self._multilabel:
            names = [label] if isinstance(label, str) else label
            if not all(isinstance(n, str) for n in names):
                return "a multi-label task needs class names"
            unknown = sorted({str(n) for n in names} - self._classes)
            return f"unknown classes {unknown}" if unknown else None
        if not isinstance(label, str):
            return "a single-label task needs one class name"
        return None if label in self._classes else f"unknown class {label!r}"


_BARE = len(canonical_json({"metadata": {}}))

_FLOAT_CHARS = 24
"""The longest JSON of a float (Python's repr): ``-2.2250738585072014e-308``."""


def _size(item: ItemIn, data: bytes, limit: int) -> int:
    """Bytes of the canonical JSON of the whole item (what ``item.model_dump(mode="json",
    exclude_none=True)`` gives), from its data's canonical JSON and the rest's.

    A feature vector's exact length needs every float's text: its upper bound (24 characters
    a number) is returned instead unless that is over the limit."""
    rest: dict[str, JsonValue] = {"metadata": item.metadata}
    if item.known_label is not None:
        rest["known_label"] = cast("JsonValue", item.known_label)
    if item.prediction is not None:
        rest["prediction"] = item.prediction.model_dump(mode="json", exclude_none=True)
    if item.external_id is not None:
        rest["external_id"] = item.external_id
    # adding a key to a JSON object adds ',"key":' and its value, wherever the key sorts
    bare = len(rest) == 1 and not item.metadata  # most items: {"metadata":{}}
    size = (_BARE if bare else len(canonical_json(rest))) + len(',"data":') + len(data)
    if item.features is not None:
        size += len(',"features":')
        bound = size + 1 + (_FLOAT_CHARS + 1) * len(item.features)
        if bound <= limit:
            return bound
        size += len(canonical_json(cast("JsonValue", item.features)))
    return size


def finite_features(items: Sequence[ItemIn]) -> list[bool]:
    """For each item, whether its features (if any) are all finite: one array per vector
    length, checked at once, instead of a Python test per number."""
    out = [True] * len(items)
    by_dim: dict[int, list[int]] = {}
    for i, item in enumerate(items):
        if item.features:
            by_dim.setdefault(len(item.features), []).append(i)
    for rows in by_dim.values():
        X = np.asarray([items[i].features for i in rows], dtype=np.float64)  # noqa: N806
        finite = np.asarray(np.isfinite(X).all(axis=1), dtype=bool)
        for i, ok in zip(rows, finite.tolist(), strict=True):
            out[i] = bool(ok)
    return out
