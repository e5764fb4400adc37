"""The production cluster loses a node mid-campaign and the campaign does not notice.

Three local nats-server processes run ``infra/nats/nats-prod.conf`` (``sync_interval: always``,
the production users and permissions of ``accounts.conf``; only addresses, ports and store
directories are rewritten for loopback), the streams and buckets with three replicas, provisioned
by the operator as the compose ``provision`` job does. The six services connect as their own users
to all three nodes, and a campaign with the simulated crew runs through them. When the first QA
report is out, the node that leads the batches stream is killed with SIGKILL and stays down.

Nothing is lost or duplicated: the campaign finishes, every batch is completed exactly once, no
event id is in a stream twice, nothing is dead-lettered, and the dataset files are byte for byte
those of the same campaign on one undisturbed development server.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from reliability_support import bus_facts, dataset_fingerprint, poll
from security_support import NS, PASSWORDS, USERS, node_secrets, provision

from labelloop.events import BatchCreated
from labelloop.natsserver import EmbeddedNats, free_ports
from labelloop.settings import ServiceSettings
from labelloop.streams import Namespace
from labelloop_console.campaign import CampaignWatcher
from labelloop_console.demo import DemoOptions, run_campaign
from labelloop_console.processes import Supervisor

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

NATS_DIR = Path(__file__).resolve().parents[2] / "infra" / "nats"
SERVICES = ("ingester", "sampler", "annotation-bridge", "qa-scorer", "exporter", "trainer")
BUDGET = 108  # three rounds of 36 labels


def _options(run_dir: Path) -> DemoOptions:
    return DemoOptions(
        budget=BUDGET,
        random_arm=False,
        runs_dir=run_dir,
        timeout_seconds=600,
        stall_seconds=240,
        quiet=True,
        time_scale=0.05,  # rounds take a while: the kill lands while one is under way
    )


def _node_config(name: str, client: int, http: int, route: int) -> str:
    """nats-prod.conf for one node on loopback (its routes are in the secrets it includes)."""
    text = (NATS_DIR / "nats-prod.conf").read_text(encoding="utf-8")
    replacements = [
        (r"server_name: \$NATS_SERVER_NAME", f"server_name: {name}"),
        (r"listen: 0\.0\.0\.0:4222", f"listen: 127.0.0.1:{client}"),
        (r"http: 0\.0\.0\.0:8222", f"http: 127.0.0.1:{http}"),
        (r"max_file_store: 50GB", "max_file_store: 2GB"),
        (r"store_dir: /data/jetstream", "# store_dir: on the command line"),
        (r"listen: 0\.0\.0\.0:6222", f"listen: 127.0.0.1:{route}"),
    ]
    for pattern, value in replacements:
        text, count = re.subn(pattern, value, text)
        assert count == 1, f"nats-prod.conf changed: {pattern!r} matched {count} times"
    return text


@dataclass
class NatsCluster:
    """Three nodes of the production configuration on loopback."""

    folder: Path
    nodes: dict[str, EmbeddedNats] = field(default_factory=dict)

    def start(self) -> NatsCluster:
        ports = free_ports(9)
        routes = ports[6:9]
        # the production credentials: bcrypt hashes of PASSWORDS, authenticated routes
        secrets = node_secrets(self.folder, [f"127.0.0.1:{port}" for port in routes])
        for n in range(3):
            name = f"nats-{n + 1}"
            home = self.folder / name
            home.mkdir(parents=True)
            shutil.copytree(secrets, home / "secrets")
            config = home / "nats.conf"
            config.write_text(_node_config(name, ports[n], ports[3 + n], routes[n]), "utf-8")
            node = EmbeddedNats(
                port=ports[n],
                http_port=ports[3 + n],
                store_dir=home / "jetstream",
                config_file=config,
                log_file=home / "nats.log",
            )
            self.nodes[name] = node.start(timeout=60)
        return self

    @property
    def urls(self) -> str:
        """All three client URLs, as compose gives them (credentials apart: nats-py adds the
        servers a node advertises to its pool without the userinfo of a URL, so a client that
        put its password in a URL fails to authenticate to them after a failover)."""
        return ",".join(node.url for node in self.nodes.values())

    @staticmethod
    def credentials(user: str) -> dict[str, str]:
        return {"user": user, "password": PASSWORDS[USERS[user]]}

    def env(self, user: str) -> dict[str, str]:
        """The environment compose gives a service that connects as ``user``."""
        auth = self.credentials(user)
        return {
            "LABELLOOP_NATS_URL": self.urls,
            "LABELLOOP_NATS_USER": auth["user"],
            "LABELLOOP_NATS_PASSWORD": auth["password"],
        }

    async def connect(self, user: str) -> Client:
        return await nats.connect(
            self.urls.split(","),
            max_reconnect_attempts=120,
            reconnect_time_wait=0.5,
            **self.credentials(user),
        )

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()

    def kill(self, name: str) -> None:
        """SIGKILL, as a crash or a power cut would."""
        self.nodes[name].kill()

    def meta_formed(self) -> bool:
        for node in self.nodes.values():
            url = f"http://127.0.0.1:{node.http_port}/jsz"
            with urllib.request.urlopen(url, timeout=5) as resp:
                meta = json.loads(resp.read()).get("meta_cluster") or {}
            if not meta.get("leader") or meta.get("cluster_size") != 3:
                return False
        return True


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    nodes = NatsCluster(tmp_path / "cluster").start()
    try:
        yield nodes
    finally:
        nodes.stop()


def _env(run_dir: Path) -> dict[str, str]:
    return {
        "LABELLOOP_EXPORTER_EXPORT_DIR": str(run_dir / "exports"),
        "LABELLOOP_BRIDGE_BACKEND": "simulated",
        "LABELLOOP_ACK_WAIT_SECONDS": "5",
        "LABELLOOP_SWEEP_INTERVAL_SECONDS": "1",
    }


def _reference(tmp_path: Path) -> dict[str, str]:
    """The same campaign on one development server, undisturbed."""
    run_dir = tmp_path / "reference"
    namespace = f"ref{uuid.uuid4().hex[:8]}"
    with EmbeddedNats(store_dir=run_dir / "nats") as server:
        supervisor = Supervisor(server.url, namespace, run_dir, env=_env(run_dir))
        with supervisor:
            supervisor.start_all(SERVICES)
            supervisor.wait_ready(timeout=120)
            settings = ServiceSettings(nats_url=server.url, namespace=namespace)
            summary = asyncio.run(run_campaign(_options(run_dir), settings, run_dir))
    assert summary["finished"], "the reference campaign did not finish"
    return dataset_fingerprint(run_dir)


async def _kill_batch_leader(cluster: NatsCluster, stop: asyncio.Event, done: list[str]) -> None:
    nc = await cluster.connect("operator")
    watcher = CampaignWatcher(nc, Namespace(NS), ["digits"])
    await watcher.start()
    try:

        async def first_report() -> bool:
            return stop.is_set() or bool(watcher.view("digits").reports)

        await poll(first_report, timeout=300, interval=0.05, what="the first QA report")
        if stop.is_set():
            return
        stream = Namespace(NS).stream_name(Namespace(NS).stream_for(BatchCreated))
        info = await nc.jetstream().stream_info(stream)
        assert info.cluster is not None
        leader = str(info.cluster.leader)
        await watcher.stop()
        await asyncio.to_thread(cluster.kill, leader)
        done.append(leader)
    finally:
        await watcher.stop()
        await _close(nc)


async def _close(nc: Any) -> None:
    """Close a connection whose server may just have been killed: nats-py's ``close`` then
    can end with its socket writer's ``CancelledError``, which is not this task's (re-raised
    if this task is being cancelled)."""
    try:
        await nc.close()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise


async def _bus_facts(cluster: NatsCluster) -> dict[str, Any]:
    nc = await cluster.connect("operator")
    try:
        return await bus_facts(nc, Namespace(NS))
    finally:
        await nc.close()


def test_the_campaign_survives_the_stream_leader_killed(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    asyncio.run(poll(_meta_formed(cluster), timeout=60, what="the JetStream cluster formed"))
    run_dir = tmp_path / "cluster-run"
    provision(cluster.urls, replicas=3)  # as the compose job does: the services may not

    env = {**_env(run_dir), "LABELLOOP_STREAM_REPLICAS": "3"}
    supervisor = Supervisor(cluster.urls, NS, run_dir, env=env)
    killed: list[str] = []
    with supervisor:
        for service in SERVICES:
            # each as its own user, connected to all three nodes
            supervisor.start(service, extra_env=cluster.env(service))
        supervisor.wait_ready(timeout=180)
        operator = ServiceSettings(
            nats_url=cluster.urls,
            namespace=NS,
            nats_user="operator",
            nats_password=cluster.credentials("operator")["password"],
        )

        async def scenario() -> dict[str, Any]:
            stop = asyncio.Event()
            chaos = asyncio.create_task(_kill_batch_leader(cluster, stop, killed))
            try:
                return await run_campaign(_options(run_dir), operator, run_dir)
            finally:
                stop.set()
                await chaos

        summary = asyncio.run(scenario())
        facts = asyncio.run(_bus_facts(cluster))
    assert killed, "the leader was killed before the campaign ended"
    assert summary["finished"], "the campaign finished on two nodes"
    assert summary["final_dataset"]["complete"], summary["final_dataset"]
    assert not facts["dead"], [d.reason for d in facts["dead"]]
    twice = {msg_id: n for msg_id, n in facts["ids"].items() if n > 1}
    assert not twice, f"events stored twice: {twice}"
    assert set(facts["completed"]) == facts["created"], "every batch completed"
    assert set(facts["completed"].values()) == {1}, "and once"
    assert dataset_fingerprint(run_dir) == _reference(tmp_path), "the same datasets as undisturbed"


def _meta_formed(cluster: NatsCluster) -> Any:
    async def formed() -> bool:
        return await asyncio.to_thread(cluster.meta_formed)

    return formed
