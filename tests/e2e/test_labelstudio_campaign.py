"""A short campaign with a real Label Studio: the six services as processes, people via its API.

The bridge runs on the ``label-studio`` backend (webhook with a secret, reconciliation every few
seconds). The test plays three annotators: it lists the tasks Label Studio holds and annotates
each as many times as the task asks, as different users, until the 20-label budget is spent. Then
the bus must show the annotations, a QA report per completed batch, a dataset version and a model.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from reliability_support import (
    People,
    campaign_over,
    final_model,
    ticket_answer,
    ticket_items,
    ticket_project,
)

from labelloop.client import connect
from labelloop.events import (
    AnnotationSource,
    AnnotationsSubmitted,
    ItemsSubmitted,
    deterministic_id,
)
from labelloop.natsserver import EmbeddedNats, free_port
from labelloop.project import parse_project
from labelloop.settings import ServiceSettings
from labelloop.testing import EventCollector
from labelloop_console.campaign import CampaignWatcher
from labelloop_console.processes import Supervisor

pytestmark = [pytest.mark.e2e, pytest.mark.labelstudio, pytest.mark.slow]

PROJECT = "ls-tickets"
USERS = ("ann", "bob", "cat")
SECRET = "e2e-webhook-secret-4f1c"


def _bridge_metrics(text: str) -> str:
    """The bridge's own series, for a failure message."""
    keep = ("labelloop_bridge_", "labelloop_runtime_messages_total", "labelloop_runtime_dead")
    return "\n".join(
        line for line in text.splitlines() if line.startswith(keep) and "_created" not in line
    )


async def test_a_campaign_with_people_in_label_studio(
    label_studio: Any, nats_server: EmbeddedNats, namespace: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    bridge_port = free_port()
    env = {
        "LABELLOOP_BRIDGE_BACKEND": "label-studio",
        "LABELLOOP_BRIDGE_LABEL_STUDIO_URL": label_studio.url,
        "LABELLOOP_BRIDGE_LABEL_STUDIO_TOKEN": label_studio.token,
        "LABELLOOP_BRIDGE_WEBHOOK_SECRET": SECRET,
        "LABELLOOP_BRIDGE_RECONCILE_INTERVAL_SECONDS": "3",
        "LABELLOOP_EXPORTER_EXPORT_DIR": str(tmp_path / "exports"),
    }
    supervisor = Supervisor(nats_server.url, namespace, tmp_path, env=env)
    settings = ServiceSettings(nats_url=nats_server.url, namespace=namespace)
    with supervisor:
        for service in ("ingester", "sampler", "qa-scorer", "exporter", "trainer"):
            supervisor.start(service)
        bridge = supervisor.start(
            "annotation-bridge",
            extra_env={
                "LABELLOOP_BRIDGE_HTTP_PORT": str(bridge_port),
                "LABELLOOP_BRIDGE_WEBHOOK_URL": (
                    f"http://127.0.0.1:{bridge_port}/webhooks/label-studio"
                ),
            },
        )
        bridge.port = bridge_port  # the supervisor's pick was overridden: LS must know the URL
        await asyncio.to_thread(supervisor.wait_ready, 90)
        ready = time.monotonic()

        async with (
            connect(settings) as bus,
            httpx.AsyncClient(
                base_url=label_studio.url,
                headers={"Authorization": f"Token {label_studio.token}"},
                timeout=30.0,
            ) as http,
            EventCollector(nats_server.url, namespace, AnnotationsSubmitted) as annotations,
        ):
            watcher = CampaignWatcher(bus.nc, bus.ns, [PROJECT])
            await watcher.start()
            view = watcher.view(PROJECT)
            await bus.apply_project(
                parse_project(ticket_project(PROJECT, "Support tickets (e2e)", 20))
            )
            await bus.publish(
                ItemsSubmitted(
                    event_id=deterministic_id("ls-e2e", namespace),
                    project=PROJECT,
                    items=ticket_items(45),
                )
            )
            people = People(
                http, f"[labelloop:{namespace}/{PROJECT}/labeling]", USERS, ticket_answer
            )
            await people.sign_up()

            deadline = time.monotonic() + 150
            while not campaign_over(view):
                assert time.monotonic() < deadline, (
                    f"{_bridge_metrics(bridge.metrics())}\n"
                    f"campaign stuck: {len(view.batches)} batches, "
                    f"{len(view.open_batches)} open, {view.labels_used} labels, "
                    f"{len(view.reports)} reports, budget {view.budget_exhausted}, "
                    f"{people.created} annotations made"
                )
                if not await people.work():
                    watcher.changed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(watcher.changed.wait(), timeout=1.0)
            spent = time.monotonic()

            final = await final_model(
                bus, view, PROJECT, "e2e finished", export_seconds=60, train_seconds=90
            )
            await watcher.stop()

        got = [a for e in annotations.events for a in e.annotations if e.project == PROJECT]
        sources = {a.source for a in got}
        annotators = {a.annotator_id for a in got}
        completed = [b for b in view.batches.values() if b.completed is not None]
        reported = {r.batch_id for r in view.reports}
        print(
            f"\nLabel Studio campaign: ready in {ready - started:.1f}s, budget spent in "
            f"{spent - ready:.1f}s, total {time.monotonic() - started:.1f}s; "
            f"{people.created} annotations made in LS, {len(got)} AnnotationsSubmitted "
            f"({sorted(s.value for s in sources)}), {len(view.batches)} batches, "
            f"{view.labels_used} labels, {len(view.reports)} QA reports, datasets "
            f"{[d.version for d in view.datasets]}, models "
            f"{[(m.model_version, round(m.metrics.get('accuracy', -1), 3)) for m in view.models]}"
        )

    assert people.created >= 20
    assert len({a.annotation_id for a in got}) == people.created
    assert sources <= {AnnotationSource.WEBHOOK, AnnotationSource.RECONCILIATION}
    assert AnnotationSource.WEBHOOK in sources, "Label Studio's webhooks reached the bridge"
    # people unknown to the project's `annotators:` list travel under a pseudonym, never an email
    assert annotators == {f"ls-user-{people.users[u]}" for u in USERS}
    assert 20 <= view.labels_used <= 20 + 10  # the budget stops sampling; a batch may overrun
    assert completed
    assert all(b.batch_id in reported for b in completed)
    assert all(r.krippendorff_alpha is None or r.krippendorff_alpha > 0.9 for r in view.reports)
    assert view.datasets
    assert view.datasets[-1].n_rows >= 20
    final_round = next(d.round for d in view.datasets if d.version == final)
    assert any(m.round == final_round for m in view.models)  # the model of the version's round
    assert view.dead_letters == 0
    for proc in supervisor.processes:
        log = proc.log_path.read_text(errors="replace")
        assert label_studio.token not in log, f"{proc.name} logged the Label Studio token"
        assert SECRET not in log, f"{proc.name} logged the webhook secret"
