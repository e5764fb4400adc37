"""Who gets which task: the batch's tasks shared out among the project's annotators.

The sampler decides how many answers each task needs (``annotations_required``: 1, or the
overlap) and who may not answer (``excluded_annotators``); the bridge picks the people. Each task
goes to that many distinct annotators (fewer when the team is smaller: every one of them), the
least loaded first, so that a batch is spread evenly; ties are broken by a hash of (batch, item,
annotator), so the same batch and team always give the same assignment.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

__all__ = ["assign"]


def _tiebreak(batch_id: str, item_id: str, annotator: str) -> str:
    return hashlib.sha256(f"{batch_id}\x1f{item_id}\x1f{annotator}".encode()).hexdigest()


def assign(
    batch_id: str,
    tasks: Iterable[tuple[str, int]],
    annotators: Sequence[str],
    excluded: Iterable[str] = (),
) -> dict[str, tuple[str, ...]]:
    """Item id -> the annotators its task goes to (sorted), for ``(item_id, required)`` pairs.

    Tasks needing the most answers are placed first (they constrain most); within that, in the
    order given. An empty ``annotators`` (after ``excluded``) assigns nobody: ``{}``.
    """
    out = set(excluded)
    team = sorted({a for a in annotators if a not in out})
    if not team:
        return {}
    load = dict.fromkeys(team, 0)
    ordered = sorted(enumerate(tasks), key=lambda it: (-it[1][1], it[0]))
    chosen: dict[str, tuple[str, ...]] = {}
    for _, (item, required) in ordered:
        ranked = sorted(team, key=lambda a: (load[a], _tiebreak(batch_id, item, a)))
        picked = ranked[: max(1, min(required, len(team)))]
        for person in picked:
            load[person] += 1
        chosen[item] = tuple(sorted(picked))
    return chosen
