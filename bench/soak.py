"""Soak: 10M items into one project, then 10,000 small batches through the six services.

    .venv/bin/python bench/soak.py                                  # the full soak (make soak)
    .venv/bin/python bench/soak.py --items 100000 --batches 200     # a quick try: a few minutes
    .venv/bin/python bench/soak.py --flood [--items 1000000]        # the older e2e flood test

The acceptance item it measures (issue 14): "10M items ingested into one project, then 10,000
small batches (random strategy, simulated crew with no lead time) through all six services: each
service's peak RSS reported and flat after warm-up, no KV value larger than 1 MB, batch
throughput at the end within 20% of the start."

One deployment, as ``labelloop demo`` runs it: an embedded nats-server with its store on disk
(``--workdir``, a fresh temporary folder by default) and the six services as real processes
(``labelloop-service <service>``, :class:`~labelloop_console.processes.Supervisor`). Then:

1. **Ingest.** ``--items`` items in ``ItemsSubmitted`` messages of 500, published pipelined
   (``publish_async``, bodies written as JSON directly: the fastest producer, as in
   ``bench_throughput.py``), timed from the first publish to the ingester's last
   ``SubmissionAnswered``. Each item has a short image reference, a 4-d producer feature vector
   (the ingester computes no features; the trainer learns from the vectors), its simulated truth
   and, one in 1,000, a known label (gold). Checked, not timed: the answers add up to every item
   ingested and none rejected or duplicate; the ``ItemsIngested`` on the stream name each item
   once; the claim log holds each item id once; the catalog index counts every item.
2. **Batches.** ``RequestSampling(start)``; the project's label budget is exactly ``--batches``
   labeling batches of ``--batch-size`` tasks (one of them gold). Random sampling, the simulated
   crew answering at once (``time_scale`` 0), QA with its defaults (overlap, gold, consensus,
   expert review of doubtful labels), every round exported (a delta of its rows; a full version
   every 256 rounds and for the last), the trainer deciding every
   round whether to retrain (see ``_project`` for the settings and why). A batch counts as
   through all six services when its round's ``ModelTrained`` arrives (the trainer publishes one
   per round, trained or not); ``BatchCompleted`` (the crew's and bridge's end) is timed too.
3. **Measured throughout.** Every service's RSS (and nats-server's) with psutil every
   ``--rss-interval`` seconds; every KV bucket's values (size of the latest value of every key,
   largest per bucket and per key family) after the ingest, at every tenth of the batches and at
   the end; object-store buckets' objects and bytes, the store and export folders' size.

Verdicts, one per acceptance item: peak RSS per service (reported) and flat after warm-up (the
first tenth of the batches): the least-squares growth of RSS over the remaining batches at most
``max(FLAT_MB, FLAT_SHARE x RSS at the end of warm-up)``; no KV value over 1 MB at any scan;
batches per minute over the last tenth of the rounds at least 0.8 x over the first tenth, both
through all six and on the crew's side, the lower ratio deciding. The exporter and the trainer
start behind the crew (round 1 pays every service's first catalog load) and drain that backlog
faster than the loop can run, so through all six the first window starts once they are at most
:data:`CAUGHT_UP` rounds behind; the lag when the crew finished is reported. The ingest exactly
once; the whole run under 60 minutes. RSS growth and the checkpoints are counted in completed
batches. Results go to
``bench/results/soak.json`` (``soak.quick.json`` for smaller runs than the acceptance's).

Guards for a shared machine: the run stops (and says so) when no round progresses for
``--stall`` seconds, when a service exits, when free memory falls under 1 GB or free disk under
5 GB. Every process it started is stopped at the end; the work folder is removed unless the run
failed or ``--keep`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from harness import write_result
from labelloop.client import BusClient, connect
from labelloop.events import (
    BatchCompleted,
    BatchCreated,
    BudgetExhausted,
    DeadLetter,
    Event,
    ItemsIngested,
    ItemsSubmitted,
    LabelingConverged,
    LabelsReady,
    ModelTrained,
    RequestSampling,
    RoundExported,
    SubmissionAnswered,
    deterministic_id,
)
from labelloop.natsserver import EmbeddedNats
from labelloop.payloads import resolve
from labelloop.project import ProjectConfig, parse_project
from labelloop.settings import ServiceSettings
from labelloop.stores import Blobs
from labelloop_console.processes import ServiceProcess, Supervisor

NAME = "soak"
PROJECT = "soak"
FULL_ITEMS = 10_000_000
FULL_BATCHES = 10_000
PER_MESSAGE = 500
GOLD_EVERY = 1_000
CLASSES = ("c0", "c1", "c2")
DIM = 4
KV_LIMIT = 2**20
"""The acceptance's 1 MB: no KV value larger."""
FLAT_MB = 20.0
FLAT_SHARE = 0.05
"""RSS is flat when it grows by at most max(20 MB, 5% of its size after warm-up) over the
batches after warm-up (least-squares line through the samples)."""
THROUGHPUT_RATIO = 0.8
WALL_LIMIT_SECONDS = 3600.0
MIN_FREE_MEMORY = 2**30
MIN_FREE_DISK = 5 * 2**30
MB = 2**20


# --------------------------------------------------------------------------- the project


