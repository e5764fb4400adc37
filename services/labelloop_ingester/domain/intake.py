"""One submission through the gate: validated, identified, deduplicated inside the message."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from labelloop.events import IngestedItem, ItemIn, Rejection
from labelloop.project import ProjectConfig

from .identity import item_id
from .validation import Limits, RejectReason, validate_item

__all__ = ["Accepted", "Intake", "chunk_by_size", "take_in"]


@dataclass(frozen=True, slots=True)
class Accepted:
    index: int
    """Position in the submission."""
    item: IngestedItem
    raw: ItemIn


@dataclass(slots=True)
class Intake:
    accepted: list[Accepted] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    reasons: Counter[RejectReason] = field(default_factory=Counter)
    duplicates: int = 0
    """Items repeated inside this submission (the first one counts)."""


def take_in(items: Sequence[ItemIn], project: ProjectConfig, limits: Limits) -> Intake:
    """Validate each item; give the valid ones their content id; drop repeats within the message."""
    out = Intake()
    seen: set[str] = set()
    for index, raw in enumerate(items):
        verdict = validate_item(raw, project, limits)
        if verdict is not None:
            out.rejections.append(
                Rejection(index=index, reason=verdict.message, external_id=raw.external_id)
            )
            out.reasons[verdict.reason] += 1
            continue
        iid = item_id(raw.data)
        if iid in seen:
            out.duplicates += 1
            continue
        seen.add(iid)
        ingested = IngestedItem(
            item_id=iid,
            data=raw.data,
            metadata=raw.metadata,
            known_label=raw.known_label,
            prediction=raw.prediction,
            external_id=raw.external_id,
        )
        out.accepted.append(Accepted(index, ingested, raw))
    return out


def chunk_by_size(sizes: Sequence[int], max_bytes: int, max_items: int = 5_000) -> list[range]:
    """Consecutive ranges whose sizes add up to at most ``max_bytes`` (one oversized item alone)."""
    chunks: list[range] = []
    start, total = 0, 0
    for i, size in enumerate(sizes):
        if i > start and (total + size > max_bytes or i - start >= max_items):
            chunks.append(range(start, i))
            start, total = i, 0
        total += size
    if start < len(sizes):
        chunks.append(range(start, len(sizes)))
    return chunks
