"""Thin adapters: a submitted message in, the ingest use case run, its events out."""

from __future__ import annotations

from collections.abc import Callable

from labelloop.events import ItemsSubmitted
from labelloop.runtime import Service

from .service import Ingest

__all__ = ["register_handlers"]


def register_handlers(service: Service, ingest: Callable[[], Ingest]) -> None:
    @service.handler(ItemsSubmitted)
    async def on_items_submitted(event: ItemsSubmitted) -> None:
        await ingest()(event, await service.require_project(event.project))
