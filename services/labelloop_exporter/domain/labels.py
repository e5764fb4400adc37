"""The project's current labels: many LabelsReady messages folded into one label per item."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from labelloop.events import ConsensusLabel, LabelsReady, LabelValue

__all__ = ["CurrentLabel", "current_labels", "label_classes", "region_label"]


@dataclass(frozen=True, slots=True)
class CurrentLabel:
    """The label an item has now, and where it came from."""

    label: ConsensusLabel
    labeled_at: datetime
    event_id: str
    batch_id: str
    is_gold: bool
    """Sticky: once an item was gold in any message it stays gold (so it never changes split)."""


def current_labels(events: Iterable[LabelsReady]) -> dict[str, CurrentLabel]:
    """Fold label messages into one label per item id.

    The latest message wins (by ``occurred_at``, then ``event_id`` so that ties are deterministic);
    a message delivered twice changes nothing, since the fold is keyed by item id.
    """
    ordered = sorted(events, key=lambda e: (e.occurred_at, e.event_id))
    out: dict[str, CurrentLabel] = {}
    for event in ordered:
        for label in event.labels:
            previous = out.get(label.item_id)
            was_gold = previous is not None and previous.is_gold
            out[label.item_id] = CurrentLabel(
                label=label,
                labeled_at=event.occurred_at,
                event_id=event.event_id,
                batch_id=label.batch_id or event.batch_id,
                is_gold=label.is_gold or was_gold,
            )
    return out


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
