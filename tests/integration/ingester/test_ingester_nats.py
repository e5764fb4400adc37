"""The ingester against a real nats-server: items in the catalog before the bus hears of them,
unknown projects dead-lettered, replicas racing on the same items ingest each once."""

from __future__ import annotations

import asyncio

import pytest

from labelloop.catalog import Catalog, chunk_name, decode_chunk
from labelloop.events import (
    DeadLetter,
    ItemIn,
    ItemsIngested,
    ItemsSubmitted,
    SubmissionAnswered,
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


async def test_two_replicas_racing_on_the_same_items_ingest_each_exactly_once(
    nats_url: str, namespace: str
) -> None:
    """Two ingesters share the consumer; 120 messages of 100 items drawn from 2,000 overlap, so
    the replicas claim the same ids at the same moment. Every item ends up ingested once:
    announced once, in the catalog once, answered as ingested by exactly one message."""
    await configure_project(nats_url, namespace, PROJECT)
    messages = [
        ItemsSubmitted(
            project="docs",
            items=[ItemIn(data={"text": f"shared {(m * 37 + k * 23) % 2000}"}) for k in range(100)],
        )
        for m in range(120)
    ]
    universe = {i.data["text"] for m in messages for i in m.items}
    # every message is waiting before the replicas start, together: both pull work at once
    await publish_events(nats_url, namespace, *messages)
    replicas = [
        build_app(IngesterSettings(nats_url=nats_url, namespace=namespace)) for _ in range(2)
    ]
    ingested = EventCollector(nats_url, namespace, ItemsIngested)
    answered = EventCollector(nats_url, namespace, SubmissionAnswered)
    async with ingested, answered:
        await asyncio.gather(*(r.start() for r in replicas))
        try:
            answers = await answered.wait_for(len(messages), timeout=90)
            announced = [i.item_id for e in ingested.events for i in e.items]
            catalog = Catalog(replicas[0].state, replicas[0].artifacts)
            loaded = await catalog.load("docs")
            in_chunks = 0
            for chunk_id in await catalog.chunk_ids("docs"):
                raw = await replicas[0].artifacts.get(chunk_name("docs", chunk_id))
                assert raw is not None
                in_chunks += len(decode_chunk(raw).items)
            segments = len(await replicas[0].state.keys("ingester.docs.claims."))
        finally:
            await asyncio.gather(*(r.stop() for r in replicas))
    handled = [
        r.registry.get_sample_value(
            "labelloop_runtime_messages_total", {"event": "ItemsSubmitted", "outcome": "ok"}
        )
        for r in replicas
    ]
    assert all(h and h > 0 for h in handled), f"not a race: messages handled {handled}"
    appended = [
        r.registry.get_sample_value("labelloop_ingester_claim_appends_total") for r in replicas
    ]
    assert sum(a or 0 for a in appended) == segments
    assert {a.submission_id for a in answers} == {m.event_id for m in messages}
    assert len(announced) == len(set(announced)) == len(universe), "an item announced twice"
    assert {i.data["text"] for i in loaded.records.values()} == universe
    assert in_chunks == len(universe), "an item stored in two chunks"
    assert sum(a.ingested for a in answers) == len(universe)
    assert sum(a.duplicates for a in answers) == 120 * 100 - len(universe)
