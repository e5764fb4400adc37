"""Bus throughput: items per second through the ingester, beside raw nats-py JetStream rates.

    .venv/bin/python bench/bench_throughput.py [--quick]

Starts an embedded nats-server and ``labelloop-service ingester`` as subprocesses, applies a
text project, submits 100k unique text items in ``ItemsSubmitted`` messages of 500 (published
pipelined, the bodies written as JSON directly: a lean producer) and waits until every message
is answered (``SubmissionAnswered``, which the ingester publishes last: items validated,
content-hashed, claimed, featurised, stored in the catalog and announced). Timed from the first
publish to the last answer, after a warm-up message. Three measurements:

* one ingester replica, 100k new items;
* the same 100k items submitted again to it (new messages): every item a duplicate, which is
  deduplication alone (no features, no catalog writes);
* in a namespace of its own, two replicas sharing the consumer (what a second container does),
  100k new items: the replicas race for the same claim log.

Exactly once, checked after each run (not timed): every ``ItemsIngested`` on the stream read
back, every catalog chunk read back and decoded, every answer added up; each item id computed
locally appears once in the announcements and once in the catalog, none missing, none extra,
none rejected; the re-ingest announces nothing and answers every item a duplicate. Also
counted: the claim log's appends against the messages (the first version made one KV ``create``
per item).

Anchors measured in the same run on the same server: nats-py ``publish_async`` (pipelined
JetStream publishes with acks: measured before and after the ingester runs, the machine being
shared) and KV ``create`` with 256 in flight, in operations per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from datetime import UTC, datetime
from typing import Any

import nats
from nats.js.api import DeliverPolicy

from bus import namespace, nats_server, service_process, text_project
from harness import row, standalone
from labelloop.catalog import Catalog, chunk_name, decode_chunk
from labelloop.client import BusClient, connect
from labelloop.events import (
    ItemsIngested,
    ItemsSubmitted,
    SubmissionAnswered,
    deterministic_id,
)
from labelloop.payloads import resolve
from labelloop.project import parse_project
from labelloop.settings import ServiceSettings
from labelloop.stores import NatsKeyValue
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


async def _submit(bus: BusClient, texts: list[str], tag: str) -> list[str]:
    """Publish ``texts`` as ``ItemsSubmitted`` messages of ``PER_MESSAGE`` items, pipelined
    (``publish_async``, as the raw anchor does), each body written as JSON directly: a lean
    producer, so that the machine's two cores go to the ingester. Their event ids."""
    js, ns = bus.js, bus.ns
    subject = ns.subject(ItemsSubmitted, PROJECT)
    stream = ns.stream_name(ns.stream_for(ItemsSubmitted))
    now = datetime.now(UTC).isoformat()
    ids, acks = [], []
    for k in range(0, len(texts), PER_MESSAGE):
        event_id = deterministic_id("bench-submit", tag, k)
        body = {
            "event_id": event_id,
            "occurred_at": now,
            "project": PROJECT,
            "source": "bench",
            "items": [{"data": {"text": t}} for t in texts[k : k + PER_MESSAGE]],
        }
        acks.append(
            await js.publish_async(
                subject, json.dumps(body).encode(), stream=stream, headers={"Nats-Msg-Id": event_id}
            )
        )
        ids.append(event_id)
    for ack in await asyncio.gather(*acks):
        if ack.duplicate:
            raise RuntimeError(f"submission {ack.seq} dropped as a duplicate")
    return ids


class _Answers:
    """The ingester's answers as they come (small messages: counting them costs the benchmark
    next to nothing while the ingester works)."""

    def __init__(self) -> None:
        self.by_submission: dict[str, SubmissionAnswered] = {}
        self.expected: set[str] = set()
        self.done = asyncio.Event()

    async def on_message(self, msg: Any) -> None:
        answer = SubmissionAnswered.model_validate_json(msg.data)
        self.by_submission[answer.submission_id] = answer
        if self.expected and self.expected <= self.by_submission.keys():
            self.done.set()

    async def wait(self, ids: list[str], timeout: float) -> None:
        self.expected = set(ids)
        if self.expected <= self.by_submission.keys():
            return
        self.done.clear()
        await asyncio.wait_for(self.done.wait(), timeout=timeout)

    def totals(self, ids: list[str]) -> dict[str, int]:
        answers = [self.by_submission[i] for i in ids]
        return {
            "answered_ingested": sum(a.ingested for a in answers),
            "answered_duplicates": sum(a.duplicates for a in answers),
            "answered_rejected": sum(a.rejected for a in answers),
        }


