"""One submission through the gate: validated, identified, deduplicated inside the message."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from labelloop.events import IngestedItem, ItemIn, Rejection
from labelloop.project import ProjectConfig

from .identity import item_id_of
from .validation import ItemRules, Limits, RejectReason, Verdict, finite_features

__all__ = [
    "MAX_ITEMS_PER_MESSAGE",
    "Accepted",
    "Intake",
    "chunk_by_size",
    "set_aside",
    "stream_chunks",
    "take_in",
]


@dataclass(slots=True)
class Accepted:
    """A valid item new to its message (not frozen: one is made per item, and a frozen
    dataclass takes four times as long to build)."""

    index: int
    """Position in the submission."""
    item_id: str
    raw: ItemIn
    size: int
    """Bytes of the item's JSON as ingested, or a little more (never less)."""

    def item(self) -> IngestedItem:
        """The item as ingested (built only for the items that are: not for duplicates)."""
        raw = self.raw
        return IngestedItem(
            item_id=self.item_id,
            data=raw.data,
            metadata=raw.metadata,
            known_label=raw.known_label,
            prediction=raw.prediction,
            external_id=raw.external_id,
        )


@dataclass(slots=True)
class Intake:
    accepted: list[Accepted] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    reasons: Counter[RejectReason] = field(default_factory=Counter)
    repeats: list[tuple[int, int]] = field(default_factory=list)
    """Items repeated inside this submission: (position, position of the first one, which
    counts)."""

    @property
    def duplicates(self) -> int:
        return len(self.repeats)


def take_in(
    items: Sequence[ItemIn],
    project: ProjectConfig,
    limits: Limits,
    origins: Sequence[int] | None = None,
) -> Intake:
    """Validate each item; give the valid ones their content id; drop repeats within the message.

    ``origins``: where each item came from (``ItemsSubmitted.origins``), kept in rejections."""
    out = Intake()
    seen: dict[str, int] = {}
    rules = ItemRules(project, limits)
    finite = finite_features(items)
    for index, raw in enumerate(items):
        verdict = rules.check(raw, finite=finite[index])
        if isinstance(verdict, Verdict):
            out.rejections.append(
                Rejection(
                    index=index,
                    reason=verdict.message,
                    external_id=raw.external_id,
                    origin=origins[index] if origins is not None else None,
                )
            )
            out.reasons[verdict.reason] += 1
            continue
        iid = item_id_of(verdict.data)
        first = seen.get(iid)
        if first is not None:
            out.repeats.append((index, first))
            continue
        seen[iid] = index
        out.accepted.append(Accepted(index, iid, raw, verdict.size + _INGESTED_OVER_CANONICAL))
    return out


def set_aside(
    intake: Intake,
    failed: Mapping[int, str],
    reason: RejectReason,
    origins: Sequence[int] | None = None,
) -> None:
    """Reject accepted items after all: ``failed`` maps positions in ``intake.accepted`` to
    what is wrong (a file behind the item that cannot be decoded). Before their ids are
    claimed: a rejected item claims nothing, and the same item sent again is judged again."""
    if not failed:
        return
    for position, detail in failed.items():
        a = intake.accepted[position]
        intake.rejections.append(
            Rejection(
                index=a.index,
                reason=Verdict(reason, detail).message,
                external_id=a.raw.external_id,
                origin=origins[a.index] if origins is not None else None,
            )
        )
    intake.rejections.sort(key=lambda r: r.index)
    intake.reasons[reason] += len(failed)
    intake.accepted = [a for i, a in enumerate(intake.accepted) if i not in failed]


_INGESTED_OVER_CANONICAL = 128
"""What an ingested item's JSON has over the item's canonical JSON, at most: its id, and a
null for each field it lacks."""

MAX_ITEMS_PER_MESSAGE = 5_000

T = TypeVar("T")


def chunk_by_size(
    sizes: Sequence[int], max_bytes: int, max_items: int = MAX_ITEMS_PER_MESSAGE
) -> list[range]:
    """Consecutive ranges whose sizes add up to at most ``max_bytes`` (one oversized item alone)."""
    return [
        range(part[0], part[-1] + 1)
        for part in stream_chunks(enumerate(sizes), max_bytes, max_items)
    ]


def stream_chunks(
    sized: Iterable[tuple[T, int]], max_bytes: int, max_items: int = MAX_ITEMS_PER_MESSAGE
) -> Iterator[list[T]]:
    """:func:`chunk_by_size` over a stream of ``(thing, size)``: each chunk as soon as it is
    full, so a reader never holds more than one message's worth."""
    chunk: list[T] = []
    total = 0
    for thing, size in sized:
        if chunk and (total + size > max_bytes or len(chunk) >= max_items):
            yield chunk
            chunk, total = [], 0
        chunk.append(thing)
        total += size
    if chunk:
        yield chunk
