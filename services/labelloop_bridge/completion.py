"""The completion of a batch: one ``BatchCompleted`` carrying everything QA needs to score it."""

from __future__ import annotations

from labelloop.events import Annotation, BatchCompleted, deterministic_id

from .domain.ledger import BatchLedger

__all__ = ["completion_event"]


def completion_event(
    project: str, ledger: BatchLedger, annotations: list[Annotation]
) -> BatchCompleted:
    """The completion of a batch, carrying its tasks and the annotations that completed it."""
    return BatchCompleted(
        event_id=deterministic_id("batch-completed", ledger.batch_id),
        project=project,
        batch_id=ledger.batch_id,
        round=ledger.round,
        n_tasks=len(ledger.tasks),
        n_annotations=sum(1 for a in annotations if not a.deleted),
        kind=ledger.kind,
        tasks=list(ledger.info),
        annotations=sorted(annotations, key=lambda a: (a.item_id, a.annotator_id, a.annotation_id)),
        rechecks=list(ledger.rechecks),
    )