def _project(batches: int, batch_size: int) -> ProjectConfig:
    """The soak's project. Settings chosen so that the loop, not one round-sized job, is
    measured:

    * ``sampling``: random, ``start: on_command`` (the pool is ingested first, so the sampler
      does nothing during the ingest), ``max_model_lag`` 0 and ``quality.max_rechecks_per_round``
      0: batch *n* waits for QA of round *n - 1*, not for its model (random sampling needs none),
      so the crew never waits for the exporter or the trainer; they run beside the loop and a
      batch counts as done only when its round's ``ModelTrained`` comes.
    * ``budget.max_labels``: exactly ``batches`` batches (each has one gold task, which the label
      budget does not count): the sampler stops by itself with ``BudgetExhausted``.
    * ``export``: parquet only, ``every_n_labels`` 1,000,000: each round exports a delta (its
      own rows) for the trainer, and a full version (every label so far) comes every 256 rounds
      (``MAX_DELTAS``, which keeps the trainer's chain short) and for the last round. The soak
      measures the loop's per-round cost; a version every 100 labels would write the whole
      dataset every ten rounds, which is a choice a project makes, not a cost of the loop.
    * ``training``: retrain when the labels grew tenfold or by 20,000 (``min_growth`` 10,
      ``min_new_labels`` 20,000): models at about 9, 90, 900 and 9,000 labels, then every
      20,000, about 8 over the full soak. Every training scores the whole pool (10M items), so
      training every round would be the soak. ``convergence_rounds`` 1,000: the soak never
      stops on a plateau; ``tune_regularization`` off (one fit per model, not a grid).
    * the crew: four good annotators and an expert (QA's reviews need one), answering at once.
    """
    labels_per_batch = batch_size - 1
    return parse_project(
        {
            "name": PROJECT,
            "task_type": "image_classification",
            "labels": {"classes": list(CLASSES)},
            "data_fields": [{"name": "image", "kind": "image"}],
            "quality": {"max_rechecks_per_round": 0},
            "sampling": {
                "strategy": "random",
                "batch_size": batch_size,
                "max_model_lag": 0,
                "start": "on_command",
                "seed": 14,
            },
            "export": {"formats": ["parquet"], "every_n_labels": 1_000_000},
            "training": {
                "estimator": "logistic_regression",
                "min_new_labels": 20_000,
                "min_growth": 10.0,
                "tune_regularization": False,
                "convergence_rounds": 1_000,
            },
            "budget": {"max_labels": batches * labels_per_batch},
            "simulation": {
                "seed": 14,
                "time_scale": 0.0,
                "annotators": [
                    {"id": "a1", "accuracy": 0.9},
                    {"id": "a2", "accuracy": 0.85},
                    {"id": "a3", "accuracy": 0.9},
                    {"id": "a4", "accuracy": 0.95},
                    {"id": "e1", "accuracy": 0.98, "role": "expert"},
                ],
            },
        }
    )


# --------------------------------------------------------------------------- the items

_CENTRES = np.asarray([[1.0, 0.0, 0.0, 0.5], [0.0, 1.0, 0.0, 0.5], [0.0, 0.0, 1.0, 0.5]])


def _message(start: int, stop: int, event_id: str, now: str) -> bytes:
    """One ``ItemsSubmitted`` body for items ``start`` to ``stop``, written as JSON directly
    (a lean producer: the cores go to the services). Deterministic: the same items every run."""
    rng = np.random.default_rng(start)
    truth = rng.integers(0, len(CLASSES), size=stop - start)
    x = _CENTRES[truth] + rng.normal(0.0, 0.5, size=(stop - start, DIM))
    parts = []
    for k, (t, row) in enumerate(zip(truth.tolist(), x.tolist(), strict=True)):
        i = start + k
        gold = f',"known_label":"{CLASSES[t]}"' if i % GOLD_EVERY == 0 else ""
        parts.append(
            f'{{"data":{{"image":"soak/{i}.png"}},'
            f'"metadata":{{"simulation_truth":"{CLASSES[t]}"}},'
            f'"features":[{row[0]:.3f},{row[1]:.3f},{row[2]:.3f},{row[3]:.3f}]{gold}}}'
        )
    head = (
        f'{{"event_id":"{event_id}","occurred_at":"{now}","project":"{PROJECT}",'
        f'"source":"soak","items":['
    )
    return (head + ",".join(parts) + "]}").encode()


# --------------------------------------------------------------------------- following events


@dataclass
class _Follow:
    """What the bus said, as it came: answers to submissions, and per round the time each
    stage's event arrived (monotonic seconds)."""

    answers: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    """submission id -> (ingested, duplicates, rejected)."""
    created: dict[int, float] = field(default_factory=dict)
    completed: dict[int, float] = field(default_factory=dict)
    labels: dict[int, float] = field(default_factory=dict)
    exported: dict[int, float] = field(default_factory=dict)
    trained: dict[int, float] = field(default_factory=dict)
    trainings: list[int] = field(default_factory=list)
    """Rounds whose model was actually trained (not skipped)."""
    reviews: int = 0
    exhausted: str | None = None
    converged: str | None = None
    dead_letters: dict[str, int] = field(default_factory=dict)
    last_progress: float = field(default_factory=time.monotonic)

    def on(self, cls: type[Event], body: dict[str, Any]) -> None:
        now = time.monotonic()
        if cls is SubmissionAnswered:
            self.answers[body["submission_id"]] = (
                int(body["ingested"]),
                int(body["duplicates"]),
                int(body["rejected"]),
            )
            return
        if cls is DeadLetter:
            key = f"{body.get('original_subject')}: {str(body.get('reason', '')).splitlines()[:1]}"
            self.dead_letters[key[:200]] = self.dead_letters.get(key[:200], 0) + 1
            return
        if cls is BudgetExhausted:
            self.exhausted = str(body.get("reason"))
            return
        if cls is LabelingConverged:
            self.converged = str(body)
            return
        number = int(body["round"])
        if cls in (BatchCreated, BatchCompleted) and body.get("kind", "labeling") != "labeling":
            self.reviews += cls is BatchCompleted
            return
        table = {
            BatchCreated: self.created,
            BatchCompleted: self.completed,
            LabelsReady: self.labels,
            RoundExported: self.exported,
            ModelTrained: self.trained,
        }[cls]
        trained = cls is ModelTrained and not body.get("skipped")
        if trained and body.get("request_id") is None and number not in self.trained:
            self.trainings.append(number)
        table.setdefault(number, now)
        self.last_progress = now


async def _follow(bus: BusClient, follow: _Follow, classes: tuple[type[Event], ...]) -> list[Any]:
    """Ordered consumers (new messages only) feeding ``follow``; the subscriptions."""
    blobs = await bus.blobs()
    subs = []
    for cls in classes:
        subject = bus.ns.subject(cls, None if cls is DeadLetter else PROJECT)
        subs.append(
            await bus.js.subscribe(
                subject,
                stream=bus.ns.stream_name(bus.ns.stream_for(cls)),
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.NEW,
                cb=_callback(cls, follow, blobs),
            )
        )
    return subs


def _callback(cls: type[Event], follow: _Follow, blobs: Blobs) -> Callable[[Msg], Awaitable[None]]:
    async def on_message(msg: Msg) -> None:
        follow.on(cls, json.loads(await resolve(msg.data, msg.headers, blobs)))

    return on_message


# --------------------------------------------------------------------------- RSS


