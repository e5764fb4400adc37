"""Support for the reliability tests: a restartable NATS server with the services as processes,
fixed chaos inputs, and readers of what the bus really holds (streams, consumers, metrics, logs).

Nothing here sleeps to synchronise: every wait polls a condition against a deadline.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from labelloop.events import (
    ALL_EVENTS,
    BatchCompleted,
    BatchCreated,
    DeadLetter,
    Event,
    ItemIn,
)
from labelloop.natsserver import EmbeddedNats, free_port
from labelloop.streams import Namespace
from labelloop_console.campaign import latest_dataset
from labelloop_console.processes import ServiceProcess, Supervisor

E = TypeVar("E", bound=Event)

# --------------------------------------------------------------------------- polling


async def poll(
    condition: Callable[[], Awaitable[Any]],
    *,
    timeout: float,
    interval: float = 0.2,
    what: str = "condition",
) -> Any:
    """Await ``condition()`` until it returns something truthy; fail after ``timeout`` seconds.

    NATS errors count as "not yet": the tests restart the server under the client's feet.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = await condition()
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            value = exc  # the server is restarting, or the client reconnecting: ask again
        else:
            if value:
                return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not met within {timeout:.0f} s (last: {value!r})")
        await asyncio.sleep(interval)


def until(condition: Callable[[], Any], *, what: str, timeout: float = 60.0) -> None:
    """The blocking twin of :func:`poll`, for tests that drive processes from a plain thread."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.1)


# --------------------------------------------------------------------------- the cluster


@dataclass
class Cluster:
    """One NATS server on a fixed store dir and port (so it can restart on the same data) and the
    services as ``labelloop run`` processes, all in one work directory."""

    workdir: Path
    namespace: str
    env: dict[str, str] = field(default_factory=dict)
    nats: EmbeddedNats = field(init=False)
    supervisor: Supervisor = field(init=False)
    redeliveries: dict[str, float] = field(default_factory=dict)
    """Redeliveries scraped from processes just before they were killed (their counters die)."""

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.nats = EmbeddedNats(
            store_dir=self.workdir / "nats", log_file=self.workdir / "nats.log"
        )

    @property
    def ns(self) -> Namespace:
        return Namespace(self.namespace)

    def start(self) -> Cluster:
        self.nats.start()
        self.supervisor = Supervisor(self.nats.url, self.namespace, self.workdir, env=self.env)
        return self

    def stop(self) -> None:
        try:
            self.supervisor.stop_all(timeout=20)
        finally:
            self.nats.stop()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # processes --------------------------------------------------------------

    def run(self, service: str, replica: int = 0, extra_env: dict[str, str] | None = None) -> None:
        self.supervisor.start(service, replica, extra_env)

    async def wait_ready(self, timeout: float = 120.0) -> None:
        await asyncio.to_thread(self.supervisor.wait_ready, timeout)

    def process(self, service: str, replica: int = 0) -> ServiceProcess:
        return self.supervisor.get(service, replica)

    def kill(self, service: str, replica: int = 0) -> None:
        """kill -9, after keeping what its redelivery counter said."""
        proc = self.process(service, replica)
        self._keep_redeliveries(proc)
        self.supervisor.kill(service, replica)

    async def restart(self, service: str, replica: int = 0) -> None:
        await asyncio.to_thread(self.supervisor.restart, service, replica)
        await self.wait_ready()

    def restart_nats(self) -> float:
        """Stop the server (SIGTERM) and start it again on the same port and store; seconds down."""
        started = time.monotonic()
        self.nats.stop()
        self.nats.start(timeout=60)
        return time.monotonic() - started

    def _keep_redeliveries(self, proc: ServiceProcess) -> None:
        if not proc.alive():
            return
        try:
            seen = redeliveries_in(proc.metrics())
        except OSError:
            return
        self.redeliveries[proc.name] = self.redeliveries.get(proc.name, 0.0) + seen

    def total_redeliveries(self) -> dict[str, float]:
        """Redeliveries handled, per process: killed ones (kept) plus the live ones now."""
        totals = dict(self.redeliveries)
        for proc in self.supervisor.processes:
            if proc.alive():
                try:
                    totals[proc.name] = totals.get(proc.name, 0.0) + redeliveries_in(proc.metrics())
                except OSError:
                    continue
        return totals

    def log_redeliveries(self) -> int:
        """Messages handled on a second or later delivery, according to every process's log."""
        count = 0
        for path in (self.workdir / "logs").glob("*.log"):
            for line in path.read_text(errors="replace").splitlines():
                if '"handled"' not in line:
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                count += int(record.get("deliveries", 1)) > 1
        return count


_REDELIVERED = re.compile(r"^labelloop_runtime_redeliveries_total\{[^}]*\}\s+([0-9.e+]+)$", re.M)


