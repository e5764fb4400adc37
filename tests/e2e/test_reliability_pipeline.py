"""Chaos, deterministic part: a fixed set of batches through annotation-bridge -> qa-scorer ->
exporter, once undisturbed and once while kill -9 hits each service in turn (and a second
qa-scorer replica), and the NATS server restarts. The final datasets must be identical.

The sampler does not run: its batches depend on which model is current when a batch is cut, so two
undisturbed campaigns differ already. Here the batches are fixed inputs, the simulated crew answers
deterministically per (batch, item, annotator), and the project uses majority consensus, whose
labels and confidences depend on a batch's own annotations only (Dawid-Skene with the annotators'
history as a prior would depend on the order QA scores batches in; see the report).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from reliability_support import (
    ChaosInputs,
    Cluster,
    busy,
    chaos_inputs,
    comparable,
    connect,
    consumer_state,
    dead_letters,
    diff_datasets,
    events_of,
    final_export,
    kill_when_busy,
    poll,
    read_dataset,
    read_stream,
)

from labelloop.client import BusClient
from labelloop.events import (
    AnnotationsSubmitted,
    BatchCompleted,
    BatchCreated,
    LabelsReady,
    QAReport,
    ReviewRequested,
)
from labelloop.runtime import provision

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

PIPELINE = ("annotation-bridge", "qa-scorer", "exporter")
WAVES = ((0, 1), (2, 3), (4,), (5,), (6, 7))
"""Batches published together; under faults, one fault follows each wave while it is in flight."""


@dataclass
class RunResult:
    dataset: dict[str, dict[str, Any]] = field(default_factory=dict)
    version: str = ""
    labels_stream: list[tuple[LabelsReady, str]] = field(default_factory=list)
    completed: list[BatchCompleted] = field(default_factory=list)
    reports: list[QAReport] = field(default_factory=list)
    reviews: list[ReviewRequested] = field(default_factory=list)
    dead_letters: int = 0
    seconds: float = 0.0
    redeliveries: dict[str, float] = field(default_factory=dict)
    log_redeliveries: int = 0
    consumer_redelivered: int = 0
    in_flight_kills: dict[str, bool] = field(default_factory=dict)
    nats_down_seconds: float = 0.0


def _env(workdir: Path) -> dict[str, str]:
    return {
        "LABELLOOP_EXPORTER_EXPORT_DIR": str(workdir / "exports"),
        "LABELLOOP_BRIDGE_BACKEND": "simulated",
        # many small messages: more work in flight when a process dies
        "LABELLOOP_BRIDGE_SIMULATION_CHUNK_SIZE": "8",
    } | (
        # the runtime's default ack wait (30 s) unless overridden: what a killed process held
        # comes back after it, while retries on other consumers run out (see the QA fix)
        {"LABELLOOP_ACK_WAIT_SECONDS": os.environ["LABELLOOP_CHAOS_ACK_WAIT_SECONDS"]}
        if "LABELLOOP_CHAOS_ACK_WAIT_SECONDS" in os.environ
        else {}
    )


async def _fault(wave: int, cluster: Cluster, bus: BusClient, result: RunResult) -> None:
    """The fault that follows wave ``wave``: each while the wave's work is in flight."""
    ns = cluster.ns
    if wave == 0:
        result.in_flight_kills["annotation-bridge"] = await kill_when_busy(
            cluster, bus.nc, "annotation-bridge", [BatchCreated]
        )
        await cluster.restart("annotation-bridge")
    elif wave == 1:
        result.in_flight_kills["qa-scorer-0"] = await kill_when_busy(
            cluster, bus.nc, "qa-scorer", [AnnotationsSubmitted, BatchCompleted, BatchCreated]
        )
        await cluster.restart("qa-scorer")
    elif wave == 2:
        # the second replica shares the durable consumers; it dies with its share in flight
        result.in_flight_kills["qa-scorer-1"] = await kill_when_busy(
            cluster, bus.nc, "qa-scorer", [AnnotationsSubmitted, BatchCompleted], replica=1
        )
    elif wave == 3:
        result.in_flight_kills["exporter"] = await kill_when_busy(
            cluster, bus.nc, "exporter", [LabelsReady, QAReport]
        )
        await cluster.restart("exporter")
    elif wave == 4:
        await poll(
            lambda: busy(bus.nc, ns, "qa-scorer", [AnnotationsSubmitted, BatchCompleted]),
            timeout=30,
            interval=0.005,
            what="qa-scorer busy before the NATS restart",
        )
        result.nats_down_seconds = cluster.restart_nats()


