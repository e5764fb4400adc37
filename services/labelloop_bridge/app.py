"""Composition root of the annotation bridge: settings in, a runnable ``Service`` out."""

from __future__ import annotations

import logging

import httpx

from labelloop.events import AnnotationsSubmitted, BatchCompleted
from labelloop.runtime import Service
from labelloop.services import ServiceSpec
from labelloop.stores import MemoryStores

from .handlers import WEBHOOK_PATH, Parts, register_handlers
from .importer import BatchImporter
from .intake import AnnotationIntake
from .labelstudio import LabelStudioClient, RetryPolicy
from .metrics import BridgeMetrics
from .provisioning import ProjectProvisioner, WebhookSpec
from .reassignment import Reassigner
from .reconciliation import Reconciler
from .registry import AnnotatorRegistry
from .settings import BridgeSettings
from .simulation import SimulatedCrew
from .store import BridgeState

__all__ = ["SPEC", "WEBHOOK_PATH", "build_app"]

log = logging.getLogger("labelloop.bridge")


def _assemble(
    service: Service,
    settings: BridgeSettings,
    metrics: BridgeMetrics,
    transport: httpx.AsyncBaseTransport | None,
) -> Parts:
    """The adapters; built by a startup hook, once the service's KV is open (before consuming)."""
    state = BridgeState(service.state)
    if settings.backend == "simulated":
        log.warning("annotation bridge runs the SIMULATED crew: no real annotators")
        crew = SimulatedCrew(
            state, service.publish, metrics, chunk_size=settings.simulation_chunk_size
        )
        return Parts(backend=crew)
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
    media = settings.local_files()
    if media is not None:
        log.info(
            "media under %s reach Label Studio as Local Files URLs of %s: Label Studio must run"
            " with LOCAL_FILES_SERVING_ENABLED=true and LOCAL_FILES_DOCUMENT_ROOT=%s",
            media.media_root,
            media.label_studio_media_dir,
            media.document_root,
        )
    provisioner = ProjectProvisioner(client, state, settings.namespace, webhook, media=media)
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
        media=media,
    )
    reconciler = Reconciler(
        client,
        state,
        intake,
        metrics,
        margin_seconds=settings.reconcile_margin_seconds,
        before_pass=provisioner.upkeep,
        reassigner=Reassigner(
            client,
            state,
            provisioner,
            service.project,
            metrics,
            count_skips=settings.count_skips,
            lease_seconds=settings.import_lease_seconds,
        ),
    )
    log.info("annotation bridge uses Label Studio at %s", settings.label_studio_url)
    return Parts(backend=importer, client=client, intake=intake, reconciler=reconciler)


def build_app(
    settings: BridgeSettings | None = None,
    *,
    stores: MemoryStores | None = None,
    label_studio_transport: httpx.AsyncBaseTransport | None = None,
) -> Service:
    """The bridge service; ``label_studio_transport`` replaces Label Studio's network in tests."""
    settings = settings or BridgeSettings()
    service = Service(SPEC.name, settings, area=SPEC.artifacts, stores=stores)
    metrics = BridgeMetrics(service.registry, backend=settings.backend)
    built: list[Parts] = []

    def parts() -> Parts:
        if not built:  # startup hooks run before consuming and before HTTP is served
            raise RuntimeError("the annotation bridge is not started")
        return built[0]

    @service.on_startup
    async def assemble() -> None:
        built[:] = [_assemble(service, settings, metrics, label_studio_transport)]

    receiver = register_handlers(service, settings, metrics, parts)

    @service.on_shutdown
    async def close() -> None:
        """After consuming stopped: let webhook work finish, then close Label Studio's client."""
        if receiver is not None:
            await receiver.drain(timeout=settings.webhook_drain_seconds)
        if built and built[0].client is not None:
            await built[0].client.aclose()
        built.clear()

    return service


SPEC = ServiceSpec(
    name="annotation-bridge",
    settings=BridgeSettings,
    build=build_app,
    publishes=(
        AnnotationsSubmitted,
        BatchCompleted,
    ),
    state_keys=("bridge",),
    artifacts="bridge",
)