@dataclass
class _RssSampler:
    """Every process's resident memory (with its children), sampled in a thread."""

    pids: dict[str, int]
    interval: float
    progress: Callable[[], tuple[str, int]]
    """(phase, rounds through all six services so far), stamped on every sample."""
    samples: list[dict[str, Any]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name="soak-rss")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        started = time.monotonic()
        procs = {name: psutil.Process(pid) for name, pid in self.pids.items()}
        while not self._stop.is_set():
            phase, done = self.progress()
            sample: dict[str, Any] = {
                "t": round(time.monotonic() - started, 1),
                "clock": time.monotonic(),
                "load1": os.getloadavg()[0],
                "phase": phase,
                "rounds": done,
                "available_mb": round(psutil.virtual_memory().available / MB),
            }
            cpu: dict[str, float | None] = {}
            for name, proc in procs.items():
                # this process's children are the services: counted apart
                sample[name] = _rss_mb(proc, children=name != "soak")
                cpu[name] = _cpu_seconds(proc)
            sample["cpu"] = cpu
            self.samples.append(sample)
            self._stop.wait(self.interval)


def _rss_mb(proc: psutil.Process, *, children: bool) -> float | None:
    try:
        rss = int(proc.memory_info().rss)
        for child in proc.children(recursive=True) if children else []:
            with contextlib.suppress(psutil.Error):
                rss += int(child.memory_info().rss)
    except psutil.Error:
        return None
    return round(rss / MB, 1)


def _cpu_seconds(proc: psutil.Process) -> float | None:
    """User and system CPU time of the process itself (a service's children are none)."""
    try:
        times = proc.cpu_times()
    except psutil.Error:
        return None
    return round(float(times.user + times.system), 2)


def _cpu_report(
    samples: list[dict[str, Any]],
    names: list[str],
    first: tuple[float, float],
    last: tuple[float, float],
) -> dict[str, Any]:
    """Per process, CPU seconds per 1,000 rounds in the first and the last window (``first``,
    ``last``: each window's start and end, ``time.monotonic``), from the samples nearest their
    ends: which service's rounds got dearer, apart from the machine's load."""

    def per_1000(name: str, window: tuple[float, float]) -> float | None:
        inside = [
            s
            for s in samples
            if window[0] <= s["clock"] <= window[1] and (s.get("cpu") or {}).get(name) is not None
        ]
        if len(inside) < 2 or inside[-1]["rounds"] <= inside[0]["rounds"]:
            return None
        seconds = float(inside[-1]["cpu"][name] - inside[0]["cpu"][name])
        rounds = int(inside[-1]["rounds"] - inside[0]["rounds"])
        return round(seconds / rounds * 1000, 1)

    out: dict[str, Any] = {}
    for name in names:
        a, b = per_1000(name, first), per_1000(name, last)
        out[name] = {
            "first_s_per_1000_rounds": a,
            "last_s_per_1000_rounds": b,
            "ratio": round(b / a, 2) if a and b is not None else None,
        }
    return out


def _rss_report(
    samples: list[dict[str, Any]], names: list[str], rounds: int, warm: int
) -> dict[str, Any]:
    """Per process: peak in each phase, RSS at the end of warm-up and at the end, and the
    least-squares growth over the rounds after warm-up (MB per 1,000 rounds and over the
    window)."""
    out: dict[str, Any] = {}
    for name in names:
        ingest = [s[name] for s in samples if s["phase"] == "ingest" and s.get(name) is not None]
        batch = [
            (s["rounds"], s[name])
            for s in samples
            if s["phase"] == "batches" and s.get(name) is not None
        ]
        after = [(r, v) for r, v in batch if r >= warm]
        entry: dict[str, Any] = {
            "peak_mb": max([*ingest, *(v for _, v in batch)], default=None),
            "peak_ingest_mb": max(ingest, default=None),
            "peak_batches_mb": max((v for _, v in batch), default=None),
            "end_of_ingest_mb": ingest[-1] if ingest else None,
        }
        if len({r for r, _ in after}) >= 3:
            x = np.asarray([r for r, _ in after], dtype=float)
            y = np.asarray([v for _, v in after], dtype=float)
            slope, intercept = np.polyfit(x, y, 1)
            window = max(rounds - warm, 1)
            at_warm = float(np.median(y[x <= x.min() + max(window * 0.05, 1)]))
            growth = float(slope) * window
            allowed = max(FLAT_MB, FLAT_SHARE * at_warm)
            entry.update(
                {
                    "after_warmup_mb": round(at_warm, 1),
                    "end_mb": round(float(np.median(y[-3:])), 1),
                    "slope_mb_per_1000_rounds": round(float(slope) * 1000, 2),
                    "growth_after_warmup_mb": round(growth, 1),
                    "flat_allowance_mb": round(allowed, 1),
                    "flat": bool(growth <= allowed),
                    "samples_after_warmup": len(after),
                }
            )
            del intercept
        else:
            entry.update({"flat": None, "samples_after_warmup": len(after)})
        out[name] = entry
    return out


# --------------------------------------------------------------------------- KV and stores


_ID_SEGMENT = re.compile(r"^(?:\d+|[0-9a-f]{8,}|[0-9a-f-]{16,}|[A-Za-z0-9_-]{20,})$")


def _family(key: str) -> str:
    """A key with its project and id-like segments replaced: ``sampler.<p>.progress.*``."""
    parts = key.split(".")
    return ".".join("<p>" if p == PROJECT else ("*" if _ID_SEGMENT.match(p) else p) for p in parts)


async def _kv_buckets(js: JetStreamContext, prefix: str) -> list[str]:
    head = f"KV_{prefix.replace('-', '_')}_"
    return sorted(
        info.config.name[3:]
        for info in await js.streams_info()
        if info.config.name and info.config.name.startswith(head)
    )


