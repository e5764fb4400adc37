"""Checks every row of a dataset; a row that fails is left out of the version, and the manifest
says which rows and why. A version is always written: one bad label (a forged message, a class
removed from the project) must not stop every later version, since each round builds on the last.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from labelloop.project import TaskType
from labelloop_exporter.domain.labels import label_classes, region_label

__all__ = ["Problem", "ValidationResult", "validate"]

_SHOWN = 5  # item ids quoted per problem; the count says how many there are


@dataclass(frozen=True, slots=True)
class Problem:
    code: str
    """A fixed, small vocabulary (used as a metric label): duplicate_items, empty_label, ..."""
    message: str
    item_ids: tuple[str, ...] = ()

    def __str__(self) -> str:
        shown = f" (e.g. {', '.join(self.item_ids[:_SHOWN])})" if self.item_ids else ""
        return f"{self.code}: {self.message}{shown}"


@dataclass(frozen=True, slots=True)
class ValidationResult:
    rows: pd.DataFrame
    """The rows to publish: failing rows left out, low-confidence rows dropped or down-weighted."""
    problems: list[Problem] = field(default_factory=list)
    """What was left out, and why (every problem names its items)."""
    excluded_low_confidence: int = 0
    weighted_low_confidence: int = 0

    @property
    def excluded_rows(self) -> dict[str, int]:
        return {p.code: len(p.item_ids) for p in self.problems if p.item_ids}

    def reason(self) -> str:
        return "; ".join(str(p) for p in self.problems)


def _is_empty(value: Any, task_type: TaskType) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if task_type.is_classification:
        # a classification label names at least one class; an empty list says nothing
        return len(value) == 0
    # spans and boxes: an empty list is a real answer ("no entities", "no objects"), but every
    # region must carry a class
    return any(not isinstance(r, dict) or not region_label(r) for r in value)


def _shape_problem(value: Any, task_type: TaskType) -> bool:
    """The label's shape does not fit the task (a list for single-label, regions for classes)."""
    if value is None:
        return False
    if task_type.is_classification and not task_type.is_multilabel:
        return not isinstance(value, str)
    if task_type.is_multilabel:
        return not (isinstance(value, list) and all(isinstance(v, str) for v in value))
    return not isinstance(value, list) or any(not isinstance(r, dict) for r in value)


def _missing_sizes(value: Any) -> bool:
    return any(
        not (isinstance(r.get("original_width"), int | float) and r.get("original_width"))
        or not (isinstance(r.get("original_height"), int | float) and r.get("original_height"))
        for r in value or []
        if isinstance(r, dict)
    )


def validate(
    rows: pd.DataFrame,
    *,
    task_type: TaskType,
    classes: Sequence[str],
    min_confidence: float,
    low_confidence: Literal["exclude", "weight"],
    missing_items: Collection[str] = (),
    formats: Collection[str] = (),
) -> ValidationResult:
    """Check every row; return the rows to publish and what was left out."""
    problems: list[Problem] = []
    ids = rows["item_id"]
    dupes = sorted(set(ids[ids.duplicated()]))
    if dupes:
        problems.append(
            Problem("duplicate_items", f"{len(dupes)} item ids appear twice", tuple(dupes))
        )

    known = set(classes)
    empty: list[str] = []
    shape: list[str] = []
    unknown_ids: list[str] = []
    unknown_names: set[str] = set()
    no_sizes: list[str] = []
    for item_id, value in zip(ids, rows["label"], strict=True):
        if _is_empty(value, task_type):
            empty.append(item_id)
            continue
        if _shape_problem(value, task_type):
            shape.append(item_id)
            continue
        names = set(label_classes(value)) - known
        if names:
            unknown_ids.append(item_id)
            unknown_names |= names
        if "coco" in formats and _missing_sizes(value):
            no_sizes.append(item_id)
    if empty:
        problems.append(Problem("empty_label", f"{len(empty)} labels are empty", tuple(empty)))
    if shape:
        problems.append(
            Problem(
                "label_shape",
                f"{len(shape)} labels do not fit a {task_type.value} project",
                tuple(shape),
            )
        )
    if unknown_ids:
        problems.append(
            Problem(
                "unknown_class",
                f"{len(unknown_ids)} labels use classes outside the project's list: "
                f"{sorted(unknown_names)}",
                tuple(unknown_ids),
            )
        )
    if no_sizes:
        problems.append(
            Problem(
                "missing_image_size",
                f"{len(no_sizes)} boxes lack original_width/original_height, which COCO needs",
                tuple(no_sizes),
            )
        )
    if missing_items:
        problems.append(
            Problem(
                "missing_item_data",
                f"{len(missing_items)} labeled items are not in the item catalog",
                tuple(sorted(missing_items)),
            )
        )

    bad = {i for p in problems if p.code != "duplicate_items" for i in p.item_ids}
    rows = rows.loc[~ids.isin(bad) & ~ids.duplicated()].reset_index(drop=True)
    low = rows["confidence"] < min_confidence
    kept = rows
    excluded = weighted = 0
    if low_confidence == "exclude":
        excluded = int(low.sum())
        kept = rows.loc[~low].reset_index(drop=True)
    else:
        # below the threshold a row counts in proportion to its confidence (weight in (0, 1))
        weighted = int(low.sum())
        kept = rows.copy()
        kept.loc[low, "weight"] = kept.loc[low, "confidence"]
    return ValidationResult(
        rows=kept,
        problems=problems,
        excluded_low_confidence=excluded,
        weighted_low_confidence=weighted,
    )
