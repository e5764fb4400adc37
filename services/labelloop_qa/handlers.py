"""Thin adapters: typed event in, one ``QAScorer`` call."""

from __future__ import annotations

from labelloop.events import BatchCompleted, ReadmitAnnotator
from labelloop.runtime import Service
from labelloop_qa.service import QAScorer

__all__ = ["register_handlers"]


def register_handlers(service: Service, scorer: QAScorer) -> None:
    @service.handler(BatchCompleted)
    async def on_batch_completed(event: BatchCompleted) -> None:
        """Score a labeling round in its turn, or settle a round's review."""
        await service.require_project(event.project)
        await scorer.batch_completed(event)

    @service.handler(ReadmitAnnotator)
    async def on_readmit(event: ReadmitAnnotator) -> None:
        """An operator lets a flagged annotator work again."""
        await service.require_project(event.project)
        await scorer.readmit(event.project, event.annotator_id)

    # a replica killed between parking a round and handing it over leaves it parked: look again
    service.every(service.settings.sweep_interval_seconds, scorer.rounds.sweep)