async def _scan_bucket(
    js: JetStreamContext, bucket: str, *, values: bool, keep: Callable[[str], bool]
) -> tuple[dict[str, int], dict[str, bytes]]:
    """The size of the latest value of every key of ``bucket`` (one ordered consumer, last per
    subject; only headers travel unless ``values``), and the values of the keys ``keep``
    accepts (when ``values``)."""
    sizes: dict[str, int] = {}
    kept: dict[str, bytes] = {}
    done = asyncio.Event()
    pre = f"$KV.{bucket}."

    async def on_message(msg: Msg) -> None:
        headers = msg.headers or {}
        key = msg.subject[len(pre) :]
        if headers.get("KV-Operation") in ("DEL", "PURGE"):
            sizes.pop(key, None)
        elif values:
            sizes[key] = len(msg.data)
            if keep(key):
                kept[key] = msg.data
        else:
            sizes[key] = int(headers.get("Nats-Msg-Size", len(msg.data)))
        if msg.metadata.num_pending == 0:
            done.set()

    sub = await js.subscribe(
        f"{pre}>",
        stream=f"KV_{bucket}",
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
        headers_only=not values,
        cb=on_message,
    )
    try:
        info = await sub.consumer_info()
        if (info.num_pending or 0) > 0 or sub.delivered > 0:
            await asyncio.wait_for(done.wait(), timeout=600)
    finally:
        await sub.unsubscribe()
    return sizes, kept


async def _kv_scan(
    bus: BusClient, *, values: bool = False, keep: Callable[[str], bool] = lambda _: False
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Per KV bucket: keys, bytes, the largest value, and per key family the same."""
    report: dict[str, Any] = {}
    kept: dict[str, bytes] = {}
    started = time.monotonic()
    for bucket in await _kv_buckets(bus.js, bus.ns.prefix):
        sizes, got = await _scan_bucket(bus.js, bucket, values=values, keep=keep)
        kept.update(got)
        families: dict[str, dict[str, Any]] = {}
        for key, size in sizes.items():
            f = families.setdefault(_family(key), {"keys": 0, "bytes": 0, "largest": 0})
            f["keys"] += 1
            f["bytes"] += size
            if size > f["largest"]:
                f["largest"], f["largest_key"] = size, key
        largest = max(sizes.items(), key=lambda kv: kv[1], default=("", 0))
        report[bucket.removeprefix(bus.ns.kv_bucket(""))] = {
            "keys": len(sizes),
            "bytes": sum(sizes.values()),
            "largest_bytes": largest[1],
            "largest_key": largest[0],
            "over_limit": sorted(k for k, s in sizes.items() if s > KV_LIMIT),
            "families": dict(sorted(families.items(), key=lambda kv: -kv[1]["largest"])),
        }
    report["_scan_seconds"] = round(time.monotonic() - started, 2)
    return report, kept


async def _object_stores(bus: BusClient) -> dict[str, Any]:
    head = f"OBJ_{bus.ns.prefix.replace('-', '_')}_artifacts_"
    out: dict[str, Any] = {}
    for info in await bus.js.streams_info():
        name = info.config.name or ""
        if name.startswith(head):
            out[name.removeprefix(head)] = {
                "messages": info.state.messages,
                "mb": round(info.state.bytes / MB, 1),
            }
    return out


def _folder_mb(path: Path) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / f).stat().st_size
    return round(total / MB, 1)


def _timings(text: str) -> dict[str, list[float]]:
    """``labelloop_*`` histograms of a service's ``/metrics``: (seconds, calls) per metric and
    label set (the runtime's handler time by event, the sampler's selection, ...)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        if family.type != "histogram" or not family.name.startswith("labelloop_"):
            continue
        if "lead_time" in family.name:
            continue  # the simulated annotators' time, not the services'

        for sample in family.samples:
            if not sample.name.endswith(("_sum", "_count")):
                continue
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()) if k != "le")
            pair = out.setdefault(f"{family.name}{{{labels}}}", [0.0, 0.0])
            pair[0 if sample.name.endswith("_sum") else 1] += sample.value
    return out


async def _service_timings(supervisor: Supervisor) -> dict[str, dict[str, list[float]]]:
    out = {}
    for proc in supervisor.processes:
        try:
            out[proc.service] = _timings(await asyncio.to_thread(proc.metrics))
        except OSError:
            out[proc.service] = {}
    return out


