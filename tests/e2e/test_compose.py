"""docker-compose.yml for real: a fresh deployment, a campaign with people in Label Studio, a
NATS node stopped mid-run.

``make compose-test`` runs it (``infra/docker/compose-test.sh`` builds the images first);
elsewhere it is skipped: it needs a Docker engine, root and about ten minutes. The deployment is
the production file with the test-only override ``infra/docker/compose.standins.yml`` (stand-ins
for the upstream images), the credentials that ``labelloop secrets`` writes, and three qa-scorer
replicas. The test plays the data producer, the operator and three annotators from the host:
items go in as the ``producer`` user through nats-1's client port (published on loopback by the
override), the operator applies the project and watches the bus, the annotators label through
Label Studio's API. When the first QA report is out, ``nats-2`` is stopped (lame-duck mode, as
``docker compose stop`` does it) and stays down. The campaign must finish on two nodes with every
batch completed once, nothing dead-lettered, a dataset version holding every label and a model
trained on it; no container may hold a NATS password in its environment or print one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from reliability_support import (
    People,
    bus_facts,
    campaign_over,
    final_model,
    ticket_answer,
    ticket_items,
    ticket_project,
)

from labelloop.client import connect
from labelloop.events import (
    ItemsSubmitted,
    deterministic_id,
)
from labelloop.natsserver import free_ports
from labelloop.project import parse_project
from labelloop.settings import ServiceSettings
from labelloop_console.campaign import CampaignView, CampaignWatcher
from labelloop_console.credentials import password_file, write_credentials
from labelloop_console.permissions import PASSWORD_VARIABLES

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get("LABELLOOP_COMPOSE_TEST"),
        reason="`make compose-test` runs it: a Docker engine and the images it builds",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = Path(sys.executable).parent / "docker-compose"
NAME = "labelloop-compose-test"
PROJECT = "compose-tickets"
ANNOTATORS = ("ann", "bob", "cat")
QA_REPLICAS = 3
ONE_SHOTS = {"provision", "labelstudio-init"}
RESULT = ROOT / "runs" / "compose-test.json"
LOGS = ROOT / "runs" / "compose-test.log"


def _say(what: str) -> None:
    """Progress on the terminal (`make compose-test` runs with -s): the test takes minutes."""
    print(f"{time.strftime('%H:%M:%S')} {what}", flush=True)


@dataclass
class Deployment:
    """``docker compose`` with the production file and the stand-ins' override."""

    folder: Path
    env_file: Path
    nats_port: int
    label_studio_port: int
    passwords: dict[str, str]
    label_studio_token: str

    def compose(self, *args: str, timeout: float = 600) -> str:
        command = [
            str(COMPOSE),
            "--project-name",
            NAME,
            "--project-directory",
            str(ROOT),
            "-f",
            str(ROOT / "docker-compose.yml"),
            "-f",
            str(ROOT / "infra" / "docker" / "compose.standins.yml"),
            "--env-file",
            str(self.env_file),
            *args,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"docker compose {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def containers(self) -> list[dict[str, Any]]:
        out = self.compose("ps", "--all", "--format", "json")
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def settings(self, user: str) -> ServiceSettings:
        return ServiceSettings(
            nats_url=f"nats://127.0.0.1:{self.nats_port}",
            namespace="labelloop",
            nats_user=user,
            nats_password=self.passwords[user],
        )


def _state(containers: list[dict[str, Any]]) -> tuple[bool, str]:
    """Whether every service is up (healthy where it has a healthcheck, one-shots exited 0)."""
    waiting = []
    for c in containers:
        service, state, health = c["Service"], c["State"], c.get("Health") or ""
        if service in ONE_SHOTS:
            if state == "exited" and c.get("ExitCode") != 0:
                raise AssertionError(f"{service} failed (exit {c.get('ExitCode')}): see {LOGS}")
            if state != "exited":
                waiting.append(f"{service}: {state}")
        elif state != "running" or health not in ("", "healthy"):
            waiting.append(f"{c['Name']}: {state} {health}".strip())
    return not waiting, ", ".join(waiting)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    credentials = tmp_path / "secrets"
    write_credentials(credentials)
    passwords = {
        user: (credentials / password_file(variable)).read_text(encoding="utf-8").strip()
        for user, variable in PASSWORD_VARIABLES.items()
    }
    slack = tmp_path / "slack_webhook_url"
    slack.write_text("http://127.0.0.1:9/nowhere\n", encoding="utf-8")
    nats_port, ls_port, prometheus_port, alertmanager_port = free_ports(4)
    token = secrets.token_hex(20)
    values = {
        "LABELLOOP_SECRETS_DIR": str(credentials),
        "POSTGRES_PASSWORD": secrets.token_hex(16),
        "LABEL_STUDIO_USERNAME": "admin@example.com",
        "LABEL_STUDIO_PASSWORD": secrets.token_hex(16),
        "LABEL_STUDIO_TOKEN": token,
        "LABELLOOP_WEBHOOK_SECRET": secrets.token_hex(16),
        "GRAFANA_ADMIN_PASSWORD": secrets.token_hex(16),
        "SLACK_WEBHOOK_URL_FILE": str(slack),
        "LABELLOOP_IMAGE": "labelloop:compose-test",
        "LABELLOOP_CONSOLE_IMAGE": "labelloop-console:compose-test",
        "LABELLOOP_TEST_NATS_PORT": str(nats_port),
        "LABEL_STUDIO_PORT": str(ls_port),
        "LABEL_STUDIO_PUBLIC_URL": f"http://127.0.0.1:{ls_port}",
        "PROMETHEUS_PORT": str(prometheus_port),
        "ALERTMANAGER_PORT": str(alertmanager_port),
    }
    env_file = tmp_path / "compose.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()), encoding="utf-8")
    env_file.chmod(0o600)
    found = Deployment(tmp_path, env_file, nats_port, ls_port, passwords, token)
    found.compose("down", "--volumes", "--timeout", "5")  # what an interrupted run left
    try:
        yield found
    finally:
        with contextlib.suppress(Exception):
            LOGS.parent.mkdir(exist_ok=True)
            LOGS.write_text(found.compose("logs", "--no-color", "--timestamps"), "utf-8")
        if not os.environ.get("LABELLOOP_COMPOSE_KEEP"):
            found.compose("down", "--volumes", "--timeout", "10")


async def _campaign(deployment: Deployment, facts: dict[str, Any]) -> CampaignView:
    """Items in, people labeling until the budget is spent, nats-2 stopped after the first QA
    report; then a dataset version with every label and a model trained on it."""
    async with (
        connect(deployment.settings("operator"), give_up_after=60) as bus,
        connect(deployment.settings("producer"), give_up_after=60) as producer,
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{deployment.label_studio_port}",
            headers={"Authorization": f"Token {deployment.label_studio_token}"},
            timeout=30.0,
        ) as http,
    ):
        watcher = CampaignWatcher(bus.nc, bus.ns, [PROJECT])
        await watcher.start()
        view = watcher.view(PROJECT)
        await bus.apply_project(
            parse_project(ticket_project(PROJECT, "Support tickets (compose test)", 30))
        )
        await producer.publish(
            ItemsSubmitted(
                event_id=deterministic_id("compose-test", PROJECT),
                project=PROJECT,
                items=ticket_items(60),
            )
        )
        people = People(
            http, f"[labelloop:labelloop/{PROJECT}/labeling]", ANNOTATORS, ticket_answer
        )
        await people.sign_up()
        started = time.monotonic()
        stopped = False
        deadline = started + 600
        while not campaign_over(view):
            assert time.monotonic() < deadline, (
                f"campaign stuck: {len(view.batches)} batches, {len(view.open_batches)} open,"
                f" {view.labels_used} labels, {len(view.reports)} reports,"
                f" {people.created} annotations made"
            )
            if view.reports and not stopped:
                # the annotators wait until the node is gone: what follows runs on two nodes
                facts["nats-2 stopped after"] = f"{len(view.reports)} QA report(s)"
                _say("first QA report: stopping nats-2")
                stopping = time.monotonic()
                await asyncio.to_thread(deployment.compose, "stop", "nats-2")
                facts["seconds to stop nats-2 (lame duck)"] = round(time.monotonic() - stopping)
                _say("nats-2 is down")
                stopped = True
            if not await people.work():
                watcher.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(watcher.changed.wait(), timeout=2.0)
        assert stopped, "the campaign ended before a QA report"
        assert len(view.reports) > 1, "no QA report after the node stopped"
        facts["campaign seconds"] = round(time.monotonic() - started, 1)
        _say(f"budget spent: {view.labels_used} labels, {len(view.reports)} QA reports")
        facts["annotations made in Label Studio"] = people.created
        await final_model(
            bus,
            view,
            PROJECT,
            "compose test finished",
            export_seconds=180,
            train_seconds=180,
            total_seconds=180,
        )
        _say("a model trained on the final dataset version")
        await watcher.stop()
        facts["bus"] = await bus_facts(bus.nc, bus.ns)
        _say("streams read")
        return view