async def run_pipeline(workdir: Path, inputs: ChaosInputs, *, faults: bool) -> RunResult:
    started = time.monotonic()
    namespace = f"chaos{uuid.uuid4().hex[:8]}"
    with Cluster(workdir, namespace, _env(workdir)) as cluster:
        for service in PIPELINE:
            cluster.run(service)
        await cluster.wait_ready()
        nc = await connect(cluster.nats.url)
        try:
            js = nc.jetstream()
            await provision(js, cluster.ns)
            bus = BusClient(nc, js, cluster.ns)
            await bus.apply_project(inputs.project)
            for chunk in inputs.ingested:
                await bus.publish(chunk)
            result = RunResult()
            for wave, batch_numbers in enumerate(WAVES):
                if faults and wave == 2:
                    cluster.run("qa-scorer", replica=1)
                    await cluster.wait_ready()
                for b in batch_numbers:
                    await bus.publish(inputs.batches[b])
                if faults:
                    await _fault(wave, cluster, bus, result)
            result = await _finish(cluster, bus, inputs, result)
            result.seconds = time.monotonic() - started
            if faults:
                result.redeliveries = cluster.total_redeliveries()
                result.log_redeliveries = cluster.log_redeliveries()
            return result
        finally:
            await nc.close()


async def _finish(
    cluster: Cluster, bus: BusClient, inputs: ChaosInputs, result: RunResult
) -> RunResult:
    ns, nc, project = cluster.ns, bus.nc, inputs.project.name
    n = len(inputs.batches)

    async def all_reported() -> bool:
        return len({r.batch_id for r in await events_of(nc, ns, QAReport)}) >= n

    await poll(all_reported, timeout=240, interval=0.5, what="a QA report for every batch")
    exported, _ = await final_export(nc, ns, project)
    labels = await read_stream(nc, ns, LabelsReady)
    consumers = [
        await consumer_state(nc, ns, service, event)
        for service, event in [
            ("annotation-bridge", BatchCreated),
            ("qa-scorer", AnnotationsSubmitted),
            ("qa-scorer", BatchCompleted),
            ("exporter", LabelsReady),
        ]
    ]
    result.consumer_redelivered = sum(c["redelivered"] for c in consumers)
    result.dataset = comparable(read_dataset(exported.path))
    result.version = exported.version
    result.labels_stream = labels
    result.completed = await events_of(nc, ns, BatchCompleted)
    result.reports = await events_of(nc, ns, QAReport)
    result.reviews = await events_of(nc, ns, ReviewRequested)
    result.dead_letters = len(await dead_letters(nc, ns))
    return result


def _check_stream_contents(result: RunResult, inputs: ChaosInputs) -> None:
    """The LabelsReady stream: every (batch, item) exactly once; QA flagged the rest for review."""
    ids = [msg_id for _, msg_id in result.labels_stream]
    assert len(ids) == len(set(ids)), "a LabelsReady message id stored twice (dedup failed)"
    pairs = Counter(
        (lab.batch_id or e.batch_id, lab.item_id)
        for e, _ in result.labels_stream
        for lab in e.labels
    )
    assert all(n == 1 for n in pairs.values()), [p for p, n in pairs.items() if n > 1]
    reviewed = {(r.batch_id, i.item_id) for r in result.reviews for i in r.items}
    expected = {(b.batch_id, t.item_id) for b in inputs.batches for t in b.tasks}
    assert set(pairs) | reviewed == expected, "an item neither labeled nor sent to review (a gap)"
    assert not set(pairs) & reviewed
    assert Counter(c.batch_id for c in result.completed) == Counter(
        b.batch_id for b in inputs.batches
    ), "each batch completed exactly once"
    assert Counter(r.batch_id for r in result.reports) == Counter(
        b.batch_id for b in inputs.batches
    ), "each batch scored exactly once"


def test_reliability_pipeline_gives_the_same_dataset_under_kills_and_a_nats_restart(
    tmp_path: Path, record_property: Any
) -> None:
    inputs = chaos_inputs()
    calm = asyncio.run(run_pipeline(tmp_path / "calm", inputs, faults=False))
    stormy = asyncio.run(run_pipeline(tmp_path / "faults", inputs, faults=True))

    for result in (calm, stormy):
        _check_stream_contents(result, inputs)
        assert result.dead_letters == 0
    assert len(calm.dataset) >= 0.8 * len(inputs.expected_items)
    assert set(calm.dataset) <= inputs.expected_items
    problems = diff_datasets(calm.dataset, stormy.dataset)
    assert not problems, "\n".join(problems[:40])

    # the faults hit work in flight: messages came back to the restarted services
    total = sum(stormy.redeliveries.values())
    record_property("undisturbed_seconds", round(calm.seconds, 1))
    record_property("faults_seconds", round(stormy.seconds, 1))
    record_property("redeliveries_metrics", stormy.redeliveries)
    record_property("redeliveries_logs", stormy.log_redeliveries)
    record_property("in_flight_kills", stormy.in_flight_kills)
    record_property("nats_down_seconds", round(stormy.nats_down_seconds, 2))
    record_property("rows", len(calm.dataset))
    print(
        f"\nchaos pipeline: {len(calm.dataset)} rows identical; undisturbed {calm.seconds:.1f} s, "
        f"under faults {stormy.seconds:.1f} s; redeliveries {total:.0f} by metrics "
        f"{stormy.redeliveries}, {stormy.log_redeliveries} by logs; kills in flight "
        f"{stormy.in_flight_kills}; NATS down {stormy.nats_down_seconds:.2f} s"
    )
    assert total > 0, "no message was redelivered: the faults missed the work in flight"
