"""Secrets stay secret, and each service may publish only its own events.

* The six services run as processes, each as its own NATS user of ``infra/nats/accounts.conf``
  (password in ``LABELLOOP_NATS_PASSWORD``), the bridge with a Label Studio token and a webhook
  secret, at DEBUG level. After a round of work and some failures (Label Studio unreachable,
  forged webhooks) no secret appears in any log line, in ``/metrics`` or in ``/asyncapi``.
* The same server refuses a service that publishes another service's event, or subscribes to the
  event subjects themselves.
* The webhook secret is compared in constant time; settings and clients do not show secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from security_support import NS, PASSWORDS, USERS, secured_server, url_for

from labelloop.client import connect
from labelloop.events import ItemIn, ItemsIngested, ItemsSubmitted
from labelloop.natsserver import EmbeddedNats, free_port
from labelloop.project import parse_project
from labelloop.settings import ServiceSettings
from labelloop_bridge.labelstudio import LabelStudioClient
from labelloop_bridge.settings import BridgeSettings
from labelloop_bridge.webhook import WebhookReceiver
from labelloop_console.processes import Supervisor

pytestmark = [pytest.mark.e2e]

LS_TOKEN = "ls-token-0b7f3e9a5d"
WEBHOOK_SECRET = "hook-secret-61d2c8f4"
SECRETS = [*PASSWORDS.values(), LS_TOKEN, WEBHOOK_SECRET]


@pytest.fixture
def secured_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A nats-server with the production users and permissions (accounts.conf) on loopback."""
    server = secured_server(tmp_path)
    yield server
    server.cleanup()


def _url(server: EmbeddedNats, user: str) -> str:
    return url_for(server, user)