def _timing_trend(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean seconds per call of every timed step over the first and the last interval between
    batch checkpoints: a step whose cost grows with the rounds shows here."""
    batch_points = [p for p in points if p["label"] != "after ingest"]
    if len(batch_points) < 3:
        return {}

    def means(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[float, float]]:
        rounds = max(b["batches_completed"] - a["batches_completed"], 1)
        found = {}
        for service, metrics in b["timings"].items():
            for key, (total, calls) in metrics.items():
                before = a["timings"].get(service, {}).get(key, [0.0, 0.0])
                n = calls - before[1]
                if n > 0:
                    found[f"{service} {key}"] = ((total - before[0]) / n, n / rounds)
        return found

    first = means(batch_points[0], batch_points[1])
    last = means(batch_points[-2], batch_points[-1])
    out = {}
    for key in sorted(set(first) | set(last)):
        f, la = first.get(key), last.get(key)
        out[key] = {
            "first_ms": None if f is None else round(f[0] * 1000, 2),
            "last_ms": None if la is None else round(la[0] * 1000, 2),
            "calls_per_round_last": None if la is None else round(la[1], 2),
        }
    return dict(
        sorted(
            out.items(),
            key=lambda kv: -((kv[1]["last_ms"] or 0) * (kv[1]["calls_per_round_last"] or 0)),
        )
    )


# --------------------------------------------------------------------------- ingest


async def _ingest(bus: BusClient, follow: _Follow, n_items: int, timeout: float) -> dict[str, Any]:
    """Publish ``n_items`` pipelined; wait for every answer. Timed from the first publish."""
    js = bus.nc.jetstream(publish_async_max_pending=256)
    subject = bus.ns.subject(ItemsSubmitted, PROJECT)
    stream = bus.ns.stream_name(bus.ns.stream_for(ItemsSubmitted))
    now = datetime.now(UTC).isoformat()
    ids: list[str] = []
    acks = []
    started = time.monotonic()
    last_report = started
    for start in range(0, n_items, PER_MESSAGE):
        event_id = deterministic_id("soak-submit", bus.ns.prefix, start)
        body = _message(start, min(start + PER_MESSAGE, n_items), event_id, now)
        acks.append(
            await js.publish_async(
                subject, body, stream=stream, headers={"Nats-Msg-Id": event_id}, wait_stall=120
            )
        )
        ids.append(event_id)
        if time.monotonic() - last_report > 30:
            last_report = time.monotonic()
            answered = sum(a[0] for a in follow.answers.values())
            print(
                f"  ingest: {start + PER_MESSAGE:,} published, {answered:,} ingested"
                f" ({time.monotonic() - started:.0f} s)",
                flush=True,
            )
    duplicates = sum(bool(a.duplicate) for a in await asyncio.gather(*acks))
    published = time.monotonic() - started
    deadline = time.monotonic() + timeout
    expected = set(ids)
    while not expected <= follow.answers.keys():
        if time.monotonic() > deadline:
            missing = len(expected - follow.answers.keys())
            raise TimeoutError(f"{missing} of {len(ids)} submissions unanswered after {timeout}s")
        if time.monotonic() - last_report > 30:
            last_report = time.monotonic()
            answered = sum(a[0] for a in follow.answers.values())
            print(f"  ingest: {answered:,} of {n_items:,} ingested", flush=True)
        await asyncio.sleep(0.2)
    seconds = time.monotonic() - started
    answers = [follow.answers[i] for i in ids]
    return {
        "items": n_items,
        "messages": len(ids),
        "per_message": PER_MESSAGE,
        "publish_seconds": round(published, 1),
        "seconds": round(seconds, 1),
        "items_per_second": round(n_items / seconds),
        "publish_duplicates": duplicates,
        "answered_ingested": sum(a[0] for a in answers),
        "answered_duplicates": sum(a[1] for a in answers),
        "answered_rejected": sum(a[2] for a in answers),
        "submission_ids": ids,
    }


def _distinct(hashes: list[int]) -> int:
    return int(np.unique(np.asarray(hashes, dtype=np.int64)).size) if hashes else 0


async def _announced(bus: BusClient) -> dict[str, int]:
    """Every ``ItemsIngested`` of the project read back: messages, item rows, distinct ids
    (compared by 64-bit hash: a collision among 10M ids has odds of about 1e-6)."""
    stream = bus.ns.stream_name(bus.ns.stream_for(ItemsIngested))
    subject = bus.ns.subject(ItemsIngested, PROJECT)
    info = await bus.js.stream_info(stream, subjects_filter=subject)
    total = sum((info.state.subjects or {}).values())
    blobs = await bus.blobs()
    hashes: list[int] = []
    sub = await bus.js.subscribe(
        subject, stream=stream, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )
    try:
        for _ in range(total):
            msg = await sub.next_msg(timeout=60)
            body = json.loads(await resolve(msg.data, msg.headers, blobs))
            hashes += [hash(i["item_id"]) for i in body["items"]]
    finally:
        await sub.unsubscribe()
    return {"messages": total, "rows": len(hashes), "distinct": _distinct(hashes)}


def _claims_and_catalog(kept: dict[str, bytes]) -> dict[str, int]:
    """The claim log's ids (rows, distinct) and the catalog index's item count, from KV."""
    hashes: list[int] = []
    segments = chunks = indexed = 0
    for key, raw in kept.items():
        if key.startswith(f"ingester.{PROJECT}.claims."):
            segments += 1
            for claim in json.loads(raw)["claims"]:
                hashes += [hash(i) for i in claim["items"]]
        elif key.startswith(f"catalog.{PROJECT}.chunk."):
            chunks += 1
            indexed += int(json.loads(raw)["n"])
    return {
        "claim_segments": segments,
        "claimed_rows": len(hashes),
        "claimed_distinct": _distinct(hashes),
        "catalog_chunks": chunks,
        "catalog_items": indexed,
    }


def _keep_ingest_keys(key: str) -> bool:
    return key.startswith((f"ingester.{PROJECT}.claims.", f"catalog.{PROJECT}.chunk."))


# --------------------------------------------------------------------------- the run


class SoakStopped(RuntimeError):
    """A guard stopped the run (stall, dead service, memory, disk)."""


@dataclass
class _Run:
    args: argparse.Namespace
    workdir: Path
    supervisor: Supervisor
    server: EmbeddedNats
    follow: _Follow = field(default_factory=_Follow)
    phase: str = "start"
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)

    def progress(self) -> tuple[str, int]:
        return self.phase, len(self.follow.completed)

    def guard(self) -> None:
        for proc in self.supervisor.processes:
            if not proc.alive():
                raise SoakStopped(
                    f"{proc.name} exited (code {proc.process.returncode}); log: {proc.log_path}"
                )
        available = psutil.virtual_memory().available
        if available < MIN_FREE_MEMORY:
            raise SoakStopped(f"free memory down to {available / MB:.0f} MB")
        disk = shutil.disk_usage(self.workdir).free
        if disk < MIN_FREE_DISK:
            raise SoakStopped(f"free disk down to {disk / 2**30:.1f} GB")

    async def checkpoint(
        self, bus: BusClient, label: str, kv: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        if kv is None:
            kv, _ = await _kv_scan(bus)
        point = {
            "label": label,
            "t": round(time.monotonic() - self.t0, 1),
            "rounds_trained": len(self.follow.trained),
            "batches_completed": len(self.follow.completed),
            "kv": kv,
            "object_stores": await _object_stores(bus),
            "nats_store_mb": _folder_mb(self.workdir / "nats"),
            "exports_mb": _folder_mb(self.workdir / "exports"),
            "timings": await _service_timings(self.supervisor),
        }
        self.checkpoints.append(point)
        state = kv.get("state", {})
        print(
            f"  checkpoint {label}: {point['batches_completed']} batches completed,"
            f" {point['rounds_trained']} through all six; KV state"
            f" {state.get('keys', 0)} keys, largest {state.get('largest_bytes', 0):,} B"
            f" ({state.get('largest_key', '')}), scan {kv['_scan_seconds']} s",
            flush=True,
        )
        return point


async def _batches(run: _Run, bus: BusClient, n_batches: int) -> dict[str, Any]:
    follow = run.follow
    marks = sorted({max(1, n_batches * k // 10) for k in range(1, 10)})
    started = time.monotonic()
    follow.last_progress = started
    await bus.publish(
        RequestSampling(
            event_id=deterministic_id("soak-start", bus.ns.prefix),
            project=PROJECT,
            action="start",
        )
    )
    last_print = started
    while len(follow.trained) < n_batches:
        run.guard()
        now = time.monotonic()
        if now - follow.last_progress > run.args.stall:
            raise SoakStopped(
                f"no round progressed for {run.args.stall:.0f} s: {len(follow.created)} cut,"
                f" {len(follow.completed)} completed, {len(follow.labels)} labelled,"
                f" {len(follow.exported)} exported, {len(follow.trained)} trained"
                f" (budget: {follow.exhausted}, converged: {follow.converged})"
            )
        if marks and len(follow.completed) >= marks[0]:
            mark = marks.pop(0)
            await run.checkpoint(bus, f"batch {mark}")
        if now - last_print > 30:
            last_print = now
            print(
                f"  batches: {len(follow.created)} cut, {len(follow.completed)} completed,"
                f" {len(follow.trained)} through all six ({now - started:.0f} s)",
                flush=True,
            )
        await asyncio.sleep(0.5)
    return {"seconds": round(time.monotonic() - started, 1), "started": started}


def _window_rate(
    times: dict[int, float],
    n: int,
    width: int,
    samples: list[dict[str, Any]],
    *,
    skip: int = 0,
) -> dict[str, Any]:
    """Rounds per minute over rounds a..a+width (first, a = 1 + ``skip``) and n-width..n
    (last), with the machine's mean 1-minute load average in each window (the machine is
    shared: a busier window is slower for reasons of its own). ``skip``: rounds through the stage
    before it caught up with the crew, left out of the first window."""
    a = 1 + skip
    if n < a + 2 * width or not all(k in times for k in (a, a + width, n - width, n)):
        return {"first_per_min": None, "last_per_min": None, "ratio": None}
    first = width / (times[a + width] - times[a]) * 60
    last = width / (times[n] - times[n - width]) * 60

    def load(a: float, b: float) -> float | None:
        seen = [x["load1"] for x in samples if a <= x["clock"] <= b]
        return round(float(np.mean(seen)), 2) if seen else None

    return {
        "first_per_min": round(first, 1),
        "last_per_min": round(last, 1),
        "ratio": round(last / first, 3),
        "window_rounds": width,
        "first_window": [a, a + width],
        "load_first": load(times[a], times[a + width]),
        "load_last": load(times[n - width], times[n]),
    }


CAUGHT_UP = 10
"""Rounds behind the crew at most for the last stages to count as caught up."""


def _caught_up(through: dict[int, float], completed: dict[int, float]) -> int:
    """Rounds through all six before the first one at which at most :data:`CAUGHT_UP` rounds
    the crew had completed were still on their way."""
    done = sorted(completed.values())
    for k, number in enumerate(sorted(through)):
        if bisect.bisect_right(done, through[number]) - (k + 1) <= CAUGHT_UP:
            return k
    return 0


async def _soak(run: _Run) -> dict[str, Any]:
    args = run.args
    settings = ServiceSettings(nats_url=run.server.url, namespace=run.supervisor.namespace)
    out: dict[str, Any] = {}
    async with connect(settings) as bus:
        await bus.apply_project(_project(args.batches, args.batch_size))
        subs = await _follow(
            bus,
            run.follow,
            (
                SubmissionAnswered,
                BatchCreated,
                BatchCompleted,
                LabelsReady,
                RoundExported,
                ModelTrained,
                BudgetExhausted,
                LabelingConverged,
                DeadLetter,
            ),
        )
        run.phase = "ingest"
        print(f"ingest: {args.items:,} items in messages of {PER_MESSAGE}", flush=True)
        ingest = await _ingest(bus, run.follow, args.items, timeout=args.stall + args.items / 500)
        submissions = ingest.pop("submission_ids")
        del submissions
        print(
            f"ingest: {ingest['items_per_second']:,} items/s ({ingest['seconds']} s); checking",
            flush=True,
        )
        run.phase = "checks"
        kv_after_ingest, kept = await _kv_scan(bus, values=True, keep=_keep_ingest_keys)
        ingest["announced"] = await _announced(bus)
        ingest.update(_claims_and_catalog(kept))
        del kept
        n = args.items
        ingest["exactly_once"] = bool(
            ingest["answered_ingested"] == n
            and ingest["answered_duplicates"] == 0
            and ingest["answered_rejected"] == 0
            and ingest["publish_duplicates"] == 0
            and ingest["announced"]["rows"] == n
            and ingest["announced"]["distinct"] == n
            and ingest["claimed_rows"] == n
            and ingest["claimed_distinct"] == n
            and ingest["catalog_items"] == n
        )
        out["ingest"] = ingest
        await run.checkpoint(bus, "after ingest", kv_after_ingest)
        print(f"ingest exactly once: {ingest['exactly_once']}", flush=True)

        run.phase = "batches"
        print(f"batches: {args.batches:,} of {args.batch_size} tasks", flush=True)
        timing = await _batches(run, bus, args.batches)
        run.phase = "end"
        await run.checkpoint(bus, "end")
        out["batches"] = {
            "batches": args.batches,
            "batch_size": args.batch_size,
            "seconds": timing["seconds"],
            "first_round_seconds": round(run.follow.trained.get(1, 0) - timing["started"], 1),
            "review_batches": run.follow.reviews,
            "trainings": run.follow.trainings,
            "budget_exhausted": run.follow.exhausted,
            "converged": run.follow.converged,
        }
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
    out["dead_letters"] = run.follow.dead_letters
    return out


def _verdicts(result: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    out = []

    def verdict(item: str, ok: bool | None, numbers: str) -> None:
        out.append({"item": item, "pass": ok, "numbers": numbers})

    ingest = result.get("ingest", {})
    verdict(
        f"{args.items:,} items ingested, each exactly once",
        ingest.get("exactly_once"),
        f"{ingest.get('items_per_second', 0):,} items/s; answers {ingest.get('answered_ingested')}"
        f" ingested, {ingest.get('answered_duplicates')} dup, {ingest.get('answered_rejected')}"
        f" rejected; ItemsIngested rows/distinct {ingest.get('announced', {}).get('rows')}/"
        f"{ingest.get('announced', {}).get('distinct')}; claims rows/distinct"
        f" {ingest.get('claimed_rows')}/{ingest.get('claimed_distinct')}; catalog"
        f" {ingest.get('catalog_items')}",
    )
    batches = result.get("batches", {})
    done = result.get("rounds_trained", 0)
    verdict(
        f"{args.batches:,} batches through all six services",
        done >= args.batches,
        f"{done} rounds trained, {result.get('batches_completed', 0)} batches completed in"
        f" {batches.get('seconds')} s",
    )
    rss = result.get("rss", {})
    services = [n for n in rss if n not in ("nats-server", "soak")]
    peaks = ", ".join(f"{n} {rss[n].get('peak_mb')}" for n in services)
    verdict("each service's peak RSS reported", bool(services), f"peak MB: {peaks}")
    flat = [rss[n].get("flat") for n in services]
    growth = ", ".join(
        f"{n} {rss[n].get('growth_after_warmup_mb')} MB (allowed {rss[n].get('flat_allowance_mb')})"
        for n in services
    )
    verdict(
        "RSS flat after warm-up",
        None if any(f is None for f in flat) else all(flat),
        f"growth over the rounds after warm-up: {growth}",
    )
    kv = result.get("kv_largest", {})
    over = result.get("kv_over_limit", [])
    verdict(
        "no KV value larger than 1 MB (every scan)",
        not over,
        "; ".join(f"{b}: {v['bytes']:,} B ({v['key']})" for b, v in kv.items())
        + (f"; over 1 MB: {over[:5]}" if over else ""),
    )
    rates = result.get("throughput", {})
    six, crew = rates.get("through_all_six", {}), rates.get("batches_completed", {})
    ratios = [r["ratio"] for r in (six, crew) if r.get("ratio") is not None]
    verdict(
        "batch throughput at the end within 20% of the start (the lower of the two ratios)",
        min(ratios) >= THROUGHPUT_RATIO if len(ratios) == 2 else None,
        f"through all six (ModelTrained): {six.get('first_per_min')} then"
        f" {six.get('last_per_min')} batches/min (ratio {six.get('ratio')}); crew side"
        f" (BatchCompleted): {crew.get('first_per_min')} then {crew.get('last_per_min')}"
        f" (ratio {crew.get('ratio')}); load average {crew.get('load_first')} then"
        f" {crew.get('load_last')}; rounds not yet through all six when the crew finished:"
        f" {rates.get('lag_when_crew_done')}",
    )
    wall = result.get("wall_seconds", 0)
    verdict("under 60 minutes", wall <= WALL_LIMIT_SECONDS, f"{wall:.0f} s")
    return out


def soak(args: argparse.Namespace) -> dict[str, Any]:
    keep_dir = args.workdir is not None
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="labelloop-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    namespace = f"soak{uuid.uuid4().hex[:8]}"
    server = EmbeddedNats(store_dir=workdir / "nats", log_file=workdir / "nats.log").start()
    env = {
        "LABELLOOP_EXPORTER_EXPORT_DIR": str(workdir / "exports"),
        "LABELLOOP_BRIDGE_BACKEND": "simulated",
    }
    supervisor = Supervisor(server.url, namespace, workdir, env=env)
    run = _Run(args, workdir, supervisor, server)
    result: dict[str, Any] = {
        "settings": {
            "items": args.items,
            "batches": args.batches,
            "batch_size": args.batch_size,
            "project": _project(args.batches, args.batch_size).model_dump(mode="json"),
            "rss_interval_seconds": args.rss_interval,
        },
        "workdir": str(workdir),
        "code": _code_state(),
    }
    sampler: _RssSampler | None = None
    failed: str | None = None
    started = time.monotonic()
    try:
        processes: list[ServiceProcess] = supervisor.start_all()
        supervisor.wait_ready(timeout=120)
        pids = {p.service: p.process.pid for p in processes}
        assert server.pid is not None
        pids["nats-server"] = server.pid
        pids["soak"] = os.getpid()
        sampler = _RssSampler(pids, args.rss_interval, run.progress)
        sampler.start()
        run.t0 = time.monotonic()
        result.update(asyncio.run(_soak(run)))
    except (SoakStopped, TimeoutError, RuntimeError, OSError) as exc:
        failed = f"{type(exc).__name__}: {exc}"
        print(f"STOPPED: {failed}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        failed = "interrupted"
    finally:
        if sampler is not None:
            sampler.stop()
        supervisor.stop_all()
        server.cleanup()
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    result["failed"] = failed
    follow = run.follow
    result["rounds_trained"] = len(follow.trained)
    result["batches_completed"] = len(follow.completed)
    n = len(follow.trained)
    width = max(1, args.batches // 10)
    samples = sampler.samples if sampler is not None else []
    crew_done = max(follow.completed.values(), default=None)
    # the exporter and the trainer start behind the crew (round 1 pays every service's first
    # catalog load) and drain that backlog faster than the loop runs: the first window starts
    # once they have caught up
    burst = _caught_up(follow.trained, follow.completed)
    result["throughput"] = {
        "through_all_six": _window_rate(follow.trained, n, width, samples, skip=burst),
        "batches_completed": _window_rate(follow.completed, len(follow.completed), width, samples),
        # the exporter and the trainer run beside the loop: how far behind they were
        "lag_when_crew_done": None
        if crew_done is None
        else sum(1 for t in follow.trained.values() if t > crew_done),
    }
    result["round_seconds"] = {
        stage: [round(t - run.t0, 2) for _, t in sorted(times.items())]
        for stage, times in (
            ("created", follow.created),
            ("completed", follow.completed),
            ("labels", follow.labels),
            ("exported", follow.exported),
            ("trained", follow.trained),
        )
    }
    names = [*sorted(p.service for p in supervisor.processes), "nats-server", "soak"]
    result["rss"] = _rss_report(samples, names, args.batches, width)
    windows = result["throughput"]["through_all_six"]
    if windows.get("first_window") is not None and n >= width:
        a = windows["first_window"][0]
        first = (follow.trained[a], follow.trained[a + width])
        last = (follow.trained[n - width], follow.trained[n])
        result["cpu"] = _cpu_report(samples, names, first, last)
    result["rss_samples"] = samples
    result["checkpoints"] = run.checkpoints
    result.update(_kv_summary(run.checkpoints))
    result["timing_trend"] = _timing_trend(run.checkpoints)
    result["verdicts"] = _verdicts(result, args)
    if failed is None and not keep_dir and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
        result["workdir"] = None
    return result


def _code_state() -> dict[str, Any]:
    """The commit the services ran from, and the files of services/ and shared/ changed since
    (several people work in one tree: a figure belongs to the code it measured)."""
    root = Path(__file__).resolve().parents[1]

    def git(*argv: str) -> str:
        try:
            return subprocess.run(
                ["git", *argv], cwd=root, capture_output=True, text=True, timeout=30, check=True
            ).stdout.rstrip("\n")
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = git("status", "--porcelain", "--", "services", "shared").splitlines()
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted": sorted(changed)}


def _kv_summary(points: list[dict[str, Any]]) -> dict[str, Any]:
    """The largest value per bucket over every scan, what went over 1 MB, and how each key
    family's largest value and key count moved from the first batch checkpoint to the end."""
    largest: dict[str, dict[str, Any]] = {}
    over: set[str] = set()
    for point in points:
        for bucket, scan in point["kv"].items():
            if bucket.startswith("_"):
                continue
            if scan["largest_bytes"] > largest.get(bucket, {}).get("bytes", -1):
                largest[bucket] = {
                    "bytes": scan["largest_bytes"],
                    "key": scan["largest_key"],
                    "at": point["label"],
                }
            over.update(f"{bucket}:{k}" for k in scan["over_limit"])
    growth: dict[str, Any] = {}
    batch_points = [p for p in points if p["label"] != "after ingest"]
    if len(batch_points) >= 2:
        # the largest value over each half of the batch checkpoints: a value that is compacted
        # now and then (a sawtooth) shows no growth; one that keeps growing does
        half = len(batch_points) // 2
        early, late = batch_points[:half], batch_points[half:]

        def peak(group: list[dict[str, Any]], bucket: str, family: str) -> dict[str, Any]:
            found = [p["kv"].get(bucket, {}).get("families", {}).get(family) for p in group]
            seen = [f for f in found if f is not None]
            return {
                "largest": max((f["largest"] for f in seen), default=0),
                "keys": max((f["keys"] for f in seen), default=0),
                "bytes": max((f["bytes"] for f in seen), default=0),
            }

        def middle(group: list[dict[str, Any]]) -> float:
            return float(np.mean([p["batches_completed"] for p in group]))

        rounds = max(middle(late) - middle(early), 1.0)
        for bucket, scan in batch_points[-1]["kv"].items():
            if bucket.startswith("_"):
                continue
            for family in scan["families"]:
                b, f = peak(early, bucket, family), peak(late, bucket, family)
                grew = f["largest"] - b["largest"]
                keys = f["keys"] - b["keys"]
                if grew > 0 or keys > 0:
                    growth[f"{bucket}:{family}"] = {
                        "largest_bytes": [b["largest"], f["largest"]],
                        "keys": [b["keys"], f["keys"]],
                        "total_bytes": [b["bytes"], f["bytes"]],
                        "largest_bytes_per_round": round(grew / rounds, 1),
                        "keys_per_round": round(keys / rounds, 3),
                        "between": "largest over the first and the second half of the"
                        " batch checkpoints",
                    }
    return {
        "kv_largest": largest,
        "kv_over_limit": sorted(over),
        "kv_growth": dict(sorted(growth.items(), key=lambda kv: -kv[1]["largest_bytes_per_round"])),
    }


