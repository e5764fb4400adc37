"""The project's label and money budget: how many more labels and annotations may be asked for."""

from __future__ import annotations

import math
from dataclasses import dataclass

from labelloop.project import BudgetConfig

__all__ = ["DEFAULT_LEAD_SECONDS", "BudgetRoom", "budget_room", "budget_used", "estimated_cost"]

DEFAULT_LEAD_SECONDS = 30.0
"""Assumed seconds per annotation until annotators' real lead times are known."""


@dataclass(frozen=True, slots=True)
class BudgetRoom:
    labels: int | None
    """More (non-gold) items that may be sent for labeling; ``None``: no limit."""
    annotations: int | None
    """More annotations (gold included) that may be asked for; ``None``: no limit."""
    exhausted: str | None
    """Why nothing more may be asked for, or ``None``."""


def estimated_cost(annotations: int, mean_lead_seconds: float | None, hourly_rate: float) -> float:
    """Cost of ``annotations`` at the observed mean lead time (or the default) and hourly rate."""
    lead = DEFAULT_LEAD_SECONDS if mean_lead_seconds is None else mean_lead_seconds
    return annotations * lead / 3600.0 * hourly_rate


def budget_room(
    budget: BudgetConfig,
    *,
    labels_used: int,
    annotations_used: int,
    mean_lead_seconds: float | None = None,
) -> BudgetRoom:
    """What is left of the budget once ``labels_used`` items and ``annotations_used`` annotations
    have been asked for. Money is counted in annotations: ``max_cost`` at ``hourly_rate`` and the
    mean lead time buys a number of annotations."""
    labels = None if budget.max_labels is None else max(0, budget.max_labels - labels_used)
    limits: list[int] = []
    if budget.max_annotations is not None:
        limits.append(max(0, budget.max_annotations - annotations_used))
    if budget.max_cost is not None and budget.hourly_rate > 0:
        per_annotation = estimated_cost(1, mean_lead_seconds, budget.hourly_rate)
        spent = annotations_used * per_annotation
        limits.append(max(0, math.floor((budget.max_cost - spent) / per_annotation + 1e-9)))
    annotations = min(limits) if limits else None
    reason = None
    if labels == 0:
        reason = f"max_labels {budget.max_labels} reached"
    elif annotations == 0:
        if budget.max_annotations is not None and annotations_used >= budget.max_annotations:
            reason = f"max_annotations {budget.max_annotations} reached"
        else:
            reason = f"max_cost {budget.max_cost:g} {budget.currency} reached"
    return BudgetRoom(labels, annotations, reason)


def budget_used(
    budget: BudgetConfig,
    *,
    labels_used: int,
    annotations_used: int,
    mean_lead_seconds: float | None = None,
) -> dict[str, float]:
    """The share of each configured limit spent so far: ``labels``, ``annotations``, ``cost``."""
    used: dict[str, float] = {}
    if budget.max_labels is not None:
        used["labels"] = labels_used / budget.max_labels
    if budget.max_annotations is not None:
        used["annotations"] = annotations_used / budget.max_annotations
    if budget.max_cost is not None and budget.hourly_rate > 0:
        spent = estimated_cost(annotations_used, mean_lead_seconds, budget.hourly_rate)
        used["cost"] = spent / budget.max_cost
    return used
