"""Thin adapters: typed event in, one ``QAScorer`` call."""

from __future__ import annotations

from labelloop.events import AnnotationsSubmitted, BatchCompleted, ReadmitAnnotator
from labelloop.runtime import Service
from labelloop_qa.service import QAScorer

__all__ = ["register_handlers"]

GAUGE_INTERVAL_SECONDS = 15.0
"""How often every replica declares each project's counters (so that they exist long before its
first batch is scored) and sets its gauges from the latest round record (Prometheus' scrape
interval)."""


def register_handlers(service: Service, scorer: QAScorer) -> None:
    @service.handler(BatchCompleted)
    async def on_batch_completed(event: BatchCompleted) -> None:
        """Score a labeling round in its turn, or settle a round's review."""
        await service.require_project(event.project)
        await scorer.batch_completed(event)

    @service.handler(AnnotationsSubmitted)
    async def on_annotations(event: AnnotationsSubmitted) -> None:
        """An update, deletion or extra answer after a round was scored re-scores it."""
        await service.require_project(event.project)
        await scorer.annotations_submitted(event)

    @service.handler(ReadmitAnnotator)
    async def on_readmit(event: ReadmitAnnotator) -> None:
        """An operator lets a flagged annotator work again."""
        await service.require_project(event.project)
        await scorer.readmit(event.project, event.annotator_id)

    # a replica killed between parking a round and handing it over leaves it parked: look again
    service.every(service.settings.sweep_interval_seconds, scorer.rounds.sweep)

    async def observe_projects() -> None:
        """Every configured project's counters at 0 before its first batch (alerts read them),
        and its gauges as the latest scored round left them, whichever replica scored it."""
        for project in await service.stores.projects.keys():
            scorer.metrics.declare_project(project)
            await scorer.observe(project)

    service.on_startup(observe_projects)
    service.every(GAUGE_INTERVAL_SECONDS, observe_projects)
