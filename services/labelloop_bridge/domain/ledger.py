"""A batch's completion ledger: which tasks have how many answers from distinct annotators.

Pure value logic; the bridge stores a ledger in KV and changes it only by compare-and-swap, so two
replicas (or a webhook racing the reconciliation loop) never count one annotation twice and only
one of them flips ``completed``.

Counting rule: a task is answered when ``annotations_required`` *distinct annotators* answered it.
Deleted annotations stop counting. A skip (cancelled annotation) counts as an answer when
``count_skips`` is true (the default in the bridge's settings): otherwise a batch would wait forever
for annotators who do not exist in a small team; QA sees the skip as a value of ``None``.

Freshness: each answer keeps the ``updated_at`` of the state it was counted from, and
:meth:`BatchLedger.record` ignores a state older than the one stored (a webhook racing a
reconciliation pass can bring an older state after a newer one). Because ``record`` runs inside
the compare-and-swap, the check and the change are atomic. A deletion is kept as a tombstone:
Label Studio never reuses an annotation id, so nothing revives a deleted answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from labelloop.events import BatchCreated, BatchTask, CompletedTask, SuspectLabel

__all__ = ["Answer", "BatchLedger", "TaskLedger", "completed_task"]

Kind = Literal["labeling", "review"]


@dataclass(frozen=True, slots=True)
class Answer:
    annotator_id: str
    cancelled: bool
    updated_at: datetime | None = None
    """When Label Studio last changed the counted state (``None``: unknown, e.g. simulated)."""
    deleted: bool = False


@dataclass(slots=True)
class TaskLedger:
    required: int
    answers: dict[str, Answer] = field(default_factory=dict)
    """Annotation id -> its latest state (deleted ones stay as tombstones)."""
    assignees: tuple[str, ...] = ()
    """The annotators the task was given to, each in their own Label Studio project (blind
    overlap); empty when it went to the project everyone shares."""
    given: dict[str, datetime] = field(default_factory=dict)
    """Assignee -> when the task was reassigned to them (absent: given when the batch was
    placed, :attr:`BatchLedger.placed_at`)."""
    released: dict[str, datetime] = field(default_factory=dict)
    """Annotator -> when the task was taken from them for not answering it in time."""

    def live(self) -> dict[str, Answer]:
        return {a: answer for a, answer in self.answers.items() if not answer.deleted}

    def answered_by(self, count_skips: bool) -> set[str]:
        return {
            a.annotator_id
            for a in self.answers.values()
            if not a.deleted and (count_skips or not a.cancelled)
        }


def _older(new: datetime | None, old: datetime | None) -> bool:
    return new is not None and old is not None and new < old


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return max(a, b)


@dataclass(slots=True)
class BatchLedger:
    batch_id: str
    kind: Kind
    tasks: dict[str, TaskLedger]
    """Item id -> its task's requirement and answers."""
    ls_project_id: int | None = None
    imported: bool = False
    completed: bool = False
    completion_published: bool = False
    round: int = 1
    info: list[CompletedTask] = field(default_factory=list)
    """The tasks as QA needs them (gold answers, predictions), carried by ``BatchCompleted``."""
    excluded: list[str] = field(default_factory=list)
    """Annotators QA flagged before this batch was cut: their answers do not count."""
    rechecks: list[SuspectLabel] = field(default_factory=list)
    """Earlier labels the batch carries to QA for an expert (``BatchCreated.rechecks``)."""
    placed_at: datetime | None = None
    """When the ledger was written (the tasks given to their first assignees); ``None`` in
    ledgers written before it was kept: their tasks are never reassigned."""

    @classmethod
    def new(
        cls,
        batch_id: str,
        kind: Kind,
        required: dict[str, int],
        ls_project_id: int | None = None,
        *,
        round: int = 1,
        info: list[CompletedTask] | None = None,
        excluded: list[str] | None = None,
        rechecks: list[SuspectLabel] | None = None,
        assignees: dict[str, tuple[str, ...]] | None = None,
        placed_at: datetime | None = None,
    ) -> BatchLedger:
        people = assignees or {}
        tasks = {
            item: TaskLedger(required=max(1, r), assignees=tuple(people.get(item, ())))
            for item, r in required.items()
        }
        return cls(
            batch_id=batch_id,
            kind=kind,
            tasks=tasks,
            ls_project_id=ls_project_id,
            round=round,
            info=list(info or []),
            excluded=sorted(excluded or []),
            rechecks=list(rechecks or []),
            placed_at=placed_at,
        )

    @classmethod
    def of_batch(
        cls,
        batch: BatchCreated,
        required: dict[str, int] | None = None,
        ls_project_id: int | None = None,
        assignees: dict[str, tuple[str, ...]] | None = None,
        placed_at: datetime | None = None,
    ) -> BatchLedger:
        """The ledger of a new batch (``required`` overrides the tasks' own requirements; a task
        with ``assignees`` needs an answer from each of them, however many the batch asked)."""
        wanted = required or {t.item_id: t.annotations_required for t in batch.tasks}
        if assignees:
            wanted = {item: len(assignees.get(item, ())) or r for item, r in wanted.items()}
        return cls.new(
            batch.batch_id,
            batch.kind,
            wanted,
            ls_project_id,
            round=batch.round,
            info=[completed_task(t) for t in batch.tasks],
            excluded=list(batch.excluded_annotators),
            rechecks=list(batch.rechecks),
            assignees=assignees,
            placed_at=placed_at,
        )

    def record(
        self,
        item_id: str,
        annotation_id: str,
        annotator_id: str,
        *,
        cancelled: bool,
        deleted: bool,
        updated_at: datetime | None = None,
    ) -> bool:
        """Apply one annotation's state unless an equal or newer one is there; True if changed."""
        task = self.tasks.get(item_id)
        if task is None:
            return False
        before = task.answers.get(annotation_id)
        if before is not None and before.deleted:
            return False  # deletion is final
        if deleted:
            kept = before or Answer(annotator_id, cancelled)
            stamp = _latest(updated_at, kept.updated_at)
            task.answers[annotation_id] = Answer(kept.annotator_id, kept.cancelled, stamp, True)
            return before is not None
        if before is not None and _older(updated_at, before.updated_at):
            return False
        stamp = _latest(updated_at, before.updated_at if before is not None else None)
        after = Answer(annotator_id, cancelled, stamp)
        if before == after:
            return False
        task.answers[annotation_id] = after
        return True

    def is_complete(self, count_skips: bool = True) -> bool:
        return bool(self.tasks) and all(
            len(t.answered_by(count_skips)) >= t.required for t in self.tasks.values()
        )

    def n_annotations(self, count_skips: bool = True) -> int:
        return sum(
            1
            for t in self.tasks.values()
            for a in t.answers.values()
            if not a.deleted and (count_skips or not a.cancelled)
        )

    @property
    def assigned(self) -> bool:
        """The batch went to annotators' own projects (blind overlap)."""
        return any(t.assignees for t in self.tasks.values())

    def assignments(self) -> dict[str, list[str]]:
        """Annotator -> the items assigned to them (in the ledger's order)."""
        out: dict[str, list[str]] = {}
        for item, task in self.tasks.items():
            for person in task.assignees:
                out.setdefault(person, []).append(item)
        return out

    def close(self) -> None:
        """Its ``BatchCompleted`` went out: mark it, and drop what only that event needed (the
        tasks' gold answers and predictions, the rechecks), about half a ledger. The answers
        stay: reconciliation tells a deleted answer of a completed batch by them, and the
        ledger itself keeps a redelivered ``BatchCreated`` from being imported again."""
        self.completion_published = True
        self.info = []
        self.rechecks = []

    def released(self) -> dict[str, list[str]]:
        """Annotator -> the items taken from them (and not given back), in the ledger's order."""
        out: dict[str, list[str]] = {}
        for item, task in self.tasks.items():
            for person in task.released:
                if person not in task.assignees:
                    out.setdefault(person, []).append(item)
        return out

    def reassign(self, item_id: str, absent: str, successor: str, at: datetime) -> bool:
        """Give ``item_id``'s task to ``successor`` instead of ``absent``; True if changed."""
        task = self.tasks.get(item_id)
        if task is None or absent not in task.assignees or successor in task.assignees:
            return False
        task.assignees = tuple(sorted({*task.assignees, successor} - {absent}))
        task.given.pop(absent, None)
        task.given[successor] = at
        task.released[absent] = at
        return True

    def open_tasks(self, count_skips: bool = True) -> int:
        return sum(1 for t in self.tasks.values() if len(t.answered_by(count_skips)) < t.required)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "batch_id": self.batch_id,
                "kind": self.kind,
                "ls_project_id": self.ls_project_id,
                "imported": self.imported,
                "completed": self.completed,
                "completion_published": self.completion_published,
                "round": self.round,
                "info": [t.model_dump(mode="json", exclude_defaults=True) for t in self.info],
                "excluded": self.excluded,
                "rechecks": [r.model_dump(mode="json") for r in self.rechecks],
                "tasks": {item: _task_json(t) for item, t in self.tasks.items()},
                **({"placed_at": self.placed_at.isoformat()} if self.placed_at else {}),
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> BatchLedger:
        data = json.loads(raw)
        # ledgers written before assignments were kept hold [required, answers]; before
        # reassignments, [required, answers, assignees]
        tasks = {
            item: TaskLedger(
                required=int(required),
                answers={a: _answer_from_json(x) for a, x in answers.items()},
                assignees=tuple(str(p) for p in (rest[0] if rest else ())),
                given=_times(rest[1].get("given") if len(rest) > 1 else None),
                released=_times(rest[1].get("released") if len(rest) > 1 else None),
            )
            for item, (required, answers, *rest) in data["tasks"].items()
        }
        placed = data.get("placed_at")
        return cls(
            batch_id=data["batch_id"],
            kind=data["kind"],
            tasks=tasks,
            ls_project_id=data.get("ls_project_id"),
            imported=bool(data.get("imported")),
            completed=bool(data.get("completed")),
            completion_published=bool(data.get("completion_published")),
            round=int(data.get("round") or 1),
            info=[CompletedTask.model_validate(t) for t in data.get("info") or []],
            excluded=list(data.get("excluded") or []),
            rechecks=[SuspectLabel.model_validate(r) for r in data.get("rechecks") or []],
            placed_at=datetime.fromisoformat(placed) if placed else None,
        )


