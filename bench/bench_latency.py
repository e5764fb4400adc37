"""Latency through the real qa-scorer: annotations submitted until the batch's labels are ready.

    .venv/bin/python bench/bench_latency.py [--quick]

Starts an embedded nats-server and ``labelloop-service qa-scorer`` as a subprocess. For each of
many small batches (5 items x 3 annotators, one batch in flight at a time, one round each) it
does what the annotation-bridge does when a batch's last annotation comes in: with the clock
started, it publishes ``AnnotationsSubmitted`` and the ``BatchCompleted`` that carries the batch's
tasks and annotations, and stops the clock when the round's ``LabelsReady`` arrives. p50 and p99
over the batches.
Checked: every released label equals the (unanimous) simulated answer. Anchor in the same run:
the bare JetStream round trip (acknowledged publish, then delivery to a subscriber) on the
same server, the floor any service on this bus pays.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

import nats
import numpy as np

from bus import namespace, nats_server, service_process, text_project
from harness import row, standalone
from labelloop.client import connect
from labelloop.events import (
    Annotation,
    AnnotationSource,
    AnnotationsSubmitted,
    BatchCompleted,
    CompletedTask,
    LabelsReady,
    deterministic_id,
)
from labelloop.project import parse_project
from labelloop.settings import ServiceSettings

NAME = "latency"
PROJECT = "bench-latency"
CLASSES = ["pos", "neg", "neu"]
ITEMS, ANNOTATORS = 5, 3


async def raw_round_trip(url: str, n: int) -> list[float]:
    """Seconds from an acknowledged JetStream publish's start to its delivery to a subscriber."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="BENCH_RTT", subjects=["benchrtt.>"])
        arrived: asyncio.Queue[float] = asyncio.Queue()

        async def on_msg(msg: Any) -> None:
            arrived.put_nowait(time.perf_counter())

        await nc.subscribe("benchrtt.x", cb=on_msg)
        out = []
        for i in range(n):
            start = time.perf_counter()
            await js.publish("benchrtt.x", str(i).encode())
            out.append(await asyncio.wait_for(arrived.get(), 5) - start)
        await js.delete_stream("BENCH_RTT")
        return out
    finally:
        await nc.close()


def _batch(ns: str, b: int) -> tuple[str, AnnotationsSubmitted, BatchCompleted, dict[str, str]]:
    batch_id = f"{ns}-b{b:05d}"
    truth = {f"{batch_id}-i{i}": CLASSES[(b + i) % len(CLASSES)] for i in range(ITEMS)}
    now = datetime.now(UTC)
    annotations = AnnotationsSubmitted(
        event_id=deterministic_id("bench-ann", batch_id),
        project=PROJECT,
        annotations=[
            Annotation(
                annotation_id=f"{item}-w{w}",
                item_id=item,
                annotator_id=f"w{(b + w) % 7}",
                value=label,
                batch_id=batch_id,
                lead_time_seconds=5.0,
                created_at=now,
                updated_at=now,
                source=AnnotationSource.SIMULATION,
            )
            for item, label in truth.items()
            for w in range(ANNOTATORS)
        ],
    )
    completed = BatchCompleted(
        event_id=deterministic_id("bench-done", batch_id),
        project=PROJECT,
        batch_id=batch_id,
        round=b + 1,
        n_tasks=ITEMS,
        n_annotations=ITEMS * ANNOTATORS,
        tasks=[CompletedTask(item_id=item, annotations_required=ANNOTATORS) for item in truth],
        annotations=annotations.annotations,
    )
    return batch_id, annotations, completed, truth


async def qa_latency(url: str, n_batches: int) -> dict[str, Any]:
    ns = namespace("benchlat")
    settings = ServiceSettings(nats_url=url, namespace=ns)
    async with connect(settings) as bus:
        await bus.apply_project(parse_project(text_project(PROJECT, CLASSES)))
        ready: dict[str, tuple[float, dict[str, str]]] = {}
        waiting: dict[str, asyncio.Event] = {}

        async def on_labels(msg: Any) -> None:
            body = json.loads(msg.data)
            batch = body["batch_id"]
            labels = {lab["item_id"]: lab["label"] for lab in body["labels"]}
            if batch not in ready:
                ready[batch] = (time.perf_counter(), labels)
            else:
                ready[batch][1].update(labels)
            if batch in waiting:
                waiting[batch].set()

        await bus.nc.subscribe(bus.ns.subject(LabelsReady), cb=on_labels)
        latencies = []
        wrong = missing = 0
        with service_process("qa-scorer", url, ns):
            for b in range(n_batches + 1):  # batch 0 warms the service up, not counted
                batch_id, annotations, completed, truth = _batch(ns, b)
                waiting[batch_id] = asyncio.Event()
                start = time.perf_counter()
                await bus.publish(annotations)
                await bus.publish(completed)
                await asyncio.wait_for(waiting[batch_id].wait(), timeout=60)
                arrived, labels = ready[batch_id]
                if b > 0:
                    latencies.append(arrived - start)
                    missing += len(set(truth) - set(labels))
                    wrong += sum(labels[i] != v for i, v in truth.items() if i in labels)
    lat = np.array(latencies)
    return {
        "n_batches": n_batches,
        "items_per_batch": ITEMS,
        "annotators_per_item": ANNOTATORS,
        "p50_ms": float(np.percentile(lat, 50) * 1000),
        "p99_ms": float(np.percentile(lat, 99) * 1000),
        "max_ms": float(lat.max() * 1000),
        "mean_ms": float(lat.mean() * 1000),
        "over_500ms": int((lat > 0.5).sum()),
        "labels_wrong": wrong,
        "labels_missing": missing,
    }


async def _run(quick: bool) -> dict[str, Any]:
    with nats_server() as server:
        rtt = np.array(await raw_round_trip(server.url, 200 if quick else 1000))
        qa = await qa_latency(server.url, 20 if quick else 200)
    return {
        "qa_scorer": qa,
        "raw_jetstream_round_trip": {
            "n": len(rtt),
            "p50_ms": float(np.percentile(rtt, 50) * 1000),
            "p99_ms": float(np.percentile(rtt, 99) * 1000),
        },
    }


def run(quick: bool) -> dict[str, Any]:
    out = asyncio.run(_run(quick))
    qa, raw = out["qa_scorer"], out["raw_jetstream_round_trip"]
    out["rows"] = [
        row(
            f"qa-scorer: annotations -> LabelsReady ({qa['n_batches']} batches)",
            f"p50 {qa['p50_ms']:.0f} ms, p99 {qa['p99_ms']:.0f} ms ({qa['over_500ms']} > 0.5 s)",
            f"JetStream RTT p50 {raw['p50_ms']:.1f} ms, p99 {raw['p99_ms']:.1f} ms",
            f"{qa['p50_ms'] / raw['p50_ms']:.0f}x the bare round trip",
            qa["labels_wrong"] == 0 and qa["labels_missing"] == 0,
        )
    ]
    return out


if __name__ == "__main__":
    standalone(NAME, run)