def redeliveries_in(metrics_text: str) -> float:
    return sum(float(v) for v in _REDELIVERED.findall(metrics_text))


def metric_value(metrics_text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """Sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in metrics_text.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        series, _, rest = head.partition("{")
        if series != name:
            continue
        if labels and not all(f'{k}="{v}"' in rest for k, v in labels.items()):
            continue
        total += float(value)
    return total


# --------------------------------------------------------------------------- the bus


async def connect(url: str) -> NatsClient:
    """A client that rides out a server restart (reconnects for two minutes)."""
    return await nats.connect(
        url, max_reconnect_attempts=240, reconnect_time_wait=0.5, connect_timeout=5
    )


async def _messages(nc: NatsClient, ns: Namespace, event: type[Event]) -> list[Any]:
    """Every message of one event type the stream holds now, as stored."""
    js = nc.jetstream()
    stream = ns.stream_name(ns.stream_for(event))
    info = await js.stream_info(stream, subjects_filter=ns.subject(event))
    expected = sum((info.state.subjects or {}).values())
    if expected == 0:
        return []
    sub = await js.pull_subscribe(
        ns.subject(event),
        stream=stream,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=60.0,
            max_waiting=1,
        ),
    )
    out: list[Any] = []
    deadline = time.monotonic() + 60
    try:
        while len(out) < expected:
            try:
                out += await sub.fetch(512, timeout=5)
            except (TimeoutError, nats.js.errors.ServiceUnavailableError):
                # a consumer just created on a replicated stream, right after its leader changed,
                # may answer 503 or nothing for a while (the CI run of 2026-12-07 met a 503):
                # asking again is right; giving up early would report messages as missing
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
    finally:
        await sub.unsubscribe()
    return out


async def read_stream(nc: NatsClient, ns: Namespace, event: type[E]) -> list[tuple[E, str]]:
    """Every message of one event type the stream holds now, with its ``Nats-Msg-Id``."""
    return [
        (event.model_validate_json(msg.data), (msg.headers or {}).get("Nats-Msg-Id", ""))
        for msg in await _messages(nc, ns, event)
    ]


async def message_ids(nc: NatsClient, ns: Namespace, event: type[Event]) -> list[str]:
    """The ``Nats-Msg-Id`` of every stored message of one event type (also of events that
    travel by reference, whose bodies are envelopes)."""
    return [(msg.headers or {}).get("Nats-Msg-Id", "") for msg in await _messages(nc, ns, event)]


async def events_of(nc: NatsClient, ns: Namespace, event: type[E]) -> list[E]:
    return [e for e, _ in await read_stream(nc, ns, event)]


async def bus_facts(nc: NatsClient, ns: Namespace) -> dict[str, Any]:
    """What the streams hold: every message id with its count, the batches created, how often
    each was completed, the dead letters."""
    ids: Counter[str] = Counter()
    for event in ALL_EVENTS:
        ids.update(await message_ids(nc, ns, event))
    created = {e.batch_id for e, _ in await read_stream(nc, ns, BatchCreated)}
    completed = Counter(e.batch_id for e, _ in await read_stream(nc, ns, BatchCompleted))
    dead = [e for e, _ in await read_stream(nc, ns, DeadLetter)]
    return {"ids": ids, "created": created, "completed": completed, "dead": dead}


async def consumer_state(
    nc: NatsClient, ns: Namespace, service: str, event: type[Event]
) -> dict[str, int]:
    """The durable consumer of ``service`` for ``event``: what the server says about it now."""
    js = nc.jetstream()
    try:
        info = await js.consumer_info(
            ns.stream_name(ns.stream_for(event)), ns.durable(service, event)
        )
    except NotFoundError:
        return {"ack_pending": 0, "redelivered": 0, "pending": 0, "delivered": 0}
    return {
        "ack_pending": int(info.num_ack_pending or 0),
        "redelivered": int(info.num_redelivered or 0),
        "pending": int(info.num_pending or 0),
        "delivered": int(info.delivered.consumer_seq or 0) if info.delivered else 0,
    }


async def busy(nc: NatsClient, ns: Namespace, service: str, events: Iterable[type[Event]]) -> bool:
    """True while the service holds delivered, unacknowledged messages (work in flight)."""
    for event in events:
        if (await consumer_state(nc, ns, service, event))["ack_pending"] > 0:
            return True
    return False


async def kill_when_busy(
    cluster: Cluster,
    nc: NatsClient,
    service: str,
    events: Iterable[type[Event]],
    *,
    replica: int = 0,
    timeout: float = 30.0,
) -> bool:
    """kill -9 ``service`` as soon as it has work in flight (or at ``timeout``); True if it had."""
    events = list(events)
    deadline = time.monotonic() + timeout
    in_flight = False
    while time.monotonic() < deadline:
        if await busy(nc, cluster.ns, service, events):
            in_flight = True
            break
        await asyncio.sleep(0.005)
    cluster.kill(service, replica)
    return in_flight


async def dead_letters(nc: NatsClient, ns: Namespace) -> list[DeadLetter]:
    return await events_of(nc, ns, DeadLetter)


def dataset_fingerprint(run_dir: Path) -> dict[str, str]:
    """sha256 of every file of every dataset version under ``run_dir/exports``; the manifest
    without its clock (what two runs of one seed must share)."""
    out = {}
    exports = run_dir / "exports"
    for path in sorted(exports.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if path.name == "manifest.json":
            manifest = json.loads(data)
            manifest.pop("created_at")
            data = json.dumps(manifest, sort_keys=True).encode()
        out[str(path.relative_to(exports))] = hashlib.sha256(data).hexdigest()
    return out


def read_dataset(path: str | Path) -> list[dict[str, Any]]:
    rows = []
    with (Path(path) / "dataset.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                rows.append(json.loads(line))
    return rows


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- Label Studio

LS_SCRIPT = Path(__file__).resolve().parents[2] / "infra" / "labelstudio" / "labelstudio.sh"


@dataclass
class LabelStudioProcess:
    """A Label Studio of the test's own, which it stops and starts again on the same data dir and
    port (``infra/labelstudio/labelstudio.sh``); the admin password is kept for the restart."""

    state: Path
    port: int = 0
    values: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def url(self) -> str:
        return self.values["LABEL_STUDIO_URL"]

    @property
    def token(self) -> str:
        return self.values["LABEL_STUDIO_API_KEY"]

    def install(self) -> None:
        subprocess.run([str(LS_SCRIPT), "install"], check=True, capture_output=True, timeout=900)

    def start(self, timeout: float = 300.0) -> float:
        """Start (first time: migrations, user, token); seconds until it answered."""
        self.port = self.port or free_port()
        env = dict(os.environ)
        if self.values:  # a restart: the same admin, so the same token comes back
            env["LABEL_STUDIO_USERNAME"] = self.values["LABEL_STUDIO_USERNAME"]
            env["LABEL_STUDIO_PASSWORD"] = self.values["LABEL_STUDIO_PASSWORD"]
        started = time.monotonic()
        run = subprocess.run(
            [str(LS_SCRIPT), "start", "--dir", str(self.state), "--port", str(self.port)],
            capture_output=True,
            text=True,
            timeout=timeout + 60,
            check=False,
            env=env,
        )
        if run.returncode != 0:
            log = self.state / "labelstudio.log"
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(f"Label Studio did not start:\n{run.stderr[-2000:]}\n{tail}")
        values = {}
        for line in (self.state / "labelstudio.env").read_text().splitlines():
            key, _, value = line.partition("=")
            values[key] = value
        self.values = values
        return time.monotonic() - started

    def stop(self) -> None:
        subprocess.run(
            [str(LS_SCRIPT), "stop", "--dir", str(self.state)],
            check=False,
            capture_output=True,
            timeout=60,
        )


async def sign_up_users(http: httpx.AsyncClient, names: Sequence[str]) -> dict[str, int]:
    """Label Studio user ids of ``<name>@example.com``, creating the users that do not exist."""
    existing = {u["email"]: int(u["id"]) for u in (await http.get("/api/users/")).json()}
    users = {}
    for name in names:
        email = f"{name}@example.com"
        if email not in existing:
            response = await http.post("/api/users/", json={"email": email, "username": name})
            response.raise_for_status()
            existing[email] = int(response.json()["id"])
        users[name] = existing[email]
    return users


class People:
    """Annotators working through Label Studio's API: each pass annotates every open task of the
    project whose description holds ``marker`` as many times as the task asks, each time as
    another of ``names``, with what ``answer`` says for the task's data."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        marker: str,
        names: Sequence[str],
        answer: Callable[[dict[str, Any]], list[dict[str, Any]]],
    ) -> None:
        self.http = http
        self.marker = marker
        self.names = tuple(names)
        self.answer = answer
        self.users: dict[str, int] = {}
        self.created = 0

    async def sign_up(self) -> None:
        self.users = await sign_up_users(self.http, self.names)

    async def project_id(self) -> int | None:
        response = await self.http.get("/api/projects", params={"page_size": 1000})
        response.raise_for_status()
        found = [
            p["id"]
            for p in response.json()["results"]
            if self.marker in (p.get("description") or "")
        ]
        return int(found[0]) if found else None

    async def work(self) -> int:
        """One pass over the open tasks; returns how many annotations were created."""
        project = await self.project_id()
        if project is None:
            return 0
        response = await self.http.get(
            "/api/tasks", params={"project": project, "page_size": 1000, "fields": "all"}
        )
        response.raise_for_status()
        done = 0
        for task in response.json()["tasks"]:
            required = int(task["data"].get("labelloop_annotations_required") or 1)
            by = {
                a.get("completed_by")
                if not isinstance(a.get("completed_by"), dict)
                else a["completed_by"].get("id")
                for a in task.get("annotations") or []
            }
            for name in self.names:
                if len(by) >= required:
                    break
                uid = self.users[name]
                if uid in by:
                    continue
                created = await self.http.post(
                    f"/api/tasks/{task['id']}/annotations/",
                    json={
                        "result": self.answer(task["data"]),
                        "completed_by": uid,
                        "lead_time": 3.5,
                    },
                )
                created.raise_for_status()
                by.add(uid)
                done += 1
        self.created += done
        return done