def _image_sizes() -> dict[str, str]:
    images = [
        "labelloop:compose-test",
        "labelloop-console:compose-test",
        "labelloop-standin/nats:2.15.1",
        "labelloop-standin/label-studio:1.23.2",
        "labelloop-standin/postgres:15",
    ]
    sizes = {}
    for image in images:
        done = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Size}}", image],
            capture_output=True,
            text=True,
            check=True,
        )
        sizes[image] = f"{int(done.stdout) / 1e6:.0f} MB"
    return sizes


@pytest.mark.timeout(2400)
def test_compose_deployment_survives_a_node_stopped_mid_campaign(deployment: Deployment) -> None:
    facts: dict[str, Any] = {"images": _image_sizes()}
    started = time.monotonic()
    _say("docker compose up")
    deployment.compose("up", "--detach", "--scale", f"qa-scorer={QA_REPLICAS}", timeout=900)
    deadline = time.monotonic() + 900
    while True:
        healthy, waiting = _state(deployment.containers())
        if healthy:
            break
        assert time.monotonic() < deadline, f"not healthy after 900 s: {waiting}"
        time.sleep(3)
    facts["seconds to healthy"] = round(time.monotonic() - started, 1)
    _say("every container healthy")
    running = [c for c in deployment.containers() if c["State"] == "running"]
    assert sum(c["Service"] == "qa-scorer" for c in running) == QA_REPLICAS

    # every wait inside has its own deadline; this one names a hang outside them
    view = asyncio.run(asyncio.wait_for(_campaign(deployment, facts), timeout=1200))

    models = [m for m in view.models if m.dataset_version == view.datasets[-1].version]
    bus = facts.pop("bus")
    facts.update(
        {
            "batches": len(bus["created"]),
            "labels": view.labels_used,
            "QA reports": len(view.reports),
            "datasets": [d.version for d in view.datasets],
            "final dataset rows": max(d.n_rows for d in view.datasets),
            "model accuracy": round(models[-1].metrics.get("accuracy", -1.0), 3),
            "dead letters": len(bus["dead"]),
            "total seconds": round(time.monotonic() - started, 1),
        }
    )
    RESULT.parent.mkdir(exist_ok=True)
    RESULT.write_text(json.dumps(facts, indent=2) + "\n", encoding="utf-8")
    print("\ncompose test:", json.dumps(facts, indent=2))

    assert view.labels_used >= 30
    # nothing lost or duplicated: every batch completed exactly once, no event stored twice
    assert bus["created"]
    assert bus["completed"] == dict.fromkeys(bus["created"], 1)
    assert [i for i, n in bus["ids"].items() if n > 1] == []
    assert bus["dead"] == []
    assert {r.batch_id for r in view.reports} == bus["created"]
    assert max(d.n_rows for d in view.datasets) >= view.labels_used
    assert models
    # the stopped node stays stopped; the two others carried the campaign
    states = {c["Name"]: c["State"] for c in deployment.containers()}
    assert states[f"{NAME}-nats-2-1"] == "exited"
    # no node or service holds a NATS password in its environment, nor prints one
    logs = deployment.compose("logs", "--no-color")
    for container in deployment.containers():
        env = subprocess.run(
            ["docker", "inspect", "--format", "{{json .Config.Env}}", container["Name"]],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for user, password in deployment.passwords.items():
            assert password not in env, f"{container['Name']} has {user}'s password in its env"
    for user, password in deployment.passwords.items():
        assert password not in logs, f"{user}'s NATS password in the logs"
