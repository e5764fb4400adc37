"""Thin adapters: a submitted message in, the ingest use case run, its events out."""

from __future__ import annotations

from collections.abc import Callable

from labelloop.events import ItemsSubmitted
from labelloop.runtime import PoisonMessage, Service

from .ingest import Ingest

__all__ = ["register_handlers"]


def register_handlers(service: Service, ingest: Callable[[], Ingest]) -> None:
    @service.handler(ItemsSubmitted)
    async def on_items_submitted(event: ItemsSubmitted) -> None:
        project = await service.project(event.project)
        if project is None:
            raise PoisonMessage(f"unknown project {event.project!r}")
        await ingest()(event, project)
