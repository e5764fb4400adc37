"""How far an open batch has come: tasks with all their annotations, and annotators' lead times."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from labelloop.events import Annotation

__all__ = ["BatchProgress", "Seen", "SeenAnnotations", "progress_of"]


class Seen(BaseModel):
    """One annotation as the sampler remembers it (keyed by id: replays are no-ops)."""

    model_config = ConfigDict(frozen=True)

    item_id: str
    annotator_id: str
    lead_seconds: float | None = None
    counts: bool = True
    """False for skipped, cancelled or deleted annotations."""


class SeenAnnotations(BaseModel):
    model_config = ConfigDict(frozen=True)

    annotations: dict[str, Seen] = Field(default_factory=dict)

    def with_annotations(self, annotations: list[Annotation]) -> SeenAnnotations:
        merged = dict(self.annotations)
        for a in annotations:
            merged[a.annotation_id] = Seen(
                item_id=a.item_id,
                annotator_id=a.annotator_id,
                lead_seconds=a.lead_time_seconds,
                counts=a.value is not None and not a.cancelled and not a.deleted,
            )
        return SeenAnnotations(annotations=merged)


@dataclass(frozen=True, slots=True)
class BatchProgress:
    done: int
    lead_seconds: float
    lead_count: int


def progress_of(required: Mapping[str, int], seen: SeenAnnotations) -> BatchProgress:
    """Tasks of a batch (item id -> annotations required) that have enough distinct annotators."""
    annotators: dict[str, set[str]] = {}
    lead, count = 0.0, 0
    for s in seen.annotations.values():
        if s.item_id not in required or not s.counts:
            continue
        annotators.setdefault(s.item_id, set()).add(s.annotator_id)
        if s.lead_seconds is not None:
            lead += s.lead_seconds
            count += 1
    done = sum(1 for item, who in annotators.items() if len(who) >= required[item])
    return BatchProgress(done, lead, count)
