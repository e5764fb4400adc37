"""The project's current labels: many LabelsReady messages folded into one label per item."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from labelloop.events import ConsensusLabel, LabelsReady, LabelValue

__all__ = ["CurrentLabel", "current_labels", "fold_round", "label_classes", "region_label"]


@dataclass(frozen=True, slots=True)
class CurrentLabel:
    """The label an item has now, and where it came from."""

    label: ConsensusLabel
    round: int
    """The labeling round whose QA settled this label."""
    batch_id: str
    is_gold: bool
    """Sticky: once an item was gold in any round it stays gold (so it never changes split)."""


def current_labels(rounds: Iterable[LabelsReady]) -> dict[str, CurrentLabel]:
    """Fold the rounds' labels into one label per item id, in round order.

    A later round's label for an item replaces an earlier one (an expert's correction, a re-review);
    a label a round withdraws is gone. The fold depends only on the rounds, not on when their
    messages arrived, so the same rounds always give the same dataset.
    """
    out: dict[str, CurrentLabel] = {}
    for event in sorted(rounds, key=lambda e: e.round):
        fold_round(out, event)
    return out


def fold_round(labels: dict[str, CurrentLabel], event: LabelsReady) -> None:
    """Fold one more round into ``labels`` (in place): the labels of rounds 1 to *n - 1*
    become those of rounds 1 to *n*, without reading the earlier rounds again."""
    for item_id in event.withdrawn:
        previous = labels.pop(item_id, None)
        if previous is not None and previous.is_gold:
            labels[item_id] = previous  # a gold item's known answer is never withdrawn
    for label in event.labels:
        previous = labels.get(label.item_id)
        was_gold = previous is not None and previous.is_gold
        labels[label.item_id] = CurrentLabel(
            label=label,
            round=event.round,
            batch_id=label.batch_id or event.batch_id,
            is_gold=label.is_gold or was_gold,
        )


def region_label(region: dict[str, Any]) -> list[str]:
    """Class names of one region (Label Studio's ``labels``/``rectanglelabels`` or ``label``)."""
    for key in ("labels", "rectanglelabels", "label"):
        value = region.get(key)
        if isinstance(value, str):
            return [value]
        if isinstance(value, list):
            return [v for v in value if isinstance(v, str)]
    return []


def label_classes(value: LabelValue | None) -> list[str]:
    """Every class name a label mentions (one, several, or one per region)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    names: list[str] = []
    for part in value:
        if isinstance(part, str):
            names.append(part)
        elif isinstance(part, dict):
            names.extend(region_label(part))
    return names


def label_json(value: LabelValue | None) -> str:
    """A label as one string cell: the class name itself, or canonical JSON for lists."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
