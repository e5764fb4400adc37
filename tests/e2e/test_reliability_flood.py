"""Flood: many small items submitted as fast as the client can (pipelined ``publish_async`` of
``ItemsSubmitted`` messages of 500 items) to the ingester process, with the sampler running.

Shows the ingester's memory stays bounded (peak RSS), every item is accounted for exactly
(submitted = ingested + rejected + duplicates, with duplicates and invalid items planted), each
stored once in the catalog, and the sampler keeps open tasks under ``max_open_tasks``; and the
same exact counts when the ingester is killed with SIGKILL mid-flood, restarted, and a second
replica joins (redelivered messages whose items were claimed, stored or announced before the
kill, racing replicas). ``LABELLOOP_FLOOD_ITEMS`` sets the size (20,000 by default; ``make
soak`` runs 1,000,000).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest
from reliability_support import Cluster, connect, consumer_state, events_of, metric_value, poll

from labelloop.catalog import Catalog, chunk_name, decode_chunk
from labelloop.client import BusClient
from labelloop.events import (
    BatchCreated,
    ItemsIngested,
    ItemsRejected,
    ItemsSubmitted,
    deterministic_id,
)
from labelloop.project import parse_project
from labelloop.provisioning import provision
from labelloop.stores import NatsKeyValue

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(3 * 3600)]

ITEMS = int(os.environ.get("LABELLOOP_FLOOD_ITEMS", "20000"))
PER_MESSAGE = 500
DUPLICATE_EVERY = 50  # 2 %: the text of an earlier item, in another message or the same one
INVALID_EVERY = 97  # ~1 %: no ``text`` field, or a text over the field's max_length
MAX_OPEN_TASKS = 120


def _project() -> Any:
    return parse_project(
        {
            "name": "flood",
            "task_type": "text_classification",
            "labels": {"classes": ["a", "b", "c"]},
            "data_fields": [{"name": "text", "kind": "text", "max_length": 200}],
            "sampling": {"strategy": "random", "batch_size": 50, "max_open_tasks": MAX_OPEN_TASKS},
        }
    )


def _item(i: int) -> dict[str, Any]:
    if i % INVALID_EVERY == INVALID_EVERY - 1:
        if i % 2:
            return {"data": {"body": f"no text field {i}"}}
        return {"data": {"text": "x" * 300}}
    if i % DUPLICATE_EVERY == DUPLICATE_EVERY - 1:
        i -= 7  # the same content as an item a few places back (it may be invalid itself)
        if i % INVALID_EVERY == INVALID_EVERY - 1:
            i -= 1
    return {"data": {"text": f"flood item {i}: a short review of product {i % 977}"}}


def _expected(n: int) -> tuple[int, int, int]:
    """(unique valid, rejected, duplicates) of the first ``n`` items, as planted."""
    seen: set[str] = set()
    unique = rejected = duplicates = 0
    for i in range(n):
        item = _item(i)
        text = item["data"].get("text")
        if text is None or len(text) > 200:
            rejected += 1
        elif text in seen:
            duplicates += 1
        else:
            seen.add(text)
            unique += 1
    return unique, rejected, duplicates


class _RssSampler:
    """Peak resident memory of one process (and its children), sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self._proc = psutil.Process(pid)
        self._interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = self._proc.memory_info().rss + sum(
                    c.memory_info().rss for c in self._proc.children(recursive=True)
                )
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            self._stop.wait(self._interval)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def _flood(bus: BusClient, n: int) -> float:
    """Publish ``n`` items in pipelined messages; seconds until the server acknowledged all."""
    ns, js = bus.ns, bus.js
    subject = f"{ns.prefix}.items.submitted.flood"
    stream = ns.stream_name(ns.stream_for(ItemsIngested))
    started = time.monotonic()
    now = "2025-01-06T09:00:00+00:00"
    futures = []
    for start in range(0, n, PER_MESSAGE):
        event_id = deterministic_id("flood", ns.prefix, start)
        body = {
            "event_id": event_id,
            "occurred_at": now,
            "project": "flood",
            "source": "flood-test",
            "items": [_item(i) for i in range(start, min(start + PER_MESSAGE, n))],
        }
        futures.append(
            await js.publish_async(
                subject,
                json.dumps(body).encode(),
                stream=stream,
                headers={"Nats-Msg-Id": event_id},
                wait_stall=60,
            )
        )
    acks = await asyncio.gather(*futures)
    assert not any(a.duplicate for a in acks)
    return time.monotonic() - started


async def _accounted(bus: BusClient) -> tuple[int, int, int, int]:
    """(distinct ingested, ingested rows, rejected, duplicates) as the bus holds them now."""
    ingested = await events_of(bus.nc, bus.ns, ItemsIngested)
    rejected = await events_of(bus.nc, bus.ns, ItemsRejected)
    ids = [i.item_id for e in ingested for i in e.items]
    return (
        len(set(ids)),
        len(ids),
        sum(len(r.rejections) for r in rejected),
        sum(e.duplicates for e in ingested),
    )


async def _stored_once(bus: BusClient) -> tuple[int, int]:
    """(distinct items, item rows) in the project's catalog chunks."""
    kv = NatsKeyValue(await bus.js.key_value(bus.ns.kv_bucket("state")))
    blobs = await bus.blobs()
    ids = []
    for chunk_id in await Catalog(kv, blobs).chunk_ids("flood"):
        raw = await blobs.get(chunk_name("flood", chunk_id))
        assert raw is not None, f"chunk {chunk_id} indexed but not stored"
        ids += [i.item_id for i in decode_chunk(raw).items]
    return len(set(ids)), len(ids)