def completed_task(task: BatchTask) -> CompletedTask:
    """What ``BatchCompleted`` says of a task: no item data, the gold answer and prediction."""
    return CompletedTask(
        item_id=task.item_id,
        annotations_required=task.annotations_required,
        is_gold=task.is_gold,
        gold_label=task.gold_label if task.is_gold else None,
        is_review=task.is_review,
        prediction=task.prediction,
    )


def _task_json(task: TaskLedger) -> list[Any]:
    out: list[Any] = [task.required, {a: _answer_json(x) for a, x in task.answers.items()}]
    moves = {
        name: {p: at.isoformat() for p, at in sorted(times.items())}
        for name, times in (("given", task.given), ("released", task.released))
        if times
    }
    if task.assignees or moves:
        out.append(list(task.assignees))
    if moves:
        out.append(moves)
    return out


def _times(raw: dict[str, str] | None) -> dict[str, datetime]:
    return {str(p): datetime.fromisoformat(at) for p, at in (raw or {}).items()}


def _answer_json(answer: Answer) -> list[Any]:
    stamp = answer.updated_at.isoformat() if answer.updated_at is not None else None
    return [answer.annotator_id, answer.cancelled, stamp, answer.deleted]


def _answer_from_json(raw: list[Any]) -> Answer:
    # ledgers written before updated_at was kept hold [annotator, cancelled]
    who, cancelled, *rest = raw
    stamp = datetime.fromisoformat(rest[0]) if rest and rest[0] else None
    deleted = bool(rest[1]) if len(rest) > 1 else False
    return Answer(str(who), bool(cancelled), stamp, deleted)