def _print(result: dict[str, Any]) -> None:
    print(
        "\nwhat grows in KV (per key family: the largest value and the keys, most over the first"
        " and the second half of the batch checkpoints):"
    )
    for family, g in list(result["kv_growth"].items())[:12]:
        print(
            f"  {family:<48} largest {g['largest_bytes'][0]:>9,} -> {g['largest_bytes'][1]:>9,} B"
            f" ({g['largest_bytes_per_round']:+,.0f} B/round), keys {g['keys'][0]} ->"
            f" {g['keys'][1]}"
        )
    print("\nmean time per call, first and last tenth of the rounds (ms), and calls per round:")
    for key, t in list(result["timing_trend"].items())[:12]:
        print(f"  {key:<78} {t['first_ms']} -> {t['last_ms']} ({t['calls_per_round_last']}/round)")
    print("\nRSS (MB): peak / after warm-up / end / growth after warm-up:")
    for name, r in result["rss"].items():
        print(
            f"  {name:<18} {r.get('peak_mb')} / {r.get('after_warmup_mb')} / {r.get('end_mb')}"
            f" / {r.get('growth_after_warmup_mb')} ({r.get('slope_mb_per_1000_rounds')} per"
            " 1,000 rounds)"
        )
    print("\nCPU seconds per 1,000 rounds through all six, first and last window:")
    for name, c in result.get("cpu", {}).items():
        print(
            f"  {name:<18} {c['first_s_per_1000_rounds']} -> {c['last_s_per_1000_rounds']}"
            f" ({c['ratio']}x)"
        )
    print("\nverdicts:")
    for v in result["verdicts"]:
        mark = {True: "PASS", False: "FAIL", None: "n/a "}[v["pass"]]
        print(f"  {mark}  {v['item']}: {v['numbers']}")
    if result.get("failed"):
        print(f"\nthe run stopped early: {result['failed']} (work folder {result['workdir']})")