# --------------------------------------------------------------------------- support tickets

TICKET_CLASSES = ("billing", "bug", "praise")
TICKET_WORDS = {
    "billing": ["charged twice", "refund please", "invoice wrong", "card declined"],
    "bug": ["app crashes", "button broken", "page freezes", "login fails"],
    "praise": ["love it", "great support", "works well", "very happy"],
}
"""A small text project people can label through Label Studio's API: each ticket's class is
plain from its phrase, so a careful annotator always answers it right."""


def ticket_project(name: str, title: str, budget: int) -> dict[str, Any]:
    """The tickets' project: batches of 10 by random sampling, 30% overlapped by 3 annotators."""
    return {
        "name": name,
        "title": title,
        "task_type": "text_classification",
        "labels": {"classes": list(TICKET_CLASSES)},
        "data_fields": [{"name": "text", "kind": "text"}],
        "quality": {
            "overlap_fraction": 0.3,
            "annotators_per_overlapped_item": 3,
            "gold_fraction": 0.0,
        },
        "sampling": {"strategy": "random", "batch_size": 10, "seed": 4},
        "export": {"every_n_labels": 10, "formats": ["jsonl"]},
        "training": {"min_new_labels": 5},
        "budget": {"max_labels": budget},
    }


def ticket_items(n: int) -> list[ItemIn]:
    items = []
    for k in range(n):
        label = TICKET_CLASSES[k % 3]
        phrase = TICKET_WORDS[label][k % 4]
        items.append(ItemIn(data={"text": f"ticket {k}: {phrase}"}, metadata={"truth": label}))
    return items


