"""Bus throughput: items per second through the ingester, beside raw nats-py JetStream rates.

    .venv/bin/python bench/bench_throughput.py [--quick]

Starts an embedded nats-server and ``labelloop run ingester`` as a subprocess, applies a text
project, submits 100k unique text items in ``ItemsSubmitted`` messages of 500 and waits until
``ItemsIngested`` has announced every one of them (validated, content-hashed, claimed in KV,
featurised, features stored in the object store, announced). Checked: every submitted item is
ingested exactly once under the id computed locally, nothing rejected.

Anchors measured in the same run on the same server: nats-py ``publish_async`` (pipelined
JetStream publishes with acks) and KV ``create`` with 256 in flight (what the ingester does once
per item to deduplicate) in operations per second.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any

import nats

from bus import namespace, nats_server, service_process, text_project
from harness import row, standalone
from labelloop.client import connect
from labelloop.events import ItemIn, ItemsIngested, ItemsRejected, ItemsSubmitted, deterministic_id
from labelloop.project import parse_project
from labelloop.settings import ServiceSettings
from labelloop_ingester.domain.identity import item_id

NAME = "throughput"
PROJECT = "bench-ingest"
PER_MESSAGE = 500
WORDS = ("good", "bad", "plot", "actor", "scene", "music", "slow", "great", "boring", "fun")


def _texts(n: int) -> list[str]:
    return [
        f"review {i}: " + " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(12))
        for i in range(n)
    ]


async def raw_publish_async(url: str, n: int) -> float:
    """Messages per second of pipelined JetStream publishes (nats-py ``publish_async``)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="BENCH_RAW", subjects=["benchraw.>"])
        payload = b"x" * 200
        start = time.perf_counter()
        for i in range(n):
            await js.publish_async(f"benchraw.{i % 8}", payload)
        await js.publish_async_completed()
        elapsed = time.perf_counter() - start
        info = await js.stream_info("BENCH_RAW")
        if info.state.messages != n:
            raise RuntimeError(f"raw stream holds {info.state.messages} of {n} messages")
        await js.delete_stream("BENCH_RAW")
        return n / elapsed
    finally:
        await nc.close()


async def raw_kv_create(url: str, n: int, concurrency: int = 256) -> float:
    """KV ``create`` (put-if-absent) operations per second with ``concurrency`` in flight."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        kv = await js.create_key_value(bucket="bench_raw_kv")
        limit = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with limit:
                await kv.create(f"k.{i}", b"owner")

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        elapsed = time.perf_counter() - start
        await js.delete_key_value("bench_raw_kv")
        return n / elapsed
    finally:
        await nc.close()


async def ingest(url: str, n_items: int, timeout: float) -> dict[str, Any]:
    ns = namespace("benchin")
    settings = ServiceSettings(nats_url=url, namespace=ns)
    texts = _texts(n_items)
    expected = {item_id({"text": t}) for t in texts}
    async with connect(settings) as bus:
        await bus.apply_project(parse_project(text_project(PROJECT, ["pos", "neg"])))
        seen: set[str] = set()
        counts = {"ingested": 0, "rejected": 0, "messages": 0, "duplicates": 0}
        done = asyncio.Event()
        warm = asyncio.Event()
        warmup_texts = [f"warm-up {t}" for t in _texts(PER_MESSAGE)]
        warmup_ids = {item_id({"text": t}) for t in warmup_texts}

        async def on_ingested(msg: Any) -> None:
            body = json.loads(msg.data)
            if body["submission_id"].startswith("warmup"):
                warm.set()
                return
            counts["messages"] += 1
            counts["duplicates"] += body.get("duplicates", 0)
            for item in body["items"]:
                counts["ingested"] += 1
                seen.add(item["item_id"])
            if len(seen) >= n_items:
                done.set()

        async def on_rejected(msg: Any) -> None:
            counts["rejected"] += len(json.loads(msg.data)["rejections"])

        await bus.nc.subscribe(bus.ns.subject(ItemsIngested), cb=on_ingested)
        await bus.nc.subscribe(bus.ns.subject(ItemsRejected), cb=on_rejected)
        with service_process("ingester", url, ns):
            # the first submission pays the service's cold start (imports, KV/object-store
            # handles): timed on its own, then the measured run starts warm
            start = time.perf_counter()
            await bus.publish(
                ItemsSubmitted(
                    event_id=f"warmup{ns}",
                    project=PROJECT,
                    items=[ItemIn(data={"text": t}) for t in warmup_texts],
                )
            )
            await asyncio.wait_for(warm.wait(), timeout=timeout)
            cold = time.perf_counter() - start
            start = time.perf_counter()
            for k in range(0, n_items, PER_MESSAGE):
                chunk = texts[k : k + PER_MESSAGE]
                await bus.publish(
                    ItemsSubmitted(
                        event_id=deterministic_id("bench-submit", ns, k),
                        project=PROJECT,
                        items=[ItemIn(data={"text": t}) for t in chunk],
                    )
                )
            submitted = time.perf_counter() - start
            try:
                await asyncio.wait_for(done.wait(), timeout=timeout)
            finally:
                elapsed = time.perf_counter() - start
    return {
        "n_items": n_items,
        "items_per_message": PER_MESSAGE,
        "seconds": elapsed,
        "first_submission_cold_seconds": cold,
        "submit_seconds": submitted,
        "items_per_second": n_items / elapsed,
        "ingested_messages": counts["messages"],
        "ingested_items": counts["ingested"],
        "duplicates": counts["duplicates"],
        "rejected": counts["rejected"],
        "ids_equal_expected": seen == expected and not (seen & warmup_ids),
        "ids_digest": hashlib.sha256("".join(sorted(seen)).encode()).hexdigest()[:16],
    }


async def _run(quick: bool) -> dict[str, Any]:
    n_items = 10_000 if quick else 100_000
    with nats_server() as server:
        publish_rate = await raw_publish_async(server.url, 20_000 if quick else 100_000)
        kv_rate = await raw_kv_create(server.url, 5_000 if quick else 20_000)
        result = await ingest(server.url, n_items, timeout=120 if quick else 600)
    return {
        "ingester": result,
        "raw_publish_async_msgs_per_second": publish_rate,
        "raw_kv_create_ops_per_second": kv_rate,
    }


def run(quick: bool) -> dict[str, Any]:
    out = asyncio.run(_run(quick))
    ing = out["ingester"]
    ok = (
        ing["ids_equal_expected"]
        and ing["ingested_items"] == ing["n_items"]
        and ing["rejected"] == 0
    )
    out["rows"] = [
        row(
            f"ingester: {ing['n_items'] // 1000}k items end to end (warm)",
            f"{ing['items_per_second']:,.0f} items/s ({ing['seconds']:.1f} s)",
            f"publish_async {out['raw_publish_async_msgs_per_second']:,.0f} msg/s",
            f"{ing['items_per_second'] / out['raw_publish_async_msgs_per_second']:.2f} of raw",
            ok,
        ),
        row(
            f"ingester: first {PER_MESSAGE}-item submission (cold start)",
            f"{ing['first_submission_cold_seconds']:.2f} s",
            "",
            "",
            None,
        ),
        row(
            "ingester vs raw KV create (1 per item)",
            f"{ing['items_per_second']:,.0f} items/s",
            f"KV create {out['raw_kv_create_ops_per_second']:,.0f} ops/s",
            f"{ing['items_per_second'] / out['raw_kv_create_ops_per_second']:.2f} of raw",
            None,
        ),
    ]
    return out


if __name__ == "__main__":
    standalone(NAME, run)
