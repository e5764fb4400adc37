"""Thin adapters: an event in, the export use case run, its outcome out."""

from __future__ import annotations

from labelloop.events import ItemsIngested, LabelsReady, QAReport, RequestExport
from labelloop.runtime import PoisonMessage, Service
from labelloop_exporter.exporting import Exporter

__all__ = ["register_handlers"]


def register_handlers(service: Service, exporter: Exporter) -> None:
    @service.handler(LabelsReady)
    async def on_labels_ready(event: LabelsReady) -> None:
        await exporter.on_labels(event, await service.require_project(event.project))

    @service.handler(RequestExport)
    async def on_request_export(event: RequestExport) -> None:
        outcome = await exporter.export(await service.require_project(event.project), event.formats)
        if outcome.outcome == "invalid":
            # the command goes to the dead-letter stream with the reason: visible, nothing lost
            raise PoisonMessage(f"dataset not published: {outcome.reason}")

    @service.handler(ItemsIngested)
    async def on_items_ingested(event: ItemsIngested) -> None:
        await exporter.on_items(event)

    @service.handler(QAReport)
    async def on_qa_report(event: QAReport) -> None:
        await exporter.on_report(event)
