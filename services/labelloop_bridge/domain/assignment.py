"""Who gets which task: the batch's tasks shared out among the project's annotators.

The sampler decides how many answers each task needs (``annotations_required``: 1, or the
overlap) and who may not answer (``excluded_annotators``); the bridge picks the people. Each task
goes to that many distinct annotators (fewer when the team is smaller: every one of them), the
least loaded first, so that a batch is spread evenly; ties are broken by a hash of (batch, item,
annotator), so the same batch and team always give the same assignment.

Abandoned tasks (:func:`overdue`): a task whose assignee has not answered it
``quality.assignment_timeout_seconds`` after it was given to them goes to another annotator of
the team: never one QA flagged (the batch's excluded), one who already answered the item or had
it taken away, one already holding it, or one who is overdue somewhere in the same batch (likely
absent too); among the rest the least loaded in the batch (open assignments), ties broken by the
same hash. With nobody eligible the task stays with its assignee (reported as ``stuck``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from .ledger import BatchLedger

__all__ = ["Reassignment", "assign", "overdue"]


@dataclass(frozen=True, slots=True)
class Reassignment:
    """``item_id``'s task taken from ``absent`` and given to ``successor`` (``None``: nobody is
    eligible, the task stays where it is)."""

    item_id: str
    absent: str
    successor: str | None


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


def overdue(
    ledger: BatchLedger,
    team: Sequence[str],
    now: datetime,
    timeout: timedelta,
    *,
    count_skips: bool = True,
) -> list[Reassignment]:
    """The reassignments a batch needs at ``now``: one per (task, assignee who has not answered
    it within ``timeout`` of being given it), in the ledger's order. Only a labeling batch that
    was assigned, imported and is not complete; a ledger without ``placed_at`` never."""
    if (
        ledger.kind != "labeling"
        or not ledger.imported
        or ledger.completed
        or ledger.placed_at is None
        or not ledger.assigned
    ):
        return []
    late: list[tuple[str, str]] = []
    load: dict[str, int] = {}
    for item, task in ledger.tasks.items():
        answered = task.answered_by(count_skips)
        for person in task.assignees:
            if person in answered:
                continue
            load[person] = load.get(person, 0) + 1
            if now - task.given.get(person, ledger.placed_at) >= timeout:
                late.append((item, person))
    absent = {person for _, person in late}
    flagged = set(ledger.excluded)
    pool = sorted({a for a in team if a not in flagged and a not in absent})
    out: list[Reassignment] = []
    picked: dict[str, set[str]] = {}
    for item, person in late:
        task = ledger.tasks[item]
        touched = {a.annotator_id for a in task.answers.values()}
        touched |= set(task.assignees) | set(task.released) | picked.get(item, set())
        candidates = [p for p in pool if p not in touched]
        if not candidates:
            out.append(Reassignment(item, person, None))
            continue
        pick = min(candidates, key=lambda p: (load.get(p, 0), _tiebreak(ledger.batch_id, item, p)))
        picked.setdefault(item, set()).add(pick)
        load[pick] = load.get(pick, 0) + 1
        load[person] -= 1
        out.append(Reassignment(item, person, pick))
    return out
