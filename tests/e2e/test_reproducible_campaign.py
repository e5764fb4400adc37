"""Reproducible campaigns: the same project file and seed give the same campaign, whatever happens.

A whole campaign runs through the six services as processes (the demo's driver: ingest the pool,
start sampling, the simulated crew answers, QA, exports, models), twice undisturbed and once under
faults: a second qa-scorer replica competing for the work, a restart of nats-server, and kill -9 of
the sampler, a qa-scorer replica, the exporter and the trainer, each while it holds a message. The
first run's crew answers each batch at once, the other two pace their answers: the timing of the
rounds differs between the undisturbed runs too.
Two projects run side by side, one with ``consensus: auto`` (Dawid-Skene, whose annotator history
carries from round to round) and one with ``majority``. The first writes a full dataset version
every 40 labels (the example's ``export.every_n_labels``: every round, a batch being 40 items),
the second every 100: its rounds in between export deltas only, and its models are trained from
them (the last version plus the rounds' deltas).

What must be equal across the three runs: every labeling batch (its round, items, gold, the model
that chose it), the dataset versions written and their files byte for byte (the manifest's
``created_at`` apart) and every round's model metrics. Which versions are written does not depend
on timing here: a round's own labels decide it, but for the last round, whose version is written
either as it is exported (the spent budget heard first) or when the exporter hears of the spent
budget (the round exported first); the same version either way. And, as ever: nothing
dead-lettered, every batch completed once, and the last version holds every label QA released.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from reliability_support import (
    Cluster,
    connect,
    dataset_fingerprint,
    dead_letters,
    events_of,
    kill_when_busy,
    poll,
)

from labelloop.events import (
    BatchCompleted,
    BatchCreated,
    LabelsReady,
    ModelTrained,
    QAReport,
    RoundExported,
)
from labelloop.settings import ServiceSettings
from labelloop_console.campaign import CampaignWatcher
from labelloop_console.demo import DemoOptions, run_campaign

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

VARIANTS = {
    "auto": {"quality": {"consensus": "auto"}},
    "majority": {"quality": {"consensus": "majority"}, "export": {"every_n_labels": 100}},
}
PROJECTS = [f"digits-{key}" for key in VARIANTS]
BUDGET = 140  # 4 rounds of 36 labels (the last trimmed): models, reviews, a lag of one batch


def _options(run_dir: Path, time_scale: float) -> DemoOptions:
    return DemoOptions(
        budget=BUDGET,
        random_arm=False,
        variants=VARIANTS,
        runs_dir=run_dir,
        timeout_seconds=600,
        stall_seconds=240,
        quiet=True,
        time_scale=time_scale,
    )


AT_ONCE = 0.0
"""The crew answers a batch at once: rounds follow each other at machine speed."""
PACED = 0.05
"""Each answer takes a fiftieth of its simulated lead time: faults land while rounds are under
way, and the timing differs from the first run's."""


async def _campaign_facts(cluster: Cluster) -> dict[str, Any]:
    """What must not depend on timing: batches, model metrics; and the invariants' inputs."""
    nc = await connect(cluster.nats.url)
    try:
        ns = cluster.ns
        batches = await events_of(nc, ns, BatchCreated)
        completed = await events_of(nc, ns, BatchCompleted)
        models = await events_of(nc, ns, ModelTrained)
        return {
            "batches": sorted(
                (
                    b.project,
                    b.kind,
                    b.round,
                    b.batch_id,
                    tuple((t.item_id, t.is_gold, t.annotations_required) for t in b.tasks),
                    b.model_version,
                    tuple(b.excluded_annotators),
                )
                for b in {x.batch_id: x for x in batches}.values()
            ),
            "models": sorted(
                (
                    m.project,
                    m.round,
                    m.model_version,
                    m.promoted,
                    json.dumps(m.metrics, sort_keys=True),
                )
                for m in {(x.project, x.round): x for x in models}.values()
            ),
            "completions": Counter(c.batch_id for c in completed),
            "created": {b.batch_id for b in batches},
            "dead": await dead_letters(nc, ns),
        }
    finally:
        await nc.close()


async def _chaos(cluster: Cluster, stop: asyncio.Event, done: list[str]) -> None:
    """Restart NATS mid-run, then kill -9 each service that builds on rounds, while busy."""
    nc = await connect(cluster.nats.url)
    watcher = CampaignWatcher(nc, cluster.ns, PROJECTS)
    await watcher.start()

    def reports(n: int) -> bool:
        return all(len(watcher.view(p).reports) >= n for p in PROJECTS)

    try:
        plan = [
            ("nats", [], lambda: reports(1)),
            ("sampler", [BatchCompleted, ModelTrained, QAReport], lambda: reports(1)),
            ("qa-scorer", [BatchCompleted], lambda: reports(1)),
            ("exporter", [LabelsReady], lambda: reports(1)),
            ("trainer", [RoundExported], lambda: reports(1)),
        ]
        for target, events, when in plan:

            async def ready(when: Any = when) -> bool:
                return stop.is_set() or bool(when())

            await poll(ready, timeout=300, interval=0.05, what=f"the moment for {target}")
            if stop.is_set():
                return
            if target == "nats":
                await watcher.stop()
                await asyncio.to_thread(cluster.restart_nats)
                await watcher.start()
                done.append("nats restarted")
                continue
            busy = await kill_when_busy(cluster, nc, target, events, timeout=20)
            done.append(f"{target} killed{' while busy' if busy else ''}")
            await cluster.restart(target)
    finally:
        await watcher.stop()
        await nc.close()


