"""Thin adapters: typed event in, one ``QAScorer`` call."""

from __future__ import annotations

from labelloop.events import BatchCompleted, ReadmitAnnotator
from labelloop.runtime import Service
from labelloop_qa.service import QAScorer

__all__ = ["register_handlers"]

_DECLARE_INTERVAL_SECONDS = 30.0
"""How soon a newly applied project's counters exist (long before its first batch is scored)."""


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

    async def declare_projects() -> None:
        """Every configured project's counters at 0 before its first batch (alerts read them)."""
        for project in await service.stores.projects.keys():
            scorer.metrics.declare_project(project)

    service.on_startup(declare_projects)
    service.every(_DECLARE_INTERVAL_SECONDS, declare_projects)