def _flood(items: int) -> int:
    """The older soak: the e2e flood test (ingester and sampler, calm and killed)."""
    env = {**os.environ, "LABELLOOP_FLOOD_ITEMS": str(items)}
    pytest = str(Path(sys.executable).parent / "pytest")
    root = Path(__file__).resolve().parents[1]
    return subprocess.call([pytest, "tests/e2e", "-k", "flood", "-q", "-s"], env=env, cwd=root)


def main() -> None:
    parser = argparse.ArgumentParser(description="labelloop soak benchmark (issue 14)")
    parser.add_argument("--items", type=int, default=None, help=f"default {FULL_ITEMS:,}")
    parser.add_argument("--batches", type=int, default=FULL_BATCHES)
    parser.add_argument("--batch-size", type=int, default=10, help="tasks, one of them gold")
    parser.add_argument("--rss-interval", type=float, default=2.0, help="seconds")
    parser.add_argument("--stall", type=float, default=600.0, help="seconds without progress")
    parser.add_argument("--workdir", default=None, help="kept afterwards (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--out", type=Path, default=None, help="result file")
    parser.add_argument(
        "--flood",
        action="store_true",
        help="run the older flood soak instead (tests/e2e flood test; --items, default 1M)",
    )
    args = parser.parse_args()
    if args.flood:
        sys.exit(_flood(args.items or 1_000_000))
    args.items = args.items or FULL_ITEMS
    full = args.items >= FULL_ITEMS and args.batches >= FULL_BATCHES
    result = soak(args)
    path = write_result(NAME, result, quick=not full, path=args.out)
    _print(result)
    print(f"\nwrote {path} ({result['wall_seconds']:.0f} s)")
    failed = result["failed"] or any(v["pass"] is False for v in result["verdicts"])
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