def _run(
    tmp_path: Path, name: str, *, faults: bool, time_scale: float = PACED
) -> tuple[dict[str, str], dict[str, Any], list[str]]:
    """The run's dataset files, its facts and the faults that happened."""
    run_dir = tmp_path / name
    namespace = f"repro{uuid.uuid4().hex[:8]}"
    env = {
        "LABELLOOP_EXPORTER_EXPORT_DIR": str(run_dir / "exports"),
        "LABELLOOP_BRIDGE_BACKEND": "simulated",
        # a killed replica's messages come back after the ack wait: keep it short
        "LABELLOOP_ACK_WAIT_SECONDS": "5",
        "LABELLOOP_SWEEP_INTERVAL_SECONDS": "1",
    }
    done: list[str] = []
    with Cluster(run_dir, namespace, env) as cluster:
        cluster.supervisor.start_all()
        if faults:
            cluster.run("qa-scorer", replica=1)  # a second replica competes for every round
        asyncio.run(cluster.wait_ready())

        async def scenario() -> dict[str, Any]:
            stop = asyncio.Event()
            chaos = asyncio.create_task(_chaos(cluster, stop, done)) if faults else None
            try:
                settings = ServiceSettings(nats_url=cluster.nats.url, namespace=namespace)
                return await run_campaign(_options(run_dir, time_scale), settings, run_dir)
            finally:
                stop.set()
                if chaos is not None:
                    await chaos

        summary = asyncio.run(scenario())
        assert summary["finished"], f"{name}: the campaign did not finish"
        # what a user sees at the end: the last version holds every label QA released
        for key in ("final_dataset", "random_baseline_final_dataset"):
            assert summary[key]["complete"], (name, key, summary[key])
        facts = asyncio.run(_campaign_facts(cluster))
    return dataset_fingerprint(run_dir), facts, done


def test_one_seed_gives_one_campaign_whatever_the_timing_and_the_faults(
    tmp_path: Path, record_property: Any
) -> None:
    started = time.monotonic()
    first, facts_1, _ = _run(tmp_path, "first", faults=False, time_scale=AT_ONCE)
    second, facts_2, _ = _run(tmp_path, "second", faults=False)
    faulty, facts_3, done = _run(tmp_path, "faults", faults=True)
    record_property("seconds", round(time.monotonic() - started, 1))
    record_property("faults", done)
    print(f"\nreproducible campaign: {time.monotonic() - started:.0f} s; faults: {done}")

    assert len(done) == 5, f"not every fault happened: {done}"
    for facts in (facts_1, facts_2, facts_3):
        assert not facts["dead"], [(d.consumer, d.kind, d.reason[:200]) for d in facts["dead"]]
        assert set(facts["completions"]) == facts["created"], "every batch completed"
        assert all(n == 1 for n in facts["completions"].values()), "a batch completed twice"
    versions = {k.split("/")[0] + "/" + k.split("/")[1] for k in first}
    assert {v.split("/")[0] for v in versions} == set(PROJECTS)
    last = {
        project: max(b[2] for b in facts_1["batches"] if b[0] == project and b[1] == "labeling")
        for project in PROJECTS
    }
    assert min(last.values()) >= 3, last  # several rounds of each project
    # the rounds that wrote a version (v0003, and v0003-r1 should a review revise round 3)
    written = {
        p: sorted({v.split("/")[1].split("-")[0] for v in versions if v.startswith(f"{p}/")})
        for p in PROJECTS
    }
    # every 40 labels: a version each round; every 100: fewer, and the last round's always
    assert written["digits-auto"] == [f"v{n:04d}" for n in range(1, last["digits-auto"] + 1)]
    assert len(written["digits-majority"]) < last["digits-majority"], written
    assert all(written[p][-1] == f"v{last[p]:04d}" for p in PROJECTS), written

    assert facts_2["batches"] == facts_1["batches"], "the same batches"
    assert facts_2["models"] == facts_1["models"], "the same model metrics"
    assert second == first, "byte-identical dataset versions"

    assert facts_3["batches"] == facts_1["batches"], "the same batches under faults"
    assert facts_3["models"] == facts_1["models"], "the same model metrics under faults"
    differ = sorted(k for k in set(first) | set(faulty) if first.get(k) != faulty.get(k))
    assert not differ, f"files that differ under faults: {differ}"
