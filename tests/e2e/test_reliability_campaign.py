"""Chaos, whole campaign: all six services run a short campaign while kill -9 hits each of them once
(each restarted at once). The campaign is reactive, so two runs differ; what must hold are the
invariants: every item ingested once, no item in two open batches, each batch completed once,
every labeled item exactly once in the final dataset, no dead letters, and the campaign finishes.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from reliability_support import (
    Cluster,
    connect,
    dead_letters,
    events_of,
    final_export,
    kill_when_busy,
    poll,
    read_dataset,
)

from labelloop.events import (
    AnnotationsSubmitted,
    BatchCompleted,
    BatchCreated,
    DatasetExported,
    Event,
    ItemsIngested,
    ItemsSubmitted,
    LabelsReady,
    QAReport,
)
from labelloop_console.campaign import CampaignView, CampaignWatcher
from labelloop_console.demo import DemoOptions, digits_items, load_digits_data, run_campaign
from labelloop_console.processes import SERVICES

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

BUDGET = 160
Trigger = Callable[[CampaignView], bool]

# (service, the consumers whose in-flight work the kill should hit, when to strike)
PLAN: list[tuple[str, list[type[Event]], Trigger]] = [
    ("ingester", [ItemsSubmitted], lambda v: True),
    ("sampler", [ItemsIngested, BatchCompleted, AnnotationsSubmitted], lambda v: v.items_ingested),
    ("annotation-bridge", [BatchCreated], lambda v: len(v.batches) >= 1),
    ("qa-scorer", [AnnotationsSubmitted, BatchCompleted], lambda v: len(v.batches) >= 2),
    ("exporter", [LabelsReady, QAReport], lambda v: len(v.reports) >= 2),
    ("trainer", [DatasetExported], lambda v: len(v.datasets) >= 1),
]


async def _raw_batches(nc: Any, ns: Any) -> list[tuple[str, dict[str, Any]]]:
    """The BATCHES stream in stream order: (relative subject, payload)."""
    js = nc.jetstream()
    stream = ns.stream_name(ns.stream_for(BatchCreated))
    total = (await js.stream_info(stream)).state.messages
    sub = await js.pull_subscribe(
        f"{ns.prefix}.batches.>",
        stream=stream,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE),
    )
    out: list[tuple[str, dict[str, Any]]] = []
    try:
        while len(out) < total:
            for msg in await sub.fetch(256, timeout=5):
                out.append((ns.relative(msg.subject), json.loads(msg.data)))
    finally:
        await sub.unsubscribe()
    return out


async def _chaos(
    cluster: Cluster, project: str, kills: dict[str, bool], stop: asyncio.Event
) -> None:
    """Kill each service once, in campaign order, each as soon as its trigger holds."""
    nc = await connect(cluster.nats.url)
    watcher = CampaignWatcher(nc, cluster.ns, [project])
    await watcher.start()
    try:
        for service, events, trigger in PLAN:

            async def ready(trigger: Trigger = trigger) -> bool:
                return stop.is_set() or bool(trigger(watcher.view(project)))

            await poll(ready, timeout=240, interval=0.05, what=f"the moment to kill {service}")
            if stop.is_set():
                return
            kills[service] = await kill_when_busy(cluster, nc, service, events, timeout=20)
            await cluster.restart(service)
    finally:
        await watcher.stop()
        await nc.close()


def _check_batches(raw: list[tuple[str, dict[str, Any]]]) -> Counter[str]:
    """No item in two open labeling batches (gold is reused on purpose); completions counted."""
    open_items: dict[str, str] = {}
    open_batches: dict[str, list[str]] = {}
    completed: Counter[str] = Counter()
    for subject, body in raw:
        if subject == BatchCreated.SUBJECT and body["kind"] == "labeling":
            items = [t["item_id"] for t in body["tasks"] if not t["is_gold"]]
            for item in items:
                assert item not in open_items, (
                    f"{item} in batch {body['batch_id']} while batch {open_items[item]} is open"
                )
            open_batches[body["batch_id"]] = items
            for item in items:
                open_items[item] = body["batch_id"]
        elif subject == BatchCompleted.SUBJECT:
            completed[body["batch_id"]] += 1
            for item in open_batches.pop(body["batch_id"], []):
                open_items.pop(item, None)
    return completed


def test_reliability_campaign_survives_a_kill_of_every_service(
    tmp_path: Path, record_property: Any
) -> None:
    started = time.monotonic()
    namespace = f"camp{uuid.uuid4().hex[:8]}"
    options = DemoOptions(
        budget=BUDGET,
        random_arm=False,
        runs_dir=tmp_path,
        timeout_seconds=300,
        stall_seconds=120,
        quiet=True,
    )
    env = {
        "LABELLOOP_EXPORTER_EXPORT_DIR": str(tmp_path / "run" / "exports"),
        "LABELLOOP_BRIDGE_BACKEND": "simulated",
        "LABELLOOP_BRIDGE_RECONCILE_INTERVAL_SECONDS": "5",
        "LABELLOOP_ACK_WAIT_SECONDS": os.environ.get("LABELLOOP_CHAOS_ACK_WAIT_SECONDS", "5"),
    }
    kills: dict[str, bool] = {}

    async def scenario(cluster: Cluster) -> dict[str, Any]:
        stop = asyncio.Event()
        chaos = asyncio.create_task(_chaos(cluster, "digits", kills, stop))
        try:
            summary = await run_campaign(options, cluster.nats.url, namespace, tmp_path / "run")
        finally:
            stop.set()
        await chaos
        return summary

    with Cluster(tmp_path / "run", namespace, env) as cluster:
        cluster.supervisor.start_all()
        asyncio.run(cluster.wait_ready())
        summary = asyncio.run(scenario(cluster))
        redeliveries = cluster.total_redeliveries()
        facts = asyncio.run(_facts(cluster))

    data = load_digits_data(options.seed, options.test_fraction)
    submitted = digits_items(data, options.n_gold, options.seed)
    ingested, dead, raw, labeled, rows = (
        facts["ingested"],
        facts["dead"],
        facts["raw"],
        facts["labeled"],
        facts["rows"],
    )
    seconds = time.monotonic() - started
    record_property("seconds", round(seconds, 1))
    record_property("kills_in_flight", kills)
    record_property("redeliveries", redeliveries)
    record_property("demo_dataset_missing_labels", facts["demo_missing"])
    print(
        f"\nchaos campaign: {seconds:.0f} s, labels {summary['labels_used']}, "
        f"batches {len(summary['batches'])}, kills in flight {kills}, "
        f"redeliveries {sum(redeliveries.values()):.0f} {redeliveries}; the demo's own last "
        f"dataset missed {facts['demo_missing']} labeled items"
    )

    assert set(kills) == set(SERVICES), f"not every service was killed: {kills}"
    assert summary["finished"], "the campaign finished despite the kills"
    assert not dead, [(d.consumer, d.kind, d.reason[:200]) for d in dead]

    counts = Counter(ingested)
    assert all(n == 1 for n in counts.values()), "an item ingested twice"
    assert len(counts) + facts["duplicates"] == len(submitted), "every submitted item accounted for"

    completed = _check_batches(raw)
    created = {body["batch_id"] for subject, body in raw if subject == BatchCreated.SUBJECT}
    assert set(completed) == created, "every batch completed"
    assert all(n == 1 for n in completed.values()), "a batch completed twice"

    assert len(rows) == len({r["item_id"] for r in rows}), "an item twice in the dataset"
    assert {r["item_id"] for r in rows} == labeled, "labeled items == dataset items"
    assert sum(redeliveries.values()) > 0


async def _facts(cluster: Cluster) -> dict[str, Any]:
    """What the bus holds after the campaign, and a final export once the exporter caught up."""
    nc = await connect(cluster.nats.url)
    try:
        ns = cluster.ns
        ingested = await events_of(nc, ns, ItemsIngested)
        dead = await dead_letters(nc, ns)
        raw = await _raw_batches(nc, ns)
        # the demo's own last export can miss labels still held by a killed exporter (see the
        # report); the services' guarantee is checked on an export asked for once it caught up
        demo_last = max(await events_of(nc, ns, DatasetExported), key=lambda d: d.version)
        exported, labeled = await final_export(nc, ns, "digits")
        return {
            "ingested": [i.item_id for e in ingested for i in e.items],
            "duplicates": sum(e.duplicates for e in ingested),
            "dead": dead,
            "raw": raw,
            "labeled": labeled,
            "rows": read_dataset(exported.path),
            "demo_missing": len(labeled - {r["item_id"] for r in read_dataset(demo_last.path)}),
        }
    finally:
        await nc.close()
