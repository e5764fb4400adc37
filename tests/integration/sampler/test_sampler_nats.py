"""The ingester and sampler against a real nats-server: 10k items to the first batches, re-ingest,
rejections, and a sampler stopped mid-campaign that neither repeats nor loses an item."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from labelloop.events import (
    BatchCompleted,
    BatchCreated,
    ItemIn,
    ItemsIngested,
    ItemsRejected,
    ModelTrained,
    QAReport,
)
from labelloop.runtime import Service
from labelloop.testing import EventCollector, configure_project, publish_events, started
from labelloop_console.commands.ingest import submissions
from labelloop_ingester.app import build_app as build_ingester
from labelloop_ingester.settings import IngesterSettings
from labelloop_sampler.app import build_app as build_sampler
from labelloop_sampler.settings import SamplerSettings

pytestmark = pytest.mark.integration

PROJECT: dict[str, Any] = {
    "name": "reviews",
    "task_type": "text_classification",
    "labels": {"classes": ["pos", "neg"]},
    "data_fields": [{"name": "text", "kind": "text", "max_length": 500}],
    "sampling": {"strategy": "hybrid", "batch_size": 50, "max_open_tasks": 100, "max_model_lag": 1},
    "quality": {"gold_fraction": 0.1, "overlap_fraction": 0.2},
}


async def _configure(nats_url: str, namespace: str, *services: Service) -> None:
    await configure_project(nats_url, namespace, PROJECT)


_TOPICS = ("service", "food", "view")
_MOODS = ("awful", "great")


def _items(n: int, start: int = 0) -> list[ItemIn]:
    return [
        ItemIn(
            data={"text": f"review {i}: the {_TOPICS[i % 3]} was {_MOODS[i % 2]}"},
            known_label=("pos" if i % 2 else "neg") if i < 30 else None,
        )
        for i in range(start, start + n)
    ]


async def test_ten_thousand_items_to_a_first_batch_and_reingest_adds_nothing(
    nats_url: str, namespace: str
) -> None:
    ingester = build_ingester(IngesterSettings(nats_url=nats_url, namespace=namespace))
    sampler = build_sampler(SamplerSettings(nats_url=nats_url, namespace=namespace))
    ingested = EventCollector(nats_url, namespace, ItemsIngested)
    rejected = EventCollector(nats_url, namespace, ItemsRejected)
    batches = EventCollector(nats_url, namespace, BatchCreated)
    async with ingested, rejected, batches, started(ingester), started(sampler):
        await _configure(nats_url, namespace, ingester, sampler)
        items = [*_items(10000), ItemIn(data={"text": 42}), ItemIn(data={"title": "no text"})]
        messages = submissions(items, "reviews", source="test")
        await publish_events(nats_url, namespace, *messages)
        first, second = sorted(await batches.wait_for(2, timeout=60), key=lambda b: b.round)
        assert (first.round, second.round) == (1, 2)  # max_model_lag 1: two without a model
        assert len(first.tasks) == 50
        assert sum(t.is_gold for t in first.tasks) == 5
        assert all(t.gold_label is not None for t in first.tasks if t.is_gold)
        assert first.strategy == "diversity"  # cold start: no model yet

        def n_items() -> int:
            return sum(len(e.items) for e in ingested.events)

        deadline = time.monotonic() + 60
        while n_items() < 10_000:
            assert time.monotonic() < deadline, n_items()
            await asyncio.sleep(0.1)
        assert n_items() == 10_000
        (rejection,) = await rejected.wait_for(1, timeout=10)
        assert sorted(r.reason.split(":")[0] for r in rejection.rejections) == [
            "missing_field",
            "wrong_type",
        ]
        # the same file again, as a new submission (past the duplicate window)
        again = [m.model_copy(update={"event_id": m.event_id + "-again"}) for m in messages]
        seen = len(ingested.events)
        await publish_events(nats_url, namespace, *again)
        deadline = time.monotonic() + 60
        while sum(e.duplicates for e in ingested.events[seen:]) < 10_000:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert n_items() == 10_000
        # batch 3 waits for what round 1 teaches: new items alone cut nothing more
        assert len(batches.events) == 2


def _round_outcomes(number: int) -> list[Any]:
    """What the trainer and QA would say after a round: no model yet, nobody flagged."""
    return [
        ModelTrained(
            project="reviews",
            model_version=f"m{number:04d}",
            dataset_version=f"v{number:04d}",
            round=number,
            promoted=False,
            metrics={},
            n_train=0,
            skipped="test",
        ),
        QAReport(
            project="reviews",
            batch_id=f"b{number}",
            round=number,
            n_items=50,
            n_annotations=60,
            consensus_method="majority",
        ),
    ]


def _completed(batch: BatchCreated) -> BatchCompleted:
    return BatchCompleted(
        project="reviews",
        batch_id=batch.batch_id,
        round=batch.round,
        n_tasks=len(batch.tasks),
        n_annotations=len(batch.tasks),
    )


async def test_a_stopped_sampler_neither_repeats_nor_loses_items(
    nats_url: str, namespace: str
) -> None:
    ingester = build_ingester(IngesterSettings(nats_url=nats_url, namespace=namespace))
    settings = SamplerSettings(nats_url=nats_url, namespace=namespace)
    batches = EventCollector(nats_url, namespace, BatchCreated)
    async with batches, started(ingester):
        sampler = build_sampler(settings)
        async with started(sampler):
            await _configure(nats_url, namespace, ingester, sampler)
            await publish_events(
                nats_url, namespace, *submissions(_items(400), "reviews", source="t")
            )
            await batches.wait_for(2, timeout=60)
        # the sampler is gone; round 1 finishes while it is down; a new one takes over
        first = next(b for b in batches.events if b.round == 1)
        await publish_events(nats_url, namespace, _completed(first), *_round_outcomes(1))
        async with started(build_sampler(settings)) as _:
            await batches.wait_for(3, timeout=60)
            unique = {b.batch_id: b for b in batches.events}
            assert sorted(b.round for b in unique.values()) == [1, 2, 3]
            handed = [t.item_id for b in unique.values() for t in b.tasks if not t.is_gold]
            assert len(handed) == len(set(handed)), "an item was handed out twice"
            assert len(handed) == 45 * len(unique)


async def test_budget_stops_sampling_once_and_a_raised_budget_resumes_it(
    nats_url: str, namespace: str
) -> None:
    from labelloop.events import BudgetExhausted

    small = {
        **PROJECT,
        "sampling": {
            "strategy": "random",
            "batch_size": 10,
            "max_open_tasks": 100,
            "max_model_lag": 1,
        },
        "quality": {"gold_fraction": 0.0, "overlap_fraction": 0.0},
        "budget": {"max_labels": 10},
    }
    ingester = build_ingester(IngesterSettings(nats_url=nats_url, namespace=namespace))
    sampler = build_sampler(SamplerSettings(nats_url=nats_url, namespace=namespace))
    batches = EventCollector(nats_url, namespace, BatchCreated)
    spent = EventCollector(nats_url, namespace, BudgetExhausted)
    async with started(ingester), started(sampler), batches, spent:
        await configure_project(nats_url, namespace, small)
        await publish_events(
            nats_url, namespace, *submissions(_items(60, 100), "reviews", source="t")
        )
        [first] = await batches.wait_for(1, timeout=30)
        assert len(first.tasks) == 10
        [stop] = await spent.wait_for(1, timeout=30)
        assert stop.labels_used == 10
        # another trigger while spent: the same event again, dropped as a duplicate
        await publish_events(nats_url, namespace, _completed(first))
        await configure_project(nats_url, namespace, {**small, "budget": {"max_labels": 20}})
        second = sorted(await batches.wait_for(2, timeout=30), key=lambda b: b.round)[1]
        assert second.round == 2
        assert len(second.tasks) == 10
        assert not {t.item_id for t in second.tasks} & {t.item_id for t in first.tasks}
        assert len(spent.events) == 1