def ticket_answer(data: dict[str, Any]) -> list[dict[str, Any]]:
    """What a careful annotator answers for a ticket (Label Studio's result): its true class."""
    text = data["text"]
    label = next(c for c, phrases in TICKET_WORDS.items() if any(p in text for p in phrases))
    return [
        {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}
    ]


def campaign_over(view: Any) -> bool:
    """The budget is spent, no batch is open, and every completed batch has its QA report."""
    completed = [b for b in view.batches.values() if b.completed is not None]
    reported = {r.batch_id for r in view.reports}
    return (
        view.budget_exhausted is not None
        and not view.open_batches
        and bool(completed)
        and all(b.batch_id in reported for b in completed)
    )


async def final_model(
    bus: Any,
    view: Any,
    project: str,
    reason: str,
    *,
    export_seconds: float,
    train_seconds: float,
    total_seconds: float | None = None,
) -> str:
    """The last labels into a dataset version and a model trained on it; returns the version.

    Asked for once the exporter applied every label on the bus (a version asked for earlier
    would miss the last ones). Each phase has its deadline, and ``total_seconds`` one for both."""
    from labelloop.events import LabelsReady, RequestExport, RequestTraining

    started = time.monotonic()
    overall = started + total_seconds if total_seconds is not None else float("inf")
    deadline = min(started + export_seconds, overall)
    while await bus.backlog("exporter", LabelsReady):
        assert time.monotonic() < deadline, "the exporter never caught up"
        await asyncio.sleep(0.2)
    await bus.publish(RequestExport(project=project, reason=reason))
    while not any(d.n_rows >= view.labels_used for d in view.datasets):
        assert time.monotonic() < deadline, "no dataset version with every label"
        await asyncio.sleep(0.2)
    last = latest_dataset(view.datasets)
    final: str = last.version
    await bus.publish(RequestTraining(project=project, dataset_version=final, reason=reason))
    deadline = min(time.monotonic() + train_seconds, overall)
    # the model of the version's round: trained on that version, or, when the round exported a
    # delta and its version came later (the campaign's stop, this request), on the rows the
    # delta gave, which are the version's rows
    while not any(m.round == last.round for m in view.models):
        assert time.monotonic() < deadline, f"no model trained on round {last.round} ({final})"
        await asyncio.sleep(0.2)
    return final