async def _kill_mid_flood(cluster: Cluster, bus: BusClient) -> dict[str, int]:
    """kill -9 the ingester once it has finished some messages and holds others, then start it
    again and a second replica beside it."""

    async def mid_flood() -> dict[str, int] | None:
        state = await consumer_state(bus.nc, bus.ns, "ingester", ItemsSubmitted)
        return state if state["delivered"] > 16 and state["ack_pending"] > 0 else None

    state = await poll(mid_flood, timeout=60, interval=0.005, what="the ingester mid-flood")
    cluster.kill("ingester")
    cluster.run("ingester", replica=1)
    await cluster.restart("ingester")
    return state


@pytest.mark.parametrize("kill", [False, True], ids=["calm", "killed"])
def test_reliability_flood_of_items_bounded_memory_and_exact_counts(
    tmp_path: Path, record_property: Any, kill: bool
) -> None:
    n = ITEMS
    unique, invalid, duplicates = _expected(n)
    namespace = f"flood{uuid.uuid4().hex[:8]}"
    # a 1M-item flood may take a while to drain; scale the patience with the size
    patience = 120 + n / 250
    # killed: the messages the dead process held come back after the ack wait
    env = {"LABELLOOP_ACK_WAIT_SECONDS": "5" if kill else "60"}
    with Cluster(tmp_path, namespace, env) as cluster:
        cluster.run("ingester")
        cluster.run("sampler")
        asyncio.run(cluster.wait_ready())
        ingester = cluster.process("ingester")

        async def scenario() -> dict[str, Any]:
            nc = await connect(cluster.nats.url)
            try:
                js = nc.jetstream(publish_async_max_pending=256)
                await provision(js, cluster.ns)
                bus = BusClient(nc, js, cluster.ns)
                await bus.apply_project(_project())
                started = time.monotonic()
                killed_at: dict[str, int] = {}
                with _RssSampler(ingester.process.pid) as rss:
                    flood = asyncio.ensure_future(_flood(bus, n))
                    if kill:
                        killed_at = await _kill_mid_flood(cluster, bus)
                    publish_seconds = await flood
                    counts = await poll(
                        lambda: _done(bus, n), timeout=patience, interval=2, what="all accounted"
                    )
                    drained = time.monotonic() - started
                batches = await events_of(nc, cluster.ns, BatchCreated)
                return {
                    "counts": counts,
                    "stored": await _stored_once(bus),
                    "publish_seconds": publish_seconds,
                    "drain_seconds": drained,
                    "peak_rss": rss.peak,
                    "open_tasks": sum(len(b.tasks) for b in batches),
                    "batches": len(batches),
                    "metrics": None if kill else ingester.metrics(),
                    "killed_at": killed_at,
                    "redeliveries": sum(cluster.total_redeliveries().values()),
                }
            finally:
                await nc.close()

        async def _done(bus: BusClient, n: int) -> tuple[int, int, int, int] | None:
            if not kill:
                # the ingester's counters are cheap to poll; the bus is read once they add up
                # (a killed ingester's counters die with it: then the bus alone tells)
                text = await asyncio.to_thread(ingester.metrics)
                seen = sum(
                    metric_value(text, name)
                    for name in (
                        "labelloop_ingester_items_ingested_total",
                        "labelloop_ingester_items_rejected_total",
                        "labelloop_ingester_duplicates_total",
                    )
                )
                if seen < n:
                    return None
            counts = await _accounted(bus)
            _, rows, rejected, dups = counts
            return counts if rows + rejected + dups >= n else None

        out = asyncio.run(scenario())

    distinct, rows, rejected, dups = out["counts"]
    peak_mb = out["peak_rss"] / 2**20
    metrics = out["metrics"]
    print(
        f"\nflood{' (ingester killed mid-flood: ' + str(out['killed_at']) + ')' if kill else ''}:"
        f"{' ' + str(out['redeliveries']) + ' messages redelivered;' if kill else ''}"
        f" {n} items ({n // PER_MESSAGE} messages) published in "
        f"{out['publish_seconds']:.1f} s, all accounted for after {out['drain_seconds']:.1f} s "
        f"({n / out['drain_seconds']:.0f} items/s); ingested {distinct}, rejected {rejected}, "
        f"duplicates {dups}; in the catalog {out['stored'][1]} rows of {out['stored'][0]} items;"
        f" ingester peak RSS {peak_mb:.0f} MB; open tasks "
        f"{out['open_tasks']} in {out['batches']} batches (limit {MAX_OPEN_TASKS})"
    )
    record_property("items", n)
    record_property("peak_rss_mb", round(peak_mb))
    record_property("drain_seconds", round(out["drain_seconds"], 1))

    assert rows == distinct, "an item ingested twice"
    assert distinct + rejected + dups == n, "submitted = ingested + rejected + duplicates"
    assert (distinct, rejected, dups) == (unique, invalid, duplicates), "as planted"
    assert out["stored"] == (distinct, distinct), "each item in the catalog once"
    assert out["open_tasks"] <= MAX_OPEN_TASKS
    if kill:
        # what the dead process held came back, to the restarted one or the new replica
        assert out["redeliveries"] > 0
        return
    assert metric_value(metrics, "labelloop_ingester_items_ingested_total") == distinct
    assert metric_value(metrics, "labelloop_ingester_items_rejected_total") == rejected
    assert metric_value(metrics, "labelloop_ingester_duplicates_total") == dups
    # bounded: a flat allowance for the interpreter and libraries, plus a little per item
    assert peak_mb < 400 + 1100 * n / 1_000_000, f"ingester peak RSS {peak_mb:.0f} MB"
