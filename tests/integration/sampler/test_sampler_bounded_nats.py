"""The sampler's state on a real nats-server stays bounded however many rounds run: no KV value
grows with the rounds (the ledger compacts closed rounds into archived segments)."""

from __future__ import annotations

from typing import Any

import pytest

from labelloop.events import BatchCompleted, BatchCreated, ItemIn, ModelTrained, QAReport
from labelloop.testing import (
    EventCollector,
    configure_project,
    kv_value_sizes,
    publish_events,
    started,
)
from labelloop_console.commands.ingest import submissions
from labelloop_ingester.app import build_app as build_ingester
from labelloop_ingester.settings import IngesterSettings
from labelloop_sampler.app import build_app as build_sampler
from labelloop_sampler.domain.ledger import SEGMENT_ROUNDS
from labelloop_sampler.settings import SamplerSettings

pytestmark = pytest.mark.integration

PROJECT: dict[str, Any] = {
    "name": "long",
    "task_type": "text_classification",
    "labels": {"classes": ["pos", "neg"]},
    "data_fields": [{"name": "text", "kind": "text", "max_length": 500}],
    "sampling": {"strategy": "random", "batch_size": 2, "max_open_tasks": 4, "max_model_lag": 1},
    "quality": {"gold_fraction": 0.0, "overlap_fraction": 0.0},
}
ROUNDS = 2 * SEGMENT_ROUNDS + 20


def _closed(batch: BatchCreated) -> list[Any]:
    """What the crew, the trainer and QA say once a round is over."""
    number = batch.round
    return [
        BatchCompleted(
            project="long",
            batch_id=batch.batch_id,
            round=number,
            n_tasks=len(batch.tasks),
            n_annotations=len(batch.tasks),
        ),
        ModelTrained(
            project="long",
            model_version=f"m{number:04d}",
            dataset_version=f"v{number:04d}",
            round=number,
            promoted=False,
            metrics={},
            n_train=0,
            skipped="test",
        ),
        QAReport(
            project="long",
            batch_id=batch.batch_id,
            round=number,
            n_items=2,
            n_annotations=2,
            consensus_method="majority",
        ),
    ]


async def test_no_kv_value_grows_with_the_rounds(nats_url: str, namespace: str) -> None:
    ingester = build_ingester(IngesterSettings(nats_url=nats_url, namespace=namespace))
    sampler = build_sampler(SamplerSettings(nats_url=nats_url, namespace=namespace))
    batches = EventCollector(nats_url, namespace, BatchCreated)
    largest: dict[int, int] = {}
    async with batches, started(ingester), started(sampler):
        await configure_project(nats_url, namespace, PROJECT)
        items = [ItemIn(data={"text": f"review {i}"}) for i in range(2 * ROUNDS + 40)]
        await publish_events(nats_url, namespace, *submissions(items, "long", source="t"))
        for number in range(1, ROUNDS + 1):
            await batches.wait_for(number + 1, timeout=60)
            (batch,) = [b for b in batches.events if b.round == number]
            await publish_events(nats_url, namespace, *_closed(batch))
            if number % 10 == 0:
                await batches.wait_for(number + 2, timeout=60)
                largest[number] = max((await kv_value_sizes(nats_url, namespace)).values())
        await batches.wait_for(ROUNDS + 2, timeout=60)
        sizes = await kv_value_sizes(nats_url, namespace)
    ledger_key = "sampler.long.ledger"
    assert ledger_key in sizes
    # the ledger's size follows the open segment's rounds, not the rounds run so far
    early = max(v for n, v in largest.items() if n <= SEGMENT_ROUNDS)
    late = max(v for n, v in largest.items() if n > 2 * SEGMENT_ROUNDS)
    assert late <= early, largest
    assert max(sizes.values()) < 64 * 1024, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
    handed = [t.item_id for b in {b.batch_id: b for b in batches.events}.values() for t in b.tasks]
    assert len(handed) == len(set(handed)) == 2 * (ROUNDS + 2)
