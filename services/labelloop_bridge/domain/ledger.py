"""A batch's completion ledger: which tasks have how many answers from distinct annotators.

Pure value logic; the bridge stores a ledger in KV and changes it only by compare-and-swap, so two
replicas (or a webhook racing the reconciliation loop) never count one annotation twice and only
one of them flips ``completed``.

Counting rule: a task is answered when ``annotations_required`` *distinct annotators* answered it.
Deleted annotations stop counting. A skip (cancelled annotation) counts as an answer when
``count_skips`` is true (the default in the bridge's settings): otherwise a batch would wait forever
for annotators who do not exist in a small team; QA sees the skip as a value of ``None``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["BatchLedger", "TaskLedger"]

Kind = Literal["labeling", "review"]


@dataclass(slots=True)
class TaskLedger:
    required: int
    answers: dict[str, tuple[str, bool]] = field(default_factory=dict)
    """Annotation id -> (annotator id, cancelled)."""

    def answered_by(self, count_skips: bool) -> set[str]:
        return {who for who, cancelled in self.answers.values() if count_skips or not cancelled}


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

    @classmethod
    def new(
        cls, batch_id: str, kind: Kind, required: dict[str, int], ls_project_id: int | None = None
    ) -> BatchLedger:
        tasks = {item: TaskLedger(required=max(1, r)) for item, r in required.items()}
        return cls(batch_id=batch_id, kind=kind, tasks=tasks, ls_project_id=ls_project_id)

    def record(
        self, item_id: str, annotation_id: str, annotator_id: str, *, cancelled: bool, deleted: bool
    ) -> bool:
        """Apply one annotation's latest state; True when the ledger changed."""
        task = self.tasks.get(item_id)
        if task is None:
            return False
        before = task.answers.get(annotation_id)
        if deleted:
            if before is None:
                return False
            del task.answers[annotation_id]
            return True
        after = (annotator_id, cancelled)
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
            for _, cancelled in t.answers.values()
            if count_skips or not cancelled
        )

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
                "tasks": {
                    item: [t.required, {a: [who, c] for a, (who, c) in t.answers.items()}]
                    for item, t in self.tasks.items()
                },
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> BatchLedger:
        data = json.loads(raw)
        tasks = {
            item: TaskLedger(
                required=int(required),
                answers={a: (str(who), bool(c)) for a, (who, c) in answers.items()},
            )
            for item, (required, answers) in data["tasks"].items()
        }
        return cls(
            batch_id=data["batch_id"],
            kind=data["kind"],
            tasks=tasks,
            ls_project_id=data.get("ls_project_id"),
            imported=bool(data.get("imported")),
            completed=bool(data.get("completed")),
            completion_published=bool(data.get("completion_published")),
        )
