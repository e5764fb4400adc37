"""Thin adapters: an event in, the export use case run."""

from __future__ import annotations

from labelloop.events import BudgetExhausted, LabelingConverged, LabelsReady, RequestExport
from labelloop.runtime import PoisonMessage, Service
from labelloop_exporter.service import Exporter

__all__ = ["register_handlers"]


def register_handlers(service: Service, exporter: Exporter) -> None:
    @service.handler(LabelsReady)
    async def on_labels_ready(event: LabelsReady) -> None:
        """A settled round: its dataset version is written in round order."""
        await service.require_project(event.project)
        await exporter.labels_ready(event)

    @service.handler(RequestExport)
    async def on_request_export(event: RequestExport) -> None:
        """An operator asks for the dataset: the latest version is announced again."""
        config = await service.require_project(event.project)
        outcome = await exporter.requested(config, event.formats, event.event_id)
        if outcome.outcome in ("invalid", "empty"):
            # the command goes to the dead-letter stream with the reason: visible, nothing lost
            raise PoisonMessage(f"no dataset announced: {outcome.reason}")

    @service.handler(BudgetExhausted)
    async def on_budget_exhausted(event: BudgetExhausted) -> None:
        """Sampling stopped: its last round gets a full version, whichever round it is."""
        await service.require_project(event.project)
        await exporter.budget_exhausted(event.project, event.last_round)

    @service.handler(LabelingConverged)
    async def on_converged(event: LabelingConverged) -> None:
        """The learning curve plateaued and sampling stops: the latest round and the few cut
        before the sampler heard get a full version each."""
        await service.require_project(event.project)
        await exporter.converged(event.project, event.model_version)

    service.every(service.settings.sweep_interval_seconds, exporter.rounds.sweep)