def _get(
    url: str, headers: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - loopback
            return int(resp.status), resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


async def test_no_secret_reaches_logs_metrics_or_asyncapi(
    secured_nats: EmbeddedNats, tmp_path: Path
) -> None:
    base = f"nats://127.0.0.1:{secured_nats.port}"
    env = {
        "LABELLOOP_LOG_LEVEL": "DEBUG",
        "LABELLOOP_BRIDGE_BACKEND": "label-studio",
        "LABELLOOP_BRIDGE_LABEL_STUDIO_URL": f"http://127.0.0.1:{free_port()}",  # nobody there
        "LABELLOOP_BRIDGE_LABEL_STUDIO_TOKEN": LS_TOKEN,
        "LABELLOOP_BRIDGE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "LABELLOOP_BRIDGE_RECONCILE_INTERVAL_SECONDS": "1",
        "LABELLOOP_BRIDGE_RETRY_ATTEMPTS": "1",
        "LABELLOOP_EXPORTER_EXPORT_DIR": str(tmp_path / "exports"),
    }
    supervisor = Supervisor(base, NS, tmp_path, env=env)
    with supervisor:
        for service in (
            "ingester",
            "sampler",
            "annotation-bridge",
            "qa-scorer",
            "exporter",
            "trainer",
        ):
            supervisor.start(
                service,
                extra_env={
                    "LABELLOOP_NATS_USER": service,
                    "LABELLOOP_NATS_PASSWORD": PASSWORDS[USERS[service]],
                },
            )
        await asyncio.to_thread(supervisor.wait_ready, 90)

        operator = ServiceSettings(nats_url=_url(secured_nats, "operator"), namespace=NS)
        async with connect(operator) as bus:
            await bus.apply_project(
                parse_project(
                    {
                        "name": "secrets",
                        "task_type": "text_classification",
                        "labels": {"classes": ["a", "b"]},
                        "data_fields": [{"name": "text", "kind": "text"}],
                        "sampling": {"strategy": "random", "batch_size": 5},
                    }
                )
            )
            await bus.publish(
                ItemsSubmitted(
                    project="secrets", items=[ItemIn(data={"text": f"item {i}"}) for i in range(12)]
                )
            )
            await bus.publish(ItemsSubmitted(project="nobody", items=[ItemIn(data={"text": "x"})]))
        bridge = supervisor.get("annotation-bridge")
        hook = f"{bridge.url}/webhooks/label-studio"
        body = b'{"action": "ANNOTATION_CREATED", "project": {"id": 1}}'
        assert (await asyncio.to_thread(_get, hook, {"X-Labelloop-Webhook-Secret": "nope"}, body))[
            0
        ] == 401
        assert (
            await asyncio.to_thread(
                _get, hook, {"X-Labelloop-Webhook-Secret": WEBHOOK_SECRET}, body
            )
        )[0] == 200

        # the bridge has tried Label Studio (placing the batch, reconciling) and failed, logged
        def bridge_failed() -> bool:
            return "labelstudio" in bridge.log_path.read_text(errors="replace").lower()

        deadline = asyncio.get_running_loop().time() + 60
        while not bridge_failed():
            assert asyncio.get_running_loop().time() < deadline, (
                "the bridge never tried Label Studio"
            )
            await asyncio.sleep(0.5)

        surfaces: dict[str, str] = {}
        for proc in supervisor.processes:
            for path in ("/metrics", "/asyncapi", "/asyncapi?format=json", "/readyz"):
                status, text = await asyncio.to_thread(_get, proc.url + path)
                assert status < 500, (proc.name, path, status)
                surfaces[f"{proc.name}{path}"] = text
    for proc in supervisor.processes:
        surfaces[f"{proc.name} log"] = proc.log_path.read_text(errors="replace")
    total_lines = sum(t.count("\n") for k, t in surfaces.items() if k.endswith(" log"))
    assert total_lines > 100, "DEBUG logs of six services should say something"
    leaks = [
        (where, secret) for where, text in surfaces.items() for secret in SECRETS if secret in text
    ]
    assert not leaks, leaks
    assert any("dead-lettered" in t for k, t in surfaces.items() if k.startswith("ingester")), (
        "the unknown project's submission was dead-lettered (an error path was logged)"
    )
    print(f"\n{len(surfaces)} surfaces checked, {total_lines} log lines, no secret in any")


async def test_a_service_user_cannot_publish_another_services_events(
    secured_nats: EmbeddedNats,
) -> None:
    subject = f"{NS}.{ItemsIngested.SUBJECT}.some-project"  # the ingester's event
    operator = ServiceSettings(nats_url=_url(secured_nats, "operator"), namespace=NS)
    async with connect(operator):  # the streams exist, as after any service's start
        pass
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    sampler = await nats.connect(_url(secured_nats, "sampler"), error_cb=on_error)
    ingester = await nats.connect(_url(secured_nats, "ingester"), error_cb=on_error)
    operator_nc = await nats.connect(_url(secured_nats, "operator"))
    try:
        js_admin = operator_nc.jetstream()
        before = (
            await js_admin.stream_info("LABELLOOP_ITEMS", subjects_filter=subject)
        ).state.messages
        with pytest.raises((NatsTimeout, NoRespondersError)):
            await sampler.jetstream().publish(subject, b"{}", timeout=2)
        await sampler.subscribe(f"{NS}.>")  # services consume by pull, never by subscription
        await sampler.flush()
        with contextlib.suppress(NatsTimeout):
            await sampler.flush(timeout=1)
        # the owner may publish it (the positive control)
        ack = await ingester.jetstream().publish(subject, b"{}", timeout=5)
        after = (
            await js_admin.stream_info("LABELLOOP_ITEMS", subjects_filter=subject)
        ).state.messages
        assert ack.seq
        assert after == before + 1
        violations = [str(e).lower() for e in errors if "permissions" in str(e).lower()]
        assert any("publish" in v and subject in v for v in violations), errors
        assert any("subscription" in v for v in violations), errors
    finally:
        for nc in (sampler, ingester, operator_nc):
            await nc.close()


def test_webhook_secret_is_compared_in_constant_time() -> None:
    source = inspect.getsource(WebhookReceiver._authorised)
    assert "hmac.compare_digest(" in source
    assert "==" not in source
    assert "!=" not in source


def test_settings_and_clients_do_not_show_secrets() -> None:
    settings = BridgeSettings(
        nats_password=PASSWORDS["NATS_BRIDGE_PASSWORD"],
        label_studio_token=LS_TOKEN,
        webhook_secret=WEBHOOK_SECRET,
    )
    shown = [repr(settings), str(settings), settings.model_dump_json(), repr(settings.model_dump())]
    for text in shown:
        for secret in SECRETS:
            assert secret not in text
    import httpx

    client = LabelStudioClient(httpx.AsyncClient(base_url="http://ls"), LS_TOKEN)
    assert LS_TOKEN not in repr(client)
    assert WEBHOOK_SECRET not in repr(
        WebhookReceiver(lambda p: None, WEBHOOK_SECRET, None)  # type: ignore[arg-type]
    )