async def _announced(bus: BusClient, submissions: set[str]) -> list[str]:
    """Item ids of every ``ItemsIngested`` of ``submissions`` the stream holds, repeats kept."""
    js, ns = bus.js, bus.ns
    stream = ns.stream_name(ns.stream_for(ItemsIngested))
    info = await js.stream_info(stream, subjects_filter=ns.subject(ItemsIngested))
    total = sum((info.state.subjects or {}).values())
    blobs = await bus.blobs()
    ids: list[str] = []
    sub = await js.subscribe(
        ns.subject(ItemsIngested),
        stream=stream,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
    )
    try:
        for _ in range(total):
            msg = await sub.next_msg(timeout=30)
            event = ItemsIngested.model_validate_json(await resolve(msg.data, msg.headers, blobs))
            if event.submission_id in submissions:
                ids += [i.item_id for i in event.items]
    finally:
        await sub.unsubscribe()
    return ids


async def _catalogued(bus: BusClient, submissions: set[str]) -> list[str]:
    """Item ids of every catalog chunk of ``submissions``, decoded from the object store."""
    kv = NatsKeyValue(await bus.js.key_value(bus.ns.kv_bucket("state")))
    blobs = await bus.blobs()
    ids: list[str] = []
    for chunk_id in await Catalog(kv, blobs).chunk_ids(PROJECT):
        if chunk_id.rsplit("-", 1)[0] not in submissions:
            continue
        raw = await blobs.get(chunk_name(PROJECT, chunk_id))
        if raw is None:
            raise RuntimeError(f"catalog chunk {chunk_id} indexed but not stored")
        ids += [i.item_id for i in decode_chunk(raw).items]
    return ids


async def _claim_appends(bus: BusClient) -> int:
    kv = NatsKeyValue(await bus.js.key_value(bus.ns.kv_bucket("state")))
    return len(await kv.keys(f"ingester.{PROJECT}.claims."))


def _once(ids: list[str], expected: set[str]) -> dict[str, Any]:
    distinct = set(ids)
    return {
        "rows": len(ids),
        "distinct": len(distinct),
        "repeated": len(ids) - len(distinct),
        "missing": len(expected - distinct),
        "extra": len(distinct - expected),
    }


async def ingest(
    url: str, n_items: int, timeout: float, *, replicas: int = 1, again: bool = False
) -> dict[str, Any]:
    """``n_items`` new items through ``replicas`` ingesters; with ``again``, then the same
    items a second time (every one a duplicate). Timed from the first publish to the last
    answer; checked exactly once afterwards."""
    ns = namespace("benchin")
    settings = ServiceSettings(nats_url=url, namespace=ns)
    texts = _texts(n_items)
    expected = {item_id({"text": t}) for t in texts}
    out: dict[str, Any] = {"replicas": replicas, "n_items": n_items, "per_message": PER_MESSAGE}
    with contextlib.ExitStack() as processes:
        async with connect(settings) as bus:
            await bus.apply_project(parse_project(text_project(PROJECT, ["pos", "neg"])))
            answers = _Answers()
            await bus.nc.subscribe(bus.ns.subject(SubmissionAnswered), cb=answers.on_message)
            for _ in range(replicas):
                processes.enter_context(service_process("ingester", url, ns))
            # the first submission pays each replica's first message: timed on its own, then the
            # measured run starts warm
            start = time.perf_counter()
            warm = await _submit(bus, [f"warm-up {t}" for t in _texts(PER_MESSAGE)], f"warm{ns}")
            await answers.wait(warm, timeout)
            out["first_submission_seconds"] = time.perf_counter() - start

            start = time.perf_counter()
            first = await _submit(bus, texts, f"first{ns}")
            out["submit_seconds"] = time.perf_counter() - start
            await answers.wait(first, timeout)
            out["seconds"] = time.perf_counter() - start
            out["items_per_second"] = n_items / out["seconds"]
            # the warm-up's message and the measured ones: every one of them had new items
            out["claim_appends"] = await _claim_appends(bus)

            if again:
                start = time.perf_counter()
                second = await _submit(bus, texts, f"again{ns}")
                await answers.wait(second, timeout)
                out["again_seconds"] = time.perf_counter() - start
                out["again_items_per_second"] = n_items / out["again_seconds"]

            out["messages"] = len(first)
            out.update(answers.totals(first))
            out["announced"] = _once(await _announced(bus, set(first)), expected)
            out["catalogued"] = _once(await _catalogued(bus, set(first)), expected)
            if again:
                out["again_claim_appends"] = await _claim_appends(bus) - out["claim_appends"]
                out["again_answers"] = answers.totals(second)
                out["again_announced"] = len(await _announced(bus, set(second)))
                out["again_catalogued"] = len(await _catalogued(bus, set(second)))
            out["ids_digest"] = hashlib.sha256("".join(sorted(expected)).encode()).hexdigest()[:16]
    out["exactly_once"] = _exactly_once(out)
    return out


