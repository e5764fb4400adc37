"""The ingester against a real nats-server: items in the catalog before the bus hears of them,
unknown projects dead-lettered."""

from __future__ import annotations

import pytest

from labelloop.catalog import Catalog, decode_chunk
from labelloop.events import (
    DeadLetter,
    ItemIn,
    ItemsIngested,
    ItemsSubmitted,
)
from labelloop.testing import EventCollector, configure_project, publish_events, started
from labelloop_ingester.app import build_app
from labelloop_ingester.settings import IngesterSettings

pytestmark = pytest.mark.integration

PROJECT = {
    "name": "docs",
    "task_type": "text_classification",
    "labels": {"classes": ["a", "b"]},
    "data_fields": [{"name": "text", "kind": "text"}],
}


async def test_items_are_in_the_catalog_once_and_unknown_projects_dead_letter(
    nats_url: str, namespace: str
) -> None:
    service = build_app(IngesterSettings(nats_url=nats_url, namespace=namespace))
    ingested = EventCollector(nats_url, namespace, ItemsIngested)
    dead = EventCollector(nats_url, namespace, DeadLetter)
    async with ingested, dead, started(service):
        await configure_project(nats_url, namespace, PROJECT)
        items = [ItemIn(data={"text": f"document {i}"}) for i in range(100)]
        await publish_events(nats_url, namespace, ItemsSubmitted(project="docs", items=items))
        (event,) = await ingested.wait_for(1, timeout=30)
        assert len(event.items) == 100
        assert event.chunk_ref is not None
        raw = await service.artifacts.get(event.chunk_ref)
        assert raw is not None
        chunk = decode_chunk(raw)
        assert chunk.X is not None
        assert chunk.X.shape == (100, 64)
        assert chunk.space == "text-hash-64"
        assert [i.item_id for i in chunk.items] == [i.item_id for i in event.items]
        loaded = await Catalog(service.state, service.artifacts).load("docs")
        assert loaded.item_ids() == sorted(i.item_id for i in event.items)
        # the catalog is the one copy: nothing else in the object store holds the items
        names = await service.artifacts.list()
        assert [n for n in names if not n.startswith("payloads/")] == [event.chunk_ref]
        await publish_events(nats_url, namespace, ItemsSubmitted(project="nope", items=items[:1]))
        (letter,) = await dead.wait_for(1, timeout=30)
        assert "unknown project" in letter.reason
