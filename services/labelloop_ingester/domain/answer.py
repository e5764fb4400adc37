"""The answer to one submitted message: what became of each item, said by where it came from."""

from __future__ import annotations

from collections.abc import Sequence

from labelloop.events import ItemOutcome, ItemsSubmitted, SubmissionAnswered, deterministic_id

from .intake import Intake, chunk_by_size

__all__ = ["ANSWER_BYTES", "MAX_REASON_CHARS", "answer"]

ANSWER_BYTES = 200_000
"""Room for the outcomes of one answer part. An answer always travels inline (far under the
512 kB inline limit): a data producer may read no object store."""

MAX_REASON_CHARS = 500
"""A reason longer than this (a long list of unknown classes) is cut: the answer is for people."""

_OUTCOME_OVERHEAD = 64
"""JSON keys, verdict and origin of one outcome, over its reason's length."""


def answer(
    submission: ItemsSubmitted,
    intake: Intake,
    claimed_before: Sequence[int],
    *,
    max_bytes: int = ANSWER_BYTES,
) -> list[SubmissionAnswered]:
    """The answer parts for ``submission``: one unless its outcomes outgrow ``max_bytes``.

    ``claimed_before``: positions of valid items whose content another submission ingested
    first. Event ids follow from the submission's, so a redelivered message answers the same."""
    origins = submission.origins

    def origin(index: int) -> int:
        return origins[index] if origins is not None else index + 1

    unit = submission.origin_unit
    noted: list[tuple[int, ItemOutcome]] = [
        (r.index, ItemOutcome(origin=origin(r.index), verdict="rejected", reason=_cut(r.reason)))
        for r in intake.rejections
    ]
    noted += [
        (
            index,
            ItemOutcome(
                origin=origin(index),
                verdict="duplicate",
                reason=f"same content as {unit} {origin(first)}",
            ),
        )
        for index, first in intake.repeats
    ]
    noted += [
        (
            index,
            ItemOutcome(
                origin=origin(index),
                verdict="duplicate",
                reason="same content as an item ingested before",
            ),
        )
        for index in claimed_before
    ]
    noted.sort(key=lambda pair: pair[0])
    outcomes = [outcome for _, outcome in noted]
    sizes = [len(o.reason) + _OUTCOME_OVERHEAD for o in outcomes]
    parts = chunk_by_size(sizes, max_bytes, max_items=len(outcomes) + 1) or [range(0)]
    n_items = len(submission.items)
    duplicates = intake.duplicates + len(claimed_before)
    rejected = len(intake.rejections)
    return [
        SubmissionAnswered(
            event_id=deterministic_id("submission-answered", submission.event_id, number),
            project=submission.project,
            submission_id=submission.event_id,
            request_id=submission.request_id,
            origin_unit=unit,
            n_items=n_items,
            ingested=n_items - duplicates - rejected,
            duplicates=duplicates,
            rejected=rejected,
            outcomes=outcomes[part.start : part.stop],
            part=number,
            parts=len(parts),
        )
        for number, part in enumerate(parts, start=1)
    ]


def _cut(reason: str) -> str:
    if len(reason) <= MAX_REASON_CHARS:
        return reason
    return reason[: MAX_REASON_CHARS - 1] + "…"