def _exactly_once(out: dict[str, Any]) -> bool:
    n = out["n_items"]
    clean = {"rows": n, "distinct": n, "repeated": 0, "missing": 0, "extra": 0}
    ok = (
        out["announced"] == clean
        and out["catalogued"] == clean
        and out["answered_ingested"] == n
        and out["answered_duplicates"] == 0
        and out["answered_rejected"] == 0
    )
    if "again_answers" in out:
        ok = ok and out["again_answers"] == {
            "answered_ingested": 0,
            "answered_duplicates": n,
            "answered_rejected": 0,
        }
        ok = ok and out["again_announced"] == 0 and out["again_catalogued"] == 0
        ok = ok and out["again_claim_appends"] == 0
    return bool(ok)


async def _run(quick: bool) -> dict[str, Any]:
    n_items = 10_000 if quick else 100_000
    n_raw = 20_000 if quick else 100_000
    timeout = 120 if quick else 600
    with nats_server() as server:
        publish_before = await raw_publish_async(server.url, n_raw)
        kv_rate = await raw_kv_create(server.url, 5_000 if quick else 20_000)
        one = await ingest(server.url, n_items, timeout, again=True)
        two = await ingest(server.url, n_items, timeout, replicas=2)
        publish_after = await raw_publish_async(server.url, n_raw)
    return {
        "ingester": one,
        "two_replicas": two,
        "raw_publish_async_msgs_per_second": publish_before,
        "raw_publish_async_after_msgs_per_second": publish_after,
        "raw_kv_create_ops_per_second": kv_rate,
    }


def run(quick: bool) -> dict[str, Any]:
    out = asyncio.run(_run(quick))
    one, two = out["ingester"], out["two_replicas"]
    before = out["raw_publish_async_msgs_per_second"]
    after = out["raw_publish_async_after_msgs_per_second"]
    kv = out["raw_kv_create_ops_per_second"]
    anchor = f"publish_async {before:,.0f} / {after:,.0f} msg/s"

    def of_raw(rate: float) -> str:
        return f"{rate / before:.2f} / {rate / after:.2f} of raw"

    out["rows"] = [
        row(
            f"ingester: {one['n_items'] // 1000}k new items end to end, 1 replica",
            f"{one['items_per_second']:,.0f} items/s ({one['seconds']:.1f} s)",
            anchor,
            of_raw(one["items_per_second"]),
            one["exactly_once"],
        ),
        row(
            f"ingester: {two['n_items'] // 1000}k new items end to end, 2 replicas",
            f"{two['items_per_second']:,.0f} items/s ({two['seconds']:.1f} s)",
            anchor,
            of_raw(two["items_per_second"]),
            two["exactly_once"],
        ),
        row(
            f"ingester: the same {one['n_items'] // 1000}k again (all duplicates), 1 replica",
            f"{one['again_items_per_second']:,.0f} items/s",
            f"KV create {kv:,.0f} ops/s",
            f"{one['again_items_per_second'] / kv:.2f} of raw KV",
            one["exactly_once"],
        ),
        row(
            "claim log appends (KV create) per message of new items",
            f"{one['claim_appends'] / (one['messages'] + 1):.2f} (1 replica)",
            f"first version: {PER_MESSAGE} (one per item)",
            f"{one['claim_appends']} for {one['messages'] + 1} messages;"
            f" 2 replicas: {two['claim_appends']} for {two['messages'] + 1}",
            None,
        ),
        row(
            f"ingester: first {PER_MESSAGE}-item submission (warm-up)",
            f"{one['first_submission_seconds']:.2f} s",
            "",
            "",
            None,
        ),
    ]
    return out


if __name__ == "__main__":
    standalone(NAME, run)
