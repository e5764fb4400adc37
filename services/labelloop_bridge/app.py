"""Composition root of the annotation bridge: settings in, a runnable ``Service`` out."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx

from labelloop.events import BatchCreated
from labelloop.runtime import PoisonMessage, Service
from labelloop.stores import MemoryStores

from .handlers import Placement, place_batch
from .importer import BatchImporter
from .intake import AnnotationIntake
from .labelstudio import LabelStudioClient, RetryPolicy
from .metrics import BridgeMetrics
from .provisioning import ProjectProvisioner, WebhookSpec
from .reconciliation import Reconciler
from .registry import AnnotatorRegistry
from .settings import BridgeSettings
from .simulation import NoSimulationConfig, SimulatedCrew
from .state import BridgeState
from .webhook import WebhookReceiver

__all__ = ["WEBHOOK_PATH", "build_app"]

log = logging.getLogger("labelloop.bridge")

WEBHOOK_PATH = "/webhooks/label-studio"


@dataclass(frozen=True)
class _Parts:
    backend: Placement
    client: LabelStudioClient | None = None
    intake: AnnotationIntake | None = None
    reconciler: Reconciler | None = None


def _assemble(
    service: Service,
    settings: BridgeSettings,
    metrics: BridgeMetrics,
    transport: httpx.AsyncBaseTransport | None,
) -> _Parts:
    """The adapters; built by a startup hook, once the service's KV is open (before consuming)."""
    state = BridgeState(service.state)
    if settings.backend == "simulated":
        log.warning("annotation bridge runs the SIMULATED crew: no real annotators")
        crew = SimulatedCrew(
            state, service.publish, metrics, chunk_size=settings.simulation_chunk_size
        )
        return _Parts(backend=crew)
    if settings.label_studio_token is None:
        raise RuntimeError("LABELLOOP_BRIDGE_LABEL_STUDIO_TOKEN is not set")
    retry = RetryPolicy(settings.retry_attempts, settings.retry_base_delay_seconds)
    http = httpx.AsyncClient(
        base_url=settings.label_studio_url,
        timeout=settings.request_timeout_seconds,
        transport=transport,
    )
    token = settings.label_studio_token.get_secret_value()
    client = LabelStudioClient(http, token, retry=retry, observer=metrics)
    intake = AnnotationIntake(
        state,
        service.publish,
        service.project,
        AnnotatorRegistry(client),
        metrics,
        count_skips=settings.count_skips,
        set_overlap=client.set_task_overlap,
    )
    webhook = None
    if settings.webhook_url and settings.webhook_secret:
        secret = settings.webhook_secret.get_secret_value()
        webhook = WebhookSpec(settings.webhook_url, settings.webhook_header, secret)
    elif settings.webhook_url:
        log.warning("webhook_url is set without webhook_secret: no webhook registered")
    provisioner = ProjectProvisioner(client, state, settings.namespace, webhook)
    importer = BatchImporter(
        client,
        state,
        provisioner,
        intake,
        metrics,
        namespace=settings.namespace,
        chunk_size=settings.import_chunk_size,
        retry=retry,
        lease_seconds=settings.import_lease_seconds,
    )
    reconciler = Reconciler(
        client,
        state,
        intake,
        metrics,
        margin_seconds=settings.reconcile_margin_seconds,
        before_pass=provisioner.ensure_webhooks,
    )
    log.info("annotation bridge uses Label Studio at %s", settings.label_studio_url)
    return _Parts(backend=importer, client=client, intake=intake, reconciler=reconciler)


def build_app(
    settings: BridgeSettings | None = None,
    *,
    stores: MemoryStores | None = None,
    label_studio_transport: httpx.AsyncBaseTransport | None = None,
) -> Service:
    """The bridge service; ``label_studio_transport`` replaces Label Studio's network in tests."""
    settings = settings or BridgeSettings()
    service = Service("annotation-bridge", settings, stores=stores)
    metrics = BridgeMetrics(service.registry, backend=settings.backend)
    built: list[_Parts] = []

    def parts() -> _Parts:
        if not built:  # startup hooks run before consuming and before HTTP is served
            raise RuntimeError("the annotation bridge is not started")
        return built[0]

    @service.on_startup
    async def assemble() -> None:
        built[:] = [_assemble(service, settings, metrics, label_studio_transport)]

    # Label Studio restarts and deploys outlast the default 5 deliveries (~25 s of retries):
    # keep retrying for minutes (the backoff doubles up to 60 s) before dead-lettering a batch
    @service.handler(BatchCreated, max_deliver=max(settings.max_deliver, 10))
    async def on_batch_created(event: BatchCreated) -> None:
        """Put a batch before annotators: Label Studio tasks, or the simulated crew."""
        try:
            await place_batch(event, service.project, parts().backend)
        except NoSimulationConfig as exc:
            raise PoisonMessage(str(exc)) from exc

    receiver: WebhookReceiver | None = None
    if settings.backend == "label-studio":

        async def on_webhook(payload: dict[str, Any]) -> int:
            intake = parts().intake
            assert intake is not None
            return await intake.apply_webhook(payload)

        async def reconcile() -> None:
            reconciler = parts().reconciler
            assert reconciler is not None
            await reconciler.run_once()

        secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
        receiver = WebhookReceiver(
            on_webhook,
            secret,
            metrics,
            header=settings.webhook_header,
            answer_within=settings.webhook_answer_within_seconds,
        )
        service.mount(WEBHOOK_PATH, receiver)
        service.every(settings.reconcile_interval_seconds, reconcile)

    @service.on_shutdown
    async def close() -> None:
        """After consuming stopped: let webhook work finish, then close Label Studio's client."""
        if receiver is not None:
            await receiver.drain(timeout=settings.webhook_drain_seconds)
        if built and built[0].client is not None:
            await built[0].client.aclose()
        built.clear()

    return service
