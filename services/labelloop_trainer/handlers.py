"""Thin adapters: an event in, the training use case run."""

from __future__ import annotations

import logging

from labelloop.events import DatasetExported, RequestTraining, RoundExported
from labelloop.runtime import Service
from labelloop_trainer.service import Trainer

__all__ = ["register_handlers"]

log = logging.getLogger("labelloop.trainer")

GAUGE_INTERVAL_SECONDS = 15.0
"""How often every replica sets the model gauges from the shared state (Prometheus' scrape
interval)."""


def register_handlers(service: Service, trainer: Trainer) -> None:
    @service.handler(RoundExported, batch_size=1)
    async def on_round_exported(event: RoundExported) -> None:
        """A round's training rows: trained in round order."""
        await service.require_project(event.project)
        await trainer.round_exported(event)

    @service.handler(DatasetExported, batch_size=1)
    async def on_dataset_exported(event: DatasetExported) -> None:
        """A round's version: its rows, as its ``RoundExported`` has them. Consumed so that a
        campaign running through the upgrade to ``RoundExported`` loses no round (a round the
        exporter of before exported, and no ``RoundExported`` comes for); an operator's
        announcement again (``request_id``) is no round."""
        if event.request_id is not None:
            return
        await service.require_project(event.project)
        await trainer.dataset_exported(event)

    @service.handler(RequestTraining, batch_size=1)
    async def on_request_training(event: RequestTraining) -> None:
        """An operator asks for the model of a version: its round's outcome, announced again."""
        config = await service.require_project(event.project)
        if await trainer.requested(config, event) is None:
            log.info(
                "%s: %s is not trained yet; it will be in its round's turn",
                event.project,
                event.dataset_version or "the latest version",
            )

    service.every(service.settings.sweep_interval_seconds, trainer.rounds.sweep)

    async def observe_projects() -> None:
        """Per-project model gauges from the shared state, on every replica alike."""
        for project in await service.stores.projects.keys():
            await trainer.observe(project)

    service.every(GAUGE_INTERVAL_SECONDS, observe_projects)
