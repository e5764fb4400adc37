"""The ingester against a real nats-server: features stored, unknown projects dead-lettered."""

from __future__ import annotations

import io

import numpy as np
import pytest

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


async def test_features_are_stored_per_chunk_and_unknown_projects_dead_letter(
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
        assert event.features_ref is not None
        raw = await service.artifacts.get(event.features_ref)
        assert raw is not None
        with np.load(io.BytesIO(raw)) as npz:
            assert npz["X"].shape == (100, 64)
            assert npz["item_ids"].tolist() == [i.item_id for i in event.items]
        await publish_events(nats_url, namespace, ItemsSubmitted(project="nope", items=items[:1]))
        (letter,) = await dead.wait_for(1, timeout=30)
        assert "unknown project" in letter.reason
